//! The agent's credential: its client certificate and key, and the server
//! CA it pins, kept in `<state_dir>/identity/` by `fleetban-agent enroll`
//! and read by the link at every (re)connect, so an agent enrolled while
//! running connects without a restart.

use std::io::Write;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Where the credential is, or why it cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("not enrolled ({0} missing): run `fleetban-agent enroll --token …` with a token from `fleetban-server token create`")]
    NotEnrolled(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid server URL {0:?}: {1}")]
    Url(String, String),
}

/// A client certificate, its key and the CA, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").finish_non_exhaustive()
    }
}

pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("identity")
}

const CA: &str = "ca.pem";
const CERT: &str = "agent.pem";
const KEY: &str = "agent.key";

impl Credential {
    /// The credential saved in `state_dir`.
    pub fn load(state_dir: &Path) -> Result<Self, CredentialError> {
        let d = dir(state_dir);
        let read = |name: &str| {
            let path = d.join(name);
            std::fs::read_to_string(&path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    CredentialError::NotEnrolled(path)
                } else {
                    CredentialError::Read { path, source }
                }
            })
        };
        Ok(Credential {
            ca_pem: read(CA)?,
            cert_pem: read(CERT)?,
            key_pem: read(KEY)?,
        })
    }

    /// Saves the credential; each file is replaced whole (written aside,
    /// then renamed), and the key is readable by its owner only.
    pub fn save(&self, state_dir: &Path) -> Result<(), CredentialError> {
        let d = dir(state_dir);
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| CredentialError::Write { path, source }
        };
        std::fs::create_dir_all(&d).map_err(write_err(&d))?;
        set_mode(&d, 0o700).map_err(write_err(&d))?;
        for (name, text, mode) in [
            (KEY, &self.key_pem, 0o600),
            (CERT, &self.cert_pem, 0o644),
            (CA, &self.ca_pem, 0o644),
        ] {
            let path = d.join(name);
            let tmp = d.join(format!(".{name}.new"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(write_err(&tmp))?;
            set_mode(&tmp, mode).map_err(write_err(&tmp))?;
            f.write_all(text.as_bytes()).map_err(write_err(&tmp))?;
            f.sync_all().map_err(write_err(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(write_err(&path))?;
        }
        Ok(())
    }

    /// TLS that trusts only the pinned CA and presents the agent's
    /// certificate.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// The endpoint for `url`: `https://` with the credential in `state_dir`,
/// `http://` in plaintext (a server in development mode).
pub fn endpoint(url: &str, state_dir: &Path) -> Result<Endpoint, CredentialError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| CredentialError::Url(url.to_owned(), e.to_string()))?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let credential = Credential::load(state_dir)?;
    endpoint
        .tls_config(credential.client_tls())
        .map_err(|e| CredentialError::Url(url.to_owned(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_with_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let e = Credential::load(d.path()).expect_err("nothing saved yet");
        assert!(matches!(e, CredentialError::NotEnrolled(_)), "{e}");
        assert!(e.to_string().contains("fleetban-agent enroll"), "{e}");
        let c = Credential {
            ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            key_pem: "key".into(),
        };
        c.save(d.path()).expect("save");
        assert_eq!(Credential::load(d.path()).expect("load"), c);
        let mode = std::fs::metadata(dir(d.path()).join(KEY))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let e =
            endpoint("https://127.0.0.1:1", &d.path().join("other")).expect_err("no credential");
        assert!(matches!(e, CredentialError::NotEnrolled(_)));
        assert!(endpoint("http://127.0.0.1:1", &d.path().join("other")).is_ok());
    }
}
