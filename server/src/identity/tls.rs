//! The gRPC port's TLS: the server's certificate (made at start by the CA,
//! for the configured names) and client certificates checked against the
//! CA. A client certificate is optional at the TLS layer, so an agent
//! without one can still call `Enroll`; every other call requires one.

use std::net::{IpAddr, SocketAddr};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::{Authority, IdentityError};

/// The names the server's certificate is valid for when none are
/// configured: this host's name, `localhost`, the loopback addresses, and
/// the address the gRPC port listens on (unless it is a wildcard).
pub fn default_names(grpc_listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    if let Ok(h) = hostname_of_host() {
        names.push(h);
    }
    names.push("127.0.0.1".into());
    names.push("::1".into());
    let ip = grpc_listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names
}

fn hostname_of_host() -> Result<String, std::io::Error> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(h.trim().to_owned())
}

/// The gRPC URL agents are told to enroll with: the listening address when
/// it is a specific, non-loopback one the certificate names, else the
/// certificate's first name that is not a loopback one, else its first
/// name, with the port the server listens on.
pub fn agent_url(names: &[String], listen: SocketAddr) -> Option<String> {
    let loopback = |n: &str| {
        n == "localhost"
            || n.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
    };
    let ip = listen.ip();
    let host = if !ip.is_unspecified() && !ip.is_loopback() && names.contains(&ip.to_string()) {
        ip.to_string()
    } else {
        names
            .iter()
            .find(|n| !loopback(n))
            .or_else(|| names.first())?
            .clone()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(format!("https://{host}:{}", listen.port()))
}

/// The TLS setup of the gRPC port.
pub struct ServerTls {
    pub config: ServerTlsConfig,
    /// Names in the certificate.
    pub names: Vec<String>,
    /// Names that could not go in the certificate.
    pub skipped: Vec<String>,
}

pub fn server_tls(ca: &Authority, names: &[String]) -> Result<ServerTls, IdentityError> {
    let (chain, key, skipped) = ca.server_certificate(names)?;
    let config = ServerTlsConfig::new()
        .identity(Identity::from_pem(chain, key))
        .client_ca_root(Certificate::from_pem(ca.cert_pem()))
        .client_auth_optional(true);
    Ok(ServerTls {
        config,
        names: names
            .iter()
            .filter(|n| !skipped.contains(n))
            .cloned()
            .collect(),
        skipped,
    })
}

/// Whether plaintext may be served on `addr`: loopback only.
pub fn plaintext_allowed(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback(),
    }
}

#[cfg(test)]
mod agent_url_tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn agents_are_told_a_name_they_can_reach() {
        let any: SocketAddr = "0.0.0.0:50051".parse().expect("addr");
        let on: SocketAddr = "198.18.1.1:7000".parse().expect("addr");
        let n = names(&["localhost", "fleet.example", "127.0.0.1", "::1"]);
        assert_eq!(
            agent_url(&n, any).as_deref(),
            Some("https://fleet.example:50051")
        );
        let mut with_ip = n.clone();
        with_ip.push("198.18.1.1".into());
        assert_eq!(
            agent_url(&with_ip, on).as_deref(),
            Some("https://198.18.1.1:7000")
        );
        // A listening address the certificate does not name is not used.
        assert_eq!(
            agent_url(&n, on).as_deref(),
            Some("https://fleet.example:7000")
        );
        assert_eq!(
            agent_url(&names(&["localhost", "2001:db8::1"]), any).as_deref(),
            Some("https://[2001:db8::1]:50051")
        );
        assert_eq!(
            agent_url(&names(&["localhost"]), any).as_deref(),
            Some("https://localhost:50051")
        );
        assert_eq!(agent_url(&[], any), None);
    }
}
