//! The live stream (Server-Sent Events): `decision` events for every ban and
//! revocation, and `event` events for failures reported by agents (with
//! `events:read`). Browsers' `EventSource` cannot send headers, so the access
//! token may also come as the `access_token` query parameter here.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::error::{ApiResult, ErrorBody};
use super::extract::{bearer, ApiQuery};
use super::views::{ChangeView, EventView};
use super::ApiState;
use crate::auth::{AuthError, Scope};
use crate::service::LiveUpdate;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The access token, for clients that cannot send headers.
    pub access_token: Option<String>,
}

/// `text/event-stream` of `decision` and `event` messages (JSON data), and a
/// `lagged` message when this client fell behind and missed some.
#[utoipa::path(get, path = "/api/v1/stream", tag = "stream", security(("bearer" = [])),
    params(StreamQuery),
    responses((status = 200, content_type = "text/event-stream", body = String), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn stream(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let token = bearer(&headers)
        .map(str::to_owned)
        .or(q.access_token)
        .ok_or(AuthError::Missing)?;
    let principal = state.accounts.authenticate(&token).await?;
    let auth = super::extract::Auth(principal);
    auth.require(Scope::DecisionsRead)?;
    let with_events = auth.0.allows(Scope::EventsRead);
    let mut rx = state.service.subscribe_live();
    let s = async_stream(move |tx| async move {
        loop {
            let msg = match rx.recv().await {
                Ok(LiveUpdate::Decision(d)) => vec![Event::default()
                    .event("decision")
                    .json_data(ChangeView::from(&d))
                    .ok()],
                Ok(LiveUpdate::Events(evs)) if with_events => evs
                    .iter()
                    .map(|e| {
                        Event::default()
                            .event("event")
                            .json_data(EventView::from(e))
                            .ok()
                    })
                    .collect(),
                Ok(LiveUpdate::Events(_)) => Vec::new(),
                Err(RecvError::Lagged(n)) => {
                    vec![Some(Event::default().event("lagged").data(n.to_string()))]
                }
                Err(RecvError::Closed) => return,
            };
            for m in msg.into_iter().flatten() {
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A stream fed by a task through a small channel; the task ends when the
/// client goes away.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
