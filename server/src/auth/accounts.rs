//! The auth use cases: log in, refresh, log out, authenticate a bearer
//! token or a bouncer key, create users, tokens and bouncer keys. Every
//! change is written to the audit log with its actor.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use tracing::{info, warn};
use uuid::Uuid;

use super::jwt::{Claims, Keys, TokenError, ISSUER};
use super::password::{self, PasswordError};
use super::scope::{Principal, Role, Scope};
use super::secret::{self, API_TOKEN_PREFIX, BOUNCER_KEY_PREFIX, REFRESH_TOKEN_PREFIX};
use super::throttle::{Limits, Throttle};
use crate::service::Clock;
use crate::store::api::{ApiTokenRecord, AuditEntry, BouncerRecord, Refresh, SessionRecord};
use crate::store::{Store, StoreError};

/// Name of the JWT signing key in `server_secrets`.
const JWT_SECRET: &str = "jwt_hs256";

/// Lifetimes and throttling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthConfig {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub per_user: Limits,
    pub per_source: Limits,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_ttl: Duration::minutes(15),
            refresh_ttl: Duration::days(7),
            per_user: Limits {
                max_failures: 5,
                window: Duration::minutes(15),
                lockout: Duration::minutes(15),
            },
            per_source: Limits {
                max_failures: 20,
                window: Duration::minutes(15),
                lockout: Duration::minutes(15),
            },
        }
    }
}

/// An auth step failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("too many failed logins; retry in {} s", .retry_after.num_seconds().max(1))]
    Throttled { retry_after: Duration },
    #[error("no credentials: send Authorization: Bearer <token>")]
    Missing,
    #[error("the access token has expired")]
    Expired,
    #[error("the token is invalid, revoked or expired")]
    InvalidToken,
    #[error("the refresh token is invalid, revoked or expired")]
    InvalidRefresh,
    #[error("this needs a logged-in user, not an API token")]
    NotAUser,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a login or a refresh hands out.
#[derive(Debug, Clone)]
pub struct LoginTokens {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub user: String,
    pub role: Role,
}

/// An API token just created: the secret is shown this once.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub record: ApiTokenRecord,
    pub secret: String,
}

pub struct Accounts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: Keys,
    config: AuthConfig,
    users: Mutex<Throttle>,
    sources: Mutex<Throttle>,
    /// Verified against when the user does not exist, so a login takes as
    /// long whether or not the name is known.
    decoy_hash: String,
}

const THROTTLE_CAPACITY: usize = 100_000;

/// Valid user, token and bouncer names: 1 to 64 of letters, digits, `-_.@`.
pub fn validate_name(what: &str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "{what} name {name:?}: expected 1 to 64 characters among letters, digits, '-', '_', '.' and '@'"
        )))
    }
}

impl Accounts {
    /// Loads the JWT signing key, generating and storing it on the first
    /// start.
    pub async fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: AuthConfig,
    ) -> Result<Self, AuthError> {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let stored = store
            .secret_or_init(JWT_SECRET, &STANDARD.encode(key), clock.now())
            .await?;
        let key = STANDARD
            .decode(stored.as_bytes())
            .ok()
            .filter(|k| k.len() >= 32)
            .ok_or_else(|| StoreError::Corrupt("JWT signing key".to_owned()))?;
        let decoy_hash = password::hash(&secret::generate(""))?;
        Ok(Accounts {
            store,
            clock,
            keys: Keys::new(&key),
            config,
            users: Mutex::new(Throttle::new(config.per_user, THROTTLE_CAPACITY)),
            sources: Mutex::new(Throttle::new(config.per_source, THROTTLE_CAPACITY)),
            decoy_hash,
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Appends to the audit log; a failure is logged, not returned, once the
    /// change itself is done.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
        source: Option<IpAddr>,
    ) {
        let entry = AuditEntry {
            id: 0,
            at: self.clock.now(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_string(),
            source: source.map(|s| s.to_string()),
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            warn!(error = %e, action, "cannot write the audit log");
        }
    }

    fn throttled(&self, user: &str, source: Option<IpAddr>) -> Result<(), AuthError> {
        let now = self.clock.now();
        let lock = |m: &Mutex<Throttle>, key: &str| -> Result<(), Duration> {
            match m.lock() {
                Ok(t) => t.check(key, now),
                Err(p) => p.into_inner().check(key, now),
            }
        };
        let by_user = lock(&self.users, user);
        let by_source = source.map_or(Ok(()), |s| lock(&self.sources, &s.to_string()));
        match (by_user, by_source) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(a), Err(b)) => Err(AuthError::Throttled {
                retry_after: a.max(b),
            }),
            (Err(d), _) | (_, Err(d)) => Err(AuthError::Throttled { retry_after: d }),
        }
    }

    fn record_attempt(&self, user: &str, source: Option<IpAddr>, ok: bool) {
        let now = self.clock.now();
        let apply = |m: &Mutex<Throttle>, key: &str| {
            let mut t = match m.lock() {
                Ok(t) => t,
                Err(p) => p.into_inner(),
            };
            if ok {
                t.success(key);
            } else {
                t.failure(key, now);
            }
        };
        apply(&self.users, user);
        if let Some(s) = source {
            apply(&self.sources, &s.to_string());
        }
    }

    pub async fn login(
        &self,
        name: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<LoginTokens, AuthError> {
        self.throttled(name, source)?;
        let user = self.store.user_by_name(name).await?;
        let hash = user
            .as_ref()
            .map_or_else(|| self.decoy_hash.clone(), |u| u.password_hash.clone());
        let pw = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || password::verify(&pw, &hash))
            .await
            .unwrap_or(false);
        let user = match user {
            Some(u) if matches && u.disabled_at.is_none() => u,
            _ => {
                self.record_attempt(name, source, false);
                warn!(user = name, source = ?source, "failed login");
                self.audit(
                    &format!("user:{name}"),
                    "auth.login_failed",
                    name,
                    serde_json::json!({}),
                    source,
                )
                .await;
                return Err(AuthError::BadCredentials);
            }
        };
        self.record_attempt(name, source, true);
        let role = Role::parse(&user.role)
            .ok_or_else(|| StoreError::Corrupt(format!("role {:?}", user.role)))?;
        let now = self.clock.now();
        let session = SessionRecord {
            id: Uuid::new_v4(),
            user_id: user.id,
            created_at: now,
            expires_at: now + self.config.refresh_ttl,
            revoked_at: None,
        };
        let refresh = secret::generate(REFRESH_TOKEN_PREFIX);
        self.store
            .create_session(&session, &secret::digest(&refresh))
            .await?;
        info!(user = name, "login");
        self.audit(
            &format!("user:{name}"),
            "auth.login",
            name,
            serde_json::json!({ "session": session.id.to_string() }),
            source,
        )
        .await;
        self.tokens(&user.name, user.id, role, &session, refresh, now)
    }

    fn tokens(
        &self,
        name: &str,
        uid: i64,
        role: Role,
        session: &SessionRecord,
        refresh: String,
        now: DateTime<Utc>,
    ) -> Result<LoginTokens, AuthError> {
        let exp = (now + self.config.access_ttl).min(session.expires_at);
        let access = self
            .issue_access(name, uid, role, session.id, now, exp)
            .map_err(|_| AuthError::InvalidToken)?;
        Ok(LoginTokens {
            access_token: access,
            access_expires_at: exp,
            refresh_token: refresh,
            refresh_expires_at: session.expires_at,
            user: name.to_owned(),
            role,
        })
    }

    /// Signs an access token; public so tests can make expired ones.
    pub fn issue_access(
        &self,
        name: &str,
        uid: i64,
        role: Role,
        session: Uuid,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<String, TokenError> {
        self.keys.sign(&Claims {
            sub: name.to_owned(),
            uid,
            role: role.as_str().to_owned(),
            sid: session.to_string(),
            iat: now.timestamp(),
            exp: expires.timestamp(),
            iss: ISSUER.to_owned(),
        })
    }

    /// Swaps a refresh token for new tokens. Replaying a refresh token that
    /// was already swapped revokes its session.
    pub async fn refresh(&self, token: &str) -> Result<LoginTokens, AuthError> {
        let now = self.clock.now();
        let new_refresh = secret::generate(REFRESH_TOKEN_PREFIX);
        let session = match self
            .store
            .rotate_refresh(&secret::digest(token), &secret::digest(&new_refresh), now)
            .await?
        {
            Refresh::Rotated(s) => s,
            Refresh::Reused(s) => {
                warn!(session = %s.id, "refresh token replayed; session revoked");
                self.audit(
                    "fleetban",
                    "auth.session_revoked",
                    &s.id.to_string(),
                    serde_json::json!({ "reason": "refresh token replayed" }),
                    None,
                )
                .await;
                return Err(AuthError::InvalidRefresh);
            }
            Refresh::Unknown => return Err(AuthError::InvalidRefresh),
        };
        let user = self
            .store
            .user_by_id(session.user_id)
            .await?
            .filter(|u| u.disabled_at.is_none())
            .ok_or(AuthError::InvalidRefresh)?;
        let role = Role::parse(&user.role).ok_or(AuthError::InvalidRefresh)?;
        self.tokens(&user.name, user.id, role, &session, new_refresh, now)
    }

    /// Ends the session of `principal`: its refresh token and every access
    /// token it issued stop working.
    pub async fn logout(
        &self,
        principal: &Principal,
        source: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let Principal::User { session, name, .. } = principal else {
            return Err(AuthError::NotAUser);
        };
        self.store
            .revoke_session(*session, self.clock.now())
            .await?;
        self.audit(
            &principal.actor(),
            "auth.logout",
            name,
            serde_json::json!({ "session": session.to_string() }),
            source,
        )
        .await;
        Ok(())
    }

    /// Who sent `Authorization: Bearer <token>`: an API token (`fbt_…`) or
    /// a JWT access token of a live session.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, AuthError> {
        let now = self.clock.now();
        if bearer.starts_with(API_TOKEN_PREFIX) {
            let t = self
                .store
                .api_token_by_hash(&secret::digest(bearer))
                .await?
                .filter(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now))
                .ok_or(AuthError::InvalidToken)?;
            // Recorded at most once a minute, so busy tools do not turn
            // every read into a write.
            if t.last_used_at
                .is_none_or(|u| now - u >= Duration::minutes(1))
            {
                if let Err(e) = self.store.api_token_used(t.id, now).await {
                    warn!(error = %e, "cannot record token use");
                }
            }
            return Ok(Principal::Token {
                id: t.id,
                name: t.name,
                scopes: t.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            });
        }
        let claims = self.keys.verify(bearer, now).map_err(|e| match e {
            TokenError::Expired => AuthError::Expired,
            TokenError::Invalid => AuthError::InvalidToken,
        })?;
        let sid = Uuid::parse_str(&claims.sid).map_err(|_| AuthError::InvalidToken)?;
        let session = self
            .store
            .session(sid)
            .await?
            .filter(|s| s.revoked_at.is_none() && s.expires_at > now && s.user_id == claims.uid)
            .ok_or(AuthError::InvalidToken)?;
        // The role is read afresh, so a changed role applies at once.
        let user = self
            .store
            .user_by_id(session.user_id)
            .await?
            .filter(|u| u.disabled_at.is_none())
            .ok_or(AuthError::InvalidToken)?;
        let role = Role::parse(&user.role).ok_or(AuthError::InvalidToken)?;
        Ok(Principal::User {
            id: user.id,
            name: user.name,
            role,
            session: sid,
        })
    }

    /// Adds a user; `actor` is who asked (`cli` from the command line).
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        role: Role,
        actor: &str,
        source: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        validate_name("user", name)?;
        password::check_strength(password)?;
        let pw = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
            .await
            .map_err(|e| AuthError::Invalid(format!("cannot hash the password: {e}")))??;
        self.store
            .create_user(name, &hash, role.as_str(), self.clock.now())
            .await?;
        self.audit(
            actor,
            "user.create",
            name,
            serde_json::json!({ "role": role.as_str() }),
            source,
        )
        .await;
        Ok(())
    }

    pub async fn set_password(
        &self,
        name: &str,
        password: &str,
        actor: &str,
        source: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let pw = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
            .await
            .map_err(|e| AuthError::Invalid(format!("cannot hash the password: {e}")))??;
        self.store.set_password(name, &hash).await?;
        self.audit(actor, "user.password", name, serde_json::json!({}), source)
            .await;
        Ok(())
    }

    pub async fn disable_user(
        &self,
        name: &str,
        actor: &str,
        source: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        self.store.disable_user(name, self.clock.now()).await?;
        self.audit(actor, "user.disable", name, serde_json::json!({}), source)
            .await;
        Ok(())
    }

    /// Creates an API token with `scopes` that every token may hold.
    pub async fn create_token(
        &self,
        name: &str,
        scopes: &[Scope],
        expires_at: Option<DateTime<Utc>>,
        actor: &str,
        source: Option<IpAddr>,
    ) -> Result<NewToken, AuthError> {
        validate_name("token", name)?;
        if scopes.is_empty() {
            return Err(AuthError::Invalid(
                "a token needs at least one scope".into(),
            ));
        }
        if let Some(s) = scopes.iter().find(|s| !s.grantable_to_tokens()) {
            return Err(AuthError::Invalid(format!(
                "scope {s} cannot be given to a token"
            )));
        }
        let now = self.clock.now();
        if expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::Invalid("expires_at is in the past".into()));
        }
        let mut scopes: Vec<Scope> = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let secret = secret::generate(API_TOKEN_PREFIX);
        let record = ApiTokenRecord {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_by: actor.to_owned(),
            created_at: now,
            expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        self.store
            .create_api_token(&record, &secret::digest(&secret))
            .await?;
        self.audit(
            actor,
            "token.create",
            &record.id.to_string(),
            serde_json::json!({ "name": name, "scopes": record.scopes, "expires_at": expires_at }),
            source,
        )
        .await;
        Ok(NewToken { record, secret })
    }

    pub async fn revoke_token(
        &self,
        id: Uuid,
        actor: &str,
        source: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        self.store.revoke_api_token(id, self.clock.now()).await?;
        self.audit(
            actor,
            "token.revoke",
            &id.to_string(),
            serde_json::json!({}),
            source,
        )
        .await;
        Ok(())
    }

    /// Creates a CrowdSec bouncer key; returns the key, shown this once.
    pub async fn add_bouncer(
        &self,
        name: &str,
        actor: &str,
        source: Option<IpAddr>,
    ) -> Result<String, AuthError> {
        validate_name("bouncer", name)?;
        let key = secret::generate(BOUNCER_KEY_PREFIX);
        self.store
            .create_bouncer(name, &secret::digest(&key), self.clock.now())
            .await?;
        self.audit(actor, "bouncer.create", name, serde_json::json!({}), source)
            .await;
        Ok(key)
    }

    pub async fn bouncer(&self, key: &str) -> Result<BouncerRecord, AuthError> {
        self.store
            .bouncer_by_key_hash(&secret::digest(key))
            .await?
            .ok_or(AuthError::InvalidToken)
    }
}
