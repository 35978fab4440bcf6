//! The rules that turn what agents report into fleet decisions: local echo,
//! fleet thresholds, recidive, subnet escalation, allowlists, manual bans
//! and feeds. Each rule reads the facts the store gathered for one address
//! and returns the decisions to record; none does I/O.

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;

use crate::allowlist::Allowlist;
use crate::growth::BanGrowth;
use crate::{ActiveBan, LocalBan, NewDecision, Origin, SCOPE_FLEET};

/// Ban an address that fails on `hosts` distinct agents, or `failures`
/// times in all, within `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetThreshold {
    pub hosts: u32,
    pub failures: u32,
    pub window: Duration,
    pub bantime: Duration,
}

impl FleetThreshold {
    /// Whether `hosts` distinct agents or `failures` in all reach it.
    pub fn reached(&self, hosts: u32, failures: u32) -> bool {
        (self.hosts > 0 && hosts >= self.hosts) || (self.failures > 0 && failures >= self.failures)
    }
}

/// Ban a whole /24 (IPv4) or /64 (IPv6) once `min_banned` of its addresses
/// were banned within `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubnetEscalation {
    pub v4_prefix: u8,
    pub v6_prefix: u8,
    pub min_banned: u32,
    pub window: Duration,
    pub bantime: Duration,
}

impl Default for SubnetEscalation {
    fn default() -> Self {
        SubnetEscalation {
            v4_prefix: 24,
            v6_prefix: 64,
            min_banned: 5,
            window: Duration::hours(1),
            bantime: Duration::hours(1),
        }
    }
}

impl SubnetEscalation {
    /// The prefix `target` belongs to.
    pub fn prefix_of(&self, target: &IpNet) -> Option<IpNet> {
        let len = match target {
            IpNet::V4(_) => self.v4_prefix,
            IpNet::V6(_) => self.v6_prefix,
        };
        if target.prefix_len() <= len {
            return None;
        }
        IpNet::new(target.addr(), len).ok().map(|n| n.trunc())
    }
}

/// The fleet's correlation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub allowlist: Allowlist,
    /// Jails whose local bans become fleet decisions; `None`: every jail.
    pub shared_jails: Option<Vec<String>>,
    /// Decisions apply to the reporting agent's group only (else the fleet).
    pub group_scope: bool,
    pub threshold: Option<FleetThreshold>,
    pub recidive: Option<BanGrowth>,
    pub subnet: Option<SubnetEscalation>,
    /// The widest prefixes a decision may cover.
    pub widest_v4: u8,
    pub widest_v6: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowlist: Allowlist::default(),
            shared_jails: None,
            group_scope: false,
            threshold: None,
            recidive: None,
            subnet: None,
            widest_v4: 8,
            widest_v6: 32,
        }
    }
}

/// What the store knows about one address when correlating.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Bans in force that cover the address (or its prefix).
    pub active: Vec<ActiveBan>,
    /// Earlier bans of the address (its history).
    pub previous_bans: u32,
    /// Failures of the address across the fleet within the threshold window.
    pub hosts: u32,
    pub failures: u32,
    /// Distinct addresses of its prefix banned within the subnet window,
    /// counting the ban being decided.
    pub banned_in_prefix: u32,
}

/// A decision that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{target} is allowlisted ({allowlisted})")]
    Allowlisted { target: IpNet, allowlisted: IpNet },
    #[error("{target} is wider than the widest prefix allowed (/{widest})")]
    TooBroad { target: IpNet, widest: u8 },
    #[error("a ban must last longer than 0 s")]
    NoDuration,
}

impl Policy {
    fn scope(&self, group: Option<&str>) -> String {
        match group {
            Some(g) if self.group_scope => format!("group:{g}"),
            _ => SCOPE_FLEET.to_owned(),
        }
    }

    fn scope_group<'a>(&self, group: Option<&'a str>) -> Option<&'a str> {
        group.filter(|_| self.group_scope)
    }

    /// Refuses targets that are allowlisted or too broad.
    pub fn check_target(&self, target: &IpNet, group: Option<&str>) -> Result<(), PolicyError> {
        let widest = match target {
            IpNet::V4(_) => self.widest_v4,
            IpNet::V6(_) => self.widest_v6,
        };
        if target.prefix_len() < widest {
            return Err(PolicyError::TooBroad {
                target: *target,
                widest,
            });
        }
        if let Some(allowlisted) = self.allowlist.blocking(target, self.scope_group(group)) {
            return Err(PolicyError::Allowlisted {
                target: *target,
                allowlisted,
            });
        }
        Ok(())
    }

    /// How long a ban lasts, grown for a known offender.
    fn grown(&self, base: Duration, previous: u32) -> (Duration, bool) {
        match (&self.recidive, previous) {
            (Some(g), n) if n > 0 => (g.duration(base, n), true),
            _ => (base, false),
        }
    }
}

/// Whether a ban in force already does the job of a new ban of `target`
/// from `now` until `until`: it covers the target and lasts at least half
/// as long. So one burst of failures, reported again and again, makes one
/// decision, while a much longer ban (a recidive, a manual one) is made.
/// A port-scoped ban covers only a ban of the same ports; an address-wide
/// one covers any.
fn covered(
    active: &[ActiveBan],
    target: &IpNet,
    ports: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> bool {
    let enough = until - (until - now) / 2;
    active.iter().any(|a| {
        a.target.contains(target)
            && (a.ports.is_empty() || a.ports == ports)
            && a.expires_at.is_none_or(|e| e >= enough)
    })
}

/// Decisions for a local ban by an agent of `group`.
pub fn on_local_ban(
    policy: &Policy,
    ban: &LocalBan,
    group: Option<&str>,
    facts: &Facts,
    now: DateTime<Utc>,
) -> Vec<NewDecision> {
    let shared = policy
        .shared_jails
        .as_ref()
        .is_none_or(|j| j.contains(&ban.jail));
    if !shared || policy.check_target(&ban.target, group).is_err() {
        return Vec::new();
    }
    let (duration, grown) = policy.grown(ban.duration, facts.previous_bans);
    let expires = (ban.at + duration).min(now + duration);
    let mut out = Vec::new();
    if expires > now && !covered(&facts.active, &ban.target, &ban.ports, now, expires) {
        let (origin, reason) = if grown {
            (
                Origin::Recidive,
                format!(
                    "ban #{} of a known offender ({} in jail {} on {})",
                    facts.previous_bans + 1,
                    ban.failures,
                    ban.jail,
                    ban.agent_id
                ),
            )
        } else {
            (
                Origin::Local,
                format!(
                    "{} failures in jail {} on {}",
                    ban.failures, ban.jail, ban.agent_id
                ),
            )
        };
        out.push(NewDecision {
            target: ban.target,
            origin,
            reason,
            creator: format!("agent:{}", ban.agent_id),
            jail: ban.jail.clone(),
            scope: policy.scope(group),
            expires_at: Some(expires),
            ports: ban.ports.clone(),
        });
    }
    out.extend(escalate(policy, &ban.target, group, facts, now));
    out
}

/// Decisions for an address that failed across the fleet.
pub fn on_failures(
    policy: &Policy,
    ip: &IpNet,
    jail: &str,
    group: Option<&str>,
    facts: &Facts,
    now: DateTime<Utc>,
) -> Vec<NewDecision> {
    let Some(t) = &policy.threshold else {
        return Vec::new();
    };
    if !t.reached(facts.hosts, facts.failures) || policy.check_target(ip, group).is_err() {
        return Vec::new();
    }
    let (duration, grown) = policy.grown(t.bantime, facts.previous_bans);
    let expires = now + duration;
    if covered(&facts.active, ip, "", now, expires) {
        return Vec::new();
    }
    let mut out = vec![NewDecision {
        target: *ip,
        origin: if grown {
            Origin::Recidive
        } else {
            Origin::Fleet
        },
        reason: format!(
            "{} failures on {} hosts within {} s",
            facts.failures,
            facts.hosts,
            t.window.num_seconds()
        ),
        creator: "fleetban".to_owned(),
        jail: jail.to_owned(),
        scope: policy.scope(group),
        expires_at: Some(expires),
        ports: String::new(),
    }];
    out.extend(escalate(policy, ip, group, facts, now));
    out
}

/// A prefix decision once enough of its addresses are banned.
fn escalate(
    policy: &Policy,
    target: &IpNet,
    group: Option<&str>,
    facts: &Facts,
    now: DateTime<Utc>,
) -> Option<NewDecision> {
    let s = policy.subnet.as_ref()?;
    let prefix = s.prefix_of(target)?;
    if facts.banned_in_prefix < s.min_banned || policy.check_target(&prefix, group).is_err() {
        return None;
    }
    let expires = now + s.bantime;
    if covered(&facts.active, &prefix, "", now, expires) {
        return None;
    }
    Some(NewDecision {
        target: prefix,
        origin: Origin::Subnet,
        reason: format!(
            "{} addresses of {prefix} banned within {} s",
            facts.banned_in_prefix,
            s.window.num_seconds()
        ),
        creator: "fleetban".to_owned(),
        jail: String::new(),
        scope: policy.scope(group),
        expires_at: Some(expires),
        ports: String::new(),
    })
}

/// A ban asked for by an operator or a tool.
pub fn manual(
    policy: &Policy,
    target: IpNet,
    duration: Option<Duration>,
    group: Option<&str>,
    creator: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<NewDecision, PolicyError> {
    policy.check_target(&target, group)?;
    if duration.is_some_and(|d| d <= Duration::zero()) {
        return Err(PolicyError::NoDuration);
    }
    Ok(NewDecision {
        target,
        origin: Origin::Manual,
        reason: reason.to_owned(),
        creator: creator.to_owned(),
        jail: String::new(),
        scope: match group {
            Some(g) => format!("group:{g}"),
            None => SCOPE_FLEET.to_owned(),
        },
        expires_at: duration.map(|d| now + d),
        ports: String::new(),
    })
}

/// Decisions for a feed's entries; allowlisted or too broad entries are
/// left out and returned with the reason. Without a `lifetime`, an entry
/// stays banned until it leaves the feed.
pub fn from_feed(
    policy: &Policy,
    feed: &str,
    entries: &[IpNet],
    lifetime: Option<Duration>,
    now: DateTime<Utc>,
) -> (Vec<NewDecision>, Vec<PolicyError>) {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for target in entries {
        match policy.check_target(target, None) {
            Ok(()) => out.push(NewDecision {
                target: *target,
                origin: Origin::Feed,
                reason: format!("listed in feed {feed}"),
                creator: format!("feed:{feed}"),
                jail: String::new(),
                scope: SCOPE_FLEET.to_owned(),
                expires_at: lifetime.map(|l| now + l),
                ports: String::new(),
            }),
            Err(e) => refused.push(e),
        }
    }
    (out, refused)
}

#[cfg(test)]
mod tests;
