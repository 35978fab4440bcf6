//! Port scopes of jails: service names (`ssh`) resolved through
//! `/etc/services`, with fleetban's small built-in table where the file
//! lacks them, and fail2ban's ban-action semantics (which actions ban the
//! jail's ports, which ban all traffic).

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use fleetban_proto::ports::{well_known, PortError, PortScope, Protocol};

/// Service name → port, from the lines of an `/etc/services` file
/// (`ssh 22/tcp`, aliases after the port); TCP and UDP both.
pub fn parse_services(text: &str) -> HashMap<String, u16> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let (Some(name), Some(port)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(port) = port
            .split_once('/')
            .filter(|(_, p)| matches!(*p, "tcp" | "udp"))
            .and_then(|(n, _)| n.parse::<u16>().ok())
        else {
            continue;
        };
        for n in std::iter::once(name).chain(words) {
            out.entry(n.to_ascii_lowercase()).or_insert(port);
        }
    }
    out
}

/// The host's `/etc/services`, read once (empty when missing).
fn system() -> &'static HashMap<String, u16> {
    static SERVICES: OnceLock<HashMap<String, u16>> = OnceLock::new();
    SERVICES.get_or_init(|| {
        std::fs::read_to_string(Path::new("/etc/services"))
            .map(|t| parse_services(&t))
            .unwrap_or_default()
    })
}

/// A service's port: `/etc/services` first, then the built-in table.
pub fn service_port(name: &str) -> Option<u16> {
    system()
        .get(&name.to_ascii_lowercase())
        .copied()
        .or_else(|| well_known(name))
}

/// Parses a jail's `port` and `protocol` (fail2ban syntax).
pub fn jail_scope(port: &str, protocol: Option<&str>) -> Result<PortScope, PortError> {
    let protocol = Protocol::parse(protocol.unwrap_or("tcp"))?;
    PortScope::parse(protocol, port, &service_port)
}

/// Whether a fail2ban `action` bans all traffic from the address rather
/// than the jail's ports: the `*-allports` ban actions (`banaction_allports`,
/// used by the shipped `recidive` jail), `nftables[type=allports]`, and
/// actions with no notion of ports (`route`, `hostsdeny`, `shorewall`,
/// `blackhole`). Every other ban action (`iptables-multiport`,
/// `nftables-multiport`, `ufw`, ...) bans the jail's `port` only.
pub fn action_bans_all_ports(action: &str) -> bool {
    let a = action.to_ascii_lowercase();
    a.contains("allports")
        || a.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .any(|w| matches!(w, "route" | "hostsdeny" | "shorewall" | "blackhole"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_files_are_read() {
        let s = parse_services(
            "# comment\nssh\t\t22/tcp\t# SSH\nhttp 80/tcp www # web\nsyslog 514/udp\nbad x/tcp\nddp 2/ddp\n",
        );
        assert_eq!(s.get("ssh"), Some(&22));
        assert_eq!(s.get("www"), Some(&80));
        assert_eq!(s.get("syslog"), Some(&514));
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn jail_ports_and_actions() {
        assert_eq!(jail_scope("ssh", None).unwrap().to_string(), "tcp/22");
        assert_eq!(
            jail_scope("http,https", Some("tcp")).unwrap().to_string(),
            "tcp/80,443"
        );
        assert!(jail_scope("0:65535", Some("tcp")).unwrap().is_all());
        assert!(matches!(
            jail_scope("no-such-service-here", None),
            Err(PortError::Service(_))
        ));
        assert!(matches!(
            jail_scope("22", Some("icmp")),
            Err(PortError::Protocol(_))
        ));
        assert!(action_bans_all_ports(
            "iptables-allports[name=recidive, protocol=\"tcp\"]"
        ));
        assert!(action_bans_all_ports("nftables[type=allports]"));
        assert!(action_bans_all_ports("route"));
        assert!(!action_bans_all_ports(
            "iptables-multiport[port=\"ssh\", protocol=\"tcp\", chain=\"INPUT\"]"
        ));
        assert!(!action_bans_all_ports("nftables-multiport"));
    }
}
