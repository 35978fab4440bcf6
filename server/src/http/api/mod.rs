//! The REST API under `/api/v1`: decisions, events, IP lookup, agents,
//! agent revocation and enrollment tokens, policies, jails, allowlists,
//! feeds, audit log, stats, live stream, users, tokens and bouncer keys,
//! with its OpenAPI description. Handlers are thin: they check who asks, parse, and
//! call the service, the accounts and the store.

pub mod agents;
pub mod allowlists;
pub mod auth;
pub mod cursor;
pub mod decisions;
pub mod error;
pub mod events;
pub mod extract;
pub mod feeds;
pub mod fleet;
pub mod openapi;
pub mod policies;
pub mod stream;
pub mod views;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::auth::Accounts;
use crate::feeds::FeedConfig;
use crate::service::identity::Identities;
use crate::service::Service;
use error::ApiError;

/// Largest request body accepted, in bytes (a bulk request of 1,000 bans
/// fits).
pub const BODY_LIMIT: usize = 256 * 1024;
/// Most items in one page.
pub const MAX_PAGE: u32 = 1000;
/// Items in a page when the client does not say.
pub const DEFAULT_PAGE: u32 = 100;

/// What every handler shares.
pub struct ApiState {
    pub service: Arc<Service>,
    pub accounts: Arc<Accounts>,
    /// Agent identities: revoking through it ends the agent's open stream.
    pub identities: Arc<Identities>,
    /// The feeds of this server's configuration file.
    pub feeds: Arc<Vec<FeedConfig>>,
    /// The HTTP client feeds are fetched with (for a refresh asked for).
    pub feed_client: reqwest::Client,
    /// Wakes the feed supervisor when a feed was added or removed here.
    pub feeds_changed: Arc<tokio::sync::Notify>,
    /// The gRPC URL agents reach this server by, shown with new enrollment
    /// tokens; `None` when unknown (plaintext mode).
    pub agent_url: Option<String>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    let api = Router::new()
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route("/users", get(auth::list_users).post(auth::create_user))
        .route(
            "/users/{name}",
            delete(auth::disable_user).patch(auth::update_user),
        )
        .route("/tokens", get(auth::list_tokens).post(auth::create_token))
        .route("/tokens/{id}", delete(auth::revoke_token))
        .route(
            "/bouncers",
            get(auth::list_bouncers).post(auth::create_bouncer),
        )
        .route("/bouncers/{name}", delete(auth::revoke_bouncer))
        .route("/decisions", get(decisions::list).post(decisions::create))
        .route("/decisions/bulk", post(decisions::bulk))
        .route("/decisions/export", get(decisions::export))
        .route("/decisions/{id}", get(decisions::get_one))
        .route("/decisions/{id}/revoke", post(decisions::revoke))
        .route("/events", get(events::list))
        .route("/events/aggregate", get(events::aggregate))
        .route("/ips/{ip}", get(events::lookup))
        .route("/agents", get(fleet::agents))
        .route("/agents/{id}", get(fleet::agent))
        .route("/agents/{id}/revoke", post(agents::revoke))
        .route(
            "/enrollment-tokens",
            get(agents::list_tokens).post(agents::create_token),
        )
        .route("/enrollment-tokens/{id}", delete(agents::revoke_token))
        .route(
            "/policies/rules",
            get(policies::get_rules).put(policies::put_rules),
        )
        .route("/policies/jails", get(policies::list_jails))
        .route(
            "/policies/jails/{group}/{jail}",
            put(policies::put_jail).delete(policies::delete_jail),
        )
        .route(
            "/allowlists",
            get(allowlists::list)
                .post(allowlists::add)
                .patch(allowlists::comment)
                .delete(allowlists::remove),
        )
        .route("/feeds", get(feeds::list).post(feeds::create))
        .route("/feeds/{name}", delete(feeds::remove))
        .route("/feeds/{name}/refresh", post(feeds::refresh))
        .route("/audit", get(fleet::audit))
        .route("/stats", get(fleet::stats))
        .route("/stream", get(stream::stream))
        .route("/openapi.json", get(openapi::spec))
        .route("/docs", get(openapi::viewer))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state);
    Router::new().nest("/api/v1", api)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this method; see /api/v1/openapi.json",
    )
}

/// The page size asked for, within bounds.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_parameter(format!(
            "limit {n}: expected 1 to {MAX_PAGE}"
        ))),
    }
}

/// An address or a prefix, as `ip` parameters take them.
pub fn parse_net(s: &str) -> Result<ipnet::IpNet, ApiError> {
    fleetban_proto::parse_target(s).map_err(|_| {
        ApiError::bad_parameter(format!(
            "{s:?} is not an IP address or a CIDR prefix (such as 192.0.2.1 or 2001:db8::/64)"
        ))
    })
}
