//! What the store keeps about agent identity: the fleet's certificate
//! authority, enrollment tokens (hashed) and each agent's credential (the
//! SHA-256 of its client certificate). Implemented by both stores.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;

/// Why an enrollment was refused. The messages are what the agent sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown enrollment token")]
    UnknownToken,
    #[error("enrollment token {0} has expired")]
    ExpiredToken(String),
    #[error("enrollment token {0} is used up")]
    UsedUpToken(String),
    #[error("enrollment token {0} has been revoked")]
    RevokedToken(String),
    #[error("agent {0:?} is already enrolled; revoke it first (fleetban-server agent revoke {0})")]
    AlreadyEnrolled(String),
}

/// The fleet's CA, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A token as stored: its secret only as a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Short public name of the token, for logs and listings.
    pub id: String,
    pub secret_sha256: String,
    pub group: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub max_uses: u32,
}

/// An agent exchanging a token for its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnrollment {
    pub token_sha256: String,
    pub agent_id: String,
    pub hostname: String,
    /// SHA-256 (hex) of the DER client certificate issued to the agent.
    pub cert_sha256: String,
}

/// An agent's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub agent_id: String,
    pub cert_sha256: String,
    pub group: Option<String>,
    pub token_id: String,
    pub enrolled_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub group: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub max_uses: u32,
    pub uses: u32,
    /// When it was revoked; a revoked token enrolls no more agents.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// The fleet's CA, if one was created.
    async fn certificate_authority(&self) -> Result<Option<StoredCa>, StoreError>;
    /// Stores `ca` unless a CA exists already; returns the CA in force (so
    /// replicas starting at once agree on one).
    async fn init_certificate_authority(
        &self,
        ca: &StoredCa,
        now: DateTime<Utc>,
    ) -> Result<StoredCa, StoreError>;
    async fn create_token(&self, token: &NewToken, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Uses the token once and records the agent's credential, atomically:
    /// a refused enrollment uses nothing. An agent id may be enrolled again
    /// only after it was revoked.
    async fn enroll(
        &self,
        enrollment: &NewEnrollment,
        now: DateTime<Utc>,
    ) -> Result<Enrollment, StoreError>;
    /// The credential of a client certificate, revoked or not.
    async fn credential(&self, cert_sha256: &str) -> Result<Option<Enrollment>, StoreError>;
    /// Revokes an agent's credential (`NotFound` if it never enrolled); a
    /// second revocation keeps the first time.
    async fn revoke_agent(
        &self,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Enrollment, StoreError>;
    /// Ids of every revoked agent.
    async fn revoked_agents(&self) -> Result<Vec<String>, StoreError>;
    /// Every enrollment, by agent id.
    async fn enrollments(&self) -> Result<Vec<Enrollment>, StoreError>;
    /// Every token, newest first.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes a token (`NotFound` if there is none of that id); a second
    /// revocation keeps the first time. Agents it enrolled stay enrolled.
    async fn revoke_token(&self, id: &str, now: DateTime<Utc>) -> Result<TokenRecord, StoreError>;
}
