//! Host names in failures, resolved only for jails that ask (`usedns`):
//! lookups run beside detection (never blocking it), are bounded in number
//! and time, and remembered for a while.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

/// Lookups in flight at most; more are dropped (and logged).
const MAX_IN_FLIGHT: usize = 64;
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a name's addresses are reused.
const CACHE_TTL: Duration = Duration::from_secs(300);
const CACHE_MAX: usize = 4096;

/// A failure whose host is a name, waiting for its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub jail: usize,
    pub name: String,
    pub user: Option<String>,
    pub at_ms: i64,
}

/// A name resolved: the failure, once for each address.
#[derive(Debug)]
pub struct Resolved {
    pub pending: Pending,
    pub ips: Vec<IpAddr>,
}

pub struct Resolver {
    cache: HashMap<String, (Instant, Vec<IpAddr>)>,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<Resolved>,
}

impl Resolver {
    pub fn new() -> (Self, mpsc::Receiver<Resolved>) {
        let (tx, rx) = mpsc::channel(256);
        (
            Resolver {
                cache: HashMap::new(),
                slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
                tx,
            },
            rx,
        )
    }

    /// Resolves `p.name`: at once from the cache, else in the background.
    /// Returns the addresses when they are known now.
    pub fn lookup(&mut self, p: Pending) -> Option<Resolved> {
        if let Some((at, ips)) = self.cache.get(&p.name) {
            if at.elapsed() < CACHE_TTL {
                return Some(Resolved {
                    pending: p,
                    ips: ips.clone(),
                });
            }
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            warn!(name = %p.name, "too many host-name lookups at once; failure dropped");
            return None;
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let ips = match tokio::time::timeout(
                LOOKUP_TIMEOUT,
                tokio::net::lookup_host((p.name.as_str(), 0)),
            )
            .await
            {
                Ok(Ok(addrs)) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.sort_unstable();
                    ips.dedup();
                    ips
                }
                Ok(Err(e)) => {
                    debug!(name = %p.name, error = %e, "host name does not resolve");
                    Vec::new()
                }
                Err(_) => {
                    debug!(name = %p.name, "host-name lookup timed out");
                    Vec::new()
                }
            };
            let _ = tx.send(Resolved { pending: p, ips }).await;
        });
        None
    }

    /// Remembers a lookup's result.
    pub fn remember(&mut self, name: &str, ips: &[IpAddr]) {
        if self.cache.len() >= CACHE_MAX {
            self.cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if self.cache.len() >= CACHE_MAX {
                self.cache.clear();
            }
        }
        self.cache
            .insert(name.to_owned(), (Instant::now(), ips.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolve_in_the_background_then_from_the_cache() {
        let (mut r, mut rx) = Resolver::new();
        let p = Pending {
            jail: 0,
            name: "localhost".into(),
            user: None,
            at_ms: 1,
        };
        assert!(r.lookup(p.clone()).is_none());
        let done = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("result");
        assert!(done.ips.iter().any(IpAddr::is_loopback), "{:?}", done.ips);
        r.remember("localhost", &done.ips);
        let again = r.lookup(p).expect("cached");
        assert_eq!(again.ips, done.ips);
        let bad = Pending {
            name: "no-such-host.invalid".into(),
            ..again.pending
        };
        assert!(r.lookup(bad).is_none());
        let done = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("result");
        assert!(done.ips.is_empty());
    }
}
