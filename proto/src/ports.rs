//! Port scopes: a ban limited to some ports of one protocol, as fail2ban's
//! jails (`port = ssh`, `protocol = tcp`) and its default ban actions have
//! it. An empty scope bans all traffic from the target.
//!
//! The text form is `<protocol>/<ports>`: `tcp/22`, `udp/53`,
//! `all/80,443,8000:8100` (`all` means TCP and UDP); the empty string is
//! all traffic. It is what the server stores and the REST API shows.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pb;

/// The most ports one scope may name (ranges counted port by port, for
/// each protocol): each is one firewall element per banned address.
pub const MAX_PORTS: usize = 1_024;

/// Which transport protocol a scope's ports belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// TCP and UDP (fail2ban's `protocol = all`).
    All,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::All => "all",
        }
    }

    pub fn parse(s: &str) -> Result<Self, PortError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "all" | "" => Ok(Protocol::All),
            other => Err(PortError::Protocol(other.to_owned())),
        }
    }

    /// The IP protocol numbers it stands for (6: TCP, 17: UDP).
    pub fn numbers(self) -> &'static [u8] {
        match self {
            Protocol::Tcp => &[6],
            Protocol::Udp => &[17],
            Protocol::All => &[6, 17],
        }
    }
}

/// Ports `from` to `to`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "{}:{}", self.from, self.to)
        }
    }
}

/// What a ban covers: all traffic from the target (no ports), or only these
/// ports of `protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortScope {
    pub protocol: Protocol,
    /// Sorted, merged; empty: all traffic.
    pub ports: Vec<PortRange>,
}

impl Default for PortScope {
    fn default() -> Self {
        PortScope::all()
    }
}

/// A port scope that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("unknown protocol {0:?}: expected tcp, udp or all")]
    Protocol(String),
    #[error("unknown service {0:?}: not a port number and not in /etc/services")]
    Service(String),
    #[error("invalid port {0:?}: expected 1 to 65535")]
    Port(String),
    #[error("invalid port range {0:?}: expected FROM:TO with FROM <= TO")]
    Range(String),
    #[error("the port list is empty")]
    Empty,
    #[error("{0} ports is too many for one ban (at most {MAX_PORTS}); ban all traffic instead")]
    TooMany(usize),
    #[error("invalid port scope {0:?}: expected PROTOCOL/PORTS, e.g. tcp/22,443")]
    Text(String),
}

impl PortScope {
    /// All traffic.
    pub fn all() -> Self {
        PortScope {
            protocol: Protocol::All,
            ports: Vec::new(),
        }
    }

    pub fn is_all(&self) -> bool {
        self.ports.is_empty()
    }

    /// A scope from a protocol and port ranges: ranges sorted and merged, a
    /// range over every port (`0:65535`, fail2ban's default) meaning all
    /// traffic; too many ports are refused.
    pub fn new(protocol: Protocol, mut ports: Vec<PortRange>) -> Result<Self, PortError> {
        ports.sort_unstable();
        let mut merged: Vec<PortRange> = Vec::with_capacity(ports.len());
        for r in ports {
            match merged.last_mut() {
                Some(last) if u32::from(r.from) <= u32::from(last.to) + 1 => {
                    last.to = last.to.max(r.to);
                }
                _ => merged.push(r),
            }
        }
        if merged.iter().any(|r| r.from <= 1 && r.to == u16::MAX) {
            return Ok(PortScope::all());
        }
        let count: usize = merged
            .iter()
            .map(|r| usize::from(r.to - r.from) + 1)
            .sum::<usize>()
            * protocol.numbers().len();
        if count > MAX_PORTS {
            return Err(PortError::TooMany(count));
        }
        Ok(PortScope {
            protocol,
            ports: merged,
        })
    }

    /// Parses a fail2ban-style port list (`ssh`, `http,https`,
    /// `8000:8100`, `8000-8100`), naming services through `service`.
    pub fn parse(
        protocol: Protocol,
        spec: &str,
        service: &dyn Fn(&str) -> Option<u16>,
    ) -> Result<Self, PortError> {
        let mut ranges = Vec::new();
        for item in spec
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            ranges.push(parse_item(item, service)?);
        }
        if ranges.is_empty() {
            return Err(PortError::Empty);
        }
        PortScope::new(protocol, ranges)
    }

    /// Parses the text form (`tcp/22,443`; empty: all traffic), with port
    /// numbers or well-known service names.
    pub fn from_text(text: &str) -> Result<Self, PortError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(PortScope::all());
        }
        let (proto, ports) = text
            .split_once('/')
            .ok_or_else(|| PortError::Text(text.to_owned()))?;
        PortScope::parse(Protocol::parse(proto)?, ports, &well_known)
    }

    /// Each (IP protocol number, port) the scope covers.
    pub fn elements(&self) -> impl Iterator<Item = (u8, u16)> + '_ {
        self.protocol.numbers().iter().flat_map(move |p| {
            self.ports
                .iter()
                .flat_map(move |r| (r.from..=r.to).map(move |port| (*p, port)))
        })
    }
}

/// The text form; empty for all traffic.
impl fmt::Display for PortScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return Ok(());
        }
        write!(f, "{}/", self.protocol.as_str())?;
        for (i, r) in self.ports.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

fn parse_item(item: &str, service: &dyn Fn(&str) -> Option<u16>) -> Result<PortRange, PortError> {
    let one = |s: &str| -> Result<u16, PortError> {
        if s.bytes().all(|b| b.is_ascii_digit()) {
            // fail2ban's default is 0:65535; 0 is only valid as a range start.
            return s.parse().map_err(|_| PortError::Port(s.to_owned()));
        }
        service(s).ok_or_else(|| PortError::Service(s.to_owned()))
    };
    let (from, to) = match item.split_once([':', '-']) {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let p = one(item)?;
            if p == 0 {
                return Err(PortError::Port(item.to_owned()));
            }
            (p, p)
        }
    };
    if from > to || to == 0 {
        return Err(PortError::Range(item.to_owned()));
    }
    Ok(PortRange {
        from: from.max(1),
        to,
    })
}

/// Services fail2ban's shipped jails name, for hosts without
/// `/etc/services` (and for the server, which reads no such file).
pub fn well_known(name: &str) -> Option<u16> {
    Some(match name.to_ascii_lowercase().as_str() {
        "ftp-data" => 20,
        "ftp" => 21,
        "ssh" => 22,
        "telnet" => 23,
        "smtp" => 25,
        "domain" => 53,
        "http" | "www" => 80,
        "pop3" => 110,
        "sunrpc" => 111,
        "imap" | "imap2" => 143,
        "ldap" => 389,
        "https" => 443,
        "smtps" | "submissions" => 465,
        "submission" => 587,
        "ldaps" => 636,
        "rsync" => 873,
        "imaps" => 993,
        "pop3s" => 995,
        "openvpn" => 1194,
        "mysql" => 3306,
        "sieve" => 4190,
        "sip" => 5060,
        "xmpp-client" => 5222,
        "postgresql" => 5432,
        "http-alt" => 8080,
        _ => return None,
    })
}

impl TryFrom<Option<pb::PortScope>> for PortScope {
    type Error = PortError;

    fn try_from(s: Option<pb::PortScope>) -> Result<Self, Self::Error> {
        let Some(s) = s else {
            return Ok(PortScope::all());
        };
        if s.ports.is_empty() {
            return Ok(PortScope::all());
        }
        let port = |p: u32| u16::try_from(p).map_err(|_| PortError::Port(p.to_string()));
        let mut ranges = Vec::with_capacity(s.ports.len());
        for r in s.ports {
            let (from, to) = (port(r.from)?, port(r.to)?);
            if from == 0 || from > to {
                return Err(PortError::Range(format!("{}:{}", r.from, r.to)));
            }
            ranges.push(PortRange { from, to });
        }
        PortScope::new(Protocol::parse(&s.protocol)?, ranges)
    }
}

impl From<&PortScope> for Option<pb::PortScope> {
    fn from(s: &PortScope) -> Self {
        (!s.is_all()).then(|| pb::PortScope {
            protocol: s.protocol.as_str().to_owned(),
            ports: s
                .ports
                .iter()
                .map(|r| pb::PortRange {
                    from: u32::from(r.from),
                    to: u32::from(r.to),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<u16> {
        None
    }

    #[test]
    fn fail2ban_port_lists_parse() {
        let s = PortScope::parse(Protocol::Tcp, "ssh", &well_known).unwrap();
        assert_eq!(s.to_string(), "tcp/22");
        let s = PortScope::parse(Protocol::All, "https, http,8000:8100,8101", &well_known).unwrap();
        assert_eq!(s.to_string(), "all/80,443,8000:8101");
        assert_eq!(s.elements().count(), 2 * 104);
        let s = PortScope::parse(Protocol::Udp, "5060-5061", &none).unwrap();
        assert_eq!(
            s.elements().collect::<Vec<_>>(),
            vec![(17, 5060), (17, 5061)]
        );
        // fail2ban's default (every port) is all traffic.
        assert!(PortScope::parse(Protocol::Tcp, "0:65535", &none)
            .unwrap()
            .is_all());
        assert!(PortScope::parse(Protocol::Tcp, "1-65535", &none)
            .unwrap()
            .is_all());
    }

    #[test]
    fn bad_port_lists_are_refused_clearly() {
        let err = |p: Protocol, s: &str| PortScope::parse(p, s, &well_known).unwrap_err();
        assert_eq!(
            err(Protocol::Tcp, "sshh"),
            PortError::Service("sshh".into())
        );
        assert_eq!(err(Protocol::Tcp, "70000"), PortError::Port("70000".into()));
        assert_eq!(err(Protocol::Tcp, "0"), PortError::Port("0".into()));
        assert_eq!(
            err(Protocol::Tcp, "90:80"),
            PortError::Range("90:80".into())
        );
        assert_eq!(err(Protocol::Tcp, " , "), PortError::Empty);
        assert_eq!(err(Protocol::All, "1000:1600"), PortError::TooMany(1202));
        assert_eq!(
            Protocol::parse("icmp"),
            Err(PortError::Protocol("icmp".into()))
        );
        assert!(err(Protocol::Tcp, "sshh")
            .to_string()
            .contains("/etc/services"));
    }

    #[test]
    fn text_and_wire_forms_round_trip() {
        for text in ["", "tcp/22", "udp/53,123", "all/80,443,8000:8100"] {
            let s = PortScope::from_text(text).unwrap();
            assert_eq!(s.to_string(), text);
            let wire: Option<pb::PortScope> = (&s).into();
            assert_eq!(PortScope::try_from(wire).unwrap(), s);
        }
        assert_eq!(
            PortScope::from_text("tcp/ssh").unwrap().to_string(),
            "tcp/22"
        );
        assert!(matches!(
            PortScope::from_text("22"),
            Err(PortError::Text(_))
        ));
        let bad = pb::PortScope {
            protocol: "tcp".into(),
            ports: vec![pb::PortRange {
                from: 10,
                to: 70_000,
            }],
        };
        assert!(PortScope::try_from(Some(bad)).is_err());
    }
}
