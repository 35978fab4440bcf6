//! The dry-run backend: logs what it would do and remembers it, enforcing
//! nothing.

use std::collections::BTreeSet;

use async_trait::async_trait;
use ipnet::IpNet;
use tracing::info;

use super::{Entry, Firewall, FirewallError};
use crate::blocklist::Changes;

#[derive(Debug, Default)]
pub struct LogFirewall {
    held: BTreeSet<IpNet>,
}

#[async_trait]
impl Firewall for LogFirewall {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn sync(&mut self, entries: &[Entry]) -> Result<(), FirewallError> {
        self.held = entries.iter().map(|(t, _)| *t).collect();
        info!(
            entries = entries.len(),
            "firewall (dry run): would replace the block list"
        );
        for (target, remaining) in entries {
            info!(%target, timeout_ms = remaining.unwrap_or(0), "firewall (dry run): would block");
        }
        Ok(())
    }

    async fn apply(&mut self, changes: &Changes) -> Result<(), FirewallError> {
        for target in &changes.remove {
            self.held.remove(target);
            info!(%target, "firewall (dry run): would unblock");
        }
        for (target, remaining) in &changes.add {
            self.held.insert(*target);
            info!(%target, timeout_ms = remaining.unwrap_or(0), "firewall (dry run): would block");
        }
        Ok(())
    }

    async fn list(&mut self) -> Result<Vec<IpNet>, FirewallError> {
        Ok(self.held.iter().copied().collect())
    }

    async fn flush(&mut self) -> Result<(), FirewallError> {
        self.held.clear();
        info!("firewall (dry run): would remove everything");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_the_firewall_suite() {
        super::super::suite::run(&mut super::LogFirewall::default()).await;
    }
}
