//! What the agent refuses to block, pure: its own addresses, the server's,
//! allowlisted networks (and the operator's SSH client when configured),
//! and prefixes wider than the configured limits. A refused ban is not
//! applied at all; the caller says why.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a ban is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{target} would block {what} {protected}")]
    Protected {
        target: IpNet,
        what: &'static str,
        protected: IpNet,
    },
    #[error("{target} is wider than /{widest}, the widest prefix allowed ([firewall] widest_prefix_v{family})")]
    TooWide {
        target: IpNet,
        widest: u8,
        family: u8,
    },
}

/// Networks never to block, each with what it is, and the prefix limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    protected: Vec<(IpNet, &'static str)>,
    widest_v4: u8,
    widest_v6: u8,
}

impl Guard {
    /// A guard with prefix limits: no IPv4 prefix shorter than `widest_v4`,
    /// no IPv6 prefix shorter than `widest_v6`. `/0` is always refused.
    pub fn new(widest_v4: u8, widest_v6: u8) -> Self {
        Guard {
            protected: Vec::new(),
            widest_v4: widest_v4.clamp(1, 32),
            widest_v6: widest_v6.clamp(1, 128),
        }
    }

    /// Never blocks `net`; `what` names it in refusals (`the allowlisted
    /// network`, `this host's address`, ...).
    pub fn protect(&mut self, net: IpNet, what: &'static str) {
        let net = canonical(net);
        if !self.protected.iter().any(|(n, _)| *n == net) {
            self.protected.push((net, what));
        }
    }

    pub fn protect_ip(&mut self, ip: IpAddr, what: &'static str) {
        self.protect(IpNet::from(ip), what);
    }

    /// Whether `target` may be blocked.
    pub fn check(&self, target: &IpNet) -> Result<(), Refusal> {
        let target = canonical(*target);
        let (widest, family) = match target {
            IpNet::V4(_) => (self.widest_v4, 4),
            IpNet::V6(_) => (self.widest_v6, 6),
        };
        if target.prefix_len() < widest {
            return Err(Refusal::TooWide {
                target,
                widest,
                family,
            });
        }
        for (p, what) in &self.protected {
            // CIDR prefixes either nest or are disjoint.
            if target.contains(p) || p.contains(&target) {
                return Err(Refusal::Protected {
                    target,
                    what,
                    protected: *p,
                });
            }
        }
        Ok(())
    }
}

/// IPv4-mapped IPv6 in IPv4 form, host bits cleared.
fn canonical(net: IpNet) -> IpNet {
    fleetban_proto::parse_target(&net.to_string()).unwrap_or(net)
}

/// The address in `SSH_CONNECTION` / `SSH_CLIENT` (`client port server
/// port`), if it parses.
pub fn ssh_client(value: &str) -> Option<IpAddr> {
    value.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        fleetban_proto::parse_target(s).expect("net")
    }

    #[test]
    fn protected_networks_and_wide_prefixes_are_refused() {
        let mut g = Guard::new(8, 32);
        g.protect(net("10.0.0.0/8"), "the allowlisted network");
        g.protect_ip("192.0.2.1".parse().expect("ip"), "this host's address");
        assert!(g.check(&net("198.51.100.7")).is_ok());
        assert!(g.check(&net("2001:db8::/48")).is_ok());
        let e = g.check(&net("10.1.2.3")).expect_err("allowlisted");
        assert_eq!(
            e.to_string(),
            "10.1.2.3/32 would block the allowlisted network 10.0.0.0/8"
        );
        // A prefix around a protected address is refused too.
        let e = g.check(&net("192.0.2.0/24")).expect_err("covers own");
        assert!(e.to_string().contains("this host's address"), "{e}");
        // IPv4-mapped IPv6 is the IPv4 address.
        assert!(g.check(&net("::ffff:192.0.2.1")).is_err());
        for wide in ["0.0.0.0/0", "::/0", "11.0.0.0/7", "2001::/16"] {
            let e = g.check(&net(wide)).expect_err(wide);
            assert!(matches!(e, Refusal::TooWide { .. }), "{wide}: {e}");
        }
        assert!(Guard::new(0, 0).check(&net("0.0.0.0/0")).is_err());
    }

    #[test]
    fn reads_the_ssh_client() {
        assert_eq!(
            ssh_client("198.51.100.4 52000 192.0.2.1 22"),
            Some("198.51.100.4".parse().expect("ip"))
        );
        assert_eq!(ssh_client(""), None);
        assert_eq!(ssh_client("nonsense 1 2 3"), None);
    }
}
