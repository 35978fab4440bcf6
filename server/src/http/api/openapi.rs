//! The OpenAPI 3 description, generated from the handlers by `utoipa`, and
//! a small viewer page that loads nothing from elsewhere.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{auth, decisions, events, fleet, stream};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT access token or fbt_ API token")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "bouncer_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "fleetban API", description = "The REST API of the fleetban server: decisions, events, agents, audit log, stats and live updates; CrowdSec bouncer compatibility under /v1."),
    paths(
        auth::login, auth::refresh, auth::logout, auth::me,
        auth::list_users, auth::create_user, auth::disable_user,
        auth::list_tokens, auth::create_token, auth::revoke_token,
        auth::list_bouncers, auth::create_bouncer, auth::revoke_bouncer,
        decisions::list, decisions::get_one, decisions::create, decisions::revoke,
        decisions::bulk, decisions::export,
        events::list, events::aggregate, events::lookup,
        fleet::agents, fleet::agent, fleet::audit, fleet::stats,
        stream::stream,
        crate::http::crowdsec::stream, crate::http::crowdsec::decisions,
    ),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// The description as served at `/api/v1/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub async fn spec() -> impl IntoResponse {
    match document().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => super::error::ApiError::internal("openapi", &e).into_response(),
    }
}

/// `/api/v1/docs`: lists every operation of the description with its
/// parameters, and can send requests with a token pasted in.
pub async fn viewer() -> Html<&'static str> {
    Html(include_str!("viewer.html"))
}
