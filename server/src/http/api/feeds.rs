//! Block-list feeds: the ones of this server's configuration file, the ones
//! added through the API (added, removed and refreshed here), and the last
//! import of each, as any replica recorded it.

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
use crate::feeds::{FeedConfig, FeedFile, FeedSource};
use crate::service::ServiceError;
use crate::store::{FeedStatus, StoredFeed};

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
    /// Who added it through the API; absent for a feed of the server's
    /// configuration file, which cannot be removed through the API.
    pub added_by: Option<String>,
    pub added_at: Option<DateTime<Utc>>,
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

/// The feeds of the configuration file, then those added through the API
/// (a name in both is the file's), each with its last status, then feeds
/// with a status but known to neither (pure, for tests).
pub fn feed_views(
    configured: &[FeedConfig],
    stored: &[StoredFeed],
    mut statuses: Vec<FeedStatus>,
) -> Vec<FeedView> {
    let mut out = Vec::new();
    let added = stored
        .iter()
        .filter(|s| !configured.iter().any(|c| c.name == s.name))
        .map(|s| (FeedConfig::from_stored(s), Some(s)));
    let all = configured.iter().map(|c| (c.clone(), None)).chain(added);
    for (f, stored) in all {
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
            added_by: stored.map(|s| s.created_by.clone()),
            added_at: stored.map(|s| s.created_at),
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
            added_by: None,
            added_at: None,
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
    Ok(Json(views(&state).await?))
}

async fn views(state: &ApiState) -> ApiResult<Vec<FeedView>> {
    let stored = state.service.stored_feeds().await?;
    let statuses = state.service.feed_statuses().await?;
    Ok(feed_views(&state.feeds, &stored, statuses))
}

async fn one_view(state: &ApiState, name: &str) -> ApiResult<FeedView> {
    views(state)
        .await?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| ApiError::not_found(format!("feed {name:?} not found")))
}

/// Shortest interval of a feed added through the API.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A feed to add: a plain list of addresses and CIDR prefixes, one per line
/// (`#` and `;` start comments), read from a URL or a file on the servers.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFeed {
    /// 1 to 64 letters, digits, '-', '_' or '.'.
    pub name: String,
    /// `http://…` or `https://…`; set this or `path`.
    pub url: Option<String>,
    /// An absolute path to a file every server can read; set this or `url`.
    pub path: Option<String>,
    /// How often it is fetched: `1h`, `15m`… (default `1h`, at least `1m`).
    pub interval: Option<String>,
    /// How long a listed entry stays banned without being listed again;
    /// absent: until it leaves the list.
    pub bantime: Option<String>,
    /// Percent of lines that may be garbage before a fetch is refused
    /// (default 10).
    #[schema(minimum = 0, maximum = 100)]
    pub max_invalid_percent: Option<u8>,
    /// Whether an empty list is applied (revoking all of the feed's bans);
    /// default: an empty list is refused as a failed download.
    #[serde(default)]
    pub allow_empty: bool,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
}

/// The feed a request describes, checked (pure, for tests).
pub fn checked(req: &NewFeed) -> Result<FeedConfig, ApiError> {
    let path = match &req.path {
        Some(p) if !std::path::Path::new(p).is_absolute() => {
            return Err(invalid(format!(
                "path {p:?}: expected an absolute path such as /var/lib/fleetban/list.txt"
            )))
        }
        Some(p) => Some(p.into()),
        None => None,
    };
    let file = FeedFile {
        name: req.name.clone(),
        url: req.url.clone(),
        path,
        interval: req.interval.clone(),
        bantime: req.bantime.clone(),
        max_invalid_percent: req.max_invalid_percent,
        allow_empty: req.allow_empty,
    };
    let cfg = file.check().map_err(|e| {
        let key = e.key.strip_prefix("feed.").unwrap_or(e.key);
        invalid(format!("{key}: {}", e.message))
    })?;
    if cfg.interval < MIN_INTERVAL {
        return Err(invalid(format!(
            "interval: feed {:?}: {} is too often; expected at least 1m",
            cfg.name,
            humantime::format_duration(cfg.interval)
        )));
    }
    Ok(cfg)
}

/// Add a feed (needs `policies:write`): every server imports it from now
/// on, this one at once, other replicas within 15 seconds, one import at a
/// time. Its name must be free, also of the configuration files' feeds
/// (this server's, and those another replica has imported).
#[utoipa::path(post, path = "/api/v1/feeds", tag = "policies", security(("bearer" = [])),
    request_body = NewFeed,
    responses((status = 201, body = FeedView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiJson(req): ApiJson<NewFeed>,
) -> ApiResult<(StatusCode, Json<FeedView>)> {
    let actor = auth.require(Scope::PoliciesWrite)?.actor();
    let cfg = checked(&req)?;
    if state.feeds.iter().any(|f| f.name == cfg.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "feed {:?} already exists in the server's configuration file",
                cfg.name
            ),
        ));
    }
    // A status without a stored feed is a feed of another replica's file.
    if state
        .service
        .feed_statuses()
        .await?
        .iter()
        .any(|s| s.name == cfg.name)
        && !state
            .service
            .stored_feeds()
            .await?
            .iter()
            .any(|f| f.name == cfg.name)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "feed {:?} already exists in another server's configuration file",
                cfg.name
            ),
        ));
    }
    state.service.add_feed(&cfg, &actor).await?;
    state.feeds_changed.notify_one();
    state
        .accounts
        .audit(
            &actor,
            "feed.add",
            &cfg.name,
            serde_json::json!({
                "source": shown_source(&cfg.source),
                "interval_seconds": cfg.interval.as_secs(),
                "bantime_seconds": cfg.bantime.map(|b| b.num_seconds()),
            }),
            source,
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(one_view(&state, &cfg.name).await?),
    ))
}

fn configured_here(state: &ApiState, name: &str) -> Result<(), ApiError> {
    if state.feeds.iter().any(|f| f.name == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("feed {name:?} is in the server's configuration file; remove it there"),
        ));
    }
    Ok(())
}

/// What removing a feed did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RemovedFeed {
    pub name: String,
    /// Its bans in force, now revoked.
    pub revoked: usize,
}

/// Remove a feed added through the API (needs `policies:write`): its bans
/// in force are revoked at once, as when entries leave its list, and no
/// server imports it any more. A feed of the configuration file is refused
/// (409).
#[utoipa::path(delete, path = "/api/v1/feeds/{name}", tag = "policies", security(("bearer" = [])),
    params(("name" = String, Path, description = "the feed's name")),
    responses((status = 200, body = RemovedFeed), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<RemovedFeed>> {
    let actor = auth.require(Scope::PoliciesWrite)?.actor();
    configured_here(&state, &name)?;
    let revoked = state.service.remove_feed(&name, &actor).await?;
    state.feeds_changed.notify_one();
    state
        .accounts
        .audit(
            &actor,
            "feed.remove",
            &name,
            serde_json::json!({ "revoked": revoked.len() }),
            source,
        )
        .await;
    Ok(Json(RemovedFeed {
        name,
        revoked: revoked.len(),
    }))
}

/// Fetch and import a feed now, whichever way it was added (needs
/// `policies:write`). Answers with the feed as it is after the import; a
/// fetch that failed or a list refused shows in its status's `last_error`,
/// and the feed's bans stay as they were.
#[utoipa::path(post, path = "/api/v1/feeds/{name}/refresh", tag = "policies", security(("bearer" = [])),
    params(("name" = String, Path, description = "the feed's name")),
    responses((status = 200, body = FeedView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn refresh(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<FeedView>> {
    let actor = auth.require(Scope::PoliciesWrite)?.actor();
    let cfg = match state.feeds.iter().find(|f| f.name == name) {
        Some(f) => f.clone(),
        None => state
            .service
            .stored_feeds()
            .await?
            .iter()
            .find(|f| f.name == name)
            .map(FeedConfig::from_stored)
            .ok_or_else(|| ApiError::not_found(format!("feed {name:?} not found")))?,
    };
    let fetched = crate::feeds::fetch(&state.feed_client, &cfg.source).await;
    let outcome = match state.service.import_feed(&cfg, fetched).await {
        Ok(r) => serde_json::json!({
            "entries": r.entries, "added": r.added, "revoked": r.revoked,
            "invalid_lines": r.invalid_lines,
        }),
        Err(ServiceError::Feed { message, .. }) => serde_json::json!({ "error": message }),
        Err(e) => return Err(e.into()),
    };
    state
        .accounts
        .audit(&actor, "feed.refresh", &name, outcome, source)
        .await;
    Ok(Json(one_view(&state, &name).await?))
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
        let added = StoredFeed {
            name: "added".into(),
            source: FeedSource::Url("https://lists.example/a.txt".into()),
            interval_s: 300,
            bantime_s: None,
            max_invalid_percent: 10,
            allow_empty: false,
            created_at: t,
            created_by: "user:ada".into(),
        };
        let shadowed = StoredFeed {
            name: "new".into(),
            ..added.clone()
        };
        let views = feed_views(
            &configured,
            &[added, shadowed],
            vec![status("zeta", "HTTP 503"), status("blocklist", "")],
        );
        let names: Vec<(&str, bool)> = views
            .iter()
            .map(|v| (v.name.as_str(), v.configured))
            .collect();
        assert_eq!(
            names,
            vec![
                ("blocklist", true),
                ("new", true),
                ("added", true),
                ("zeta", false)
            ]
        );
        assert_eq!(views[1].added_by, None, "the file's feed wins");
        assert_eq!(views[2].added_by.as_deref(), Some("user:ada"));
        assert_eq!(views[2].interval_seconds, Some(300));
        let b = &views[0];
        assert_eq!(b.source.as_deref(), Some("https://lists.example/b.txt"));
        assert_eq!(
            (b.interval_seconds, b.bantime_seconds),
            (Some(3600), Some(14_400))
        );
        let s = b.status.as_ref().expect("status");
        assert_eq!((s.entries, s.last_error.as_deref()), (12, None));
        assert!(views[1].status.is_none(), "never imported yet");
        let z = views[3].status.as_ref().expect("status");
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

    fn new_feed(name: &str) -> NewFeed {
        NewFeed {
            name: name.into(),
            url: None,
            path: Some("/var/lib/fleetban/list.txt".into()),
            interval: Some("5m".into()),
            bantime: None,
            max_invalid_percent: None,
            allow_empty: false,
        }
    }

    #[test]
    fn new_feeds_are_checked() {
        let ok = checked(&new_feed("local")).expect("valid");
        assert_eq!(ok.interval, std::time::Duration::from_secs(300));
        let msg = |f: NewFeed| checked(&f).expect_err("refused").message;
        let m = msg(NewFeed {
            url: Some("ftp://lists.example/x".into()),
            path: None,
            ..new_feed("a")
        });
        assert!(m.starts_with("url: ") && m.contains("http(s)"), "{m}");
        let m = msg(NewFeed {
            interval: Some("10s".into()),
            ..new_feed("a")
        });
        assert!(
            m.starts_with("interval: ") && m.contains("at least 1m"),
            "{m}"
        );
        let m = msg(NewFeed {
            path: Some("list.txt".into()),
            ..new_feed("a")
        });
        assert!(m.contains("absolute"), "{m}");
        let m = msg(new_feed("a b"));
        assert!(m.starts_with("name: "), "{m}");
        let m = msg(NewFeed {
            url: Some("https://lists.example/x".into()),
            ..new_feed("a")
        });
        assert!(m.contains("either url or path"), "{m}");
        let m = msg(NewFeed {
            max_invalid_percent: Some(101),
            ..new_feed("a")
        });
        assert!(m.starts_with("max_invalid_percent: "), "{m}");
    }
}
