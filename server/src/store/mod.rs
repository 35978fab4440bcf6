//! Persistence of agents, events and decisions. Only this module knows SQL;
//! the rest of the server talks to the [`Store`] trait. Two implementations
//! share one behaviour (and one test suite): Postgres for fleets and an
//! embedded SQLite for a one-machine start.

pub mod api;
mod postgres;
mod postgres_api;
mod sqlite;
mod sqlite_api;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fleetban_policy::{NewDecision, Origin};
use ipnet::IpNet;
use uuid::Uuid;

pub use api::ApiStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A store operation failed. Database text stays in the server's log; what a
/// client sees is the variant's message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: expected postgres://… or sqlite://…")]
    UnsupportedUrl(String),
    #[error("cannot open database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate database {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// An agent as it introduces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub id: String,
    pub hostname: String,
    pub version: String,
    pub jails: Vec<String>,
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub info: AgentInfo,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub applied_version: u64,
}

/// One failure seen by an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub id: Uuid,
    pub agent_id: String,
    pub jail: String,
    pub ip: IpAddr,
    pub user: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    Ban,
    Revoke,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Ban => "ban",
            DecisionKind::Revoke => "revoke",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "ban" => Ok(DecisionKind::Ban),
            "revoke" => Ok(DecisionKind::Revoke),
            other => Err(StoreError::Corrupt(format!("decision kind {other:?}"))),
        }
    }
}

/// A stored decision. Revocations are decisions too (`kind = Revoke`,
/// `revokes = Some(id)`), so the history is never lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: i64,
    pub version: u64,
    pub kind: DecisionKind,
    pub target: IpNet,
    pub origin: Origin,
    pub reason: String,
    pub creator: String,
    pub jail: String,
    pub scope: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revokes: Option<i64>,
}

/// What the server needs from its database (the REST API's part is
/// [`ApiStore`]).
#[async_trait]
pub trait Store: ApiStore + Send + Sync + 'static {
    /// Records an agent's introduction (first time or again).
    async fn upsert_agent(&self, agent: &AgentInfo, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Marks an agent as seen, and the block-list version it applied.
    async fn touch_agent(
        &self,
        id: &str,
        now: DateTime<Utc>,
        applied_version: Option<u64>,
    ) -> Result<(), StoreError>;
    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Stores events whose id is new; returns how many were new.
    async fn insert_events(
        &self,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    async fn event_count(&self) -> Result<u64, StoreError>;
    /// Records a ban under a new block-list version.
    async fn record_decision(
        &self,
        decision: &NewDecision,
        now: DateTime<Utc>,
    ) -> Result<Decision, StoreError>;
    /// Ends decision `id` with a revocation under a new block-list version.
    async fn revoke_decision(
        &self,
        id: i64,
        creator: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Decision, StoreError>;
    /// Bans neither revoked nor expired at `now`.
    async fn active_bans(&self, now: DateTime<Utc>) -> Result<Vec<Decision>, StoreError>;
    /// Active bans of exactly this target.
    async fn active_bans_for(
        &self,
        target: IpNet,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decision>, StoreError>;
    /// Decisions (bans and revocations) recorded after `version`, in order.
    async fn decisions_since(&self, version: u64) -> Result<Vec<Decision>, StoreError>;
    /// The block list's current version (0: nothing ever decided).
    async fn block_list_version(&self) -> Result<u64, StoreError>;
    /// Bans in force at `now` whose target contains `target` (or equals it).
    async fn active_bans_covering(
        &self,
        target: IpNet,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decision>, StoreError>;
    /// Failures of `ip` since `since`: distinct agents, and in all.
    async fn failure_stats(
        &self,
        ip: IpAddr,
        since: DateTime<Utc>,
    ) -> Result<(u32, u32), StoreError>;
    /// How many bans of exactly `target` were ever decided.
    async fn ban_count(&self, target: IpNet) -> Result<u32, StoreError>;
    /// Distinct targets inside `prefix` banned since `since`.
    async fn banned_in_prefix(
        &self,
        prefix: IpNet,
        since: DateTime<Utc>,
    ) -> Result<u32, StoreError>;
    /// Ids of bans (not revoked) whose expiry fell in `(after, until]`.
    async fn expired_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError>;
    /// Deletes events that happened before `before`; returns how many.
    async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Opens (and migrates) the database at `url`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(redact(url)))
    }
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn parse_target(s: &str) -> Result<IpNet, StoreError> {
    fleetban_proto::parse_target(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_origin(s: &str) -> Result<Origin, StoreError> {
    Origin::parse(s).ok_or_else(|| StoreError::Corrupt(format!("decision origin {s:?}")))
}

fn to_version(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative version {v}")))
}

fn from_version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod redact_tests {
    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(super::redact("sqlite:///x.db"), "sqlite:///x.db");
    }
}
