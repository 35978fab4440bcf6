//! Keeps the firewall equal to the block list: after every change, and once
//! a second, the difference is computed and applied in one batch; a failed
//! batch falls back to a full, atomic sync.

use chrono::Utc;
use fleetban_proto::BlockEntry;
use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::blocklist::{diff, BlockList, Enforced, Expiry};
use crate::firewall::{Entry, Firewall, FirewallError};

/// A change to the block list.
#[derive(Debug)]
pub enum EnforceCmd {
    /// One of this agent's jails banned `target` until `until_ms`.
    LocalBan { target: IpNet, until_ms: i64 },
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

pub struct Enforcer {
    list: BlockList,
    applied: Enforced,
    firewall: Box<dyn Firewall>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn entries(e: &Enforced, now: i64) -> Vec<Entry> {
    e.iter().map(|(t, u)| (*t, remaining(*u, now))).collect()
}

fn remaining(u: Expiry, now: i64) -> Option<i64> {
    u.map(|u| u - now)
}

impl Enforcer {
    /// Takes over the firewall with an empty block list; fails when the
    /// firewall cannot be used at all (e.g. nft missing or not permitted).
    pub async fn start(mut firewall: Box<dyn Firewall>) -> Result<Self, FirewallError> {
        firewall.sync(&[]).await?;
        info!(backend = firewall.name(), "firewall ready");
        Ok(Enforcer {
            list: BlockList::default(),
            applied: Enforced::new(),
            firewall,
        })
    }

    /// Applies commands until `stop`; publishes the fleet version enforced.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<EnforceCmd>,
        applied: watch::Sender<u64>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    let version = self.command(cmd);
                    // Take whatever else is queued before touching the firewall.
                    let mut latest = version;
                    while let Ok(cmd) = rx.try_recv() {
                        latest = self.command(cmd).or(latest);
                    }
                    if self.reconcile().await {
                        if let Some(v) = latest {
                            applied.send_replace(v);
                        }
                    }
                }
                _ = tick.tick() => {
                    self.list.expire(now_ms());
                    self.reconcile().await;
                }
                () = stop.cancelled() => return,
            }
        }
    }

    /// Updates the block list; returns the fleet version it brings, if any.
    fn command(&mut self, cmd: EnforceCmd) -> Option<u64> {
        match cmd {
            EnforceCmd::LocalBan { target, until_ms } => {
                self.list.add_local(target, until_ms);
                None
            }
            EnforceCmd::Snapshot { version, entries } => {
                self.list.replace_fleet(version, &entries);
                Some(version)
            }
            EnforceCmd::Delta {
                version,
                added,
                removed,
            } => self
                .list
                .apply_delta(version, &added, &removed)
                .then_some(version),
        }
    }

    /// Brings the firewall to the desired state; true when it holds it.
    async fn reconcile(&mut self) -> bool {
        let now = now_ms();
        let desired = self.list.desired(now);
        let changes = diff(&self.applied, &desired, now);
        if changes.is_empty() {
            self.applied = desired;
            return true;
        }
        match self.firewall.apply(&changes).await {
            Ok(()) => {
                for target in &changes.remove {
                    info!(%target, "unblocked");
                }
                for (target, left) in &changes.add {
                    info!(%target, timeout_ms = left.unwrap_or(0), "blocked");
                }
                self.applied = desired;
                true
            }
            Err(e) => {
                warn!(error = %e, "firewall change failed; resynchronising");
                match self.firewall.sync(&entries(&desired, now)).await {
                    Ok(()) => {
                        self.applied = desired;
                        true
                    }
                    Err(e) => {
                        warn!(error = %e, "firewall sync failed; retrying in 1 s");
                        false
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::LogFirewall;

    #[tokio::test]
    async fn commands_reach_the_firewall_and_versions_are_published() {
        let mut e = Enforcer::start(Box::new(LogFirewall::default()))
            .await
            .expect("start");
        let (tx, rx) = mpsc::channel(8);
        let (applied_tx, mut applied_rx) = watch::channel(0);
        let stop = CancellationToken::new();
        let target: IpNet = "192.0.2.1/32".parse().expect("net");
        e.command(EnforceCmd::LocalBan {
            target,
            until_ms: now_ms() + 60_000,
        });
        assert!(e.reconcile().await);
        assert_eq!(e.firewall.list().await.expect("list"), vec![target]);

        let handle = tokio::spawn(e.run(rx, applied_tx, stop.clone()));
        let fleet = BlockEntry {
            id: 4,
            target: "2001:db8::/64".parse().expect("net"),
            origin: "local".into(),
            reason: String::new(),
            jail: "sshd".into(),
            expires_at: None,
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
}
