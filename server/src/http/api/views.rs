//! What the API returns: JSON views of stored records.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::api::{DecisionRow, DecisionStatus, EventGroup, EventRecord};
use crate::store::{Decision, DecisionKind};

/// Single addresses without their `/32` or `/128`.
pub fn target_text(t: &ipnet::IpNet) -> String {
    if t.prefix_len() == t.max_prefix_len() {
        t.addr().to_string()
    } else {
        t.to_string()
    }
}

pub fn status_name(s: DecisionStatus) -> &'static str {
    match s {
        DecisionStatus::Active => "active",
        DecisionStatus::Expired => "expired",
        DecisionStatus::Revoked => "revoked",
    }
}

/// How a ban ended early.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevocationView {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub by: String,
    pub reason: String,
}

/// A ban, with where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    pub id: i64,
    /// The block-list version that added it.
    pub version: u64,
    /// An address (`192.0.2.1`) or a prefix (`192.0.2.0/24`).
    pub target: String,
    /// `local`, `fleet`, `recidive`, `subnet`, `manual` or `feed`.
    pub origin: String,
    pub reason: String,
    /// `agent:ID`, `user:NAME`, `token:NAME` or `fleetban`.
    pub creator: String,
    pub jail: String,
    /// `fleet` or `group:NAME`.
    pub scope: String,
    /// The ports banned, as `PROTOCOL/PORTS` (`tcp/22`, `all/80,443`,
    /// `tcp/8000:8100`); empty: all traffic.
    pub ports: String,
    pub created_at: DateTime<Utc>,
    /// `null`: until revoked.
    pub expires_at: Option<DateTime<Utc>>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    pub revoked: Option<RevocationView>,
}

impl DecisionView {
    pub fn new(row: &DecisionRow, now: DateTime<Utc>) -> Self {
        let d = &row.decision;
        DecisionView {
            id: d.id,
            version: d.version,
            target: target_text(&d.target),
            origin: d.origin.as_str().to_owned(),
            reason: d.reason.clone(),
            creator: d.creator.clone(),
            jail: d.jail.clone(),
            scope: d.scope.clone(),
            ports: d.ports.clone(),
            created_at: d.created_at,
            expires_at: d.expires_at,
            status: status_name(row.status(now)).to_owned(),
            revoked: row.revocation.as_ref().map(|r| RevocationView {
                id: r.id,
                at: r.created_at,
                by: r.creator.clone(),
                reason: r.reason.clone(),
            }),
        }
    }

    /// A ban just recorded.
    pub fn fresh(d: &Decision, now: DateTime<Utc>) -> Self {
        Self::new(
            &DecisionRow {
                decision: d.clone(),
                revocation: None,
            },
            now,
        )
    }
}

/// A change of the block list, as the live stream sends it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeView {
    /// `ban` or `revoke`.
    pub kind: String,
    pub id: i64,
    pub version: u64,
    pub target: String,
    pub origin: String,
    pub reason: String,
    pub creator: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// For a revocation: the ban it ends.
    pub revokes: Option<i64>,
}

impl From<&Decision> for ChangeView {
    fn from(d: &Decision) -> Self {
        ChangeView {
            kind: match d.kind {
                DecisionKind::Ban => "ban",
                DecisionKind::Revoke => "revoke",
            }
            .to_owned(),
            id: d.id,
            version: d.version,
            target: target_text(&d.target),
            origin: d.origin.as_str().to_owned(),
            reason: d.reason.clone(),
            creator: d.creator.clone(),
            created_at: d.created_at,
            expires_at: d.expires_at,
            revokes: d.revokes,
        }
    }
}

/// One failure seen in a log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    pub agent: String,
    pub jail: String,
    pub ip: String,
    pub user: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: Option<DateTime<Utc>>,
}

impl From<&EventRecord> for EventView {
    fn from(e: &EventRecord) -> Self {
        EventView {
            id: e.id.to_string(),
            agent: e.agent_id.clone(),
            jail: e.jail.clone(),
            ip: e.ip.to_string(),
            user: e.user.clone(),
            occurred_at: e.occurred_at,
            received_at: Some(e.received_at),
        }
    }
}

impl From<&crate::store::NewEvent> for EventView {
    fn from(e: &crate::store::NewEvent) -> Self {
        EventView {
            id: e.id.to_string(),
            agent: e.agent_id.clone(),
            jail: e.jail.clone(),
            ip: e.ip.to_string(),
            user: e.user.clone(),
            occurred_at: e.occurred_at,
            received_at: None,
        }
    }
}

/// Events counted by one key.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    pub key: String,
    pub count: u64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

impl From<&EventGroup> for GroupView {
    fn from(g: &EventGroup) -> Self {
        GroupView {
            key: g.key.clone(),
            count: g.count,
            first: g.first,
            last: g.last,
        }
    }
}

/// A page of items, and where the next one starts (`null`: this was the
/// last).
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// One entry of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub source: Option<String>,
}
