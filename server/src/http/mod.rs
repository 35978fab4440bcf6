//! The HTTP side of the server: health, metrics, the REST API under
//! `/api/v1`, CrowdSec bouncer compatibility under `/v1`, and the web console
//! at `/`.

pub mod api;
pub mod console;
pub mod crowdsec;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::service::Service;

pub fn router(service: Arc<Service>, api: Arc<api::ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(service)
        .merge(api::router(api.clone()))
        .merge(crowdsec::router(api))
        .merge(console::router())
}

/// Healthy when the database answers.
async fn healthz(State(service): State<Arc<Service>>) -> impl IntoResponse {
    match service.store().block_list_version().await {
        Ok(version) => (StatusCode::OK, format!("ok version={version}\n")),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable\n".to_owned(),
            )
        }
    }
}

async fn metrics(State(service): State<Arc<Service>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        service.metrics().render(),
    )
}
