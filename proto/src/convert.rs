//! Domain types carried over the wire, and their checked conversions.

use std::net::IpAddr;

use chrono::{DateTime, TimeZone, Utc};
use ipnet::IpNet;

use crate::pb;
use crate::ports::PortScope;

/// A wire message that does not hold what it must.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidMessage {
    #[error("invalid target {0:?}: expected an IP address or a CIDR prefix")]
    Target(String),
    #[error("invalid time {0}: out of range")]
    Time(i64),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("invalid port scope: {0}")]
    Ports(#[from] crate::ports::PortError),
}

/// Parses an IP address or CIDR prefix, normalising it: host bits cleared,
/// an IPv4-mapped IPv6 address turned into its IPv4 form.
pub fn parse_target(s: &str) -> Result<IpNet, InvalidMessage> {
    let s = s.trim();
    let net = if let Ok(ip) = s.parse::<IpAddr>() {
        IpNet::from(canonical_ip(ip))
    } else {
        let net: IpNet = s
            .parse()
            .map_err(|_| InvalidMessage::Target(s.to_owned()))?;
        match net {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                Some(v4) if v6.prefix_len() >= 96 => {
                    IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96)
                        .map_err(|_| InvalidMessage::Target(s.to_owned()))?
                }
                _ => net,
            },
            IpNet::V4(_) => net,
        }
    };
    Ok(net.trunc())
}

/// An IPv4-mapped IPv6 address in its IPv4 form; any other address unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Milliseconds since the Unix epoch as a UTC time.
pub fn time_from_ms(ms: i64) -> Result<DateTime<Utc>, InvalidMessage> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or(InvalidMessage::Time(ms))
}

/// One entry of the fleet's block list as an agent enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry {
    pub id: u64,
    pub target: IpNet,
    pub origin: String,
    pub reason: String,
    pub jail: String,
    /// `None`: no expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// The ports banned (all traffic when empty).
    pub ports: PortScope,
}

impl TryFrom<pb::Decision> for BlockEntry {
    type Error = InvalidMessage;

    fn try_from(d: pb::Decision) -> Result<Self, Self::Error> {
        let expires_at = if d.expires_at_ms == 0 {
            None
        } else {
            Some(time_from_ms(d.expires_at_ms)?)
        };
        Ok(BlockEntry {
            id: d.id,
            target: parse_target(&d.target)?,
            origin: d.origin,
            reason: d.reason,
            jail: d.jail,
            expires_at,
            ports: PortScope::try_from(d.ports)?,
        })
    }
}

impl From<&BlockEntry> for pb::Decision {
    fn from(e: &BlockEntry) -> Self {
        pb::Decision {
            id: e.id,
            target: e.target.to_string(),
            origin: e.origin.clone(),
            reason: e.reason.clone(),
            jail: e.jail.clone(),
            expires_at_ms: e.expires_at.map_or(0, |t| t.timestamp_millis()),
            ports: (&e.ports).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_normalised() {
        assert_eq!(
            parse_target("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_target("192.0.2.7/24").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            parse_target("::ffff:192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_target("::ffff:192.0.2.0/120").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            parse_target("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert!(matches!(
            parse_target("nope"),
            Err(InvalidMessage::Target(_))
        ));
        assert!(parse_target("192.0.2.1/33").is_err());
    }

    #[test]
    fn decision_round_trip() {
        let e = BlockEntry {
            id: 3,
            target: parse_target("2001:db8::/64").unwrap(),
            origin: "fleet".into(),
            reason: "r".into(),
            jail: "sshd".into(),
            expires_at: Some(time_from_ms(1_700_000_000_000).unwrap()),
            ports: PortScope::from_text("tcp/22").unwrap(),
        };
        let back = BlockEntry::try_from(pb::Decision::from(&e)).unwrap();
        assert_eq!(back, e);
        let bad = pb::Decision {
            target: "x".into(),
            ..pb::Decision::from(&e)
        };
        assert!(BlockEntry::try_from(bad).is_err());
    }
}
