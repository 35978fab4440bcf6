//! The block list as agents receive it: a snapshot, then updates.

use chrono::{DateTime, Utc};

use crate::store::{Decision, DecisionKind};

/// Whether a decision of `scope` applies to an agent of `group` ('' for
/// none): fleet decisions apply to all, `group:NAME` ones to that group's.
pub fn applies_to(scope: &str, group: &str) -> bool {
    match scope.strip_prefix("group:") {
        Some(g) => !group.is_empty() && g == group,
        None => true,
    }
}

/// Every ban in force at `version`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub bans: Vec<Decision>,
}

/// The changes from one version to `version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockListUpdate {
    pub version: u64,
    pub added: Vec<Decision>,
    /// Ids of bans revoked.
    pub removed: Vec<i64>,
}

impl BlockListUpdate {
    /// Folds decisions recorded after `from` into one update. A ban revoked
    /// within the same range is left out of `added`; expired bans are not
    /// sent at all (the agent's copy expires on its own).
    pub fn from_decisions(from: u64, decisions: &[Decision], now: DateTime<Utc>) -> Self {
        let mut update = BlockListUpdate {
            version: from,
            ..Default::default()
        };
        for d in decisions {
            update.version = update.version.max(d.version);
            match (d.kind, d.revokes) {
                (DecisionKind::Ban, _) => {
                    if d.expires_at.is_none_or(|e| e > now) {
                        update.added.push(d.clone());
                    }
                }
                (DecisionKind::Revoke, Some(id)) => {
                    let before = update.added.len();
                    update.added.retain(|a| a.id != id);
                    if update.added.len() == before {
                        update.removed.push(id);
                    }
                }
                (DecisionKind::Revoke, None) => {}
            }
        }
        update
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use fleetban_policy::Origin;

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("time")
    }

    fn d(
        id: i64,
        version: u64,
        kind: DecisionKind,
        revokes: Option<i64>,
        expires: Option<i64>,
    ) -> Decision {
        Decision {
            id,
            version,
            kind,
            target: fleetban_proto::parse_target("192.0.2.1").expect("target"),
            origin: Origin::Local,
            reason: String::new(),
            creator: String::new(),
            jail: String::new(),
            scope: "fleet".into(),
            created_at: t(0),
            expires_at: expires.map(t),
            revokes,
            ports: String::new(),
        }
    }

    #[test]
    fn group_decisions_reach_their_group_only() {
        assert!(applies_to("fleet", ""));
        assert!(applies_to("fleet", "web"));
        assert!(applies_to("group:web", "web"));
        assert!(!applies_to("group:web", "db"));
        assert!(!applies_to("group:web", ""));
        assert!(!applies_to("group:", ""));
    }

    #[test]
    fn folds_bans_and_revocations() {
        let list = [
            d(1, 5, DecisionKind::Ban, None, Some(100)),
            d(2, 6, DecisionKind::Ban, None, None),
            d(3, 7, DecisionKind::Revoke, Some(1), None),
            d(4, 8, DecisionKind::Revoke, Some(0), None),
            d(5, 9, DecisionKind::Ban, None, Some(10)),
        ];
        let u = BlockListUpdate::from_decisions(4, &list, t(50));
        assert_eq!(u.version, 9);
        assert_eq!(u.added.iter().map(|a| a.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(u.removed, vec![0]);
        assert!(!u.is_empty());
        let none = BlockListUpdate::from_decisions(9, &[], t(0));
        assert!(none.is_empty());
        assert_eq!(none.version, 9);
    }
}
