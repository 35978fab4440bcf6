//! fleetban's server: agents connect over gRPC and report what they see; the
//! server correlates it into decisions, stores them and pushes the block
//! list back to every agent. An HTTP port serves health and metrics.

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod feeds;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod policy_config;
pub mod service;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::Metrics;
use crate::service::identity::Identities;
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
    #[error("cannot set up authentication: {0}")]
    Auth(#[from] auth::AuthError),
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

/// Accepted connections with Nagle's algorithm off: small messages (acks,
/// deltas, TLS handshake records) leave at once instead of waiting up to
/// 40 ms for the peer's delayed ACK.
pub fn nodelay(
    incoming: TcpListenerStream,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    incoming.map(|s| {
        let s = s?;
        if let Err(e) = s.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        Ok(s)
    })
}

/// How the server runs, beyond its sockets.
#[derive(Clone)]
pub struct RunOptions {
    pub event_retention: chrono::Duration,
    /// The policies that seed an empty database (a database that has
    /// policies keeps its own).
    pub policy: policy_config::PolicySeed,
    /// Block-list feeds imported on a schedule.
    pub feeds: Vec<feeds::FeedConfig>,
    /// TLS and agent certificates on the gRPC port; `None`: plaintext, and
    /// agents are who their Hello says (development on loopback only).
    pub tls: Option<GrpcTls>,
    pub auth: auth::AuthConfig,
    /// The gRPC URL agents reach this server by (see
    /// [`identity::tls::agent_url`]), shown with new enrollment tokens.
    pub agent_url: Option<String>,
}

/// The gRPC port's TLS, and the CA that signs agents' certificates.
#[derive(Clone)]
pub struct GrpcTls {
    pub config: tonic::transport::ServerTlsConfig,
    pub authority: Arc<identity::Authority>,
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
            tls: None,
            auth: auth::AuthConfig::default(),
            agent_url: None,
        }
    }
}

/// Once a second, reads revocations made by the command line or another
/// replica, so their streams here end too.
async fn watch_revocations(identities: Arc<Identities>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = identities.refresh_revocations().await {
            tracing::warn!(error = %e, "cannot read revocations");
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
    let clock: Arc<dyn service::Clock> = Arc::new(SystemClock);
    let identities = Arc::new(
        Identities::new(
            store.clone(),
            clock.clone(),
            options.tls.as_ref().map(|t| t.authority.clone()),
        )
        .await?,
    );
    let accounts = Arc::new(auth::Accounts::new(store.clone(), clock.clone(), options.auth).await?);
    let service = Arc::new(Service::new(store, clock, metrics, &options.policy).await?);
    let feed_client = feeds::client().map_err(ServerError::FeedClient)?;
    let feeds_changed = Arc::new(tokio::sync::Notify::new());
    let api = Arc::new(http::api::ApiState {
        service: service.clone(),
        accounts,
        identities: identities.clone(),
        feeds: Arc::new(options.feeds.clone()),
        feed_client: feed_client.clone(),
        feeds_changed: feeds_changed.clone(),
        agent_url: options.agent_url.clone(),
    });
    let event_retention = options.event_retention;
    let stop = CancellationToken::new();

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls.config)?;
    }
    let grpc = builder
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(grpc::AgentServiceServer::new(
            grpc::AgentEndpoint::new(service.clone(), stop.clone())
                .with_identities(identities.clone()),
        ))
        .add_service(grpc::EnrollServiceServer::new(grpc::EnrollEndpoint::new(
            identities.clone(),
        )))
        .serve_with_incoming_shutdown(
            nodelay(TcpListenerStream::new(listeners.grpc)),
            stop.clone().cancelled_owned(),
        );
    let http = axum::serve(
        listeners.http,
        http::router(service.clone(), api)
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stop.clone().cancelled_owned());

    tokio::spawn(housekeeping(service.clone(), event_retention, stop.clone()));
    tokio::spawn(service.clone().follow(stop.clone()));
    tokio::spawn(feeds::supervise(
        service.clone(),
        feed_client,
        options.feeds,
        feeds_changed,
        stop.clone(),
    ));
    tokio::spawn(watch_revocations(identities, stop.clone()));
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
