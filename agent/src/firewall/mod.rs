//! Where the block list is enforced. Each backend owns its own table or set
//! and touches nothing else; changes are applied in one batch each.

mod log;
mod nftables;

use async_trait::async_trait;
use ipnet::IpNet;

use crate::blocklist::Changes;
use crate::config::FirewallBackend;

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
}

/// One entry in the firewall: a target and its remaining time in ms
/// (`None`: no expiry).
pub type Entry = (IpNet, Option<i64>);

#[async_trait]
pub trait Firewall: Send {
    /// A short name for logs (`nftables`, `log`).
    fn name(&self) -> &'static str;
    /// Replaces everything the backend holds with `entries`, atomically.
    async fn sync(&mut self, entries: &[Entry]) -> Result<(), FirewallError>;
    /// Applies removals, then additions, in one batch.
    async fn apply(&mut self, changes: &Changes) -> Result<(), FirewallError>;
    /// The targets the firewall holds now, read back from it.
    async fn list(&mut self) -> Result<Vec<IpNet>, FirewallError>;
    /// Removes everything this backend added.
    async fn flush(&mut self) -> Result<(), FirewallError>;
}

/// The backend the configuration asks for.
pub fn from_config(backend: &FirewallBackend) -> Box<dyn Firewall> {
    match backend {
        FirewallBackend::Nftables { table } => Box::new(NftablesFirewall::new(table.clone())),
        FirewallBackend::Log => Box::new(LogFirewall::default()),
    }
}

#[cfg(test)]
pub(crate) mod suite;
