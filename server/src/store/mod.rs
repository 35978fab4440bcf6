//! Persistence of agents, events and decisions. Only this module knows SQL;
//! the rest of the server talks to the [`Store`] trait. Two implementations
//! share one behaviour (and one test suite): Postgres for fleets and an
//! embedded SQLite for a one-machine start.

pub mod api;
pub mod feeds;
pub mod identity;
mod postgres;
mod postgres_api;
mod rollup;
mod sqlite;
mod sqlite_api;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fleetban_policy::{ActiveBan, Facts, JailRule, NewDecision, Origin};
use ipnet::IpNet;
use uuid::Uuid;

pub use api::ApiStore;
pub use feeds::{FeedStore, StoredFeed};
pub use identity::{
    Enrollment, IdentityStore, NewEnrollment, NewToken, Refusal, StoredCa, TokenRecord,
};
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
    #[error("enrollment refused: {0}")]
    Refused(#[from] identity::Refusal),
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
    /// The agent group it belongs to ('' for none).
    pub group: String,
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub info: AgentInfo,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub applied_version: u64,
    /// The firewall's state as last reported; `None` until the agent
    /// reports one.
    pub firewall: Option<FirewallState>,
    /// When the oldest decision it has yet to apply was made; `None` when
    /// it is up to date.
    pub behind_since: Option<DateTime<Utc>>,
}

/// What an agent's firewall enforces, as its heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallState {
    /// Entries the kernel holds for the block list.
    pub enforced: u64,
    /// Drift found and repaired since the agent started.
    pub drift_total: u64,
    /// `nftables`, `ipset` or `log`.
    pub backend: String,
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
    /// Port scope (`tcp/22`); empty: all traffic.
    pub ports: String,
}

/// What correlation needs to know about one target. The store gathers it
/// and records the decisions made from it as one step that no other
/// server process sharing the database interleaves with for the same
/// `lock`: so events of one address arriving at two replicas make one
/// decision, never two, and never none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactsQuery {
    /// Decisions under one key are made one at a time (the target, or the
    /// subnet it escalates to).
    pub lock: String,
    pub target: IpNet,
    /// Count the failures of this address since this time.
    pub failures: Option<(IpAddr, DateTime<Utc>)>,
    /// Count earlier bans of the target (recidive).
    pub history: bool,
    /// Count addresses of this prefix banned since this time (subnet
    /// escalation).
    pub prefix: Option<(IpNet, DateTime<Utc>)>,
}

/// The pure step between facts and decisions.
pub type Decide<'a> = &'a (dyn Fn(&Facts) -> Vec<NewDecision> + Send + Sync);

/// What one feed import changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedPlan {
    pub add: Vec<NewDecision>,
    /// Ids of the feed's bans to revoke.
    pub revoke: Vec<i64>,
}

/// Plans a feed import from the feed's bans now in force.
pub type PlanFeed<'a> = &'a (dyn Fn(&[Decision]) -> FeedPlan + Send + Sync);

/// The last import of a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStatus {
    pub name: String,
    pub last_attempt: DateTime<Utc>,
    pub last_success: Option<DateTime<Utc>>,
    pub entries: u64,
    pub invalid_lines: u64,
    /// Empty when the last attempt succeeded.
    pub last_error: String,
}

/// A change made by any server process on the shared database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The block list reached this version.
    Decisions(u64),
    /// The policies reached this version.
    Policies(u64),
    /// Notifications may have been missed (the listener reconnected): read
    /// the versions again.
    Resync,
}

/// Changes made by other server processes, as they commit.
#[async_trait]
pub trait Changes: Send {
    /// The next change; waits (retrying the database) until there is one.
    async fn next(&mut self) -> Change;
}

/// What the server needs from its database (the REST API's part is
/// [`ApiStore`]).
#[async_trait]
pub trait Store: IdentityStore + ApiStore + FeedStore + Send + Sync + 'static {
    /// Records an agent's introduction (first time or again).
    async fn upsert_agent(&self, agent: &AgentInfo, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Marks an agent as seen, and the block-list version it applied.
    async fn touch_agent(
        &self,
        id: &str,
        now: DateTime<Utc>,
        applied_version: Option<u64>,
    ) -> Result<(), StoreError>;
    /// Marks an agent as seen, with its firewall's state.
    async fn record_firewall(
        &self,
        id: &str,
        now: DateTime<Utc>,
        state: &FirewallState,
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

    /// Gathers the facts of `query`, runs `decide` on them and records the
    /// decisions it returns, serialised per `query.lock` across every server
    /// process of the database.
    async fn decide(
        &self,
        query: &FactsQuery,
        now: DateTime<Utc>,
        decide: Decide<'_>,
    ) -> Result<Vec<Decision>, StoreError>;
    /// Imports feed `feed`: `plan` sees the feed's bans in force (creator
    /// `feed:NAME`) and says what to add and revoke; all of it is recorded
    /// at once, one import of a feed at a time across server processes.
    /// `NotFound` (and nothing recorded) when the feed was added through
    /// the API and has been removed since.
    async fn sync_feed(
        &self,
        feed: &str,
        now: DateTime<Utc>,
        plan: PlanFeed<'_>,
    ) -> Result<Vec<Decision>, StoreError>;
    async fn put_feed_status(&self, status: &FeedStatus) -> Result<(), StoreError>;
    async fn feed_statuses(&self) -> Result<Vec<FeedStatus>, StoreError>;

    /// Every jail rule, by group then jail.
    async fn jail_rules(&self) -> Result<Vec<JailRule>, StoreError>;
    /// Creates or replaces the rule of `(rule.group, rule.jail)`; returns
    /// the new policy version.
    async fn put_jail_rule(
        &self,
        rule: &JailRule,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Removes a rule; returns the new policy version.
    async fn delete_jail_rule(
        &self,
        group: &str,
        jail: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// The fleet's correlation rules (TOML of a `[policy]` section); `None`
    /// before the first start seeded them.
    async fn fleet_rules(&self) -> Result<Option<String>, StoreError>;
    /// Replaces the correlation rules; returns the new policy version.
    async fn set_fleet_rules(
        &self,
        rules: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Stores the configured policies if the database has none yet (the
    /// first start of the first server); returns whether it did.
    async fn seed_policies(
        &self,
        rules: &str,
        jails: &[JailRule],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// The policies' version (bumped by every change).
    async fn policy_version(&self) -> Result<u64, StoreError>;

    /// Changes committed by other server processes, when the database is
    /// shared (`None`: this process is the only writer).
    async fn changes(&self) -> Result<Option<Box<dyn Changes>>, StoreError> {
        Ok(None)
    }
}

/// Facts from what the store counted.
fn facts(
    active: Vec<Decision>,
    previous_bans: u32,
    failures: (u32, u32),
    banned_in_prefix: Option<u32>,
) -> Facts {
    Facts {
        active: active
            .into_iter()
            .map(|d| ActiveBan {
                target: d.target,
                expires_at: d.expires_at,
                ports: d.ports,
            })
            .collect(),
        previous_bans,
        hosts: failures.0,
        failures: failures.1,
        // Counting the ban being decided.
        banned_in_prefix: banned_in_prefix.map_or(0, |n| n.saturating_add(1)),
    }
}

fn seconds(d: Option<chrono::Duration>) -> Option<i64> {
    d.map(|d| d.num_seconds())
}

fn jail_rule(
    group: String,
    jail: String,
    enabled: bool,
    maxretry: Option<i64>,
    findtime_s: Option<i64>,
    bantime_s: Option<i64>,
) -> Result<JailRule, StoreError> {
    let maxretry = maxretry
        .map(|m| u32::try_from(m).map_err(|_| StoreError::Corrupt(format!("maxretry {m}"))))
        .transpose()?;
    Ok(JailRule {
        group,
        jail,
        enabled,
        maxretry,
        findtime: findtime_s.map(chrono::Duration::seconds),
        bantime: bantime_s.map(chrono::Duration::seconds),
    })
}

/// The creator of a feed's decisions.
pub fn feed_creator(feed: &str) -> String {
    format!("feed:{feed}")
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

/// A count as stored (BIGINT), saturating.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An agent's firewall columns: all NULL until it first reports.
fn firewall_state(
    enforced: Option<i64>,
    drift_total: Option<i64>,
    backend: Option<String>,
) -> Result<Option<FirewallState>, StoreError> {
    let (Some(enforced), Some(drift_total), Some(backend)) = (enforced, drift_total, backend)
    else {
        return Ok(None);
    };
    let n = |v: i64, what: &str| {
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what} {v}")))
    };
    Ok(Some(FirewallState {
        enforced: n(enforced, "enforced count")?,
        drift_total: n(drift_total, "drift count")?,
        backend,
    }))
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
