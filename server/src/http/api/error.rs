//! The one error shape of the API: `{"error": {"code": "…", "message": "…"}}`
//! with a stable code and the right status. Internal errors are logged here,
//! once, and answered with a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::service::ServiceError;
use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_json`, `invalid_body`,
    /// `invalid_query`, `invalid_parameter`, `unsupported_media_type`,
    /// `payload_too_large`, `unauthenticated`, `bad_credentials`,
    /// `token_expired`, `invalid_token`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `conflict`, `refused_by_policy`,
    /// `invalid_policy`, `throttled`,
    /// `internal`, `unavailable`.
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fleetban\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::AlreadyExists(what) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            StoreError::UnknownAgent(a) => ApiError::not_found(format!("agent {a:?} not found")),
            StoreError::Connect { .. } | StoreError::Migrate { .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                message: "the database is unavailable".to_owned(),
                retry_after: Some(5),
            },
            other => ApiError::internal("store error", &other),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", m),
            ServiceError::Policy(p) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused_by_policy",
                p.to_string(),
            ),
            ServiceError::Store(s) => s.into(),
            other => ApiError::internal("service error", &other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let msg = e.to_string();
        match e {
            AuthError::BadCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "bad_credentials", msg)
            }
            AuthError::Throttled { retry_after } => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "throttled",
                message: msg,
                retry_after: Some(retry_after.num_seconds()),
            },
            AuthError::Missing => ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", msg),
            AuthError::Expired => ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", msg),
            AuthError::InvalidToken | AuthError::InvalidRefresh => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", msg)
            }
            AuthError::NotAUser => ApiError::forbidden(msg),
            AuthError::Invalid(_) | AuthError::Password(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", msg)
            }
            AuthError::Store(s) => s.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
