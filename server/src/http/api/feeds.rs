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
    fn configured_feeds_come_first_with_their_status() {
        let t = chrono::TimeZone::timestamp_opt(&Utc, 1_800_000_000, 0)
            .single()
            .expect("t");
        let status = |name: &str, error: &str| FeedStatus {
            name: name.into(),
            last_attempt: t,
            last_success: error.is_empty().then_some(t),
            entries: 12,
            invalid_lines: 1,
            last_error: error.into(),
        };
        let configured = vec![
            FeedConfig {
                name: "blocklist".into(),
                source: FeedSource::Url("https://lists.example/b.txt?k=1".into()),
                interval: std::time::Duration::from_secs(3600),
                bantime: Some(chrono::Duration::hours(4)),
                max_invalid_percent: 10,
                allow_empty: false,
            },
            FeedConfig {
                name: "new".into(),
                source: FeedSource::File("/var/lib/list.txt".into()),
                interval: std::time::Duration::from_secs(600),
                bantime: None,
                max_invalid_percent: 10,
                allow_empty: false,
            },
        ];
        let views = feed_views(
            &configured,
            vec![status("zeta", "HTTP 503"), status("blocklist", "")],
        );
        let names: Vec<(&str, bool)> = views
            .iter()
            .map(|v| (v.name.as_str(), v.configured))
            .collect();
        assert_eq!(
            names,
            vec![("blocklist", true), ("new", true), ("zeta", false)]
        );
        let b = &views[0];
        assert_eq!(b.source.as_deref(), Some("https://lists.example/b.txt"));
        assert_eq!(
            (b.interval_seconds, b.bantime_seconds),
            (Some(3600), Some(14_400))
        );
        let s = b.status.as_ref().expect("status");
        assert_eq!((s.entries, s.last_error.as_deref()), (12, None));
        assert!(views[1].status.is_none(), "never imported yet");
        let z = views[2].status.as_ref().expect("status");
        assert_eq!(z.last_error.as_deref(), Some("HTTP 503"));
    }

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
