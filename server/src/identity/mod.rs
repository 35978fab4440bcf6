//! Agent identity: the fleet's certificate authority, which signs the
//! server's TLS certificate and every agent's client certificate, and the
//! enrollment tokens agents exchange for those certificates.
//!
//! The CA lives in the database (created on first start, or imported from
//! operator-provided files), so every replica of the server issues and
//! accepts the same certificates. Tokens are random 256-bit secrets stored
//! as their SHA-256: a secret that long needs no slow password hash.

mod ca;
pub mod tls;

pub use ca::{Authority, IssuedCertificate};

use sha2::{Digest, Sha256};

/// Something about certificates went wrong.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create a certificate: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("the stored CA is unusable: {0}")]
    BadCa(String),
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// SHA-256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    fleetban_proto::identity::hex(&Sha256::digest(bytes))
}

/// A new random 256-bit secret, as hex.
pub fn random_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    fleetban_proto::identity::hex(&b)
}
