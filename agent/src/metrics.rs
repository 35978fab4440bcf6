//! The agent's Prometheus metrics, served as text on `[agent]
//! metrics_listen` when it is set.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Metrics are per source: a file path, or `journal:<jail>`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

/// What the log sources report.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    pub lines_read: Family<SourceLabel, Counter>,
    pub lines_cut: Family<SourceLabel, Counter>,
    pub errors: Family<SourceLabel, Counter>,
    /// Bytes between what was read and the end of the file.
    pub lag_bytes: Family<SourceLabel, Gauge>,
    /// Batches of lines read but not yet through detection.
    pub queued_batches: Gauge,
}

impl SourceMetrics {
    pub fn label(source: &str) -> SourceLabel {
        SourceLabel {
            source: source.to_owned(),
        }
    }
}

/// Kinds of drift.
const DRIFT_KINDS: [&str; 4] = ["missing", "extra", "timeout", "structure"];

/// Kinds of drift: `missing`, `extra`, `timeout`, `structure`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabel {
    pub kind: String,
}

/// What enforcement reports.
#[derive(Debug, Default)]
pub struct FirewallMetrics {
    /// Entries the kernel should hold.
    pub entries: Gauge,
    /// Kernel read-backs.
    pub reconciles: Counter,
    /// Differences found between the kernel and the block list, by kind.
    pub drift: Family<DriftLabel, Counter>,
    /// Bans refused (allowlisted, own or server address, too wide).
    pub refused: Counter,
    /// Failed firewall changes and reads.
    pub errors: Counter,
}

impl FirewallMetrics {
    /// Counts `n` differences of `kind`.
    pub fn drifted(&self, kind: &str, n: u64) {
        self.drift
            .get_or_create(&DriftLabel { kind: kind.into() })
            .inc_by(n);
    }

    /// Drift of every kind counted so far.
    pub fn drift_total(&self) -> u64 {
        DRIFT_KINDS
            .iter()
            .map(|kind| {
                self.drift
                    .get_or_create(&DriftLabel {
                        kind: (*kind).into(),
                    })
                    .get()
            })
            .sum()
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "firewall_entries",
            "Entries the kernel should hold",
            self.entries.clone(),
        );
        r.register(
            "firewall_reconciles",
            "Times the kernel was read back and compared with the block list",
            self.reconciles.clone(),
        );
        for kind in DRIFT_KINDS {
            self.drifted(kind, 0);
        }
        r.register(
            "firewall_drift",
            "Differences found between the kernel and the block list and repaired (kind: missing, extra, timeout, structure)",
            self.drift.clone(),
        );
        r.register(
            "firewall_refused",
            "Bans refused: allowlisted, this host's or the server's address, or too wide",
            self.refused.clone(),
        );
        r.register(
            "firewall_errors",
            "Firewall changes or reads that failed",
            self.errors.clone(),
        );
    }
}

/// The registry and the metrics in it.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub sources: Arc<SourceMetrics>,
    pub firewall: Arc<FirewallMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        let sources = Arc::new(SourceMetrics::default());
        let mut r = Registry::with_prefix("fleetban_agent");
        r.register(
            "source_lines_read",
            "Lines read from a log source",
            sources.lines_read.clone(),
        );
        r.register(
            "source_lines_cut",
            "Lines longer than the limit, cut",
            sources.lines_cut.clone(),
        );
        r.register(
            "source_errors",
            "Times a log source was found unusable (missing, unreadable, not a file)",
            sources.errors.clone(),
        );
        r.register(
            "source_lag_bytes",
            "Bytes of a log file not read yet",
            sources.lag_bytes.clone(),
        );
        r.register(
            "source_queued_batches",
            "Batches of lines read but not yet through detection",
            sources.queued_batches.clone(),
        );
        let firewall = Arc::new(FirewallMetrics::default());
        firewall.register(&mut r);
        Metrics {
            registry: Mutex::new(r),
            sources,
            firewall,
        }
    }
}

impl Metrics {
    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = match self.registry.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        warn!(error = %e, "metrics server stopped");
    }
}

/// Binds the metrics listener (at start, so a bad address is a start error).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_of_every_kind_adds_up() {
        let m = FirewallMetrics::default();
        assert_eq!(m.drift_total(), 0);
        m.drifted("missing", 2);
        m.drifted("extra", 1);
        m.drifted("timeout", 4);
        m.drifted("structure", 1);
        assert_eq!(m.drift_total(), 8);
    }
}
