//! The dry-run backend: logs what it would do and remembers it, enforcing
//! nothing.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ipnet::IpNet;
use tracing::info;

use super::{Entry, Firewall, FirewallError, Readback};
use crate::blocklist::Changes;

#[derive(Debug, Default)]
pub struct LogFirewall {
    /// Target → expiry (Unix ms), as a kernel would keep it.
    held: BTreeMap<IpNet, Option<i64>>,
    made: bool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[async_trait]
impl Firewall for LogFirewall {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn sync(&mut self, entries: &[Entry]) -> Result<(), FirewallError> {
        let now = now_ms();
        self.held = entries
            .iter()
            .map(|(t, r)| (*t, r.map(|r| now + r)))
            .collect();
        self.made = true;
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
            self.held.insert(*target, remaining.map(|r| now_ms() + r));
            info!(%target, timeout_ms = remaining.unwrap_or(0), "firewall (dry run): would block");
        }
        Ok(())
    }

    async fn read(&mut self) -> Result<Readback, FirewallError> {
        let now = now_ms();
        self.held.retain(|_, u| u.is_none_or(|u| u > now));
        Ok(Readback {
            intact: self.made,
            entries: self
                .held
                .iter()
                .map(|(t, u)| (*t, u.map(|u| u - now)))
                .collect(),
        })
    }

    async fn flush(&mut self) -> Result<(), FirewallError> {
        self.held.clear();
        self.made = false;
        info!("firewall (dry run): would remove everything");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_the_firewall_suite() {
        super::super::suite::run_plain(&mut super::LogFirewall::default()).await;
    }
}
