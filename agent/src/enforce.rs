//! Keeps the firewall equal to the block list. After every change the
//! difference is applied in one batch (a failed batch falls back to a full,
//! atomic sync); every `reconcile_interval` the kernel is read back and any
//! drift (an element deleted by hand, a flushed table, a timeout that
//! drifted) is repaired and counted. The block list is saved in the state
//! directory and enforced again at start, before the server is reached.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use fleetban_proto::BlockEntry;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::blocklist::{
    drift, update, update_ports, BlockList, Changes, Enforced, Expiry, LocalBan, PortsEnforced,
    Saved,
};
use crate::firewall::{Entry, Firewall, FirewallError, PortEntry, MAX_TIMEOUT_MS};
use crate::guard::Guard;
use crate::metrics::FirewallMetrics;
use fleetban_proto::PortScope;

/// A change to the block list, or a question about it.
#[derive(Debug)]
pub enum EnforceCmd {
    /// One of this agent's jails banned `target` until `until_ms`.
    LocalBan {
        target: IpNet,
        until_ms: i64,
        jail: String,
        /// The jail's ports (all traffic when empty).
        ports: PortScope,
    },
    /// An operator bans `target` by hand; `ssh_client` is the operator's
    /// SSH client, never to be blocked when so configured.
    Manual {
        target: IpNet,
        expires_ms: Expiry,
        ports: PortScope,
        reason: String,
        ssh_client: Option<IpAddr>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// An operator lifts this agent's own ban of `target`.
    Unban {
        target: IpNet,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    /// Forget every ban and remove everything from the kernel.
    Flush {
        reply: oneshot::Sender<Result<String, String>>,
    },
    Snapshot {
        version: u64,
        entries: Vec<BlockEntry>,
    },
    Delta {
        version: u64,
        added: Vec<BlockEntry>,
        removed: Vec<u64>,
    },
}

/// Drift counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftCounts {
    pub missing: u64,
    pub extra: u64,
    pub timeout: u64,
    /// Times the table, sets, chain or rules were found changed.
    pub structure: u64,
}

/// One ban, as `fleetban-agent firewall status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusBan {
    pub target: String,
    /// RFC 3339; `None`: no expiry.
    pub expires_at: Option<String>,
    /// `local` (a jail), `manual`, or the fleet decision's id.
    pub origin: String,
    pub jail: String,
    pub reason: String,
    /// The ports banned, as `tcp/22,443`; empty: all traffic.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ports: String,
}

/// What is enforced, and how the kernel compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub backend: String,
    pub fleet_version: u64,
    /// Entries the kernel should hold (after merging).
    pub desired: usize,
    /// Entries read back from the kernel now; `None` when reading failed.
    pub kernel: Option<usize>,
    /// Port elements (one per address, protocol and port of port-scoped
    /// bans) the kernel should hold.
    #[serde(default)]
    pub desired_ports: usize,
    /// Port elements read back from the kernel now.
    #[serde(default)]
    pub kernel_ports: Option<usize>,
    /// Whether fleetban's table and rules are as made.
    pub intact: bool,
    /// Drift between the kernel and the block list now.
    pub drift_now: DriftCounts,
    /// Drift found and repaired since the agent started.
    pub drift_repaired: DriftCounts,
    /// RFC 3339 time of the last read-back.
    pub last_reconcile: Option<String>,
    /// At most [`STATUS_BANS`] bans.
    pub bans: Vec<StatusBan>,
    pub bans_total: usize,
    pub error: Option<String>,
}

/// Bans listed by a status at most.
pub const STATUS_BANS: usize = 10_000;

/// How the enforcer is set up.
pub struct EnforceOptions {
    /// The current guard; the agent replaces it when the host's or the
    /// server's addresses change.
    pub guard: tokio::sync::watch::Receiver<Guard>,
    /// Refuse bans of the operator's SSH client ([`EnforceCmd::Manual`]).
    pub protect_ssh_client: bool,
    /// Where the block list is saved; `None`: not saved.
    pub state_file: Option<PathBuf>,
    pub reconcile_interval: Duration,
    pub metrics: Arc<FirewallMetrics>,
}

pub struct Enforcer {
    list: BlockList,
    applied: Enforced,
    /// The port elements the firewall holds.
    applied_ports: PortsEnforced,
    /// The enforced prefixes, merged (see [`update`]).
    nets: Vec<(IpNet, Expiry)>,
    firewall: Box<dyn Firewall>,
    opts: EnforceOptions,
    /// The list changed since it was last applied.
    changed: bool,
    /// The list changed since it was last saved.
    unsaved: bool,
    last_save: Instant,
    /// Everything was flushed by hand and nothing banned since: the kernel
    /// is left empty, with no table, until the next ban.
    flushed: bool,
    repaired: DriftCounts,
    last_reconcile: Option<i64>,
    /// No read-back before this: reading a huge table back is costly, so
    /// read-backs take at most a tenth of the time.
    next_check: Instant,
}

/// Read-backs are spaced at least this many times their own duration.
const READ_BACK_SPACING: u32 = 10;

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn entries(e: &Enforced, now: i64) -> Vec<Entry> {
    e.iter().map(|(t, u)| (*t, u.map(|u| u - now))).collect()
}

fn port_entries(e: &PortsEnforced, now: i64) -> Vec<PortEntry> {
    e.iter().map(|(k, u)| (*k, u.map(|u| u - now))).collect()
}

/// The list is saved at most this often.
const SAVE_EVERY: Duration = Duration::from_secs(2);

impl Enforcer {
    /// Loads the saved block list and enforces it at once; fails when the
    /// firewall cannot be used at all (e.g. nft missing or not permitted).
    pub async fn start(
        mut firewall: Box<dyn Firewall>,
        opts: EnforceOptions,
    ) -> Result<Self, FirewallError> {
        let now = now_ms();
        let mut list = match &opts.state_file {
            Some(path) => BlockList::restore(load(path), now),
            None => BlockList::default(),
        };
        let mut applied = Enforced::new();
        let mut nets = Vec::new();
        update(&mut list, &mut applied, &mut nets, now);
        let desired = applied;
        let mut applied_ports = PortsEnforced::new();
        update_ports(&mut list, &mut applied_ports, &desired, now);
        firewall
            .sync(&entries(&desired, now), &port_entries(&applied_ports, now))
            .await?;
        opts.metrics
            .entries
            .set((desired.len() + applied_ports.len()) as i64);
        info!(
            backend = firewall.name(),
            restored = desired.len(),
            restored_ports = applied_ports.len(),
            fleet_version = list.fleet_version(),
            "firewall ready"
        );
        Ok(Enforcer {
            list,
            applied: desired,
            applied_ports,
            nets,
            firewall,
            opts,
            changed: false,
            unsaved: false,
            last_save: Instant::now(),
            flushed: false,
            repaired: DriftCounts::default(),
            last_reconcile: None,
            next_check: Instant::now(),
        })
    }

    /// The fleet version of the block list enforced at start.
    pub fn fleet_version(&self) -> u64 {
        self.list.fleet_version()
    }

    /// Applies commands until `stop`; publishes the fleet version enforced.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<EnforceCmd>,
        applied: watch::Sender<u64>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut kernel = tokio::time::interval(self.opts.reconcile_interval);
        kernel.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    let version = self.command(cmd).await;
                    // Take whatever else is queued before touching the firewall.
                    let mut latest = version;
                    while let Ok(cmd) = rx.try_recv() {
                        latest = self.command(cmd).await.or(latest);
                    }
                    if self.reconcile().await {
                        if let Some(v) = latest {
                            applied.send_replace(v);
                        }
                    }
                }
                _ = tick.tick() => {
                    if self.list.expire(now_ms()) > 0 {
                        self.changed = true;
                        self.unsaved = true;
                    }
                    if self.changed {
                        self.reconcile().await;
                    }
                    if self.unsaved && self.last_save.elapsed() >= SAVE_EVERY {
                        self.save().await;
                    }
                }
                _ = kernel.tick() => self.check_kernel().await,
                () = stop.cancelled() => break,
            }
        }
        if self.unsaved {
            self.save().await;
        }
    }

    /// Whether `target` may be banned; a refusal is logged and counted.
    fn allowed(&self, target: &IpNet, by: &str) -> bool {
        match self.opts.guard.borrow().check(target) {
            Ok(()) => true,
            Err(e) => {
                warn!(%target, by, reason = %e, "ban refused");
                self.opts.metrics.refused.inc();
                false
            }
        }
    }

    fn edited(&mut self) {
        self.changed = true;
        self.unsaved = true;
        self.flushed = false;
    }

    /// Updates the block list; returns the fleet version it brings, if any.
    async fn command(&mut self, cmd: EnforceCmd) -> Option<u64> {
        match cmd {
            EnforceCmd::LocalBan {
                target,
                until_ms,
                jail,
                ports,
            } => {
                if self.allowed(&target, &jail) {
                    self.list.add_local(LocalBan {
                        target,
                        expires_ms: Some(until_ms),
                        origin: "local".into(),
                        jail,
                        reason: String::new(),
                        ports,
                    });
                    self.edited();
                }
                None
            }
            EnforceCmd::Manual {
                target,
                expires_ms,
                ports,
                reason,
                ssh_client,
                reply,
            } => {
                let _ = reply.send(self.manual(target, expires_ms, ports, reason, ssh_client));
                None
            }
            EnforceCmd::Unban { target, reply } => {
                let _ = reply.send(self.unban(target));
                None
            }
            EnforceCmd::Status { reply } => {
                let _ = reply.send(self.status().await);
                None
            }
            EnforceCmd::Flush { reply } => {
                let _ = reply.send(self.flush().await);
                None
            }
            EnforceCmd::Snapshot { version, entries } => {
                let entries: Vec<BlockEntry> = entries
                    .into_iter()
                    .filter(|e| self.allowed(&e.target, "fleet"))
                    .collect();
                self.list.replace_fleet(version, &entries);
                self.edited();
                Some(version)
            }
            EnforceCmd::Delta {
                version,
                added,
                removed,
            } => {
                let added: Vec<BlockEntry> = added
                    .into_iter()
                    .filter(|e| self.allowed(&e.target, "fleet"))
                    .collect();
                let applies = self.list.apply_delta(version, &added, &removed);
                if applies {
                    self.edited();
                }
                applies.then_some(version)
            }
        }
    }

    fn manual(
        &mut self,
        target: IpNet,
        expires_ms: Expiry,
        ports: PortScope,
        reason: String,
        ssh_client: Option<IpAddr>,
    ) -> Result<String, String> {
        self.opts
            .guard
            .borrow()
            .check(&target)
            .map_err(|e| e.to_string())?;
        if let (true, Some(client)) = (self.opts.protect_ssh_client, ssh_client) {
            let mut g = Guard::new(1, 1);
            g.protect_ip(client, "your SSH client");
            g.check(&target).map_err(|e| e.to_string())?;
        }
        info!(%target, expires_ms, reason, ports = %ports, "manual ban");
        let what = if ports.is_all() {
            String::new()
        } else {
            format!(" on {ports}")
        };
        self.list.add_local(LocalBan {
            target,
            expires_ms,
            origin: "manual".into(),
            jail: String::new(),
            reason,
            ports,
        });
        self.edited();
        Ok(format!("banned {target}{what}"))
    }

    fn unban(&mut self, target: IpNet) -> Result<String, String> {
        let lifted = self.list.remove_local(&target);
        let fleet = self.list.fleet_ids(&target);
        let ids = fleet
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if lifted {
            info!(%target, "manual unban");
            self.edited();
        }
        match (lifted, fleet.is_empty()) {
            (true, true) => Ok(format!("unbanned {target}")),
            (true, false) => Ok(format!(
                "lifted this agent's ban of {target}; fleet decision {ids} still bans it (revoke it on the server)"
            )),
            (false, false) => Err(format!(
                "{target} is banned by fleet decision {ids}, not by this agent; revoke it on the server"
            )),
            (false, true) => Err(format!("{target} is not banned by this agent")),
        }
    }

    async fn flush(&mut self) -> Result<String, String> {
        let n = self.applied.len() + self.applied_ports.len();
        self.list.clear();
        self.applied.clear();
        self.applied_ports.clear();
        self.nets.clear();
        self.unsaved = true;
        self.changed = false;
        self.flushed = true;
        self.opts.metrics.entries.set(0);
        self.firewall.flush().await.map_err(|e| e.to_string())?;
        self.save().await;
        info!(entries = n, "firewall flushed by hand");
        Ok(format!(
            "removed {n} entries and everything {} held for fleetban",
            self.firewall.name()
        ))
    }

    async fn status(&mut self) -> Status {
        let now = now_ms();
        let desired = self.list.desired(now);
        let desired_ports = self.list.desired_ports(now, &desired);
        let (kernel, kernel_ports, intact, drift_now, error) = match self.firewall.read().await {
            Ok(r) => {
                let d = drift(&r.entries, &desired, now, MAX_TIMEOUT_MS);
                let p = drift(&r.ports, &desired_ports, now, MAX_TIMEOUT_MS);
                (
                    Some(r.entries.len()),
                    Some(r.ports.len()),
                    r.intact,
                    DriftCounts {
                        missing: (d.missing + p.missing) as u64,
                        extra: (d.extra + p.extra) as u64,
                        timeout: (d.timeout + p.timeout) as u64,
                        structure: u64::from(!r.intact && !self.flushed),
                    },
                    None,
                )
            }
            Err(e) => (
                None,
                None,
                false,
                DriftCounts::default(),
                Some(e.to_string()),
            ),
        };
        let saved = self.list.save();
        let bans_total = saved.local.len() + saved.fleet.len();
        let bans = status_bans(saved, now);
        Status {
            backend: self.firewall.name().into(),
            fleet_version: self.list.fleet_version(),
            desired: desired.len(),
            kernel,
            desired_ports: desired_ports.len(),
            kernel_ports,
            intact,
            drift_now,
            drift_repaired: self.repaired,
            last_reconcile: self.last_reconcile.and_then(rfc3339),
            bans,
            bans_total,
            error,
        }
    }

    async fn save(&mut self) {
        self.unsaved = false;
        self.last_save = Instant::now();
        let Some(path) = self.opts.state_file.clone() else {
            return;
        };
        let saved = self.list.save();
        let result = tokio::task::spawn_blocking(move || store(&path, &saved)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "cannot save the block list");
                self.unsaved = true;
            }
            Err(e) => warn!(error = %e, "block list saver failed"),
        }
    }

    /// Brings the firewall to the desired state; true when it holds it.
    async fn reconcile(&mut self) -> bool {
        self.changed = false;
        if self.flushed {
            return true;
        }
        let now = now_ms();
        let mut changes = update(&mut self.list, &mut self.applied, &mut self.nets, now);
        changes.ports = update_ports(&mut self.list, &mut self.applied_ports, &self.applied, now);
        self.opts
            .metrics
            .entries
            .set((self.applied.len() + self.applied_ports.len()) as i64);
        if changes.is_empty() {
            return true;
        }
        match self.firewall.apply(&changes).await {
            Ok(()) => {
                if changes.add.len() + changes.remove.len() <= 100 {
                    for target in &changes.remove {
                        info!(%target, "unblocked");
                    }
                    for (target, left) in &changes.add {
                        info!(%target, timeout_ms = left.unwrap_or(0), "blocked");
                    }
                    for k in &changes.ports.remove {
                        info!(target = %k.target, protocol = k.proto_name(), port = k.port, "unblocked port");
                    }
                    for (k, left) in &changes.ports.add {
                        info!(target = %k.target, protocol = k.proto_name(), port = k.port, timeout_ms = left.unwrap_or(0), "blocked port");
                    }
                } else {
                    info!(
                        added = changes.add.len(),
                        removed = changes.remove.len(),
                        ports_added = changes.ports.add.len(),
                        ports_removed = changes.ports.remove.len(),
                        "block list changed"
                    );
                }
                true
            }
            Err(e) => {
                warn!(error = %e, "firewall change failed; resynchronising");
                self.opts.metrics.errors.inc();
                self.resync(now).await
            }
        }
    }

    /// The whole block list, recomputed (and the prefixes cached): the
    /// address-wide entries and the port elements.
    fn desired_now(&mut self, now: i64) -> (Enforced, PortsEnforced) {
        self.nets = self.list.prefixes(now);
        let desired = self.list.desired_with(now, self.nets.clone());
        let ports = self.list.desired_ports(now, &desired);
        (desired, ports)
    }

    /// Replaces everything the firewall holds with the block list.
    async fn resync(&mut self, now: i64) -> bool {
        let (desired, ports) = self.desired_now(now);
        match self
            .firewall
            .sync(&entries(&desired, now), &port_entries(&ports, now))
            .await
        {
            Ok(()) => {
                self.applied = desired;
                self.applied_ports = ports;
                true
            }
            Err(e) => {
                warn!(error = %e, "firewall sync failed; retrying");
                self.opts.metrics.errors.inc();
                // What the firewall holds is unknown: the next try starts over.
                self.applied.clear();
                self.applied_ports.clear();
                self.list.clear_touched_to_all();
                self.list.touch_ports();
                self.changed = true;
                false
            }
        }
    }

    /// Reads the kernel back, repairs what differs from the block list, and
    /// counts it.
    async fn check_kernel(&mut self) {
        if self.flushed {
            return;
        }
        if Instant::now() < self.next_check {
            return;
        }
        if self.changed {
            // Pending changes first; the kernel is compared with them in.
            self.reconcile().await;
        }
        let started = Instant::now();
        let now = now_ms();
        self.last_reconcile = Some(now);
        self.opts.metrics.reconciles.inc();
        let (desired, desired_ports) = self.desired_now(now);
        let read = self.firewall.read().await;
        let took = started.elapsed();
        self.next_check = Instant::now() + took * READ_BACK_SPACING;
        if took > self.opts.reconcile_interval / READ_BACK_SPACING {
            info!(
                took_ms = took.as_millis() as u64,
                next_in_s = (took * READ_BACK_SPACING).as_secs(),
                "reading the firewall back is slow; read-backs spaced out"
            );
        }
        let read = match read {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot read the firewall back");
                self.opts.metrics.errors.inc();
                return;
            }
        };
        if !read.intact {
            warn!(
                backend = self.firewall.name(),
                "fleetban's table, sets or rules were changed outside the agent; restoring them"
            );
            self.repaired.structure += 1;
            self.opts.metrics.drifted("structure", 1);
            self.resync(now).await;
            return;
        }
        let d = drift(&read.entries, &desired, now, MAX_TIMEOUT_MS);
        let p = drift(&read.ports, &desired_ports, now, MAX_TIMEOUT_MS);
        if d.is_empty() && p.is_empty() {
            self.applied = desired;
            self.applied_ports = desired_ports;
            return;
        }
        let (missing, extra, timeout) = (
            d.missing + p.missing,
            d.extra + p.extra,
            d.timeout + p.timeout,
        );
        warn!(
            missing,
            extra,
            timeout,
            ports_missing = p.missing,
            "the kernel drifted from the block list; repairing"
        );
        self.repaired.missing += missing as u64;
        self.repaired.extra += extra as u64;
        self.repaired.timeout += timeout as u64;
        self.opts.metrics.drifted("missing", missing as u64);
        self.opts.metrics.drifted("extra", extra as u64);
        self.opts.metrics.drifted("timeout", timeout as u64);
        let repair = Changes {
            add: d.repair.add,
            remove: d.repair.remove,
            ports: p.repair,
        };
        match self.firewall.apply(&repair).await {
            Ok(()) => {
                self.applied = desired;
                self.applied_ports = desired_ports;
            }
            Err(e) => {
                warn!(error = %e, "repair failed; resynchronising");
                self.resync(now).await;
            }
        }
    }
}

fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn status_bans(saved: Saved, now: i64) -> Vec<StatusBan> {
    let live = |e: Expiry| e.is_none_or(|e| e > now);
    let local = saved
        .local
        .into_iter()
        .filter(|b| live(b.expires_ms))
        .map(|b| StatusBan {
            target: b.target.to_string(),
            expires_at: b.expires_ms.and_then(rfc3339),
            origin: b.origin,
            jail: b.jail,
            reason: b.reason,
            ports: b.ports.to_string(),
        });
    let fleet = saved
        .fleet
        .into_iter()
        .filter(|b| live(b.expires_ms))
        .map(|b| StatusBan {
            target: b.target.to_string(),
            expires_at: b.expires_ms.and_then(rfc3339),
            origin: format!("fleet decision {}", b.id),
            jail: String::new(),
            reason: String::new(),
            ports: b.ports.to_string(),
        });
    local.chain(fleet).take(STATUS_BANS).collect()
}

/// The saved block list; an unreadable one is kept aside and ignored.
fn load(path: &std::path::Path) -> Saved {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Saved::default(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the saved block list; starting empty");
            return Saved::default();
        }
    };
    match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            let aside = path.with_extension("json.bad");
            let _ = std::fs::rename(path, &aside);
            warn!(path = %path.display(), kept = %aside.display(), error = %e, "saved block list is corrupt; starting empty");
            Saved::default()
        }
    }
}

/// Writes the list next to `path`, then renames it over: a crash leaves the
/// old or the new list, never half of one.
fn store(path: &std::path::Path, saved: &Saved) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec(saved).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::LogFirewall;

    fn opts(state: Option<PathBuf>) -> EnforceOptions {
        let mut guard = Guard::new(8, 32);
        guard.protect(
            "10.0.0.0/8".parse().expect("net"),
            "the allowlisted network",
        );
        EnforceOptions {
            guard: tokio::sync::watch::channel(guard).1,
            protect_ssh_client: true,
            state_file: state,
            reconcile_interval: Duration::from_secs(3600),
            metrics: Arc::new(FirewallMetrics::default()),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    async fn ask<T>(e: &mut Enforcer, f: impl FnOnce(oneshot::Sender<T>) -> EnforceCmd) -> T {
        let (tx, rx) = oneshot::channel();
        e.command(f(tx)).await;
        rx.await.expect("reply")
    }

    #[tokio::test]
    async fn commands_reach_the_firewall_and_versions_are_published() {
        let mut e = Enforcer::start(Box::new(LogFirewall::default()), opts(None))
            .await
            .expect("start");
        let (tx, rx) = mpsc::channel(8);
        let (applied_tx, mut applied_rx) = watch::channel(0);
        let stop = CancellationToken::new();
        let target = net("192.0.2.1/32");
        e.command(EnforceCmd::LocalBan {
            target,
            until_ms: now_ms() + 60_000,
            jail: "sshd".into(),
            ports: PortScope::all(),
        })
        .await;
        assert!(e.reconcile().await);
        assert_eq!(e.firewall.list().await.expect("list"), vec![target]);

        let handle = tokio::spawn(e.run(rx, applied_tx, stop.clone()));
        let fleet = BlockEntry {
            id: 4,
            target: net("2001:db8::/64"),
            origin: "local".into(),
            reason: String::new(),
            jail: "sshd".into(),
            expires_at: None,
            ports: PortScope::all(),
        };
        tx.send(EnforceCmd::Snapshot {
            version: 7,
            entries: vec![fleet],
        })
        .await
        .expect("send");
        applied_rx.changed().await.expect("applied");
        assert_eq!(*applied_rx.borrow(), 7);
        tx.send(EnforceCmd::Delta {
            version: 8,
            added: vec![],
            removed: vec![4],
        })
        .await
        .expect("send");
        applied_rx.changed().await.expect("applied");
        assert_eq!(*applied_rx.borrow(), 8);
        stop.cancel();
        handle.await.expect("stops");
    }

    #[tokio::test]
    async fn a_new_guard_protects_addresses_from_then_on() {
        let mut o = opts(None);
        let mut guard = Guard::new(8, 32);
        let (tx, rx) = tokio::sync::watch::channel(guard.clone());
        o.guard = rx;
        let mut e = Enforcer::start(Box::new(LogFirewall::default()), o)
            .await
            .expect("start");
        let ban = |reply| EnforceCmd::Manual {
            target: net("192.0.2.44/32"),
            ports: PortScope::all(),
            expires_ms: Some(now_ms() + 600_000),
            reason: "by hand".into(),
            ssh_client: None,
            reply,
        };
        // The host gained 192.0.2.44 (DHCP, a new interface).
        guard.protect_ip("192.0.2.44".parse().expect("ip"), "this host's address");
        tx.send_replace(guard);
        let refused = ask(&mut e, ban).await.expect_err("now protected");
        assert!(refused.contains("this host's address"), "{refused}");
    }

    #[tokio::test]
    async fn manual_bans_are_checked_listed_lifted_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let state = dir.path().join("blocklist.json");
        let mut e = Enforcer::start(Box::new(LogFirewall::default()), opts(Some(state.clone())))
            .await
            .expect("start");
        let ban = |target: &str, ssh: Option<&str>| {
            let target = net(target);
            let ssh_client = ssh.map(|s| s.parse().expect("ip"));
            move |reply| EnforceCmd::Manual {
                target,
                ports: PortScope::all(),
                expires_ms: Some(now_ms() + 600_000),
                reason: "by hand".into(),
                ssh_client,
                reply,
            }
        };
        let e1 = ask(&mut e, ban("10.1.1.1/32", None))
            .await
            .expect_err("allowlisted");
        assert!(e1.contains("allowlisted network 10.0.0.0/8"), "{e1}");
        let e2 = ask(&mut e, ban("0.0.0.0/0", None))
            .await
            .expect_err("too wide");
        assert!(e2.contains("wider than /8"), "{e2}");
        let e3 = ask(&mut e, ban("198.51.100.0/24", Some("198.51.100.7")))
            .await
            .expect_err("own ssh client");
        assert!(e3.contains("your SSH client"), "{e3}");
        ask(&mut e, ban("198.51.100.0/24", Some("203.0.113.1")))
            .await
            .expect("banned");
        assert!(e.reconcile().await);
        assert_eq!(
            e.firewall.list().await.expect("list"),
            vec![net("198.51.100.0/24")]
        );
        let st = ask(&mut e, |reply| EnforceCmd::Status { reply }).await;
        assert_eq!((st.desired, st.kernel, st.bans_total), (1, Some(1), 1));
        assert_eq!(st.bans[0].origin, "manual");
        assert_eq!(st.drift_now, DriftCounts::default());
        e.save().await;

        // A new agent on the same state enforces the ban at once.
        let mut again =
            Enforcer::start(Box::new(LogFirewall::default()), opts(Some(state.clone())))
                .await
                .expect("restart");
        assert_eq!(
            again.firewall.list().await.expect("list"),
            vec![net("198.51.100.0/24")]
        );
        let msg = ask(&mut again, |reply| EnforceCmd::Unban {
            target: net("198.51.100.0/24"),
            reply,
        })
        .await
        .expect("unban");
        assert_eq!(msg, "unbanned 198.51.100.0/24");
        let err = ask(&mut again, |reply| EnforceCmd::Unban {
            target: net("198.51.100.0/24"),
            reply,
        })
        .await
        .expect_err("twice");
        assert!(err.contains("not banned"), "{err}");
        assert!(again.reconcile().await);
        assert!(again.firewall.list().await.expect("list").is_empty());

        // A corrupt state file is set aside; the agent starts empty.
        std::fs::write(&state, "{not json").expect("write");
        let e = Enforcer::start(Box::new(LogFirewall::default()), opts(Some(state.clone())))
            .await
            .expect("start on corrupt state");
        assert_eq!(e.applied.len(), 0);
        assert!(dir.path().join("blocklist.json.bad").exists());
    }

    #[tokio::test]
    async fn port_scoped_bans_are_enforced_shown_and_repaired() {
        let mut e = Enforcer::start(Box::new(LogFirewall::default()), opts(None))
            .await
            .expect("start");
        e.command(EnforceCmd::LocalBan {
            target: net("192.0.2.5/32"),
            until_ms: now_ms() + 60_000,
            jail: "sshd".into(),
            ports: PortScope::from_text("tcp/22").expect("scope"),
        })
        .await;
        assert!(e.reconcile().await);
        let read = e.firewall.read().await.expect("read");
        assert!(read.entries.is_empty());
        assert_eq!(read.ports.len(), 1);
        let st = ask(&mut e, |reply| EnforceCmd::Status { reply }).await;
        assert_eq!(
            (st.desired, st.desired_ports, st.kernel_ports),
            (0, 1, Some(1))
        );
        assert_eq!(st.bans[0].ports, "tcp/22");
        assert_eq!(st.bans[0].jail, "sshd");
        let json = serde_json::to_string(&st).expect("json");
        assert!(json.contains("\"ports\":\"tcp/22\""), "{json}");

        // A port element removed behind the agent's back is restored.
        let gone = *read.ports.keys().next().expect("one");
        e.firewall
            .apply(&Changes {
                ports: crate::blocklist::Delta {
                    add: vec![],
                    remove: vec![gone],
                },
                ..Changes::default()
            })
            .await
            .expect("remove by hand");
        let st = ask(&mut e, |reply| EnforceCmd::Status { reply }).await;
        assert_eq!(st.drift_now.missing, 1);
        e.check_kernel().await;
        assert_eq!(e.repaired.missing, 1);
        assert_eq!(e.firewall.read().await.expect("read").ports.len(), 1);

        // Unban lifts it.
        let msg = ask(&mut e, |reply| EnforceCmd::Unban {
            target: net("192.0.2.5/32"),
            reply,
        })
        .await
        .expect("unban");
        assert_eq!(msg, "unbanned 192.0.2.5/32");
        assert!(e.reconcile().await);
        assert!(e.firewall.read().await.expect("read").ports.is_empty());
    }

    #[tokio::test]
    async fn fleet_entries_on_protected_networks_are_refused() {
        let o = opts(None);
        let metrics = o.metrics.clone();
        let mut e = Enforcer::start(Box::new(LogFirewall::default()), o)
            .await
            .expect("start");
        let entry = |id, t: &str| BlockEntry {
            id,
            target: net(t),
            origin: "fleet".into(),
            reason: String::new(),
            jail: String::new(),
            expires_at: None,
            ports: PortScope::all(),
        };
        e.command(EnforceCmd::Snapshot {
            version: 1,
            entries: vec![entry(1, "10.9.9.9/32"), entry(2, "192.0.2.7/32")],
        })
        .await;
        assert!(e.reconcile().await);
        assert_eq!(
            e.firewall.list().await.expect("list"),
            vec![net("192.0.2.7/32")]
        );
        assert_eq!(metrics.refused.get(), 1);
    }
}
