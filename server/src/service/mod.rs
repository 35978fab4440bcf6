//! The server's use cases, independent of gRPC and HTTP: agents join, report
//! events and local bans, and receive the block list.

mod blocklist;
mod feeds;
mod follow;
pub mod identity;
mod policies;
mod unban;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fleetban_policy::{correlate, JailRule, LocalBan, Policy};
use ipnet::IpNet;
use tokio::sync::{broadcast, watch, Mutex};
use tracing::{debug, info};

use crate::metrics::Metrics;
use crate::policy_config::PolicySeed;
use crate::store::{AgentInfo, Decision, FactsQuery, FirewallState, NewEvent, Store, StoreError};

pub use blocklist::{applies_to, BlockListUpdate, Snapshot};
pub use feeds::FeedReport;
pub use policies::JailPolicy;

/// A use case failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("agent {claimed:?} may only report for itself ({actual:?})")]
    NotYourself { claimed: String, actual: String },
    #[error("feed {feed}: {message}")]
    Feed { feed: String, message: String },
    #[error(transparent)]
    Policy(#[from] fleetban_policy::PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Something new, for live subscribers (the API's event stream).
#[derive(Debug, Clone)]
pub enum LiveUpdate {
    Decision(Decision),
    Events(Arc<Vec<NewEvent>>),
}

/// The source of time, so tests can set it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Shared by every connection of one server process.
pub struct Service {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// The newest block-list version this process knows of; sessions wait on
    /// it to push deltas.
    version: watch::Sender<u64>,
    /// Serialises correlation within this process (the store serialises it
    /// across processes), so two agents reporting the same address at once
    /// make one decision.
    correlate: Mutex<()>,
    /// The policies in force, as last read from the database.
    policies: std::sync::RwLock<policies::Policies>,
    /// The policies' version; sessions wait on it to push jail policies.
    policy_version: watch::Sender<u64>,
    /// Ids of bans that just expired, for sessions to remove from agents.
    expired: broadcast::Sender<Arc<Vec<i64>>>,
    /// New decisions and events as they are stored.
    live: broadcast::Sender<LiveUpdate>,
}

impl Service {
    /// Seeds the database's policies from `seed` if it has none yet, then
    /// runs with the database's.
    pub async fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        seed: &PolicySeed,
    ) -> Result<Self, ServiceError> {
        if store
            .seed_policies(&seed.rules_toml, &seed.jails, clock.now())
            .await?
        {
            info!(
                jail_rules = seed.jails.len(),
                "policies seeded from the configuration"
            );
        } else {
            info!("policies read from the database; [policy] in the configuration only seeds an empty database");
        }
        let loaded = policies::load(store.as_ref()).await?;
        let current = store.block_list_version().await?;
        let (version, _) = watch::channel(current);
        let (policy_version, _) = watch::channel(loaded.version);
        Ok(Service {
            store,
            clock,
            metrics,
            version,
            correlate: Mutex::new(()),
            policies: std::sync::RwLock::new(loaded),
            policy_version,
            expired: broadcast::channel(64).0,
            live: broadcast::channel(1024).0,
        })
    }

    /// The correlation rules in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .rules
            .clone()
    }

    fn jail_rules_cached(&self) -> Arc<Vec<JailRule>> {
        self.policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .jails
            .clone()
    }

    /// Notified whenever the policies change.
    pub fn subscribe_policies(&self) -> watch::Receiver<u64> {
        self.policy_version.subscribe()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// New decisions and events as this process stores them.
    pub fn subscribe_live(&self) -> broadcast::Receiver<LiveUpdate> {
        self.live.subscribe()
    }

    /// Records manual bans (all or none pass the policy's checks first),
    /// and pushes them to the agents.
    pub async fn manual_bans(
        &self,
        bans: &[ManualBan],
        creator: &str,
    ) -> Result<Vec<Decision>, ServiceError> {
        let now = self.clock.now();
        let policy = self.policy();
        let decisions = bans
            .iter()
            .map(|b| {
                correlate::manual(
                    &policy,
                    b.target,
                    b.duration,
                    b.group.as_deref(),
                    creator,
                    &b.reason,
                    now,
                )
                .map(|d| fleetban_policy::NewDecision {
                    ports: b.ports.clone(),
                    ..d
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let _guard = self.correlate.lock().await;
        self.record(decisions, now).await
    }

    /// Notified whenever the block list changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Notified with the ids of bans as they expire.
    pub fn subscribe_expired(&self) -> broadcast::Receiver<Arc<Vec<i64>>> {
        self.expired.subscribe()
    }

    /// Tells agents which bans expired in `(after, now]`; returns `now`.
    pub async fn announce_expired(
        &self,
        after: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, ServiceError> {
        let now = self.clock.now();
        let ids = self.store.expired_between(after, now).await?;
        if !ids.is_empty() {
            debug!(expired = ids.len(), "bans expired");
            let _ = self.expired.send(Arc::new(ids));
        }
        Ok(now)
    }

    /// Deletes raw events older than `retention`.
    pub async fn prune_events(&self, retention: chrono::Duration) -> Result<u64, ServiceError> {
        let pruned = self
            .store
            .prune_events(self.clock.now() - retention)
            .await?;
        if pruned > 0 {
            info!(pruned, "old events pruned");
        }
        Ok(pruned)
    }

    /// The newest block-list version this process knows.
    pub fn current_version(&self) -> u64 {
        *self.version.borrow()
    }

    pub async fn agent_joined(&self, agent: &AgentInfo) -> Result<(), ServiceError> {
        validate_agent_id(&agent.id)?;
        validate_group(&agent.group)?;
        self.store.upsert_agent(agent, self.clock.now()).await?;
        Ok(())
    }

    pub async fn agent_seen(
        &self,
        agent_id: &str,
        applied_version: Option<u64>,
    ) -> Result<(), ServiceError> {
        self.store
            .touch_agent(agent_id, self.clock.now(), applied_version)
            .await?;
        Ok(())
    }

    /// Records an agent's heartbeat with its firewall's state.
    pub async fn agent_firewall(
        &self,
        agent_id: &str,
        state: &FirewallState,
    ) -> Result<(), ServiceError> {
        self.store
            .record_firewall(agent_id, self.clock.now(), state)
            .await?;
        Ok(())
    }

    /// Stores a batch of events and correlates its local bans. Every event
    /// and ban must come from `agent_id` itself.
    pub async fn report(
        &self,
        agent_id: &str,
        group: &str,
        events: &[NewEvent],
        bans: &[LocalBan],
    ) -> Result<Vec<Decision>, ServiceError> {
        for claimed in events
            .iter()
            .map(|e| &e.agent_id)
            .chain(bans.iter().map(|b| &b.agent_id))
        {
            if claimed != agent_id {
                return Err(ServiceError::NotYourself {
                    claimed: claimed.clone(),
                    actual: agent_id.to_owned(),
                });
            }
        }
        let now = self.clock.now();
        let stored = self.store.insert_events(events, now).await?;
        self.metrics.events_stored.inc_by(stored);
        let group = Some(group).filter(|g| !g.is_empty());
        if stored > 0 && self.live.receiver_count() > 0 {
            let _ = self
                .live
                .send(LiveUpdate::Events(Arc::new(events.to_vec())));
        }
        let mut decided = self.fleet_failures(events, group).await?;
        for ban in bans {
            decided.extend(self.local_ban(ban, group).await?);
        }
        Ok(decided)
    }

    /// What the store must gather to correlate `target`. Decisions are
    /// serialised per subnet when subnet escalation is on (two replicas
    /// banning neighbours must not both escalate), else per target.
    fn query(
        policy: &Policy,
        target: IpNet,
        failures_since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> FactsQuery {
        let prefix = policy
            .subnet
            .as_ref()
            .and_then(|s| s.prefix_of(&target).map(|p| (p, now - s.window)));
        FactsQuery {
            lock: format!("correlate:{}", prefix.map_or(target, |(p, _)| p)),
            target,
            failures: failures_since.map(|since| (target.addr(), since)),
            history: policy.recidive.is_some(),
            prefix,
        }
    }

    /// Records decisions made outside correlation (manual ones), in order.
    async fn record(
        &self,
        decisions: Vec<fleetban_policy::NewDecision>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decision>, ServiceError> {
        let mut stored = Vec::with_capacity(decisions.len());
        for new in &decisions {
            stored.push(self.store.record_decision(new, now).await?);
        }
        Ok(self.recorded(stored))
    }

    fn recorded(&self, decisions: Vec<Decision>) -> Vec<Decision> {
        for decision in &decisions {
            info!(
                decision = decision.id,
                version = decision.version,
                target = %decision.target,
                origin = decision.origin.as_str(),
                "decision recorded"
            );
            self.metrics.decisions.inc();
            self.publish(decision.version);
            let _ = self.live.send(LiveUpdate::Decision(decision.clone()));
        }
        decisions
    }

    async fn local_ban(
        &self,
        ban: &LocalBan,
        group: Option<&str>,
    ) -> Result<Vec<Decision>, ServiceError> {
        let _guard = self.correlate.lock().await;
        let now = self.clock.now();
        let policy = self.policy();
        let query = Self::query(&policy, ban.target, None, now);
        let decide = |facts: &fleetban_policy::Facts| {
            correlate::on_local_ban(&policy, ban, group, facts, now)
        };
        let decided = self.store.decide(&query, now, &decide).await?;
        Ok(self.recorded(decided))
    }

    /// Fleet thresholds: each address of `events` is checked against its
    /// failures across the fleet, as stored (whichever replica stored them).
    async fn fleet_failures(
        &self,
        events: &[NewEvent],
        group: Option<&str>,
    ) -> Result<Vec<Decision>, ServiceError> {
        let policy = self.policy();
        let Some(threshold) = &policy.threshold else {
            return Ok(Vec::new());
        };
        let mut ips: Vec<(std::net::IpAddr, &str)> =
            events.iter().map(|e| (e.ip, e.jail.as_str())).collect();
        ips.sort_unstable();
        ips.dedup_by_key(|(ip, _)| *ip);
        let mut out = Vec::new();
        for (ip, jail) in ips {
            // Below the threshold nothing can be decided: skip the locked
            // step. Safe across replicas: whoever stores a later event
            // counts it after its own insert and sees this one.
            let since = self.clock.now() - threshold.window;
            let (hosts, failures) = self.store.failure_stats(ip, since).await?;
            if !threshold.reached(hosts, failures) {
                continue;
            }
            let _guard = self.correlate.lock().await;
            let now = self.clock.now();
            let target = IpNet::from(ip);
            let query = Self::query(&policy, target, Some(now - threshold.window), now);
            let decide = |facts: &fleetban_policy::Facts| {
                correlate::on_failures(&policy, &target, jail, group, facts, now)
            };
            let decided = self.store.decide(&query, now, &decide).await?;
            out.extend(self.recorded(decided));
        }
        Ok(out)
    }

    /// Ends a decision for the whole fleet.
    pub async fn revoke(
        &self,
        id: i64,
        creator: &str,
        reason: &str,
    ) -> Result<Decision, ServiceError> {
        let d = self
            .store
            .revoke_decision(id, creator, reason, self.clock.now())
            .await?;
        self.publish(d.version);
        let _ = self.live.send(LiveUpdate::Decision(d.clone()));
        Ok(d)
    }

    fn publish(&self, version: u64) {
        self.version.send_if_modified(|v| {
            let newer = version > *v;
            if newer {
                *v = version;
            }
            newer
        });
    }

    /// The whole block list now.
    pub async fn snapshot(&self) -> Result<Snapshot, ServiceError> {
        // The version is read first: a decision recorded in between is both
        // in the list and sent again as a delta, which agents apply as a no-op.
        let version = self.store.block_list_version().await?;
        let bans = self.store.active_bans(self.clock.now()).await?;
        Ok(Snapshot { version, bans })
    }

    /// What changed after `version`.
    pub async fn changes_since(&self, version: u64) -> Result<BlockListUpdate, ServiceError> {
        let decisions = self.store.decisions_since(version).await?;
        Ok(BlockListUpdate::from_decisions(
            version,
            &decisions,
            self.clock.now(),
        ))
    }
}

/// A ban asked for by an operator or a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualBan {
    pub target: IpNet,
    /// `None`: until revoked.
    pub duration: Option<chrono::Duration>,
    /// Only the agents of this group; `None`: the whole fleet.
    pub group: Option<String>,
    pub reason: String,
    /// Port scope (`tcp/22`, checked); empty: all traffic.
    pub ports: String,
}

/// An agent group: empty (none) or a name as jail rules use it.
fn validate_group(group: &str) -> Result<(), ServiceError> {
    let ok = group.len() <= 64
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "agent group {:?}: expected up to 64 characters among letters, digits, '-', '_' and '.'",
            group.chars().take(80).collect::<String>()
        )))
    }
}

fn validate_agent_id(id: &str) -> Result<(), ServiceError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "agent id {id:?}: expected 1 to 128 characters among letters, digits, '-', '_' and '.'"
        )))
    }
}
