//! CrowdSec bouncer compatibility: `GET /v1/decisions/stream` and
//! `GET /v1/decisions` in the format of CrowdSec's Local API, authenticated
//! by an `X-Api-Key` bouncer key, so CrowdSec's bouncers enforce fleetban's
//! decisions. Each bouncer's last pull (block-list version and time) is
//! stored, so a stream pull returns what changed since.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::error::{ApiError, ApiResult, ErrorBody};
use super::api::extract::ApiQuery;
use super::api::views::target_text;
use super::api::ApiState;
use crate::store::api::BouncerRecord;
use crate::store::{Decision, DecisionKind};

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/decisions/stream", get(stream))
        .route("/v1/decisions", get(decisions))
        .with_state(state)
}

/// A decision as CrowdSec's Local API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CsDecision {
    pub id: i64,
    /// fleetban's origin: `local`, `fleet`, `recidive`, `subnet`, `manual`, `feed`.
    pub origin: String,
    /// Always `ban`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `Ip` for one address, `Range` for a prefix.
    pub scope: String,
    pub value: String,
    /// Time left, in Go's duration syntax (`3h59m58s`).
    pub duration: String,
    /// `fleetban/ORIGIN` or `fleetban/ORIGIN/JAIL`.
    pub scenario: String,
}

/// Ban time shown for bans without an expiry: ten years.
const FOREVER_SECS: i64 = 10 * 365 * 24 * 3600;

/// Go's `time.Duration` text for whole seconds.
pub fn go_duration(secs: i64) -> String {
    let secs = secs.max(0);
    format!("{}h{}m{}s", secs / 3600, secs % 3600 / 60, secs % 60)
}

fn scope_of(t: &IpNet) -> &'static str {
    if t.prefix_len() == t.max_prefix_len() {
        "Ip"
    } else {
        "Range"
    }
}

/// `d` as CrowdSec shows it at `now`; `deleted` ones have no time left.
pub fn cs_decision(d: &Decision, now: DateTime<Utc>, deleted: bool) -> CsDecision {
    let left = match (deleted, d.expires_at) {
        (true, _) => 0,
        (false, Some(e)) => (e - now).num_seconds(),
        (false, None) => FOREVER_SECS,
    };
    let scenario = if d.jail.is_empty() {
        format!("fleetban/{}", d.origin.as_str())
    } else {
        format!("fleetban/{}/{}", d.origin.as_str(), d.jail)
    };
    CsDecision {
        id: d.id,
        origin: d.origin.as_str().to_owned(),
        kind: "ban".to_owned(),
        scope: scope_of(&d.target).to_owned(),
        value: target_text(&d.target),
        duration: go_duration(left),
        scenario,
    }
}

/// Which decisions a bouncer wants (CrowdSec's query parameters).
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// Lowercase scopes (`ip`, `range`); empty: both.
    pub scopes: HashSet<String>,
    pub origins: HashSet<String>,
    pub containing: Vec<String>,
    pub not_containing: Vec<String>,
}

impl Wanted {
    fn list(s: &Option<String>) -> Vec<String> {
        s.as_deref()
            .unwrap_or("")
            .split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect()
    }

    pub fn accepts(&self, d: &CsDecision) -> bool {
        (self.scopes.is_empty() || self.scopes.contains(&d.scope.to_lowercase()))
            && (self.origins.is_empty() || self.origins.contains(&d.origin))
            && (self.containing.is_empty()
                || self.containing.iter().any(|c| d.scenario.contains(c)))
            && !self.not_containing.iter().any(|c| d.scenario.contains(c))
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// `true` on the bouncer's first pull: every active decision.
    pub startup: Option<bool>,
    /// Comma-separated: `ip`, `range`.
    pub scopes: Option<String>,
    pub origins: Option<String>,
    pub scenarios_containing: Option<String>,
    pub scenarios_not_containing: Option<String>,
    /// Sent by some bouncers; ignored.
    pub community_pull: Option<bool>,
    /// Sent by some bouncers; ignored.
    pub additional_pull: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamResponse {
    pub new: Vec<CsDecision>,
    pub deleted: Vec<CsDecision>,
}

async fn bouncer(state: &ApiState, headers: &HeaderMap) -> ApiResult<BouncerRecord> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "send the bouncer key as X-Api-Key",
            )
        })?;
    state.accounts.bouncer(key).await.map_err(|_| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "unknown or revoked bouncer key",
        )
    })
}

/// New and deleted decisions since this bouncer's last pull; with
/// `startup=true`, every active decision.
#[utoipa::path(get, path = "/v1/decisions/stream", tag = "crowdsec", security(("bouncer_key" = [])),
    params(StreamQuery),
    responses((status = 200, body = StreamResponse), (status = 403, body = ErrorBody)))]
pub async fn stream(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> ApiResult<Json<StreamResponse>> {
    let b = bouncer(&state, &headers).await?;
    let wanted = Wanted {
        scopes: Wanted::list(&q.scopes)
            .into_iter()
            .map(|s| s.to_lowercase())
            .collect(),
        origins: Wanted::list(&q.origins).into_iter().collect(),
        containing: Wanted::list(&q.scenarios_containing),
        not_containing: Wanted::list(&q.scenarios_not_containing),
    };
    let store = state.service.store();
    let now = state.accounts.now();
    let version = store.block_list_version().await?;
    let mut new = Vec::new();
    let mut deleted = Vec::new();
    let mut seen = version;
    if q.startup.unwrap_or(false) || b.last_pull_at.is_none() {
        for d in store.active_bans(now).await? {
            seen = seen.max(d.version);
            new.push(cs_decision(&d, now, false));
        }
    } else {
        for d in store.decisions_since(b.last_version).await? {
            seen = seen.max(d.version);
            match d.kind {
                DecisionKind::Ban if d.expires_at.is_none_or(|e| e > now) => {
                    new.push(cs_decision(&d, now, false));
                }
                DecisionKind::Ban => {}
                DecisionKind::Revoke => {
                    let ended = Decision {
                        id: d.revokes.unwrap_or(d.id),
                        ..d
                    };
                    deleted.push(cs_decision(&ended, now, true));
                }
            }
        }
        if let Some(since) = b.last_pull_at {
            for id in store.expired_between(since, now).await? {
                if let Some(row) = store.decision(id).await? {
                    deleted.push(cs_decision(&row.decision, now, true));
                }
            }
        }
        // A ban that came and went between two pulls is left out of both.
        let gone: HashSet<i64> = deleted.iter().map(|d| d.id).collect();
        new.retain(|d| !gone.contains(&d.id));
    }
    store.bouncer_pulled(&b.name, seen, now).await?;
    new.retain(|d| wanted.accepts(d));
    deleted.retain(|d| wanted.accepts(d));
    Ok(Json(StreamResponse { new, deleted }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DecisionsQuery {
    /// Decisions covering this address.
    pub ip: Option<String>,
    /// Decisions covering this prefix.
    pub range: Option<String>,
    /// `ip` or `range`, with `value`.
    pub scope: Option<String>,
    pub value: Option<String>,
    /// Only `ban` exists in fleetban.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub origins: Option<String>,
    pub scenarios_containing: Option<String>,
    pub scenarios_not_containing: Option<String>,
}

/// Active decisions, optionally those covering one address or prefix
/// (CrowdSec's live mode). `null` when there are none, as CrowdSec answers.
#[utoipa::path(get, path = "/v1/decisions", tag = "crowdsec", security(("bouncer_key" = [])),
    params(DecisionsQuery),
    responses((status = 200, body = Option<Vec<CsDecision>>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn decisions(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<DecisionsQuery>,
) -> ApiResult<Json<Option<Vec<CsDecision>>>> {
    bouncer(&state, &headers).await?;
    let store = state.service.store();
    let now = state.accounts.now();
    let target =
        q.ip.as_deref()
            .or(q.range.as_deref())
            .or(q.value.as_deref())
            .map(super::api::parse_net)
            .transpose()?;
    if q.kind.as_deref().is_some_and(|k| k != "ban") {
        return Ok(Json(None));
    }
    let bans = match target {
        Some(t) => store.active_bans_covering(t, now).await?,
        None => store.active_bans(now).await?,
    };
    let wanted = Wanted {
        scopes: q.scope.iter().map(|s| s.to_lowercase()).collect(),
        origins: Wanted::list(&q.origins).into_iter().collect(),
        containing: Wanted::list(&q.scenarios_containing),
        not_containing: Wanted::list(&q.scenarios_not_containing),
    };
    let out: Vec<CsDecision> = bans
        .iter()
        .map(|d| cs_decision(d, now, false))
        .filter(|d| wanted.accepts(d))
        .collect();
    Ok(Json(if out.is_empty() { None } else { Some(out) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration(0), "0h0m0s");
        assert_eq!(go_duration(3 * 3600 + 59 * 60 + 58), "3h59m58s");
        assert_eq!(go_duration(-5), "0h0m0s");
    }
}
