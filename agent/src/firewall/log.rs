//! The dry-run backend: logs what it would do and remembers it, enforcing
//! nothing.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ipnet::IpNet;
use tracing::info;

use super::{Entry, Firewall, FirewallError, PortEntry, Readback};
use crate::blocklist::{Changes, PortKey};

#[derive(Debug, Default)]
pub struct LogFirewall {
    /// Target → expiry (Unix ms), as a kernel would keep it.
    held: BTreeMap<IpNet, Option<i64>>,
    /// Port element → expiry (Unix ms).
    ports: BTreeMap<PortKey, Option<i64>>,
    made: bool,
}

/// Entries of a full sync logged one by one at most.
const LOGGED: usize = 100;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[async_trait]
impl Firewall for LogFirewall {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn sync(&mut self, entries: &[Entry], ports: &[PortEntry]) -> Result<(), FirewallError> {
        let now = now_ms();
        self.held = entries
            .iter()
            .map(|(t, r)| (*t, r.map(|r| now + r)))
            .collect();
        self.ports = ports
            .iter()
            .map(|(k, r)| (*k, r.map(|r| now + r)))
            .collect();
        self.made = true;
        info!(
            entries = entries.len(),
            port_entries = ports.len(),
            "firewall (dry run): would replace the block list"
        );
        for (k, remaining) in ports.iter().take(LOGGED) {
            info!(target = %k.target, protocol = k.proto_name(), port = k.port, timeout_ms = remaining.unwrap_or(0), "firewall (dry run): would block port");
        }
        // A long list is summed up, not logged line by line.
        for (target, remaining) in entries.iter().take(LOGGED) {
            info!(%target, timeout_ms = remaining.unwrap_or(0), "firewall (dry run): would block");
        }
        if entries.len() > LOGGED {
            info!(
                more = entries.len() - LOGGED,
                "firewall (dry run): would block more"
            );
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
        for k in &changes.ports.remove {
            self.ports.remove(k);
            info!(target = %k.target, protocol = k.proto_name(), port = k.port, "firewall (dry run): would unblock port");
        }
        for (k, remaining) in &changes.ports.add {
            self.ports.insert(*k, remaining.map(|r| now_ms() + r));
            info!(target = %k.target, protocol = k.proto_name(), port = k.port, timeout_ms = remaining.unwrap_or(0), "firewall (dry run): would block port");
        }
        Ok(())
    }

    async fn read(&mut self) -> Result<Readback, FirewallError> {
        let now = now_ms();
        self.held.retain(|_, u| u.is_none_or(|u| u > now));
        self.ports.retain(|_, u| u.is_none_or(|u| u > now));
        Ok(Readback {
            intact: self.made,
            entries: self
                .held
                .iter()
                .map(|(t, u)| (*t, u.map(|u| u - now)))
                .collect(),
            ports: self
                .ports
                .iter()
                .map(|(k, u)| (*k, u.map(|u| u - now)))
                .collect(),
        })
    }

    async fn flush(&mut self) -> Result<(), FirewallError> {
        self.held.clear();
        self.ports.clear();
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
