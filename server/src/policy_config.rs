//! The `[policy]` section of the server's configuration: the fleet's
//! correlation rules.

use std::collections::BTreeMap;
use std::path::Path;

use fleetban_policy::jails::ALL_GROUPS;
use fleetban_policy::{
    Allowlist, BanGrowth, FleetThreshold, Growth, JailRule, Policy, SubnetEscalation,
};
use fleetban_proto::config::ConfigError;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The `[policy]` section. Its correlation rules are stored in the database
/// as this TOML (jail rules go to their own table), so every replica runs
/// the same rules and an operator can change them while servers run.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Networks never banned, fleet-wide.
    #[serde(default)]
    allowlist: Vec<AllowlistItem>,
    /// Networks never banned for one agent group's agents.
    #[serde(default)]
    group_allowlist: BTreeMap<String, Vec<AllowlistItem>>,
    /// Jails whose local bans become fleet decisions; default: every jail.
    shared_jails: Option<Vec<String>>,
    /// Decisions apply to the reporting agent's group only.
    #[serde(default)]
    group_scope: bool,
    threshold: Option<ThresholdFile>,
    recidive: Option<RecidiveFile>,
    subnet: Option<SubnetFile>,
    widest_v4: Option<u8>,
    widest_v6: Option<u8>,
    /// Jail settings pushed to agents (`[[policy.jail]]`).
    #[serde(default, skip_serializing)]
    jail: Vec<JailRuleFile>,
}

/// One allowlist entry: a network (`"10.0.0.0/8"`), or a table with the
/// network and why it is there (`{ network = "10.0.0.0/8", comment = "office" }`).
/// Plain strings, as older servers wrote them, still load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum AllowlistItem {
    Network(String),
    Commented(CommentedNetwork),
}

/// An allowlist entry with a comment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommentedNetwork {
    pub network: String,
    #[serde(default)]
    pub comment: String,
}

impl AllowlistItem {
    pub fn network(&self) -> &str {
        match self {
            AllowlistItem::Network(n) => n,
            AllowlistItem::Commented(c) => &c.network,
        }
    }
}

/// One `[[policy.jail]]`: a jail's settings for one agent group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JailRuleFile {
    /// An agent group, or "*" (the default) for every agent.
    #[serde(default = "all_groups")]
    group: String,
    jail: String,
    #[serde(default = "yes")]
    enabled: bool,
    maxretry: Option<u32>,
    findtime: Option<String>,
    bantime: Option<String>,
}

fn all_groups() -> String {
    ALL_GROUPS.to_owned()
}

fn yes() -> bool {
    true
}

/// The policy a server starts with: the correlation rules, checked, their
/// TOML for the database, and the jail rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySeed {
    pub policy: Policy,
    /// The rules as stored in the database (a `[policy]` section).
    pub rules_toml: String,
    pub jails: Vec<JailRule>,
}

#[derive(Serialize, Deserialize)]
struct Section {
    #[serde(default)]
    policy: PolicyFile,
}

/// Where rules read from the database are said to come from in errors.
pub const STORED_RULES: &str = "policy in the database";

/// Parses and checks correlation rules as stored in the database (a
/// `[policy]` section); errors name the key and its line in `text`.
pub fn parse_rules(text: &str) -> Result<Policy, ConfigError> {
    let path = Path::new(STORED_RULES);
    let section: Section = fleetban_proto::config::parse(path, text)?;
    if !section.policy.jail.is_empty() {
        return Err(ConfigError::key(
            path,
            text,
            "policy.jail",
            "jail rules are stored on their own; set them one by one",
        ));
    }
    section.policy.into_policy(path, text)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ThresholdFile {
    #[serde(default)]
    hosts: u32,
    #[serde(default)]
    failures: u32,
    window: String,
    bantime: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RecidiveFile {
    #[serde(default = "two")]
    factor: f64,
    multipliers: Option<Vec<f64>>,
    maxtime: Option<String>,
}

fn two() -> f64 {
    2.0
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SubnetFile {
    #[serde(default = "v4")]
    v4_prefix: u8,
    #[serde(default = "v6")]
    v6_prefix: u8,
    min_banned: u32,
    window: String,
    bantime: String,
}

fn v4() -> u8 {
    24
}

fn v6() -> u8 {
    64
}

fn duration(v: &str) -> Result<chrono::Duration, String> {
    humantime::parse_duration(v.trim())
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .filter(|d| *d > chrono::Duration::zero())
        .ok_or_else(|| format!("{v:?}: expected a duration such as 10m, 1h or 7d"))
}

fn networks(list: &[AllowlistItem]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| fleetban_proto::parse_target(s.network()).map_err(|e| e.to_string()))
        .collect()
}

impl PolicyFile {
    /// The rules, their stored form and the jail rules, all checked.
    pub fn into_seed(mut self, path: &Path, source: &str) -> Result<PolicySeed, ConfigError> {
        let jail_files = std::mem::take(&mut self.jail);
        let mut jails: Vec<JailRule> = Vec::with_capacity(jail_files.len());
        for (i, j) in jail_files.into_iter().enumerate() {
            let key = "policy.jail";
            let err = |m: String| {
                ConfigError::key(path, source, key, format!("jail rule #{}: {m}", i + 1))
            };
            let d = |v: &Option<String>| v.as_deref().map(duration).transpose();
            let rule = JailRule {
                group: j.group,
                jail: j.jail,
                enabled: j.enabled,
                maxretry: j.maxretry,
                findtime: d(&j.findtime).map_err(err)?,
                bantime: d(&j.bantime).map_err(err)?,
            };
            rule.check().map_err(|e| err(e.to_string()))?;
            if jails
                .iter()
                .any(|o| o.group == rule.group && o.jail == rule.jail)
            {
                return Err(err(format!(
                    "jail {:?} of group {:?} is set twice",
                    rule.jail, rule.group
                )));
            }
            jails.push(rule);
        }
        let rules_toml = toml::to_string(&Section {
            policy: self.clone(),
        })
        .map_err(|e| ConfigError::key(path, source, "policy", e.to_string()))?;
        let policy = self.into_policy(path, source)?;
        Ok(PolicySeed {
            policy,
            rules_toml,
            jails,
        })
    }

    /// The rules, checked; errors name the key.
    pub fn into_policy(self, path: &Path, source: &str) -> Result<Policy, ConfigError> {
        let err = |key: &str, m: String| ConfigError::key(path, source, key, m);
        let mut groups = BTreeMap::new();
        for (g, list) in &self.group_allowlist {
            groups.insert(
                g.clone(),
                networks(list).map_err(|e| err("policy.group_allowlist", format!("{g}: {e}")))?,
            );
        }
        let allowlist = Allowlist {
            global: networks(&self.allowlist).map_err(|e| err("policy.allowlist", e))?,
            groups,
        };
        let threshold = match self.threshold {
            Some(t) => {
                if t.hosts == 0 && t.failures == 0 {
                    return Err(err(
                        "policy.threshold.hosts",
                        "set hosts, failures or both above 0".into(),
                    ));
                }
                Some(FleetThreshold {
                    hosts: t.hosts,
                    failures: t.failures,
                    window: duration(&t.window).map_err(|e| err("policy.threshold.window", e))?,
                    bantime: duration(&t.bantime)
                        .map_err(|e| err("policy.threshold.bantime", e))?,
                })
            }
            None => None,
        };
        let recidive = match self.recidive {
            Some(r) => {
                if !(r.factor.is_finite() && r.factor >= 1.0) {
                    return Err(err(
                        "policy.recidive.factor",
                        format!("{}: expected 1 or more", r.factor),
                    ));
                }
                let growth = match r.multipliers {
                    Some(m) if !m.is_empty() => Growth::Multipliers {
                        multipliers: m,
                        factor: 1.0,
                    },
                    _ => Growth::Exponential { factor: r.factor },
                };
                let maxtime = r
                    .maxtime
                    .as_deref()
                    .map(duration)
                    .transpose()
                    .map_err(|e| err("policy.recidive.maxtime", e))?;
                Some(BanGrowth { growth, maxtime })
            }
            None => None,
        };
        let subnet = match self.subnet {
            Some(s) => {
                if s.v4_prefix > 32 || s.v6_prefix > 128 || s.min_banned < 2 {
                    return Err(err(
                        "policy.subnet.min_banned",
                        "prefixes up to /32 and /128, min_banned 2 or more".into(),
                    ));
                }
                Some(SubnetEscalation {
                    v4_prefix: s.v4_prefix,
                    v6_prefix: s.v6_prefix,
                    min_banned: s.min_banned,
                    window: duration(&s.window).map_err(|e| err("policy.subnet.window", e))?,
                    bantime: duration(&s.bantime).map_err(|e| err("policy.subnet.bantime", e))?,
                })
            }
            None => None,
        };
        let defaults = Policy::default();
        Ok(Policy {
            allowlist,
            shared_jails: self.shared_jails,
            group_scope: self.group_scope,
            threshold,
            recidive,
            subnet,
            widest_v4: self.widest_v4.unwrap_or(defaults.widest_v4).min(32),
            widest_v6: self.widest_v6.unwrap_or(defaults.widest_v6).min(128),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<Policy, ConfigError> {
        #[derive(Deserialize)]
        struct F {
            policy: PolicyFile,
        }
        let f: F = fleetban_proto::config::parse(Path::new("s.toml"), src)?;
        f.policy.into_policy(Path::new("s.toml"), src)
    }

    #[test]
    fn allowlist_entries_may_carry_a_comment() {
        let p = load(
            "[policy]\nallowlist = [\"10.0.0.0/8\", { network = \"192.0.2.7\", comment = \"monitoring\" }]\n\
             group_allowlist = { office = [{ network = \"198.51.100.0/24\" }] }\n",
        )
        .unwrap();
        assert_eq!(p.allowlist.global.len(), 2);
        assert_eq!(p.allowlist.groups["office"].len(), 1);
        let e = load("[policy]\nallowlist = [{ network = \"10.0.0.0/8\", why = \"x\" }]\n")
            .unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = load("[policy]\nallowlist = [{ network = \"10.0.0.0/33\", comment = \"x\" }]\n")
            .unwrap_err();
        assert_eq!(e.key, "policy.allowlist", "{e}");
    }

    #[test]
    fn a_full_policy_loads() {
        let p = load(
            "[policy]\nallowlist = [\"10.0.0.0/8\"]\ngroup_allowlist = { office = [\"198.51.100.0/24\"] }\n\
             [policy.threshold]\nhosts = 3\nwindow = \"10m\"\nbantime = \"1h\"\n\
             [policy.recidive]\nfactor = 2\nmaxtime = \"1w\"\n\
             [policy.subnet]\nmin_banned = 5\nwindow = \"1h\"\nbantime = \"6h\"\n",
        )
        .unwrap();
        assert_eq!(p.allowlist.global.len(), 1);
        assert_eq!(p.threshold.unwrap().hosts, 3);
        assert_eq!(
            p.recidive.unwrap().maxtime,
            Some(chrono::Duration::weeks(1))
        );
        assert_eq!(p.subnet.unwrap().v4_prefix, 24);
    }

    fn seed(src: &str) -> Result<PolicySeed, ConfigError> {
        let f: Section = fleetban_proto::config::parse(Path::new("s.toml"), src)?;
        f.policy.into_seed(Path::new("s.toml"), src)
    }

    #[test]
    fn stored_rules_round_trip() {
        let s = seed(
            "[policy]\nallowlist = [\"10.0.0.0/8\"]\n[policy.threshold]\nhosts = 2\nwindow = \"10m\"\nbantime = \"1h\"\n\
             [[policy.jail]]\njail = \"sshd\"\nmaxretry = 5\nbantime = \"2h\"\n\
             [[policy.jail]]\ngroup = \"web\"\njail = \"sshd\"\nenabled = false\n",
        )
        .unwrap();
        assert_eq!(parse_rules(&s.rules_toml).unwrap(), s.policy);
        assert_eq!(s.jails.len(), 2);
        assert_eq!(s.jails[0].group, "*");
        assert_eq!(s.jails[0].bantime, Some(chrono::Duration::hours(2)));
        assert!(!s.jails[1].enabled);
        assert_eq!(parse_rules("").unwrap(), Policy::default());
    }

    #[test]
    fn bad_stored_rules_and_jail_rules_are_refused() {
        let e = parse_rules("[policy.threshold]\nhosts = 0\nwindow = \"1m\"\nbantime = \"1h\"\n")
            .unwrap_err();
        assert_eq!(e.key, "policy.threshold.hosts");
        assert_eq!(e.path, Path::new(STORED_RULES));
        let e = parse_rules("[policy]\nbogus = 1\n").unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        let e = seed("[[policy.jail]]\njail = \"sshd\"\nmaxretry = 0\n").unwrap_err();
        assert_eq!(e.key, "policy.jail");
        assert!(e.message.contains("maxretry 0"), "{e}");
        let e = seed("[[policy.jail]]\njail = \"sshd\"\nbantime = \"never\"\n").unwrap_err();
        assert!(e.message.contains("never"), "{e}");
        let e = seed("[[policy.jail]]\njail = \"sshd\"\n[[policy.jail]]\njail = \"sshd\"\n")
            .unwrap_err();
        assert!(e.message.contains("set twice"), "{e}");
        let e = seed("[[policy.jail]]\ngroup = \"a b\"\njail = \"sshd\"\n").unwrap_err();
        assert!(e.message.contains("group"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load("[policy]\nallowlist = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("policy.allowlist", 2));
        let e = load("[policy.threshold]\nwindow = \"soon\"\nbantime = \"1h\"\nhosts = 2\n")
            .unwrap_err();
        assert_eq!(e.key, "policy.threshold.window");
        let e = load("[policy.threshold]\nwindow = \"1m\"\nbantime = \"1h\"\n").unwrap_err();
        assert_eq!(e.key, "policy.threshold.hosts");
        let e = load("[policy.recidive]\nfactor = 0.5\n").unwrap_err();
        assert_eq!(e.key, "policy.recidive.factor");
        let e = load("[policy]\nthreshhold = 1\n").unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
