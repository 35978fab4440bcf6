//! fleetban's server: agents connect over gRPC and report what they see; the
//! server correlates it into decisions, stores them and pushes the block
//! list back to every agent. An HTTP port serves health and metrics.

#![forbid(unsafe_code)]

pub mod config;
pub mod feeds;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod policy_config;
pub mod service;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::Metrics;
use crate::service::{Service, ServiceError, SystemClock};
use crate::store::{Store, StoreError};

/// The server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("cannot build the feeds' HTTP client: {0}")]
    FeedClient(#[source] reqwest::Error),
    #[error("gRPC endpoint failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP endpoint failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Once a second, tells agents which bans expired; every ten minutes,
/// prunes events older than `retention`.
async fn housekeeping(service: Arc<Service>, retention: chrono::Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since = chrono::Utc::now();
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match service.announce_expired(since).await {
            Ok(now) => since = now,
            Err(e) => tracing::warn!(error = %e, "cannot check expired bans"),
        }
        if ticks.is_multiple_of(600) {
            if let Err(e) = service.prune_events(retention).await {
                tracing::warn!(error = %e, "cannot prune events");
            }
        }
        ticks += 1;
    }
}

/// How the server runs, beyond its sockets.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub event_retention: chrono::Duration,
    /// The policies that seed an empty database (a database that has
    /// policies keeps its own).
    pub policy: policy_config::PolicySeed,
    /// Block-list feeds imported on a schedule.
    pub feeds: Vec<feeds::FeedConfig>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            event_retention: chrono::Duration::days(30),
            policy: policy_config::PolicySeed {
                policy: fleetban_policy::Policy::default(),
                rules_toml: String::new(),
                jails: Vec::new(),
            },
            feeds: Vec::new(),
        }
    }
}

/// The sockets the server answers on, bound by the caller (tests bind
/// `127.0.0.1:0`).
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
}

/// Serves until `shutdown` completes, then closes every agent stream.
pub async fn run(
    store: Arc<dyn Store>,
    listeners: Listeners,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = Arc::new(Metrics::new());
    let service =
        Arc::new(Service::new(store, Arc::new(SystemClock), metrics, &options.policy).await?);
    let feed_client = if options.feeds.is_empty() {
        None
    } else {
        Some(feeds::client().map_err(ServerError::FeedClient)?)
    };
    let event_retention = options.event_retention;
    let stop = CancellationToken::new();

    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(grpc::AgentServiceServer::new(grpc::AgentEndpoint::new(
            service.clone(),
            stop.clone(),
        )))
        .serve_with_incoming_shutdown(
            // Deltas are small and must leave at once: no Nagle delay.
            TcpListenerStream::new(listeners.grpc).map(|s| {
                if let Ok(s) = &s {
                    let _ = s.set_nodelay(true);
                }
                s
            }),
            stop.clone().cancelled_owned(),
        );
    let http = axum::serve(listeners.http, http::router(service.clone()))
        .with_graceful_shutdown(stop.clone().cancelled_owned());

    tokio::spawn(housekeeping(service.clone(), event_retention, stop.clone()));
    tokio::spawn(service.clone().follow(stop.clone()));
    if let Some(client) = feed_client {
        for feed in options.feeds {
            tokio::spawn(feeds::schedule(
                service.clone(),
                client.clone(),
                feed,
                stop.clone(),
            ));
        }
    }
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down");
        trigger.cancel();
    });
    let (grpc, http) = tokio::join!(grpc, async { http.await.map_err(ServerError::Http) });
    grpc?;
    http?;
    Ok(())
}
