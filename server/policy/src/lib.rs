//! fleetban's correlation core: from what agents report to fleet decisions.
//! Pure and deterministic: the caller passes what the store knows and the
//! time, and gets back the decisions to record.

#![forbid(unsafe_code)]

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;

/// Where a decision comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// An agent's own jail banned the address; the ban is echoed fleet-wide.
    Local,
    Fleet,
    Recidive,
    Subnet,
    Manual,
    Feed,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Fleet => "fleet",
            Origin::Recidive => "recidive",
            Origin::Subnet => "subnet",
            Origin::Manual => "manual",
            Origin::Feed => "feed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "local" => Origin::Local,
            "fleet" => Origin::Fleet,
            "recidive" => Origin::Recidive,
            "subnet" => Origin::Subnet,
            "manual" => Origin::Manual,
            "feed" => Origin::Feed,
            _ => return None,
        })
    }
}

/// An agent banned an address in one of its jails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBan {
    pub agent_id: String,
    pub jail: String,
    pub target: IpNet,
    pub at: DateTime<Utc>,
    pub duration: Duration,
    pub failures: u64,
}

/// A ban that is in force now, as far as correlation needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveBan {
    pub target: IpNet,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A decision to record and push to the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDecision {
    pub target: IpNet,
    pub origin: Origin,
    pub reason: String,
    pub creator: String,
    pub jail: String,
    /// Every agent of the fleet, for now.
    pub scope: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The fleet scope: every agent.
pub const SCOPE_FLEET: &str = "fleet";

/// Local echo: a local ban becomes a fleet decision, unless a ban of the same
/// target already covers at least as long.
pub fn on_local_ban(
    ban: &LocalBan,
    active: &[ActiveBan],
    now: DateTime<Utc>,
) -> Option<NewDecision> {
    // Counted from the ban itself (it may arrive late, after a reconnect), but
    // never beyond a full ban from now, whatever the agent's clock says.
    let expires_at = (ban.at + ban.duration).min(now + ban.duration);
    if expires_at <= now {
        return None;
    }
    let covered = active
        .iter()
        .any(|a| a.target.contains(&ban.target) && a.expires_at.is_none_or(|e| e >= expires_at));
    if covered {
        return None;
    }
    Some(NewDecision {
        target: ban.target,
        origin: Origin::Local,
        reason: format!(
            "{} failures in jail {} on {}",
            ban.failures, ban.jail, ban.agent_id
        ),
        creator: format!("agent:{}", ban.agent_id),
        jail: ban.jail.clone(),
        scope: SCOPE_FLEET.to_owned(),
        expires_at: Some(expires_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn ban(target: &str, at: i64, secs: i64) -> LocalBan {
        LocalBan {
            agent_id: "a".into(),
            jail: "sshd".into(),
            target: target.parse().unwrap(),
            at: t(at),
            duration: Duration::seconds(secs),
            failures: 5,
        }
    }

    #[test]
    fn local_ban_becomes_fleet_decision() {
        let d = on_local_ban(&ban("192.0.2.1/32", 0, 600), &[], t(1)).unwrap();
        assert_eq!(d.origin, Origin::Local);
        assert_eq!(d.scope, SCOPE_FLEET);
        assert_eq!(d.expires_at, Some(t(600)));
        let late = on_local_ban(&ban("192.0.2.1/32", 0, 600), &[], t(700));
        assert_eq!(late, None);
        assert_eq!(d.creator, "agent:a");
    }

    #[test]
    fn covered_ban_makes_no_decision() {
        let active = [ActiveBan {
            target: "192.0.2.0/24".parse().unwrap(),
            expires_at: Some(t(10_000)),
        }];
        assert_eq!(
            on_local_ban(&ban("192.0.2.1/32", 0, 600), &active, t(0)),
            None
        );
        let forever = [ActiveBan {
            target: "192.0.2.1/32".parse().unwrap(),
            expires_at: None,
        }];
        assert_eq!(
            on_local_ban(&ban("192.0.2.1/32", 0, 600), &forever, t(0)),
            None
        );
        // A shorter ban does not cover a longer one.
        let short = [ActiveBan {
            target: "192.0.2.1/32".parse().unwrap(),
            expires_at: Some(t(60)),
        }];
        assert!(on_local_ban(&ban("192.0.2.1/32", 0, 600), &short, t(0)).is_some());
    }

    #[test]
    fn origin_names_round_trip() {
        for o in [
            Origin::Local,
            Origin::Fleet,
            Origin::Recidive,
            Origin::Subnet,
            Origin::Manual,
            Origin::Feed,
        ] {
            assert_eq!(Origin::parse(o.as_str()), Some(o));
        }
        assert_eq!(Origin::parse("x"), None);
    }
}
