//! fleetban's agent: follows logs, detects attacks with jails, bans locally
//! at once, reports to the server and enforces the fleet's block list.

#![forbid(unsafe_code)]

pub mod blocklist;
pub mod config;
pub mod control;
pub mod detect;
pub mod enforce;
pub mod enroll;
pub mod fail2ban_import;
pub mod firewall;
pub mod fsfiles;
pub mod guard;
pub mod identity;
pub mod link;
pub mod metrics;
pub mod ranges;
pub mod resolve;
pub mod services;
pub mod source;
pub mod test_filter;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fleetban_proto::pb;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::AgentConfig;
use crate::detect::{Detection, Detector};
use crate::enforce::{EnforceCmd, EnforceOptions, Enforcer};
use crate::firewall::{Firewall, FirewallError};
use crate::link::{Link, Report};
use crate::source::position::StateError;
use crate::source::run::SourcePlan;
use crate::source::{Batch, PositionStore};

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Source(#[from] source::run::PlanError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("filter: {0}")]
    Filter(fleetban_engine::FilterError),
    #[error("firewall ({backend}) unusable: {source}; {hint}")]
    Firewall {
        backend: &'static str,
        hint: &'static str,
        #[source]
        source: FirewallError,
    },
    #[error(transparent)]
    Control(#[from] control::ControlError),
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    firewall: Box<dyn Firewall>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    // Every log path, once, with the jails that read it.
    let plan = SourcePlan::new(&config)?;
    let mut positions = PositionStore::open(&config.state_dir)?;
    let metrics = Arc::new(metrics::Metrics::default());
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            metrics::bind(addr)
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?,
        ),
        None => None,
    };

    let backend = firewall.name();
    let control = control::bind(&config.control_socket).await?;
    // The saved block list is enforced before the server is contacted.
    let (guard_tx, guard_rx) = watch::channel(guard(&config).await);
    let options = EnforceOptions {
        guard: guard_rx,
        protect_ssh_client: config.firewall.protect_ssh_client,
        state_file: Some(config.state_dir.join("blocklist.json")),
        reconcile_interval: config.firewall.reconcile_interval,
        metrics: metrics.firewall.clone(),
    };
    let enforcer =
        Enforcer::start(firewall, options)
            .await
            .map_err(|source| AgentError::Firewall {
                backend,
                hint: firewall::fallback_hint(backend),
                source,
            })?;
    let stop = CancellationToken::new();
    tokio::spawn(refresh_guard(config.clone(), guard_tx, stop.clone()));
    let (enforce_tx, enforce_rx) = mpsc::channel(1024);
    let (applied_tx, applied_rx) = watch::channel(enforcer.fleet_version());
    let enforcer = tokio::spawn(enforcer.run(enforce_rx, applied_tx, stop.clone()));

    let (report_tx, report_rx) = mpsc::channel(10_000);
    let (policy_tx, mut policy_rx) = mpsc::channel::<Vec<crate::detect::JailOverride>>(16);
    let link = (!config.server_urls.is_empty()).then(|| {
        let link = Link {
            urls: config.server_urls.clone(),
            policy: policy_tx,
            state_dir: config.state_dir.clone(),
            hello: pb::Hello {
                agent_id: config.agent_id.clone(),
                hostname: hostname::get()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                jails: config
                    .jails
                    .iter()
                    .map(|j| j.settings.name.clone())
                    .collect(),
                last_applied_version: 0,
                group: config.group.clone(),
            },
            reports: report_rx,
            enforce: enforce_tx.clone(),
            applied: applied_rx,
            firewall: metrics.firewall.clone(),
            backend,
        };
        tokio::spawn(link.run(stop.clone()))
    });
    let reports = link.is_some().then_some(report_tx);
    let control = tokio::spawn(control::serve(
        control,
        config.control_socket.clone(),
        enforce_tx.clone(),
        reports.clone(),
        stop.clone(),
    ));

    if let Some(l) = metrics_listener {
        tokio::spawn(metrics::serve(l, metrics.clone(), stop.clone()));
    }
    // Bounded: when detection falls behind, the readers wait.
    let (batch_tx, mut batch_rx) = mpsc::channel::<Batch>(BATCH_QUEUE);
    let logs = plan.len();
    let routes = plan.routes.clone();
    let sources = plan.spawn(&positions, &batch_tx, &metrics.sources);
    drop(batch_tx);

    info!(
        agent = %config.agent_id,
        jails = config.jails.len(),
        logs,
        firewall = backend,
        server = if config.server_urls.is_empty() {
            "none (standalone)".to_owned()
        } else {
            config.server_urls.join(" ")
        },
        "agent running"
    );

    let mut detector =
        Detector::new(&config.jails, routes, &config.zone).map_err(AgentError::Filter)?;
    let scopes: Scopes = config
        .jails
        .iter()
        .filter(|j| !j.ports.is_all())
        .map(|j| (j.settings.name.clone(), j.ports.clone()))
        .collect();
    let (mut resolver, mut resolved_rx) = crate::resolve::Resolver::new();
    let mut housekeeping = tokio::time::interval(Duration::from_secs(10));
    let mut save = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            batch = batch_rx.recv() => {
                let Some(batch) = batch else { break };
                metrics.sources.queued_batches.dec();
                let now = Utc::now().timestamp_millis();
                for line in &batch.lines {
                    // The journal's own time, unless it lies in the future.
                    let at = line.time_ms.map_or(now, |t| t.min(now));
                    for d in detector.on_line(line, at) {
                        match d {
                            Detection::Resolve(p) => {
                                if let Some(r) = resolver.lookup(p) {
                                    for d in resolved(&mut detector, r) {
                                        handle(d, &enforce_tx, reports.as_ref(), &scopes).await;
                                    }
                                }
                            }
                            d => handle(d, &enforce_tx, reports.as_ref(), &scopes).await,
                        }
                    }
                }
                if let Some(c) = &batch.checkpoint {
                    positions.record(&batch.key, c);
                }
            }
            Some(r) = resolved_rx.recv() => {
                resolver.remember(&r.pending.name, &r.ips);
                for d in resolved(&mut detector, r) {
                    handle(d, &enforce_tx, reports.as_ref(), &scopes).await;
                }
            }
            Some(overrides) = policy_rx.recv() => {
                for (jail, enabled, s) in detector.apply_policy(&overrides) {
                    info!(%jail, enabled, maxretry = s.maxretry, findtime_s = s.findtime_ms / 1000, bantime_s = s.bantime_ms / 1000, "jail policy applied");
                }
            }
            _ = housekeeping.tick() => detector.expire(Utc::now().timestamp_millis()),
            _ = save.tick() => save_positions(&mut positions),
            () = &mut shutdown => break,
        }
    }
    info!("agent stopping");
    // Lines still queued were not through detection: their positions are
    // not saved, so they are read again after a restart.
    save_positions(&mut positions);
    stop.cancel();
    drop(batch_rx);
    sources.stop().await;
    let _ = control.await;
    let _ = enforcer.await;
    if let Some(l) = link {
        let _ = l.await;
    }
    Ok(())
}

/// What this agent never blocks: the allowlist, its own addresses, the
/// server's, and the SSH client it was started from (when so configured).
async fn guard(config: &AgentConfig) -> guard::Guard {
    let fw = &config.firewall;
    let mut g = guard::Guard::new(fw.widest_prefix_v4, fw.widest_prefix_v6);
    for net in &fw.allowlist {
        g.protect(*net, "the allowlisted network");
    }
    for net in ["127.0.0.0/8", "::1/128"] {
        if let Ok(n) = net.parse() {
            g.protect(n, "loopback");
        }
    }
    match if_addrs::get_if_addrs() {
        Ok(addrs) => {
            for a in addrs {
                g.protect_ip(a.ip(), "this host's address");
            }
        }
        Err(e) => warn!(error = %e, "cannot list this host's addresses; they are not protected"),
    }
    if let Some(url) = &config.server_url {
        match server_host(url) {
            Some(hostport) => match tokio::net::lookup_host(&hostport).await {
                Ok(addrs) => {
                    for a in addrs {
                        g.protect_ip(a.ip(), "the server's address");
                    }
                }
                Err(e) => {
                    warn!(server = %hostport, error = %e, "cannot resolve the server; its address is not protected")
                }
            },
            None => warn!(server = %url, "cannot tell the server's host"),
        }
    }
    if fw.protect_ssh_client {
        for var in ["SSH_CONNECTION", "SSH_CLIENT"] {
            if let Some(ip) = std::env::var(var)
                .ok()
                .as_deref()
                .and_then(guard::ssh_client)
            {
                g.protect_ip(ip, "the operator's SSH client");
            }
        }
    }
    g
}

/// How often the host's and the server's addresses are read again.
const GUARD_REFRESH: Duration = Duration::from_secs(30);

/// Reads the protected addresses again now and then (an address from DHCP,
/// a new interface, the server moved in DNS), so a ban never covers them.
async fn refresh_guard(
    config: AgentConfig,
    tx: watch::Sender<guard::Guard>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(GUARD_REFRESH) => {}
        }
        let fresh = guard(&config).await;
        tx.send_if_modified(|current| {
            if *current == fresh {
                return false;
            }
            info!("the protected addresses changed (this host's or the server's)");
            *current = fresh;
            true
        });
    }
}

/// `HOST:PORT` of an `http(s)://HOST[:PORT][/...]` URL.
fn server_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    let has_port = if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.contains(':')
    };
    if has_port {
        Some(authority.to_owned())
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        Some(format!("{authority}:{port}"))
    }
}

/// The failures a resolved host name stands for: one per address.
fn resolved(detector: &mut Detector, r: crate::resolve::Resolved) -> Vec<Detection> {
    if r.ips.is_empty() {
        warn!(name = %r.pending.name, "host name in a failure does not resolve; not banned");
    }
    r.ips
        .iter()
        .flat_map(|ip| {
            detector.on_resolved(r.pending.jail, *ip, r.pending.user.clone(), r.pending.at_ms)
        })
        .collect()
}

/// Lines queued between the sources and detection, in batches (each at most
/// 64 KiB of a file, or 1,024 journal entries).
const BATCH_QUEUE: usize = 16;

fn save_positions(positions: &mut PositionStore) {
    if let Err(e) = positions.flush() {
        warn!(error = %e, "cannot save log positions");
    }
}

/// Each jail's port scope, by name.
type Scopes = std::collections::HashMap<String, fleetban_proto::PortScope>;

async fn handle(
    d: Detection,
    enforce: &mpsc::Sender<EnforceCmd>,
    reports: Option<&mpsc::Sender<Report>>,
    scopes: &Scopes,
) {
    match d {
        Detection::Failure {
            jail,
            ip,
            user,
            at_ms,
        } => {
            tracing::debug!(%jail, %ip, "failure");
            if let Some(r) = reports {
                let event = pb::Event {
                    id: uuid::Uuid::now_v7().to_string(),
                    jail,
                    ip: ip.to_string(),
                    time_ms: at_ms,
                    user: user.unwrap_or_default(),
                };
                send_report(r, Report::Event(event)).await;
            }
        }
        Detection::Resolve(p) => debug!(name = %p.name, "host name left unresolved"),
        Detection::Ban(ban) => {
            let target = ipnet::IpNet::from(ban.ip);
            info!(jail = %ban.jail, ip = %ban.ip, failures = ban.failures, bantime_s = ban.duration_ms / 1000, "ban");
            let until_ms = ban.at_ms.saturating_add(ban.duration_ms);
            let ports = scopes.get(&ban.jail).cloned().unwrap_or_default();
            if enforce
                .send(EnforceCmd::LocalBan {
                    target,
                    until_ms,
                    jail: ban.jail.clone(),
                    ports: ports.clone(),
                })
                .await
                .is_err()
            {
                warn!("enforcer gone; ban not applied");
            }
            if let Some(r) = reports {
                let local = pb::LocalBan {
                    id: uuid::Uuid::now_v7().to_string(),
                    jail: ban.jail,
                    target: target.to_string(),
                    time_ms: ban.at_ms,
                    duration_s: (ban.duration_ms / 1000).max(1),
                    failures: u64::from(ban.failures),
                    origin: "local".into(),
                    reason: String::new(),
                    ports: (&ports).into(),
                };
                send_report(r, Report::Ban(local)).await;
            }
        }
    }
}

async fn send_report(reports: &mpsc::Sender<Report>, r: Report) {
    if reports.send(r).await.is_err() {
        warn!("server link gone; report dropped");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_hosts() {
        assert_eq!(
            super::server_host("http://10.0.0.1:50051").as_deref(),
            Some("10.0.0.1:50051")
        );
        assert_eq!(
            super::server_host("https://fleet.example/x").as_deref(),
            Some("fleet.example:443")
        );
        assert_eq!(
            super::server_host("http://[2001:db8::1]:9").as_deref(),
            Some("[2001:db8::1]:9")
        );
        assert_eq!(
            super::server_host("http://[2001:db8::1]").as_deref(),
            Some("[2001:db8::1]:80")
        );
        assert_eq!(super::server_host("nonsense"), None);
    }
}
