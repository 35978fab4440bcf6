//! Agents, the audit log and time series.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::cursor;
use super::decisions::SortParam;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiQuery, Auth};
use super::views::{AuditView, Page as PageView};
use super::{page_limit, ApiState};
use crate::auth::Scope;
use crate::store::api::{Cursor, Page, Series};
use crate::store::AgentRecord;

/// An agent is `online` when it was heard from within this long.
pub const ONLINE_WITHIN: Duration = Duration::seconds(90);

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    pub version: String,
    pub jails: Vec<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// `online` (heard from in the last 90 s) or `offline`.
    pub health: String,
    /// The block-list version it last applied.
    pub applied_version: u64,
    /// Block-list versions it is behind.
    pub lag: u64,
    /// How long it has been behind: seconds since the oldest decision it
    /// has yet to apply was made; 0 when it is up to date.
    pub lag_seconds: i64,
    /// Its agent group ('' for none).
    pub group: String,
    /// When it was revoked; absent while it may connect.
    pub revoked_at: Option<DateTime<Utc>>,
    /// What its firewall enforces, as its last heartbeat reported;
    /// absent until it reports.
    pub firewall: Option<FirewallView>,
}

/// An agent's firewall, as its heartbeat reports it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FirewallView {
    /// Entries the kernel holds for the block list.
    pub enforced: u64,
    /// Differences between the kernel and the block list found and
    /// repaired since the agent started.
    pub drift_total: u64,
    /// `nftables`, `ipset` or `log`.
    pub backend: String,
}

/// An agent as the API shows it (pure, for tests): `revoked_at` comes from
/// its enrollment.
pub fn agent_view(
    a: &AgentRecord,
    revoked_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    current: u64,
) -> AgentView {
    AgentView {
        id: a.info.id.clone(),
        hostname: a.info.hostname.clone(),
        version: a.info.version.clone(),
        jails: a.info.jails.clone(),
        first_seen: a.first_seen,
        last_seen: a.last_seen,
        health: if now - a.last_seen <= ONLINE_WITHIN {
            "online"
        } else {
            "offline"
        }
        .to_owned(),
        applied_version: a.applied_version,
        lag: current.saturating_sub(a.applied_version),
        lag_seconds: a.behind_since.map_or(0, |t| (now - t).num_seconds().max(0)),
        group: a.info.group.clone(),
        revoked_at,
        firewall: a.firewall.as_ref().map(|f| FirewallView {
            enforced: f.enforced,
            drift_total: f.drift_total,
            backend: f.backend.clone(),
        }),
    }
}

/// Revocation times by agent id, from the enrollments.
async fn revocations(
    state: &ApiState,
) -> Result<std::collections::HashMap<String, DateTime<Utc>>, ApiError> {
    Ok(state
        .service
        .store()
        .enrollments()
        .await?
        .into_iter()
        .filter_map(|e| e.revoked_at.map(|t| (e.agent_id, t)))
        .collect())
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = Vec<AgentView>), (status = 403, body = ErrorBody)))]
pub async fn agents(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
) -> ApiResult<Json<Vec<AgentView>>> {
    auth.require(Scope::AgentsRead)?;
    let store = state.service.store();
    let current = store.block_list_version().await?;
    let now = state.accounts.now();
    let revoked = revocations(&state).await?;
    Ok(Json(
        store
            .agents()
            .await?
            .iter()
            .map(|a| agent_view(a, revoked.get(&a.info.id).copied(), now, current))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = AgentView), (status = 404, body = ErrorBody)))]
pub async fn agent(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    auth.require(Scope::AgentsRead)?;
    let store = state.service.store();
    let current = store.block_list_version().await?;
    let now = state.accounts.now();
    let revoked = revocations(&state).await?;
    store
        .agents()
        .await?
        .iter()
        .find(|a| a.info.id == id)
        .map(|a| Json(agent_view(a, revoked.get(&id).copied(), now, current)))
        .ok_or_else(|| ApiError::not_found(format!("agent {id:?} not found")))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// `user:NAME`, `token:NAME`, `cli`…
    pub actor: Option<String>,
    /// `decision.create`, `user.create`, `auth.login`…
    pub action: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub sort: Option<SortParam>,
}

/// Every change, with its actor (needs `audit:read`).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, body = PageView<AuditView>), (status = 403, body = ErrorBody)))]
pub async fn audit(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<PageView<AuditView>>> {
    auth.require(Scope::AuditRead)?;
    let page = Page {
        after: q
            .cursor
            .as_deref()
            .map(|c| cursor::decode(c, cursor::integer_id))
            .transpose()?,
        limit: page_limit(q.limit)?,
        order: q.sort.unwrap_or_default().into(),
    };
    let rows = state
        .service
        .store()
        .audit_log(q.actor.as_deref(), q.action.as_deref(), &page)
        .await?;
    let next_cursor = if rows.len() < page.limit as usize {
        None
    } else {
        rows.last().map(|e| {
            cursor::encode(&Cursor {
                at: e.at,
                id: e.id.to_string(),
            })
        })
    };
    Ok(Json(PageView {
        items: rows
            .into_iter()
            .map(|e| AuditView {
                id: e.id,
                at: e.at,
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null),
                source: e.source,
            })
            .collect(),
        next_cursor,
    }))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeriesParam {
    Events,
    Decisions,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// What to count: events or bans.
    pub series: SeriesParam,
    /// Default: 24 hours before `until`.
    pub since: Option<DateTime<Utc>>,
    /// Default: now.
    pub until: Option<DateTime<Utc>>,
    /// Bucket width: `1m`, `1h`, `1d`… (default `1h`; at most 1000 buckets).
    pub step: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BucketView {
    pub start: DateTime<Utc>,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    pub series: String,
    pub step_seconds: i64,
    /// Every bucket of the range, empty ones with 0, oldest first.
    pub buckets: Vec<BucketView>,
}

/// Most buckets one series returns.
pub const MAX_BUCKETS: i64 = 1000;

/// Buckets of `step` seconds aligned on the Unix epoch, covering
/// `[since, until)`, filled from `counts` (pure, for tests).
pub fn fill_buckets(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    step: i64,
    counts: &[(DateTime<Utc>, u64)],
) -> Vec<BucketView> {
    let first = since.timestamp().div_euclid(step) * step;
    let mut out = Vec::new();
    let mut t = first;
    while t < until.timestamp() {
        if let Some(start) = Utc.timestamp_opt(t, 0).single() {
            let count = counts
                .iter()
                .filter(|(s, _)| s.timestamp() == t)
                .map(|(_, c)| *c)
                .sum();
            out.push(BucketView { start, count });
        }
        t += step;
    }
    out
}

/// Counts per time bucket, for charts (needs `stats:read`).
#[utoipa::path(get, path = "/api/v1/stats", tag = "stats", security(("bearer" = [])),
    params(StatsQuery),
    responses((status = 200, body = StatsView), (status = 400, body = ErrorBody)))]
pub async fn stats(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<StatsView>> {
    auth.require(Scope::StatsRead)?;
    let step_text = q.step.as_deref().unwrap_or("1h");
    let step = humantime::parse_duration(step_text)
        .ok()
        .map(|d| d.as_secs() as i64)
        .filter(|s| *s >= 1)
        .ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "step {step_text:?}: expected a duration of at least 1s, such as 1m, 1h or 1d"
            ))
        })?;
    let until = q.until.unwrap_or_else(|| state.accounts.now());
    let since = q.since.unwrap_or(until - Duration::hours(24));
    if since >= until {
        return Err(ApiError::bad_parameter("since must be before until"));
    }
    let span = (until - since).num_seconds();
    if span / step > MAX_BUCKETS {
        return Err(ApiError::bad_parameter(format!(
            "{} buckets asked for; at most {MAX_BUCKETS}: widen step or narrow the range",
            span / step
        )));
    }
    let (series, name) = match q.series {
        SeriesParam::Events => (Series::Events, "events"),
        SeriesParam::Decisions => (Series::Decisions, "decisions"),
    };
    let counts: Vec<(DateTime<Utc>, u64)> = state
        .service
        .store()
        .series(series, since, until, step)
        .await?
        .into_iter()
        .map(|b| (b.start, b.count))
        .collect();
    Ok(Json(StatsView {
        series: name.to_owned(),
        step_seconds: step,
        buckets: fill_buckets(since, until, step, &counts),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_range_with_zeros() {
        let t = |s| Utc.timestamp_opt(s, 0).single().expect("t");
        let b = fill_buckets(t(3590), t(7300), 3600, &[(t(3600), 4)]);
        let got: Vec<(i64, u64)> = b.iter().map(|b| (b.start.timestamp(), b.count)).collect();
        assert_eq!(got, vec![(0, 0), (3600, 4), (7200, 0)]);
    }
}
