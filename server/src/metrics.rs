//! The server's Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub events_stored: Counter,
    pub event_batches: Counter,
    pub decisions: Counter,
    pub agents_connected: Gauge,
    pub deltas_sent: Counter,
    pub snapshots_sent: Counter,
    pub policy_updates_sent: Counter,
    pub feed_failures: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fleetban_server");
        let events_stored = Counter::default();
        registry.register(
            "events_stored",
            "Events stored (each event id once)",
            events_stored.clone(),
        );
        let event_batches = Counter::default();
        registry.register(
            "event_batches",
            "Event batches received from agents",
            event_batches.clone(),
        );
        let decisions = Counter::default();
        registry.register(
            "decisions",
            "Decisions recorded by correlation",
            decisions.clone(),
        );
        let agents_connected = Gauge::default();
        registry.register(
            "agents_connected",
            "Agent streams open now",
            agents_connected.clone(),
        );
        let deltas_sent = Counter::default();
        registry.register(
            "deltas_sent",
            "Block-list deltas pushed to agents",
            deltas_sent.clone(),
        );
        let snapshots_sent = Counter::default();
        registry.register(
            "snapshots_sent",
            "Block-list snapshots pushed to agents",
            snapshots_sent.clone(),
        );
        let policy_updates_sent = Counter::default();
        registry.register(
            "policy_updates_sent",
            "Jail policies pushed to agents",
            policy_updates_sent.clone(),
        );
        let feed_failures = Counter::default();
        registry.register(
            "feed_failures",
            "Feed imports refused (unreachable, unreadable or mostly invalid lists)",
            feed_failures.clone(),
        );
        Metrics {
            registry,
            policy_updates_sent,
            feed_failures,
            events_stored,
            event_batches,
            decisions,
            agents_connected,
            deltas_sent,
            snapshots_sent,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
