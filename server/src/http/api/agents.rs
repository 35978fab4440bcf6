//! Agent identity: revoking an agent and the enrollment tokens new agents
//! join with. The work is done by `Identities`, the same calls the gRPC
//! server and the command line use, so a revoke here ends the agent's open
//! stream at once.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, Auth, Source};
use super::ApiState;
use crate::auth::Scope;
use crate::service::identity::AuthError as IdentityError;
use crate::store::{Enrollment, TokenRecord};

/// Identity failures in the API's error shape.
fn identity_error(e: IdentityError) -> ApiError {
    match e {
        IdentityError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", m),
        IdentityError::NotEnrolled(a) => {
            ApiError::not_found(format!("agent {a:?} is not enrolled"))
        }
        IdentityError::Plaintext => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "enrollment needs TLS; this server runs in plaintext mode",
        ),
        IdentityError::Refused(r) => ApiError::new(StatusCode::CONFLICT, "conflict", r.to_string()),
        IdentityError::Store(s) => s.into(),
        other => ApiError::internal("identity error", &other),
    }
}

/// Whether `id` could name an agent (enrollment allows 1 to 128 letters,
/// digits, '-', '_' and '.'); others are not looked up.
pub fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// An agent's enrollment.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentView {
    pub agent_id: String,
    /// The agent group its token placed it in.
    pub group: Option<String>,
    /// The enrollment token it used.
    pub token_id: String,
    pub enrolled_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<Enrollment> for EnrollmentView {
    fn from(e: Enrollment) -> Self {
        EnrollmentView {
            agent_id: e.agent_id,
            group: e.group,
            token_id: e.token_id,
            enrolled_at: e.enrolled_at,
            revoked_at: e.revoked_at,
        }
    }
}

/// Revoke an enrolled agent: its open stream ends at once (on other
/// replicas within a second) and its certificate is refused from then on;
/// it needs a new token to come back (needs `agents:write`).
#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "the agent's id")),
    responses((status = 200, body = EnrollmentView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<EnrollmentView>> {
    let actor = auth.require(Scope::AgentsWrite)?.actor();
    if !plausible_id(&id) {
        return Err(ApiError::not_found(format!("agent {id:?} is not enrolled")));
    }
    let e = state
        .identities
        .revoke_agent(&id)
        .await
        .map_err(identity_error)?;
    state
        .accounts
        .audit(
            &actor,
            "agent.revoke",
            &id,
            serde_json::json!({ "group": e.group, "token_id": e.token_id }),
            source,
        )
        .await;
    Ok(Json(e.into()))
}

/// An enrollment token as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenView {
    pub id: String,
    pub group: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub max_uses: u32,
    pub uses: u32,
    /// When it was revoked; absent while it may be used.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<TokenRecord> for EnrollmentTokenView {
    fn from(t: TokenRecord) -> Self {
        EnrollmentTokenView {
            id: t.id,
            group: t.group,
            created_at: t.created_at,
            expires_at: t.expires_at,
            max_uses: t.max_uses,
            uses: t.uses,
            revoked_at: t.revoked_at,
        }
    }
}

/// Enrollment tokens, used or not, without their secrets (needs
/// `agents:write`).
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = Vec<EnrollmentTokenView>), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
) -> ApiResult<Json<Vec<EnrollmentTokenView>>> {
    auth.require(Scope::AgentsWrite)?;
    let tokens = state.service.store().tokens().await?;
    Ok(Json(tokens.into_iter().map(Into::into).collect()))
}

/// Revoke an enrollment token: no agent enrolls with it any more, and
/// agents it enrolled stay (revoke those one by one). Revoking it again
/// keeps the first time (needs `agents:write`).
#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "the token's id")),
    responses((status = 200, body = EnrollmentTokenView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<EnrollmentTokenView>> {
    let actor = auth.require(Scope::AgentsWrite)?.actor();
    if !plausible_id(&id) {
        return Err(ApiError::not_found(format!(
            "enrollment token {id:?} not found"
        )));
    }
    let t = state
        .identities
        .revoke_token(&id)
        .await
        .map_err(identity_error)?;
    state
        .accounts
        .audit(
            &actor,
            "enrollment_token.revoke",
            &id,
            serde_json::json!({ "group": t.group, "uses": t.uses }),
            source,
        )
        .await;
    Ok(Json(t.into()))
}

/// Longest lifetime of an enrollment token (30 days).
pub const MAX_TOKEN_TTL: chrono::Duration = chrono::Duration::days(30);
/// Most enrollments one token allows.
pub const MAX_TOKEN_USES: u32 = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// How long it can be used: `1h`, `7d`… (default `1h`, at most 30 days).
    pub ttl: Option<String>,
    /// How many agents may enroll with it (default 1, at most 10000).
    #[schema(minimum = 1, maximum = 10000)]
    pub uses: Option<u32>,
    /// The agent group enrolled agents join.
    pub group: Option<String>,
}

/// A token just created: `token` is shown this once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    pub id: String,
    /// Give it to `fleetban-agent enroll --token`.
    pub token: String,
    pub group: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub max_uses: u32,
    /// The gRPC URL agents enroll and connect with
    /// (`fleetban-agent enroll --server`): `[tls] agent_url`, or made from
    /// the server certificate's first name that is not a loopback one and
    /// the gRPC port.
    pub server_url: Option<String>,
}

/// The lifetime asked for, within bounds.
pub fn token_ttl(text: Option<&str>) -> Result<chrono::Duration, ApiError> {
    let text = text.unwrap_or("1h");
    humantime::parse_duration(text.trim())
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .filter(|d| *d > chrono::Duration::zero() && *d <= MAX_TOKEN_TTL)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("ttl {text:?}: expected a duration from 1s to 30d, such as 1h or 7d"),
            )
        })
}

/// Create an enrollment token (needs `agents:write`). Refused (409) when
/// the server runs without TLS, where agents do not enroll.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "agents", security(("bearer" = [])),
    request_body = CreateEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiJson(req): ApiJson<CreateEnrollmentToken>,
) -> ApiResult<(StatusCode, Json<CreatedEnrollmentToken>)> {
    let actor = auth.require(Scope::AgentsWrite)?.actor();
    let ttl = token_ttl(req.ttl.as_deref())?;
    let uses = req.uses.unwrap_or(1);
    if !(1..=MAX_TOKEN_USES).contains(&uses) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("uses {uses}: expected 1 to {MAX_TOKEN_USES}"),
        ));
    }
    let made = state
        .identities
        .create_token(ttl, uses, req.group)
        .await
        .map_err(identity_error)?;
    state
        .accounts
        .audit(
            &actor,
            "enrollment_token.create",
            &made.id,
            serde_json::json!({ "group": made.group, "uses": made.max_uses, "expires_at": made.expires_at }),
            source,
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentToken {
            id: made.id,
            token: made.token.to_string(),
            group: made.group,
            expires_at: made.expires_at,
            max_uses: made.max_uses,
            server_url: state.agent_url.clone(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetimes_are_bounded() {
        assert_eq!(token_ttl(None).ok(), Some(chrono::Duration::hours(1)));
        assert_eq!(token_ttl(Some("7d")).ok(), Some(chrono::Duration::days(7)));
        for bad in ["0s", "31d", "soon", "", "-1h"] {
            assert!(token_ttl(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_plausible_agent_ids_are_looked_up() {
        assert!(plausible_id("web-1.example_2"));
        for bad in ["", "a b", "a\0b", "x/y", &"a".repeat(129)] {
            assert!(!plausible_id(bad), "{bad:?}");
        }
    }
}
