//! Events: query, aggregates, and everything known about one address.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::cursor;
use super::decisions::SortParam;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiQuery, Auth};
use super::views::{DecisionView, EventView, GroupView, Page as PageView};
use super::{page_limit, parse_net, ApiState};
use crate::auth::Scope;
use crate::store::api::{Cursor, DecisionFilter, EventFilter, EventKey, Order, Page};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Events from this address or from inside this CIDR prefix.
    pub ip: Option<String>,
    pub jail: Option<String>,
    pub agent: Option<String>,
    /// Happened at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Happened before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub sort: Option<SortParam>,
}

fn event_filter(
    ip: Option<&str>,
    jail: &Option<String>,
    agent: &Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<EventFilter, ApiError> {
    Ok(EventFilter {
        ip: ip.map(parse_net).transpose()?,
        jail: jail.clone(),
        agent: agent.clone(),
        since,
        until,
    })
}

/// Events, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("bearer" = [])),
    params(EventQuery),
    responses((status = 200, body = PageView<EventView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<PageView<EventView>>> {
    auth.require(Scope::EventsRead)?;
    let filter = event_filter(q.ip.as_deref(), &q.jail, &q.agent, q.since, q.until)?;
    let page = Page {
        after: q
            .cursor
            .as_deref()
            .map(|c| cursor::decode(c, cursor::uuid_id))
            .transpose()?,
        limit: page_limit(q.limit)?,
        order: q.sort.unwrap_or_default().into(),
    };
    let rows = state.service.store().list_events(&filter, &page).await?;
    let next_cursor = if rows.len() < page.limit as usize {
        None
    } else {
        rows.last().map(|e| {
            cursor::encode(&Cursor {
                at: e.occurred_at,
                id: e.id.to_string(),
            })
        })
    };
    Ok(Json(PageView {
        items: rows.iter().map(EventView::from).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ByParam {
    Ip,
    Jail,
    Agent,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AggregateQuery {
    /// What to count by.
    pub by: ByParam,
    pub ip: Option<String>,
    pub jail: Option<String>,
    pub agent: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Most groups returned, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Event counts by address, jail or agent, most first.
#[utoipa::path(get, path = "/api/v1/events/aggregate", tag = "events", security(("bearer" = [])),
    params(AggregateQuery),
    responses((status = 200, body = Vec<GroupView>), (status = 400, body = ErrorBody)))]
pub async fn aggregate(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    ApiQuery(q): ApiQuery<AggregateQuery>,
) -> ApiResult<Json<Vec<GroupView>>> {
    auth.require(Scope::EventsRead)?;
    let filter = event_filter(q.ip.as_deref(), &q.jail, &q.agent, q.since, q.until)?;
    let key = match q.by {
        ByParam::Ip => EventKey::Ip,
        ByParam::Jail => EventKey::Jail,
        ByParam::Agent => EventKey::Agent,
    };
    let groups = state
        .service
        .store()
        .event_groups(&filter, key, page_limit(q.limit)?)
        .await?;
    Ok(Json(groups.iter().map(GroupView::from).collect()))
}

/// Everything known about one address.
#[derive(Debug, Serialize, ToSchema)]
pub struct IpReport {
    pub ip: String,
    /// Whether a ban covers it now.
    pub banned: bool,
    /// Bans that cover it (in force or not), newest first, up to 100.
    pub decisions: Vec<DecisionView>,
    /// Its events per agent (host).
    pub events_by_agent: Vec<GroupView>,
    pub events_by_jail: Vec<GroupView>,
    /// Its latest events, up to 20.
    pub recent_events: Vec<EventView>,
}

/// Needs both `decisions:read` and `events:read`.
#[utoipa::path(get, path = "/api/v1/ips/{ip}", tag = "events", security(("bearer" = [])),
    params(("ip" = String, Path, description = "an IPv4 or IPv6 address")),
    responses((status = 200, body = IpReport), (status = 400, body = ErrorBody)))]
pub async fn lookup(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(ip): Path<String>,
) -> ApiResult<Json<IpReport>> {
    auth.require(Scope::DecisionsRead)?;
    auth.require(Scope::EventsRead)?;
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| ApiError::bad_parameter(format!("{ip:?} is not an IPv4 or IPv6 address")))?;
    let net = parse_net(&addr.to_string())?;
    let store = state.service.store();
    let now = state.accounts.now();
    let rows = store
        .list_decisions(
            &DecisionFilter {
                target: Some(net),
                ..Default::default()
            },
            now,
            &Page {
                after: None,
                limit: 100,
                order: Order::Desc,
            },
        )
        .await?;
    // Only bans that contain the address (not prefixes inside it).
    let decisions: Vec<DecisionView> = rows
        .iter()
        .filter(|r| r.decision.target.contains(&net))
        .map(|r| DecisionView::new(r, now))
        .collect();
    let filter = EventFilter {
        ip: Some(net),
        ..Default::default()
    };
    let by_agent = store.event_groups(&filter, EventKey::Agent, 1000).await?;
    let by_jail = store.event_groups(&filter, EventKey::Jail, 1000).await?;
    let recent = store
        .list_events(
            &filter,
            &Page {
                after: None,
                limit: 20,
                order: Order::Desc,
            },
        )
        .await?;
    Ok(Json(IpReport {
        ip: net.addr().to_string(),
        banned: decisions.iter().any(|d| d.status == "active"),
        decisions,
        events_by_agent: by_agent.iter().map(GroupView::from).collect(),
        events_by_jail: by_jail.iter().map(GroupView::from).collect(),
        recent_events: recent.iter().map(EventView::from).collect(),
    }))
}
