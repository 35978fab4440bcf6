//! Where the block list is enforced. Each backend owns its own table, sets
//! and chain and touches nothing else; every change is one batch, and a full
//! sync replaces the sets' content atomically.

mod command;
mod ipset;
mod log;
mod netlink;
mod nftables;

use std::collections::BTreeMap;

use async_trait::async_trait;
use ipnet::IpNet;

use crate::blocklist::{Changes, PortKey};
use crate::config::{FirewallBackend, FirewallConfig};

pub use self::ipset::IpsetFirewall;
pub use self::log::LogFirewall;
pub use self::nftables::NftablesFirewall;

/// A firewall change failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run {program}: {source} (is it installed?)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} refused the change ({status}): {stderr}")]
    Refused {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("cannot read {what}: {detail}")]
    Read { what: String, detail: String },
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
}

/// One entry in the firewall: a target and its remaining time in ms
/// (`None`: no expiry).
pub type Entry = (IpNet, Option<i64>);

/// One port element of a port-scoped ban and its remaining time in ms.
pub type PortEntry = (PortKey, Option<i64>);

/// The kernel keeps no element longer than this (ipset's limit is about
/// 24.8 days); longer bans are renewed by reconciliation before it runs out.
pub const MAX_TIMEOUT_MS: i64 = 20 * 86_400 * 1_000;

/// What a backend read back from the kernel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Readback {
    /// Whether fleetban's table/sets/chain and rules are all there, as made.
    pub intact: bool,
    /// Target → remaining ms (`None`: no timeout).
    pub entries: BTreeMap<IpNet, Option<i64>>,
    /// Port elements of port-scoped bans → remaining ms.
    pub ports: BTreeMap<PortKey, Option<i64>>,
}

/// What matching traffic gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    #[default]
    Drop,
    /// An ICMP error (a TCP reset for TCP with ipset/iptables).
    Reject,
}

/// How the rules look, the same for every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rules {
    pub verdict: Verdict,
    /// Also filter forwarded traffic (routers, container hosts).
    pub forward: bool,
}

#[async_trait]
pub trait Firewall: Send {
    /// A short name for logs (`nftables`, `ipset`, `log`).
    fn name(&self) -> &'static str;
    /// Creates what is missing of the table, sets and rules, and replaces
    /// the sets' content with `entries` (address-wide) and `ports`
    /// (port-scoped), atomically.
    async fn sync(&mut self, entries: &[Entry], ports: &[PortEntry]) -> Result<(), FirewallError>;
    /// Applies removals, then additions, in one batch.
    async fn apply(&mut self, changes: &Changes) -> Result<(), FirewallError>;
    /// What the kernel holds now.
    async fn read(&mut self) -> Result<Readback, FirewallError>;
    /// Removes everything this backend added.
    async fn flush(&mut self) -> Result<(), FirewallError>;

    /// The targets the kernel holds now, sorted.
    async fn list(&mut self) -> Result<Vec<IpNet>, FirewallError> {
        Ok(self.read().await?.entries.into_keys().collect())
    }
}

/// The backend the configuration asks for.
pub fn from_config(config: &FirewallConfig) -> Box<dyn Firewall> {
    let rules = config.rules;
    match &config.backend {
        FirewallBackend::Nftables { table } => {
            Box::new(NftablesFirewall::new(table.clone()).with_rules(rules))
        }
        FirewallBackend::Ipset { prefix } => {
            Box::new(IpsetFirewall::new(prefix.clone()).with_rules(rules))
        }
        FirewallBackend::Log => Box::new(LogFirewall::default()),
    }
}

/// The hint given when a backend cannot be used at start.
pub fn fallback_hint(backend: &str) -> &'static str {
    match backend {
        "nftables" => "this kernel or host has no usable nftables; set [firewall] backend = \"ipset\" (ipset + iptables) or \"log\" (dry run)",
        "ipset" => "ipset/iptables unusable; set [firewall] backend = \"nftables\", or \"log\" for a dry run",
        _ => "check the [firewall] section",
    }
}

#[cfg(test)]
pub(crate) mod suite;
