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
