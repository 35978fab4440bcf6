//! What the REST API needs from the database beyond the [`Store`](super::Store)
//! of the agents' side: users, sessions, API tokens, bouncer keys, the audit
//! log, server secrets, and filtered, paginated reads of decisions and
//! events. Tokens and keys are only ever given here as hashes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fleetban_policy::Origin;
use ipnet::IpNet;
use uuid::Uuid;

use super::{Decision, StoreError};

/// A user of the API and console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// One login of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user_id: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// The token was current: it is replaced by the new one.
    Rotated(SessionRecord),
    /// The token was the one before the current: someone replays it, so the
    /// session was revoked.
    Reused(SessionRecord),
    /// No live session has this token.
    Unknown,
}

/// A token for tools, with scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A CrowdSec bouncer allowed to pull the block list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BouncerRecord {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_pull_at: Option<DateTime<Utc>>,
    pub last_version: u64,
}

/// One change made through the API or the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `user:NAME`, `token:NAME`, `cli`, `bouncer:NAME`.
    pub actor: String,
    /// `decision.create`, `user.create`, `auth.login`, …
    pub action: String,
    pub target: String,
    /// JSON text with the details of the change.
    pub detail: String,
    /// The client's address, when the change came over the network.
    pub source: Option<String>,
}

/// Where a decision stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionStatus {
    Active,
    Expired,
    Revoked,
}

/// Newest first or oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

/// Where a page starts: strictly after this (time, id) in the page's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub after: Option<Cursor>,
    pub limit: u32,
    pub order: Order,
}

/// Filters of the decision list; every one given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionFilter {
    /// Bans whose target overlaps this address or prefix (contains it or
    /// lies inside it).
    pub target: Option<IpNet>,
    pub origin: Option<Origin>,
    pub jail: Option<String>,
    /// Bans echoed from this agent's local bans.
    pub agent: Option<String>,
    /// `fleet` or `group:NAME`.
    pub scope: Option<String>,
    pub status: Option<DecisionStatus>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// A ban with what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    pub decision: Decision,
    /// The revocation that ended it, if any.
    pub revocation: Option<Decision>,
}

impl DecisionRow {
    pub fn status(&self, now: DateTime<Utc>) -> DecisionStatus {
        if self.revocation.is_some() {
            DecisionStatus::Revoked
        } else if self.decision.expires_at.is_some_and(|e| e <= now) {
            DecisionStatus::Expired
        } else {
            DecisionStatus::Active
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Events from this address or from inside this prefix.
    pub ip: Option<IpNet>,
    pub jail: Option<String>,
    pub agent: Option<String>,
    /// Happened at or after.
    pub since: Option<DateTime<Utc>>,
    /// Happened before.
    pub until: Option<DateTime<Utc>>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: Uuid,
    pub agent_id: String,
    pub jail: String,
    pub ip: std::net::IpAddr,
    pub user: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

/// What events are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKey {
    Ip,
    Jail,
    Agent,
}

/// Events of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventGroup {
    pub key: String,
    pub count: u64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

/// What a time series counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    Events,
    Decisions,
}

/// One bucket of a time series: things that happened in `[start, start + step)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub count: u64,
}

#[async_trait]
pub trait ApiStore: Send + Sync + 'static {
    /// Adds a user; `AlreadyExists` when the name is taken.
    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        role: &str,
        now: DateTime<Utc>,
    ) -> Result<UserRecord, StoreError>;
    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError>;
    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Disables a user and revokes their sessions; `NotFound` when unknown.
    async fn disable_user(&self, name: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn set_password(&self, name: &str, password_hash: &str) -> Result<(), StoreError>;
    /// `NotFound` when unknown.
    async fn set_role(&self, name: &str, role: &str) -> Result<(), StoreError>;

    async fn create_session(
        &self,
        session: &SessionRecord,
        refresh_hash: &str,
    ) -> Result<(), StoreError>;
    async fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError>;
    /// Swaps a live session's refresh token `old_hash` for `new_hash`.
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Refresh, StoreError>;
    async fn revoke_session(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError>;

    async fn create_api_token(
        &self,
        token: &ApiTokenRecord,
        token_hash: &str,
    ) -> Result<(), StoreError>;
    async fn api_token_by_hash(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError>;
    async fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError>;
    /// `NotFound` when unknown or already revoked.
    async fn revoke_api_token(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn api_token_used(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// `AlreadyExists` when the name is taken.
    async fn create_bouncer(
        &self,
        name: &str,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<BouncerRecord, StoreError>;
    /// A bouncer that is not revoked.
    async fn bouncer_by_key_hash(&self, hash: &str) -> Result<Option<BouncerRecord>, StoreError>;
    async fn bouncers(&self) -> Result<Vec<BouncerRecord>, StoreError>;
    async fn revoke_bouncer(&self, name: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn bouncer_pulled(
        &self,
        name: &str,
        version: u64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Appends to the audit log; `entry.id` is ignored.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Entries in the page's order; the cursor id is the entry id.
    async fn audit_log(
        &self,
        actor: Option<&str>,
        action: Option<&str>,
        page: &Page,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// The secret stored under `name`, storing `candidate` first if there is
    /// none; every replica gets the first one stored.
    async fn secret_or_init(
        &self,
        name: &str,
        candidate: &str,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError>;

    /// Bans (not revocations) matching `filter`, status taken at `now`; the
    /// cursor id is the decision id.
    async fn list_decisions(
        &self,
        filter: &DecisionFilter,
        now: DateTime<Utc>,
        page: &Page,
    ) -> Result<Vec<DecisionRow>, StoreError>;
    async fn decision(&self, id: i64) -> Result<Option<DecisionRow>, StoreError>;
    /// Events matching `filter`; the cursor id is the event id.
    async fn list_events(
        &self,
        filter: &EventFilter,
        page: &Page,
    ) -> Result<Vec<EventRecord>, StoreError>;
    /// Counts of matching events by `key`, most first.
    async fn event_groups(
        &self,
        filter: &EventFilter,
        key: EventKey,
        limit: u32,
    ) -> Result<Vec<EventGroup>, StoreError>;
    /// Non-empty buckets of `step` seconds in `[since, until)`, oldest first.
    async fn series(
        &self,
        series: Series,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        step_secs: i64,
    ) -> Result<Vec<Bucket>, StoreError>;
}
