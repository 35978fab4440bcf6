//! Login, refresh, logout, and the admin's users, API tokens and bouncer
//! keys.

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
use crate::auth::{AuthError, LoginTokens, Principal, Role, Scope};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Tokens of a session. Send the access token as `Authorization: Bearer …`;
/// swap the refresh token for new ones before the access token expires.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub user: String,
    pub role: String,
}

impl From<LoginTokens> for TokenResponse {
    fn from(t: LoginTokens) -> Self {
        TokenResponse {
            access_token: t.access_token,
            token_type: "Bearer".to_owned(),
            expires_at: t.access_expires_at,
            refresh_token: t.refresh_token,
            refresh_expires_at: t.refresh_expires_at,
            user: t.user,
            role: t.role.as_str().to_owned(),
        }
    }
}

/// Log in with a user name and password. Five failures for one user, or
/// twenty from one address, within 15 minutes lock further attempts out for
/// 15 minutes (429).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    if req.username.len() > 64 {
        return Err(AuthError::BadCredentials.into());
    }
    let tokens = state
        .accounts
        .login(&req.username, &req.password, source)
        .await?;
    Ok(Json(tokens.into()))
}

/// Swap a refresh token for new tokens; the old refresh token stops working
/// (presenting it again revokes the session).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody)))]
pub async fn refresh(
    State(state): State<Arc<ApiState>>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    Ok(Json(
        state.accounts.refresh(&req.refresh_token).await?.into(),
    ))
}

/// End the session: its access and refresh tokens stop working.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn logout(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
) -> ApiResult<StatusCode> {
    state.accounts.logout(&auth.0, source).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the caller is and what they may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// `user:NAME` or `token:NAME`.
    pub actor: String,
    pub role: Option<String>,
    pub scopes: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(auth: Auth) -> Json<MeResponse> {
    let p = &auth.0;
    Json(MeResponse {
        actor: p.actor(),
        role: match p {
            Principal::User { role, .. } => Some(role.as_str().to_owned()),
            Principal::Token { .. } => None,
        },
        scopes: Scope::ALL
            .into_iter()
            .filter(|s| p.allows(*s))
            .map(|s| s.as_str().to_owned())
            .collect(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// Users (needs `users:write`: admins).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Vec<UserView>), (status = 403, body = ErrorBody)))]
pub async fn list_users(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
) -> ApiResult<Json<Vec<UserView>>> {
    auth.require(Scope::UsersWrite)?;
    let users = state.service.store().users().await?;
    Ok(Json(
        users
            .into_iter()
            .map(|u| UserView {
                name: u.name,
                role: u.role,
                created_at: u.created_at,
                disabled_at: u.disabled_at,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    /// At least 12 characters.
    pub password: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])), request_body = CreateUser,
    responses((status = 201), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_user(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiJson(req): ApiJson<CreateUser>,
) -> ApiResult<StatusCode> {
    let actor = auth.require(Scope::UsersWrite)?.actor();
    let role = parse_role(&req.role)?;
    state
        .accounts
        .add_user(&req.name, &req.password, role, &actor, source)
        .await?;
    Ok(StatusCode::CREATED)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// `admin`, `operator` or `viewer`.
    pub role: String,
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    Role::parse(role).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("role {role:?}: expected admin, operator or viewer"),
        )
    })
}

/// Change a user's role; it applies to their next request.
#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "users", security(("bearer" = [])),
    params(("name" = String, Path)), request_body = UpdateUser,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_user(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateUser>,
) -> ApiResult<StatusCode> {
    let actor = auth.require(Scope::UsersWrite)?.actor();
    let role = parse_role(&req.role)?;
    state.accounts.set_role(&name, role, &actor, source).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disable a user and end their sessions.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn disable_user(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let actor = auth.require(Scope::UsersWrite)?.actor();
    state.accounts.disable_user(&name, &actor, source).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<&crate::store::api::ApiTokenRecord> for TokenView {
    fn from(t: &crate::store::api::ApiTokenRecord) -> Self {
        TokenView {
            id: t.id.to_string(),
            name: t.name.clone(),
            scopes: t.scopes.clone(),
            created_by: t.created_by.clone(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// API tokens (needs `tokens:write`: admins). Secrets are never shown again.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = Vec<TokenView>), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
) -> ApiResult<Json<Vec<TokenView>>> {
    auth.require(Scope::TokensWrite)?;
    let tokens = state.service.store().api_tokens().await?;
    Ok(Json(tokens.iter().map(TokenView::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Among `decisions:read`, `decisions:write`, `events:read`,
    /// `agents:read`, `stats:read`, `audit:read`.
    pub scopes: Vec<String>,
    /// `null`: never expires.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The secret: shown once, send it as `Authorization: Bearer …`.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenView,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])), request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiJson(req): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let actor = auth.require(Scope::TokensWrite)?.actor();
    let scopes = req
        .scopes
        .iter()
        .map(|s| {
            Scope::parse(s).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("unknown scope {s:?}"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let t = state
        .accounts
        .create_token(&req.name, &scopes, req.expires_at, &actor, source)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: t.secret,
            info: TokenView::from(&t.record),
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let actor = auth.require(Scope::TokensWrite)?.actor();
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::not_found(format!("token {id:?} not found")))?;
    state.accounts.revoke_token(id, &actor, source).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BouncerView {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_pull_at: Option<DateTime<Utc>>,
}

/// CrowdSec bouncer keys (needs `bouncers:write`: admins).
#[utoipa::path(get, path = "/api/v1/bouncers", tag = "bouncers", security(("bearer" = [])),
    responses((status = 200, body = Vec<BouncerView>), (status = 403, body = ErrorBody)))]
pub async fn list_bouncers(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
) -> ApiResult<Json<Vec<BouncerView>>> {
    auth.require(Scope::BouncersWrite)?;
    let all = state.service.store().bouncers().await?;
    Ok(Json(
        all.into_iter()
            .map(|b| BouncerView {
                name: b.name,
                created_at: b.created_at,
                revoked_at: b.revoked_at,
                last_pull_at: b.last_pull_at,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBouncer {
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedBouncer {
    pub name: String,
    /// The `X-Api-Key` for the bouncer: shown once.
    pub key: String,
}

#[utoipa::path(post, path = "/api/v1/bouncers", tag = "bouncers", security(("bearer" = [])), request_body = CreateBouncer,
    responses((status = 201, body = CreatedBouncer), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_bouncer(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiJson(req): ApiJson<CreateBouncer>,
) -> ApiResult<(StatusCode, Json<CreatedBouncer>)> {
    let actor = auth.require(Scope::BouncersWrite)?.actor();
    let key = state
        .accounts
        .add_bouncer(&req.name, &actor, source)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedBouncer {
            name: req.name,
            key,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/bouncers/{name}", tag = "bouncers", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_bouncer(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let actor = auth.require(Scope::BouncersWrite)?.actor();
    state
        .service
        .store()
        .revoke_bouncer(&name, state.accounts.now())
        .await?;
    state
        .accounts
        .audit(
            &actor,
            "bouncer.revoke",
            &name,
            serde_json::json!({}),
            source,
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
