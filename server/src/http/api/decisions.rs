//! Decisions: list with filters, one, create, revoke, bulk, export.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use fleetban_policy::Origin;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::cursor;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth, Source};
use super::views::{target_text, DecisionView, Page as PageView};
use super::{page_limit, parse_net, ApiState};
use crate::auth::Scope;
use crate::service::ManualBan;
use crate::store::api::{Cursor, DecisionFilter, DecisionRow, DecisionStatus, Order, Page};

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusParam {
    Active,
    Expired,
    Revoked,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OriginParam {
    Local,
    Fleet,
    Recidive,
    Subnet,
    Manual,
    Feed,
}

/// `newest` (default) or `oldest` first, by creation time.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum SortParam {
    #[default]
    Newest,
    Oldest,
}

impl From<SortParam> for Order {
    fn from(s: SortParam) -> Order {
        match s {
            SortParam::Newest => Order::Desc,
            SortParam::Oldest => Order::Asc,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DecisionQuery {
    /// Bans whose target overlaps this address or CIDR prefix.
    pub ip: Option<String>,
    pub origin: Option<OriginParam>,
    pub jail: Option<String>,
    /// Bans echoed from this agent's local bans.
    pub agent: Option<String>,
    /// `fleet` or `group:NAME`.
    pub scope: Option<String>,
    pub status: Option<StatusParam>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub sort: Option<SortParam>,
}

impl DecisionQuery {
    fn filter(&self) -> Result<DecisionFilter, ApiError> {
        Ok(DecisionFilter {
            target: self.ip.as_deref().map(parse_net).transpose()?,
            origin: self.origin.map(|o| match o {
                OriginParam::Local => Origin::Local,
                OriginParam::Fleet => Origin::Fleet,
                OriginParam::Recidive => Origin::Recidive,
                OriginParam::Subnet => Origin::Subnet,
                OriginParam::Manual => Origin::Manual,
                OriginParam::Feed => Origin::Feed,
            }),
            jail: self.jail.clone(),
            agent: self.agent.clone(),
            scope: self.scope.clone(),
            status: self.status.map(|s| match s {
                StatusParam::Active => DecisionStatus::Active,
                StatusParam::Expired => DecisionStatus::Expired,
                StatusParam::Revoked => DecisionStatus::Revoked,
            }),
            since: self.since,
            until: self.until,
        })
    }

    fn page(&self) -> Result<Page, ApiError> {
        Ok(Page {
            after: self
                .cursor
                .as_deref()
                .map(|c| cursor::decode(c, cursor::integer_id))
                .transpose()?,
            limit: page_limit(self.limit)?,
            order: self.sort.unwrap_or_default().into(),
        })
    }
}

fn next_cursor(rows: &[DecisionRow], limit: u32) -> Option<String> {
    if rows.len() < limit as usize {
        return None;
    }
    rows.last().map(|r| {
        cursor::encode(&Cursor {
            at: r.decision.created_at,
            id: r.decision.id.to_string(),
        })
    })
}

/// Bans, newest first, filtered; revocations show in each ban's `revoked`.
#[utoipa::path(get, path = "/api/v1/decisions", tag = "decisions", security(("bearer" = [])),
    params(DecisionQuery),
    responses((status = 200, body = PageView<DecisionView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    ApiQuery(q): ApiQuery<DecisionQuery>,
) -> ApiResult<Json<PageView<DecisionView>>> {
    auth.require(Scope::DecisionsRead)?;
    let (filter, page) = (q.filter()?, q.page()?);
    let now = state.accounts.now();
    let rows = state
        .service
        .store()
        .list_decisions(&filter, now, &page)
        .await?;
    Ok(Json(PageView {
        next_cursor: next_cursor(&rows, page.limit),
        items: rows.iter().map(|r| DecisionView::new(r, now)).collect(),
    }))
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("decision {id:?} not found")))
}

#[utoipa::path(get, path = "/api/v1/decisions/{id}", tag = "decisions", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = DecisionView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<DecisionView>> {
    auth.require(Scope::DecisionsRead)?;
    let id = parse_id(&id)?;
    let row = state
        .service
        .store()
        .decision(id)
        .await?
        .filter(|r| r.decision.revokes.is_none())
        .ok_or_else(|| ApiError::not_found(format!("decision {id} not found")))?;
    Ok(Json(DecisionView::new(&row, state.accounts.now())))
}

/// A manual ban.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDecision {
    /// An address or a CIDR prefix.
    pub target: String,
    /// How long: `4h`, `30m`, `7d`; `permanent` for until revoked.
    /// Default `4h`.
    #[serde(default)]
    pub duration: Option<String>,
    pub reason: String,
    /// Only the agents of this group; default the whole fleet.
    #[serde(default)]
    pub group: Option<String>,
    /// Only these ports, as `PROTOCOL/PORTS`: `tcp/22`, `udp/53`,
    /// `all/80,443` (TCP and UDP), `tcp/8000:8100`; ports by number or a
    /// well-known service name. Default: all traffic.
    #[serde(default)]
    pub ports: Option<String>,
}

/// Default length of a manual ban, as CrowdSec's `cscli decisions add`.
const DEFAULT_DURATION: std::time::Duration = std::time::Duration::from_secs(4 * 3600);
const MAX_REASON: usize = 1024;
const MAX_BULK: usize = 1000;

fn manual_ban(req: &CreateDecision) -> Result<ManualBan, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", m);
    let target = parse_net(&req.target)?;
    let duration = match req.duration.as_deref() {
        Some("permanent") => None,
        Some(d) => Some(
            humantime::parse_duration(d)
                .ok()
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .filter(|d| *d > chrono::Duration::zero() && *d <= chrono::Duration::days(3650))
                .ok_or_else(|| {
                    bad(format!(
                        "duration {d:?}: expected a duration such as 4h, 30m or 7d (up to 10 years), or \"permanent\""
                    ))
                })?,
        ),
        None => chrono::Duration::from_std(DEFAULT_DURATION).ok(),
    };
    if req.reason.trim().is_empty() || req.reason.len() > MAX_REASON {
        return Err(bad(format!(
            "reason: expected 1 to {MAX_REASON} characters"
        )));
    }
    if let Some(g) = &req.group {
        let ok = !g.is_empty()
            && g.len() <= 64
            && g.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(bad(format!(
                "group {g:?}: expected 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
    }
    let ports = match req.ports.as_deref() {
        Some(p) => fleetban_proto::PortScope::from_text(p)
            .map_err(|e| bad(format!("ports {p:?}: {e}")))?
            .to_string(),
        None => String::new(),
    };
    Ok(ManualBan {
        target,
        duration,
        group: req.group.clone(),
        reason: req.reason.clone(),
        ports,
    })
}

/// Ban an address or a prefix now: agents get it pushed at once. Refused
/// (422) for allowlisted or too broad targets.
#[utoipa::path(post, path = "/api/v1/decisions", tag = "decisions", security(("bearer" = [])),
    request_body = CreateDecision,
    responses((status = 201, body = DecisionView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiJson(req): ApiJson<CreateDecision>,
) -> ApiResult<(StatusCode, Json<DecisionView>)> {
    let actor = auth.require(Scope::DecisionsWrite)?.actor();
    let ban = manual_ban(&req)?;
    let made = state
        .service
        .manual_bans(std::slice::from_ref(&ban), &actor)
        .await?;
    let d = made
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("manual ban", &"no decision recorded"))?;
    state
        .accounts
        .audit(
            &actor,
            "decision.create",
            &d.id.to_string(),
            serde_json::json!({ "target": target_text(&d.target), "expires_at": d.expires_at, "reason": d.reason, "scope": d.scope, "ports": d.ports }),
            source,
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(DecisionView::fresh(&d, state.accounts.now())),
    ))
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

async fn revoke_one(
    state: &ApiState,
    id: i64,
    reason: Option<&str>,
    actor: &str,
    source: Option<std::net::IpAddr>,
) -> ApiResult<DecisionView> {
    let reason = reason.unwrap_or("revoked through the API");
    if reason.len() > MAX_REASON {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("reason: at most {MAX_REASON} characters"),
        ));
    }
    let row = state
        .service
        .store()
        .decision(id)
        .await?
        .filter(|r| r.decision.revokes.is_none())
        .ok_or_else(|| ApiError::not_found(format!("decision {id} not found")))?;
    if row.revocation.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("decision {id} is already revoked"),
        ));
    }
    let r = state.service.revoke(id, actor, reason).await?;
    state
        .accounts
        .audit(
            actor,
            "decision.revoke",
            &id.to_string(),
            serde_json::json!({ "target": target_text(&r.target), "reason": reason, "revocation": r.id }),
            source,
        )
        .await;
    let row = DecisionRow {
        decision: row.decision,
        revocation: Some(r),
    };
    Ok(DecisionView::new(&row, state.accounts.now()))
}

/// End a ban early, for the whole fleet.
#[utoipa::path(post, path = "/api/v1/decisions/{id}/revoke", tag = "decisions", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = RevokeRequest,
    responses((status = 200, body = DecisionView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> ApiResult<Json<DecisionView>> {
    let actor = auth.require(Scope::DecisionsWrite)?.actor();
    let id = parse_id(&id)?;
    Ok(Json(
        revoke_one(&state, id, req.reason.as_deref(), &actor, source).await?,
    ))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRevoke {
    pub id: i64,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Up to 1000 bans to make and 1000 to revoke. Everything is checked
/// first: one bad item refuses the whole request, with nothing written.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    #[serde(default)]
    pub create: Vec<CreateDecision>,
    #[serde(default)]
    pub revoke: Vec<BulkRevoke>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResponse {
    pub created: Vec<DecisionView>,
    pub revoked: Vec<DecisionView>,
}

#[utoipa::path(post, path = "/api/v1/decisions/bulk", tag = "decisions", security(("bearer" = [])),
    request_body = BulkRequest,
    responses((status = 200, body = BulkResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn bulk(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiJson(req): ApiJson<BulkRequest>,
) -> ApiResult<Json<BulkResponse>> {
    let actor = auth.require(Scope::DecisionsWrite)?.actor();
    if req.create.len() > MAX_BULK || req.revoke.len() > MAX_BULK {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("at most {MAX_BULK} bans to create and {MAX_BULK} to revoke at once"),
        ));
    }
    let bans = req
        .create
        .iter()
        .enumerate()
        .map(|(i, c)| {
            manual_ban(c).map_err(|mut e| {
                e.message = format!("create[{i}]: {}", e.message);
                e
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::HashSet::new();
    for (i, r) in req.revoke.iter().enumerate() {
        if !seen.insert(r.id) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("revoke[{i}]: decision {} is listed twice", r.id),
            ));
        }
        let row = state
            .service
            .store()
            .decision(r.id)
            .await?
            .filter(|row| row.decision.revokes.is_none())
            .ok_or_else(|| {
                ApiError::not_found(format!("revoke[{i}]: decision {} not found", r.id))
            })?;
        if row.revocation.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("revoke[{i}]: decision {} is already revoked", r.id),
            ));
        }
        if r.reason.as_ref().is_some_and(|s| s.len() > MAX_REASON) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("revoke[{i}]: reason: at most {MAX_REASON} characters"),
            ));
        }
    }
    // Policy checks run on every ban before any is recorded.
    let made = state.service.manual_bans(&bans, &actor).await?;
    let now = state.accounts.now();
    for d in &made {
        state
            .accounts
            .audit(
                &actor,
                "decision.create",
                &d.id.to_string(),
                serde_json::json!({ "target": target_text(&d.target), "expires_at": d.expires_at, "reason": d.reason, "bulk": true }),
                source,
            )
            .await;
    }
    let mut revoked = Vec::new();
    for r in &req.revoke {
        revoked.push(revoke_one(&state, r.id, r.reason.as_deref(), &actor, source).await?);
    }
    Ok(Json(BulkResponse {
        created: made.iter().map(|d| DecisionView::fresh(d, now)).collect(),
        revoked,
    }))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One address or prefix per line, as block-list feeds.
    #[default]
    Text,
    Csv,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `text` (default) or `csv`.
    pub format: Option<ExportFormat>,
    pub ip: Option<String>,
    pub origin: Option<OriginParam>,
    pub jail: Option<String>,
    pub agent: Option<String>,
    pub scope: Option<String>,
    /// Default `active`.
    pub status: Option<StatusParam>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A CSV cell a spreadsheet will not run as a formula: text starting with
/// `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'`.
pub fn csv_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

/// Most rows one export returns.
const MAX_EXPORT: usize = 1_000_000;

/// Bans as plain text (one target per line) or CSV; by default the active
/// ones.
#[utoipa::path(get, path = "/api/v1/decisions/export", tag = "decisions", security(("bearer" = [])),
    params(ExportQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 400, body = ErrorBody)))]
pub async fn export(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    auth.require(Scope::DecisionsRead)?;
    let filter = DecisionQuery {
        ip: q.ip,
        origin: q.origin,
        jail: q.jail,
        agent: q.agent,
        scope: q.scope,
        status: Some(q.status.unwrap_or(StatusParam::Active)),
        since: q.since,
        until: q.until,
        ..Default::default()
    }
    .filter()?;
    let now = state.accounts.now();
    let mut rows = Vec::new();
    let mut page = Page {
        after: None,
        limit: super::MAX_PAGE,
        order: Order::Asc,
    };
    loop {
        let batch = state
            .service
            .store()
            .list_decisions(&filter, now, &page)
            .await?;
        let full = batch.len() == page.limit as usize;
        page.after = batch.last().map(|r| Cursor {
            at: r.decision.created_at,
            id: r.decision.id.to_string(),
        });
        rows.extend(batch);
        if !full || rows.len() >= MAX_EXPORT {
            break;
        }
    }
    match q.format.unwrap_or_default() {
        ExportFormat::Text => {
            let mut out = String::new();
            for r in &rows {
                out.push_str(&target_text(&r.decision.target));
                out.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response())
        }
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let header_row = [
                "id",
                "target",
                "origin",
                "jail",
                "scope",
                "reason",
                "creator",
                "created_at",
                "expires_at",
                "status",
            ];
            let write = |w: &mut csv::Writer<Vec<u8>>, rec: &[String]| {
                w.write_record(rec)
                    .map_err(|e| ApiError::internal("csv export", &e))
            };
            write(&mut w, &header_row.map(str::to_owned))?;
            for r in &rows {
                let d = &r.decision;
                write(
                    &mut w,
                    &[
                        d.id.to_string(),
                        target_text(&d.target),
                        d.origin.as_str().to_owned(),
                        csv_cell(&d.jail),
                        csv_cell(&d.scope),
                        csv_cell(&d.reason),
                        csv_cell(&d.creator),
                        d.created_at.to_rfc3339(),
                        d.expires_at.map(|e| e.to_rfc3339()).unwrap_or_default(),
                        super::views::status_name(r.status(now)).to_owned(),
                    ],
                )?;
            }
            let bytes = w
                .into_inner()
                .map_err(|e| ApiError::internal("csv export", &e))?;
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response())
        }
    }
}
