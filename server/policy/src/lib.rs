//! fleetban's correlation core: from what agents report to fleet decisions.
//! Pure and deterministic: the caller passes what the store knows and the
//! time, and gets back the decisions to record.

#![forbid(unsafe_code)]

pub mod allowlist;
pub mod correlate;
pub mod feed;
pub mod growth;
pub mod jails;

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;

pub use allowlist::Allowlist;
pub use correlate::{Facts, FleetThreshold, Policy, PolicyError, SubnetEscalation};
pub use growth::{BanGrowth, Growth};
pub use jails::{JailRule, JailRuleError};

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
    /// The jail's port scope (`tcp/22`); empty: all traffic.
    pub ports: String,
}

/// A ban that is in force now, as far as correlation needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveBan {
    pub target: IpNet,
    pub expires_at: Option<DateTime<Utc>>,
    /// Port scope; empty: all traffic.
    pub ports: String,
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
    /// Port scope, as `tcp/22,443` (see `fleetban_proto::ports`); empty:
    /// all traffic. Only local echoes of port-scoped jails and manual
    /// decisions carry one; correlation across the fleet bans addresses.
    pub ports: String,
}

/// The fleet scope: every agent.
pub const SCOPE_FLEET: &str = "fleet";

#[cfg(test)]
mod tests {
    use super::*;

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
