//! Agent identity use cases: enrollment tokens, enrollment, authenticating
//! a stream by its client certificate, and revocation. Independent of gRPC,
//! so the REST API can revoke agents through the same calls.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use fleetban_proto::identity::EnrollmentToken;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Clock;
use crate::identity::{random_secret, sha256_hex, Authority, IdentityError};
use crate::store::{
    Enrollment, NewEnrollment, NewToken, Refusal, Store, StoreError, StoredCa, TokenRecord,
};

/// An identity use case failed. Messages are what a client sees, except for
/// store and certificate failures, which stay in the server's log.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(Refusal),
    #[error("no client certificate: enroll this agent first (fleetban-agent enroll --token …)")]
    NoCertificate,
    #[error("client certificate unknown to this fleet: enroll this agent again")]
    UnknownCertificate,
    #[error("agent {0:?} is revoked")]
    Revoked(String),
    #[error("this certificate belongs to agent {actual:?}; it cannot connect as {claimed:?}")]
    WrongAgent { claimed: String, actual: String },
    #[error("agent {0:?} is not enrolled")]
    NotEnrolled(String),
    #[error("enrollment needs TLS; this server runs in plaintext mode")]
    Plaintext,
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(r) => AuthError::Refused(r),
            e => AuthError::Store(e),
        }
    }
}

/// What an agent gets for its token.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub agent_id: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub group: Option<String>,
}

/// A token just created: the only time its secret is known.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub token: EnrollmentToken,
    pub id: String,
    pub expires_at: DateTime<Utc>,
    pub max_uses: u32,
    pub group: Option<String>,
}

/// The CA in force: the operator's (`ca_cert`/`ca_key` files) if given,
/// else the one in the database, created there on first start.
pub async fn authority(
    store: &dyn Store,
    operator: Option<StoredCa>,
) -> Result<Authority, AuthError> {
    if let Some(ca) = operator {
        return Ok(Authority::load(&ca)?);
    }
    let stored = match store.certificate_authority().await? {
        Some(ca) => ca,
        None => {
            let fresh = Authority::generate()?;
            let ca = store.init_certificate_authority(&fresh, Utc::now()).await?;
            if ca == fresh {
                info!("new certificate authority created");
            }
            ca
        }
    };
    Ok(Authority::load(&stored)?)
}

/// Identity for one server process.
pub struct Identities {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// `None`: plaintext mode, streams are not authenticated.
    ca: Option<Arc<Authority>>,
    /// Agents revoked; sessions watch it and end when their agent joins it.
    revoked: watch::Sender<Arc<HashSet<String>>>,
}

impl Identities {
    pub async fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        ca: Option<Arc<Authority>>,
    ) -> Result<Self, StoreError> {
        let revoked: HashSet<String> = store.revoked_agents().await?.into_iter().collect();
        Ok(Identities {
            store,
            clock,
            ca,
            revoked: watch::channel(Arc::new(revoked)).0,
        })
    }

    /// Whether every stream must present an enrolled client certificate.
    pub fn requires_certificates(&self) -> bool {
        self.ca.is_some()
    }

    pub fn authority(&self) -> Option<&Authority> {
        self.ca.as_deref()
    }

    /// A new token, valid for `ttl` and `uses` enrollments, placing agents
    /// in `group`.
    pub async fn create_token(
        &self,
        ttl: chrono::Duration,
        uses: u32,
        group: Option<String>,
    ) -> Result<CreatedToken, AuthError> {
        let ca = self.ca.as_ref().ok_or(AuthError::Plaintext)?;
        if uses == 0 {
            return Err(AuthError::Invalid("a token needs at least one use".into()));
        }
        if ttl <= chrono::Duration::zero() {
            return Err(AuthError::Invalid(
                "a token needs a positive lifetime".into(),
            ));
        }
        if let Some(g) = &group {
            if !valid_name(g) {
                return Err(AuthError::Invalid(format!(
                    "group {g:?}: expected 1 to 128 characters among letters, digits, '-', '_' and '.'"
                )));
            }
        }
        let token = EnrollmentToken {
            secret: random_secret(),
            ca_fingerprint: ca.fingerprint().to_owned(),
        };
        let hash = sha256_hex(token.secret.as_bytes());
        let now = self.clock.now();
        let new = NewToken {
            id: hash[..12].to_owned(),
            secret_sha256: hash,
            group: group.clone(),
            expires_at: now + ttl,
            max_uses: uses,
        };
        self.store.create_token(&new, now).await?;
        info!(token = %new.id, uses, expires_at = %new.expires_at, "enrollment token created");
        Ok(CreatedToken {
            token,
            id: new.id,
            expires_at: new.expires_at,
            max_uses: uses,
            group,
        })
    }

    /// Exchanges a token and a CSR for a client certificate bound to
    /// `agent_id`.
    pub async fn enroll(
        &self,
        token: &str,
        agent_id: &str,
        hostname: &str,
        csr_pem: &str,
    ) -> Result<Enrolled, AuthError> {
        let ca = self.ca.as_ref().ok_or(AuthError::Plaintext)?;
        let token = EnrollmentToken::parse(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if token.ca_fingerprint != ca.fingerprint() {
            // Its secret may still be right; the agent checked the CA already.
            warn!(agent = %agent_id, "token names another CA");
        }
        if !valid_name(agent_id) {
            return Err(AuthError::Invalid(format!(
                "agent id {agent_id:?}: expected 1 to 128 characters among letters, digits, '-', '_' and '.'"
            )));
        }
        let issued = ca.sign_agent(agent_id, csr_pem).map_err(|e| match e {
            IdentityError::BadCsr(m) => {
                AuthError::Invalid(format!("certificate signing request: {m}"))
            }
            e => AuthError::Identity(e),
        })?;
        let enrollment = self
            .store
            .enroll(
                &NewEnrollment {
                    token_sha256: sha256_hex(token.secret.as_bytes()),
                    agent_id: agent_id.to_owned(),
                    hostname: hostname.chars().take(255).collect(),
                    cert_sha256: issued.sha256,
                },
                self.clock.now(),
            )
            .await?;
        self.revoked.send_if_modified(|set| {
            if set.contains(agent_id) {
                let mut s = (**set).clone();
                s.remove(agent_id);
                *set = Arc::new(s);
                true
            } else {
                false
            }
        });
        info!(agent = %agent_id, token = %enrollment.token_id, group = ?enrollment.group, "agent enrolled");
        Ok(Enrolled {
            agent_id: enrollment.agent_id,
            certificate_pem: issued.pem,
            ca_pem: ca.cert_pem().to_owned(),
            group: enrollment.group,
        })
    }

    /// The agent a client certificate (DER) belongs to, and the group it
    /// was enrolled in.
    pub async fn authenticate(
        &self,
        cert_der: Option<&[u8]>,
    ) -> Result<(String, Option<String>), AuthError> {
        let der = cert_der.ok_or(AuthError::NoCertificate)?;
        let e = self
            .store
            .credential(&sha256_hex(der))
            .await?
            .ok_or(AuthError::UnknownCertificate)?;
        if e.revoked_at.is_some() {
            return Err(AuthError::Revoked(e.agent_id));
        }
        Ok((e.agent_id, e.group))
    }

    /// Revokes an enrollment token: no agent enrolls with it from then on
    /// (on every replica, as enrollment reads the token in the database);
    /// agents it already enrolled stay.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenRecord, AuthError> {
        let t = self.store.revoke_token(id, self.clock.now()).await?;
        info!(token = %id, "enrollment token revoked");
        Ok(t)
    }

    /// Revokes an agent: its open stream on this server ends at once, on
    /// other replicas within a second, and it is refused from then on.
    pub async fn revoke_agent(&self, agent_id: &str) -> Result<Enrollment, AuthError> {
        let e = self
            .store
            .revoke_agent(agent_id, self.clock.now())
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => AuthError::NotEnrolled(agent_id.to_owned()),
                e => e.into(),
            })?;
        self.revoked.send_if_modified(|set| {
            if set.contains(agent_id) {
                false
            } else {
                let mut s = (**set).clone();
                s.insert(agent_id.to_owned());
                *set = Arc::new(s);
                true
            }
        });
        info!(agent = %agent_id, "agent revoked");
        Ok(e)
    }

    /// Reads revocations made elsewhere (the command line, another replica).
    pub async fn refresh_revocations(&self) -> Result<(), AuthError> {
        let now: HashSet<String> = self.store.revoked_agents().await?.into_iter().collect();
        self.revoked.send_if_modified(|set| {
            if **set == now {
                false
            } else {
                for a in now.difference(set) {
                    info!(agent = %a, "agent revoked elsewhere");
                }
                *set = Arc::new(now);
                true
            }
        });
        Ok(())
    }

    pub fn watch_revoked(&self) -> watch::Receiver<Arc<HashSet<String>>> {
        self.revoked.subscribe()
    }
}

fn valid_name(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
