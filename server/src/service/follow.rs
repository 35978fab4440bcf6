//! Following the other replicas: block-list and policy versions reach this
//! process by notification as they commit, and by a periodic read of the
//! versions, which also catches up whatever a dropped listener missed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Service;
use crate::store::Change;

/// How often the versions are read even without a notification.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

impl Service {
    /// Reads the current versions and publishes what is new.
    pub async fn resync(&self) -> Result<(), super::ServiceError> {
        let version = self.store.block_list_version().await?;
        self.publish(version);
        let policies = self.store.policy_version().await?;
        if policies > self.policy_version() {
            self.reload_policies(policies).await?;
        }
        Ok(())
    }

    /// Runs until `stop`: publishes every change other processes commit.
    pub async fn follow(self: Arc<Self>, stop: CancellationToken) {
        let (tx, mut rx) = mpsc::channel::<Change>(256);
        match self.store.changes().await {
            Ok(Some(mut changes)) => {
                let stop = stop.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            c = changes.next() => if tx.send(c).await.is_err() { return },
                            () = stop.cancelled() => return,
                        }
                    }
                });
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "cannot listen for changes; reading versions every second only")
            }
        }
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut healthy = true;
        loop {
            let result = tokio::select! {
                Some(change) = rx.recv() => match change {
                    Change::Decisions(v) => {
                        debug!(version = v, "block list changed elsewhere");
                        self.publish(v);
                        Ok(())
                    }
                    Change::Policies(v) => self.reload_policies(v).await,
                    Change::Resync => self.resync().await,
                },
                _ = check.tick() => self.resync().await,
                () = stop.cancelled() => return,
            };
            match (result, healthy) {
                (Ok(()), false) => {
                    info!("database reachable again; versions caught up");
                    healthy = true;
                }
                (Err(e), true) => {
                    warn!(error = %e, "cannot read versions; retrying every second");
                    healthy = false;
                }
                _ => {}
            }
        }
    }
}
