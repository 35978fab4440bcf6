//! Bans lifted by hand on an agent (`fleetban-agent unban`): the server
//! revokes the decisions the agent's own bans of that target made (local
//! echoes and the agent's manual bans, created by `agent:<id>`), with the
//! agent as the actor, and every agent is told as for any revocation.
//! Decisions of others on the target (fleet thresholds, operators, feeds)
//! stay: the agent cannot lift what it did not ask for.

use ipnet::IpNet;
use tracing::info;

use super::{Service, ServiceError};
use crate::store::{Decision, StoreError};

impl Service {
    /// Revokes the bans in force that `agent_id` made of exactly `target`;
    /// returns the revocations (none when there was nothing to revoke, as
    /// for a report resent after a reconnect).
    pub async fn agent_unban(
        &self,
        agent_id: &str,
        target: IpNet,
    ) -> Result<Vec<Decision>, ServiceError> {
        let creator = format!("agent:{agent_id}");
        let reason = format!("unbanned by hand on agent {agent_id}");
        let _guard = self.correlate.lock().await;
        let now = self.clock.now();
        let mine: Vec<i64> = self
            .store
            .active_bans_for(target, now)
            .await?
            .into_iter()
            .filter(|d| d.creator == creator)
            .map(|d| d.id)
            .collect();
        let mut revoked = Vec::with_capacity(mine.len());
        for id in mine {
            match self.revoke(id, &creator, &reason).await {
                Ok(r) => revoked.push(r),
                // Revoked meanwhile (another replica, an operator).
                Err(ServiceError::Store(StoreError::AlreadyExists(_))) => {}
                Err(e) => return Err(e),
            }
        }
        info!(agent = agent_id, %target, revoked = revoked.len(), "unban reported by agent");
        Ok(revoked)
    }
}
