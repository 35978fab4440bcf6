//! Block-list feeds: the ones this server imports, as configured, and the
//! last import of each, as any replica recorded it.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::extract::Auth;
use super::ApiState;
use crate::auth::Scope;
use crate::feeds::{FeedConfig, FeedSource};
use crate::store::FeedStatus;

/// The last import of a feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedStatusView {
    pub last_attempt: DateTime<Utc>,
    pub last_success: Option<DateTime<Utc>>,
    /// Valid entries in the last list applied.
    pub entries: u64,
    pub invalid_lines: u64,
    /// Why the last attempt failed; absent when it succeeded.
    pub last_error: Option<String>,
}

/// One feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedView {
    pub name: String,
    /// Where it is read from, without credentials or query string.
    /// Absent for feeds only another replica is configured with.
    pub source: Option<String>,
    /// Seconds between imports.
    pub interval_seconds: Option<u64>,
    /// How long its bans last; absent: until the entry leaves the list.
    pub bantime_seconds: Option<i64>,
    /// Whether this server imports it (else only another replica does).
    pub configured: bool,
    /// Absent until it was first imported.
    pub status: Option<FeedStatusView>,
}

/// A feed's source as shown: a URL loses its user, password and query
/// string, which may hold secrets.
pub fn shown_source(source: &FeedSource) -> String {
    match source {
        FeedSource::File(p) => p.display().to_string(),
        FeedSource::Url(u) => {
            let no_query = u.split(['?', '#']).next().unwrap_or_default();
            match no_query.split_once("://") {
                Some((scheme, rest)) => {
                    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let host = host.rsplit('@').next().unwrap_or_default();
                    format!("{scheme}://{host}{path}")
                }
                None => no_query.to_owned(),
            }
        }
    }
}

fn status_view(s: FeedStatus) -> FeedStatusView {
    FeedStatusView {
        last_attempt: s.last_attempt,
        last_success: s.last_success,
        entries: s.entries,
        invalid_lines: s.invalid_lines,
        last_error: (!s.last_error.is_empty()).then_some(s.last_error),
    }
}

/// The configured feeds with their last status, then feeds with a status
/// but not configured here (pure, for tests).
pub fn feed_views(configured: &[FeedConfig], mut statuses: Vec<FeedStatus>) -> Vec<FeedView> {
    let mut out = Vec::new();
    for f in configured {
        let status = statuses
            .iter()
            .position(|s| s.name == f.name)
            .map(|i| status_view(statuses.remove(i)));
        out.push(FeedView {
            name: f.name.clone(),
            source: Some(shown_source(&f.source)),
            interval_seconds: Some(f.interval.as_secs()),
            bantime_seconds: f.bantime.map(|b| b.num_seconds()),
            configured: true,
            status,
        });
    }
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    for s in statuses {
        out.push(FeedView {
            name: s.name.clone(),
            source: None,
            interval_seconds: None,
            bantime_seconds: None,
            configured: false,
            status: Some(status_view(s)),
        });
    }
    out
}

/// Block-list feeds and their last import (needs `policies:read`).
#[utoipa::path(get, path = "/api/v1/feeds", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = Vec<FeedView>), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
) -> ApiResult<Json<Vec<FeedView>>> {
    auth.require(Scope::PoliciesRead)?;
    let statuses = state.service.feed_statuses().await?;
    Ok(Json(feed_views(&state.feeds, statuses)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_query() {
        let u = |s: &str| shown_source(&FeedSource::Url(s.to_owned()));
        assert_eq!(
            u("https://me:secret@lists.example/x.txt?key=abc"),
            "https://lists.example/x.txt"
        );
        assert_eq!(u("https://lists.example"), "https://lists.example");
        assert_eq!(
            shown_source(&FeedSource::File("/etc/fleetban/list.txt".into())),
            "/etc/fleetban/list.txt"
        );
    }
}
