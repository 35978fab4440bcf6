//! The OpenAPI 3 description, generated from the handlers by `utoipa`, and
//! a small viewer page that loads nothing from elsewhere.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{agents, allowlists, auth, decisions, events, feeds, fleet, policies, stream};

struct Security;

/// Every error any operation may answer, in the one error shape: added to
/// every operation so the description matches what the server does (an
/// extractor refusing a query, a missing token, a body too large).
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let error = |what: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(what)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let bouncer = path.starts_with("/v1/");
            let public = matches!(
                path.as_str(),
                "/api/v1/auth/login"
                    | "/api/v1/auth/refresh"
                    | "/api/v1/openapi.json"
                    | "/api/v1/docs"
            );
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.delete,
                &mut item.put,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let mut add = |code: &str, what: &str| {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error(what));
                };
                add("400", "a bad parameter or body (`invalid_query`, `invalid_parameter`, `invalid_json`, `invalid_body`)");
                if !public && !bouncer {
                    add("401", "no, or a bad, expired or revoked token");
                }
                if !public {
                    add("403", "the caller lacks the scope, or a bad bouncer key");
                }
                if path.contains('{') {
                    add("404", "no such resource");
                }
                if op.request_body.is_some() {
                    add("413", "the body is over the limit");
                    add("415", "the body is not application/json");
                }
                add("500", "an internal error");
                add("503", "the database is unavailable");
            }
        }
    }
}

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
    info(title = "fleetban API", description = "The REST API of the fleetban server: decisions, events, agents and enrollment tokens, policies, jails, allowlists, feeds, audit log, stats and live updates; CrowdSec bouncer compatibility under /v1."),
    paths(
        auth::login, auth::refresh, auth::logout, auth::me,
        auth::list_users, auth::create_user, auth::update_user, auth::disable_user,
        auth::list_tokens, auth::create_token, auth::revoke_token,
        auth::list_bouncers, auth::create_bouncer, auth::revoke_bouncer,
        decisions::list, decisions::get_one, decisions::create, decisions::revoke,
        decisions::bulk, decisions::export,
        events::list, events::aggregate, events::lookup,
        fleet::agents, fleet::agent, fleet::audit, fleet::stats,
        agents::revoke, agents::list_tokens, agents::create_token, agents::revoke_token,
        policies::get_rules, policies::put_rules, policies::list_jails,
        policies::put_jail, policies::delete_jail,
        allowlists::list, allowlists::add, allowlists::comment, allowlists::remove,
        feeds::list, feeds::create, feeds::remove, feeds::refresh,
        stream::stream,
        crate::http::crowdsec::stream, crate::http::crowdsec::decisions,
    ),
    components(schemas(
        decisions::SortParam, decisions::OriginParam, decisions::StatusParam,
        decisions::ExportFormat, events::ByParam, fleet::SeriesParam,
    )),
    modifiers(&Security, &CommonErrors),
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
