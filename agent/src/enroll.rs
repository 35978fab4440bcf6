//! `fleetban-agent enroll`: exchanges an enrollment token for this agent's
//! client certificate.
//!
//! 1. Trust on first contact: a TLS handshake with the server only to read
//!    the certificates it presents; the CA among them must have the SHA-256
//!    fingerprint the token carries (or `--ca-fingerprint` gives). Nothing
//!    is sent on that connection.
//! 2. A new key is made here (it never leaves the host), and its signing
//!    request is sent with the token over TLS that trusts only that CA.
//! 3. The certificate the server signs, the key and the CA are saved in the
//!    state dir; from then on the link connects with them.

use std::sync::Arc;
use std::time::Duration;

use fleetban_proto::identity::{parse_fingerprint, EnrollmentToken, TokenError};
use fleetban_proto::pb::enroll_service_client::EnrollServiceClient;
use fleetban_proto::pb::EnrollRequest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::identity::{Credential, CredentialError};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Enrollment failed; nothing was saved.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the token names CA sha256:{token} but --ca-fingerprint gives sha256:{flag}")]
    FingerprintMismatch { token: String, flag: String },
    #[error("enrollment needs an https:// server URL, not {0:?}")]
    NotHttps(String),
    #[error("invalid server URL {0:?}")]
    Url(String),
    #[error("cannot reach the server at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the server's CA is not the expected one: expected sha256:{expected}, the server presents {presented}; check the token (or --ca-fingerprint) and the server URL")]
    WrongCa { expected: String, presented: String },
    #[error("the server refused the enrollment ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("the server's answer is unusable: {0}")]
    BadAnswer(String),
    #[error("cannot make a key: {0}")]
    Key(String),
    #[error(transparent)]
    Save(#[from] CredentialError),
}

/// What to enroll as, and where.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    pub server_url: String,
    pub token: String,
    pub ca_fingerprint: Option<String>,
    pub agent_id: String,
    pub hostname: String,
    pub state_dir: std::path::PathBuf,
}

/// The result of an enrollment.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub agent_id: String,
    pub group: String,
    pub ca_fingerprint: String,
}

pub async fn enroll(o: &EnrollOptions) -> Result<Enrolled, EnrollError> {
    let token = EnrollmentToken::parse(&o.token)?;
    let expected = match &o.ca_fingerprint {
        Some(f) => {
            let flag = parse_fingerprint(f)?;
            if flag != token.ca_fingerprint {
                return Err(EnrollError::FingerprintMismatch {
                    token: token.ca_fingerprint,
                    flag,
                });
            }
            flag
        }
        None => token.ca_fingerprint.clone(),
    };
    if !o.server_url.starts_with("https://") {
        return Err(EnrollError::NotHttps(o.server_url.clone()));
    }
    let ca_der = pinned_ca(&o.server_url, &expected).await?;
    let ca_pem = pem::encode(&pem::Pem::new("CERTIFICATE", ca_der));

    let key = rcgen::KeyPair::generate().map_err(|e| EnrollError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, o.agent_id.as_str());
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| EnrollError::Key(e.to_string()))?;

    let endpoint = Endpoint::from_shared(o.server_url.clone())
        .map_err(|_| EnrollError::Url(o.server_url.clone()))?
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
        .map_err(|e| EnrollError::Url(format!("{}: {e}", o.server_url)))?;
    let channel = endpoint.connect().await.map_err(|e| EnrollError::Connect {
        addr: o.server_url.clone(),
        reason: crate::link::source_chain(&e),
    })?;
    let answer = EnrollServiceClient::new(channel)
        .enroll(EnrollRequest {
            token: token.to_string(),
            agent_id: o.agent_id.clone(),
            csr_pem,
            hostname: o.hostname.clone(),
        })
        .await
        .map_err(|s| EnrollError::Refused {
            code: format!("{:?}", s.code()),
            message: s.message().to_owned(),
        })?
        .into_inner();
    if answer.agent_id != o.agent_id {
        return Err(EnrollError::BadAnswer(format!(
            "certificate for agent {:?}, not {:?}",
            answer.agent_id, o.agent_id
        )));
    }
    let answered_ca = pem::parse(&answer.ca_pem)
        .map_err(|e| EnrollError::BadAnswer(format!("CA certificate: {e}")))?;
    if hex(&Sha256::digest(answered_ca.contents())) != expected {
        return Err(EnrollError::BadAnswer(
            "the CA in the answer is not the pinned one".into(),
        ));
    }
    pem::parse(&answer.certificate_pem)
        .map_err(|e| EnrollError::BadAnswer(format!("certificate: {e}")))?;
    Credential {
        ca_pem,
        cert_pem: answer.certificate_pem,
        key_pem: key.serialize_pem(),
    }
    .save(&o.state_dir)?;
    Ok(Enrolled {
        agent_id: answer.agent_id,
        group: answer.group,
        ca_fingerprint: expected,
    })
}

fn hex(b: &[u8]) -> String {
    fleetban_proto::identity::hex(b)
}

/// The certificate (DER) with SHA-256 `expected` among those the server at
/// `url` presents.
async fn pinned_ca(url: &str, expected: &str) -> Result<Vec<u8>, EnrollError> {
    let uri: tonic::transport::Uri = url.parse().map_err(|_| EnrollError::Url(url.into()))?;
    let host = uri
        .host()
        .ok_or_else(|| EnrollError::Url(url.into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let connect_err = |reason: String| EnrollError::Connect {
        addr: addr.clone(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| connect_err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReadOnly(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|_| EnrollError::Url(url.into()))?;
    let chain = tokio::time::timeout(TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| connect_err(format!("TLS: {e}")))?;
        Ok::<_, EnrollError>(
            tls.get_ref()
                .1
                .peer_certificates()
                .map(|c| c.to_vec())
                .unwrap_or_default(),
        )
    })
    .await
    .map_err(|_| connect_err("timed out".into()))??;
    let prints: Vec<(String, &CertificateDer)> = chain
        .iter()
        .map(|c| (hex(&Sha256::digest(c.as_ref())), c))
        .collect();
    match prints.iter().find(|(fp, _)| fp == expected) {
        Some((_, c)) => Ok(c.as_ref().to_vec()),
        None => Err(EnrollError::WrongCa {
            expected: expected.to_owned(),
            presented: if prints.is_empty() {
                "no certificate".into()
            } else {
                prints
                    .iter()
                    .map(|(fp, _)| format!("sha256:{fp}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

/// Accepts any server certificate: used only to read the chain a server
/// presents, which is then checked against the pinned fingerprint. Handshake
/// signatures are still verified, so the server holds the key it presents.
#[derive(Debug)]
struct ReadOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for ReadOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
