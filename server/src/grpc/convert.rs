//! Wire messages to and from the server's domain types.

use chrono::Duration;
use fleetban_policy::LocalBan;
use fleetban_proto::convert::time_from_ms;
use fleetban_proto::{parse_target, pb, PortScope};
use ipnet::IpNet;
use tracing::warn;
use uuid::Uuid;

use crate::store::{Decision, FirewallState, NewEvent};

pub fn decision(d: &Decision) -> pb::Decision {
    pb::Decision {
        id: u64::try_from(d.id).unwrap_or_default(),
        target: d.target.to_string(),
        origin: d.origin.as_str().to_owned(),
        reason: d.reason.clone(),
        jail: d.jail.clone(),
        expires_at_ms: d.expires_at.map_or(0, |t| t.timestamp_millis()),
        ports: port_scope(d),
    }
}

/// A stored port scope on the wire. The store only holds scopes checked on
/// the way in; one that does not parse is logged and sent as all traffic
/// (the decision is a ban either way).
fn port_scope(d: &Decision) -> Option<pb::PortScope> {
    match PortScope::from_text(&d.ports) {
        Ok(s) => (&s).into(),
        Err(e) => {
            warn!(decision = d.id, ports = %d.ports, error = %e, "stored port scope unreadable; sent as all traffic");
            None
        }
    }
}

/// Longest firewall backend name kept from a heartbeat.
const BACKEND_MAX: usize = 32;

/// A heartbeat's firewall state; a backend name that is not a short word
/// is kept as `other` rather than stored as sent.
pub fn firewall(f: &pb::FirewallState) -> FirewallState {
    let plausible = !f.backend.is_empty()
        && f.backend.len() <= BACKEND_MAX
        && f.backend
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    FirewallState {
        enforced: f.enforced,
        drift_total: f.drift_total,
        backend: if plausible {
            f.backend.clone()
        } else {
            "other".to_owned()
        },
    }
}

/// Jail rules as pushed to an agent (zero: the agent's own setting).
pub fn policy(p: &crate::service::JailPolicy) -> pb::PolicyUpdate {
    pb::PolicyUpdate {
        policy_toml: String::new(),
        version: p.version,
        jails: p
            .jails
            .iter()
            .map(|r| pb::JailPolicy {
                jail: r.jail.clone(),
                enabled: r.enabled,
                maxretry: r.maxretry.unwrap_or(0),
                findtime_s: r.findtime.map_or(0, |d| d.num_seconds()),
                bantime_s: r.bantime.map_or(0, |d| d.num_seconds()),
            })
            .collect(),
    }
}

/// The valid events and bans of a batch. An invalid entry is logged and left
/// out, so one bad entry cannot make an agent resend its batch forever.
/// An unban reported by an agent, in the order it happened among its bans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unban {
    pub target: IpNet,
    pub time_ms: i64,
}

/// The valid unbans of a batch; an invalid one is logged and left out.
pub fn unbans(agent_id: &str, unbans: &[pb::Unban]) -> Vec<Unban> {
    unbans
        .iter()
        .filter_map(|u| match parse_target(&u.target) {
            Ok(target) => Some(Unban {
                target,
                time_ms: u.time_ms,
            }),
            Err(e) => {
                warn!(agent = agent_id, unban = %u.id, reason = %e, "invalid unban dropped");
                None
            }
        })
        .collect()
}

pub fn batch(agent_id: &str, batch: pb::EventBatch) -> (Vec<NewEvent>, Vec<LocalBan>) {
    let events = batch
        .events
        .into_iter()
        .filter_map(|e| match event(agent_id, &e) {
            Ok(ev) => Some(ev),
            Err(reason) => {
                warn!(agent = agent_id, event = %e.id, reason, "invalid event dropped");
                None
            }
        })
        .collect();
    let bans = batch
        .bans
        .into_iter()
        .filter_map(|b| match local_ban(agent_id, &b) {
            Ok(ban) => Some(ban),
            Err(reason) => {
                warn!(agent = agent_id, ban = %b.id, reason, "invalid local ban dropped");
                None
            }
        })
        .collect();
    (events, bans)
}

fn event(agent_id: &str, e: &pb::Event) -> Result<NewEvent, String> {
    let ip = e.ip.parse().map_err(|_| format!("ip {:?}", e.ip))?;
    Ok(NewEvent {
        id: Uuid::parse_str(&e.id).map_err(|_| format!("id {:?}", e.id))?,
        agent_id: agent_id.to_owned(),
        jail: e.jail.clone(),
        ip: fleetban_proto::convert::canonical_ip(ip),
        user: (!e.user.is_empty()).then(|| e.user.clone()),
        occurred_at: time_from_ms(e.time_ms).map_err(|err| err.to_string())?,
    })
}

fn local_ban(agent_id: &str, b: &pb::LocalBan) -> Result<LocalBan, String> {
    if b.duration_s <= 0 || b.duration_s > 100 * 365 * 86_400 {
        return Err(format!("duration {} s", b.duration_s));
    }
    Ok(LocalBan {
        agent_id: agent_id.to_owned(),
        jail: b.jail.clone(),
        target: parse_target(&b.target).map_err(|e| e.to_string())?,
        at: time_from_ms(b.time_ms).map_err(|e| e.to_string())?,
        duration: Duration::seconds(b.duration_s),
        failures: b.failures,
        ports: PortScope::try_from(b.ports.clone())
            .map_err(|e| format!("ports: {e}"))?
            .to_string(),
    })
}

#[cfg(test)]
mod firewall_tests {
    use super::*;

    #[test]
    fn odd_backend_names_are_not_stored_as_sent() {
        let f = |backend: &str| {
            firewall(&pb::FirewallState {
                enforced: 3,
                drift_total: 1,
                backend: backend.into(),
            })
        };
        assert_eq!(f("nftables").backend, "nftables");
        assert_eq!(f("nftables").enforced, 3);
        for odd in ["", "<script>", "a b", &"x".repeat(33)] {
            assert_eq!(f(odd).backend, "other", "{odd:?}");
        }
    }
}
