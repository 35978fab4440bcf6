//! Jail policies kept by the server and pushed to agents: which jails run
//! on which agent group, with which `maxretry`, `findtime` and `bantime`.

use chrono::Duration;

/// The group name that stands for every agent.
pub const ALL_GROUPS: &str = "*";

/// The longest `findtime` or `bantime` a jail policy may set (ten years).
pub const LONGEST: Duration = Duration::days(3650);

/// One jail's settings for one agent group. `None` leaves the agent's own
/// value from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailRule {
    /// An agent group, or [`ALL_GROUPS`].
    pub group: String,
    pub jail: String,
    pub enabled: bool,
    pub maxretry: Option<u32>,
    pub findtime: Option<Duration>,
    pub bantime: Option<Duration>,
}

/// A jail rule that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JailRuleError {
    #[error("{field} {value:?}: expected 1 to 64 characters among letters, digits, '-', '_' and '.'{extra}")]
    BadName {
        field: &'static str,
        value: String,
        extra: &'static str,
    },
    #[error("maxretry 0: expected 1 or more")]
    ZeroMaxretry,
    #[error("{field} {seconds} s: expected more than 0 s and at most 10 years")]
    BadDuration { field: &'static str, seconds: i64 },
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl JailRule {
    /// Refuses names and values no agent could apply.
    pub fn check(&self) -> Result<(), JailRuleError> {
        if self.group != ALL_GROUPS && !valid_name(&self.group) {
            return Err(JailRuleError::BadName {
                field: "group",
                value: self.group.clone(),
                extra: ", or \"*\" for every agent",
            });
        }
        if !valid_name(&self.jail) {
            return Err(JailRuleError::BadName {
                field: "jail",
                value: self.jail.clone(),
                extra: "",
            });
        }
        if self.maxretry == Some(0) {
            return Err(JailRuleError::ZeroMaxretry);
        }
        for (field, d) in [("findtime", self.findtime), ("bantime", self.bantime)] {
            if let Some(d) = d {
                if d <= Duration::zero() || d > LONGEST {
                    return Err(JailRuleError::BadDuration {
                        field,
                        seconds: d.num_seconds(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The rules an agent of `group` runs with: for each jail, its group's rule
/// if there is one, else the rule for every agent. Sorted by jail.
pub fn for_group<'a>(rules: &'a [JailRule], group: &str) -> Vec<&'a JailRule> {
    let mut out: Vec<&JailRule> = Vec::new();
    for r in rules {
        let mine = r.group == group && group != ALL_GROUPS;
        if !(mine || r.group == ALL_GROUPS) {
            continue;
        }
        match out.iter_mut().find(|o| o.jail == r.jail) {
            Some(o) => {
                if mine {
                    *o = r;
                }
            }
            None => out.push(r),
        }
    }
    out.sort_by(|a, b| a.jail.cmp(&b.jail));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(group: &str, jail: &str, enabled: bool) -> JailRule {
        JailRule {
            group: group.into(),
            jail: jail.into(),
            enabled,
            maxretry: None,
            findtime: None,
            bantime: None,
        }
    }

    #[test]
    fn a_group_rule_wins_over_the_fleet_rule() {
        let rules = vec![
            rule("*", "sshd", true),
            rule("web", "sshd", false),
            rule("*", "nginx", true),
            rule("db", "nginx", false),
        ];
        let web: Vec<_> = for_group(&rules, "web")
            .iter()
            .map(|r| (r.jail.as_str(), r.enabled))
            .collect();
        assert_eq!(web, vec![("nginx", true), ("sshd", false)]);
        let none: Vec<_> = for_group(&rules, "")
            .iter()
            .map(|r| (r.jail.as_str(), r.enabled))
            .collect();
        assert_eq!(none, vec![("nginx", true), ("sshd", true)]);
    }

    #[test]
    fn bad_rules_are_refused() {
        assert_eq!(rule("*", "sshd", true).check(), Ok(()));
        assert!(matches!(
            rule("we b", "sshd", true).check(),
            Err(JailRuleError::BadName { field: "group", .. })
        ));
        assert!(matches!(
            rule("*", "", true).check(),
            Err(JailRuleError::BadName { field: "jail", .. })
        ));
        let mut r = rule("*", "sshd", true);
        r.maxretry = Some(0);
        assert_eq!(r.check(), Err(JailRuleError::ZeroMaxretry));
        r.maxretry = Some(3);
        r.bantime = Some(Duration::seconds(-5));
        assert_eq!(
            r.check().map_err(|e| e.to_string()),
            Err("bantime -5 s: expected more than 0 s and at most 10 years".into())
        );
        r.bantime = Some(Duration::days(4000));
        assert!(r.check().is_err());
        r.bantime = None;
        r.findtime = Some(Duration::zero());
        assert!(r.check().is_err());
    }

    proptest! {
        /// Each jail appears once; the group's own rule is taken when it
        /// exists, else the fleet's.
        #[test]
        fn one_rule_per_jail(spec in proptest::collection::vec((0..3usize, 0..4usize, any::<bool>()), 0..20)) {
            let groups = ["*", "web", "db"];
            let mut rules: Vec<JailRule> = Vec::new();
            for (g, j, e) in spec {
                let r = rule(groups[g], &format!("j{j}"), e);
                if !rules.iter().any(|o| o.group == r.group && o.jail == r.jail) {
                    rules.push(r);
                }
            }
            let got = for_group(&rules, "web");
            let mut jails: Vec<_> = got.iter().map(|r| r.jail.clone()).collect();
            jails.dedup();
            prop_assert_eq!(jails.len(), got.len());
            for r in &got {
                let own = rules.iter().find(|o| o.group == "web" && o.jail == r.jail);
                match own {
                    Some(o) => prop_assert_eq!(*r, o),
                    None => prop_assert_eq!(r.group.as_str(), "*"),
                }
                prop_assert!(r.group != "db");
            }
        }
    }
}
