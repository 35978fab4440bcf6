//! The server's configuration: a TOML file, overridden by flags and by
//! `FLEETBAN_DATABASE_URL`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fleetban_proto::config::{self, ConfigError};
use serde::Deserialize;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/fleetban";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50051";

/// The file as written by the operator; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Where the embedded SQLite database lives when no `database_url` is set.
    pub data_dir: Option<PathBuf>,
    /// `postgres://…` for a fleet database, `sqlite://…` for an embedded one.
    pub database_url: Option<String>,
    /// REST API, console, `/healthz` and `/metrics`.
    pub http_listen: Option<SocketAddr>,
    /// The agents' gRPC endpoint.
    pub grpc_listen: Option<SocketAddr>,
    /// How long raw events are kept (`30d`, `12h`).
    pub event_retention: Option<String>,
    /// The fleet's correlation rules.
    #[serde(default)]
    pub policy: crate::policy_config::PolicyFile,
    /// Block-list feeds (`[[feed]]`).
    #[serde(default)]
    pub feed: Vec<crate::feeds::FeedFile>,
    /// TLS on the gRPC port and agent certificates.
    #[serde(default)]
    pub tls: TlsFile,
}

/// `[tls]`: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// `true`: no TLS and no agent authentication; only with a loopback
    /// `grpc_listen` (development).
    pub plaintext: Option<bool>,
    /// Host names and addresses agents reach the server by; they go in the
    /// server's certificate.
    pub names: Option<Vec<String>>,
    /// An operator CA (PEM certificate and key) instead of the one the
    /// server creates in its database.
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
}

/// The gRPC port's security, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub plaintext: bool,
    /// Names for the server certificate.
    pub names: Vec<String>,
    /// `(certificate, key)` of an operator CA.
    pub ca_files: Option<(PathBuf, PathBuf)>,
}

/// What the server runs with, every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub http_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub event_retention: chrono::Duration,
    pub policy: fleetban_policy::Policy,
    /// The policies that seed an empty database.
    pub policy_seed: crate::policy_config::PolicySeed,
    /// Block-list feeds imported on a schedule.
    pub feeds: Vec<crate::feeds::FeedConfig>,
    pub tls: TlsSettings,
}

pub const DEFAULT_EVENT_RETENTION: &str = "30d";

/// Values given on the command line (or in the environment); they win over
/// the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub http_listen: Option<SocketAddr>,
    pub grpc_listen: Option<SocketAddr>,
}

impl ServerConfig {
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let (file, source): (ServerFile, String) = match path {
            Some(p) => config::load(p)?,
            None => (ServerFile::default(), String::new()),
        };
        let retention = file
            .event_retention
            .clone()
            .unwrap_or_else(|| DEFAULT_EVENT_RETENTION.to_owned());
        let event_retention = humantime::parse_duration(&retention)
            .ok()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .filter(|d| *d > chrono::Duration::zero())
            .ok_or_else(|| {
                ConfigError::key(
                    path.unwrap_or(Path::new("server.toml")),
                    &source,
                    "event_retention",
                    format!("{retention:?}: expected a duration such as 30d or 12h"),
                )
            })?;
        let file_path = path.unwrap_or(Path::new("server.toml"));
        let mut file = file;
        let seed = std::mem::take(&mut file.policy).into_seed(file_path, &source)?;
        let feeds = crate::feeds::FeedConfig::check_all(
            std::mem::take(&mut file.feed),
            file_path,
            &source,
        )?;
        let tls = std::mem::take(&mut file.tls);
        let mut config = Self::resolve(file, overrides, event_retention);
        config.policy = seed.policy.clone();
        config.policy_seed = seed;
        config.feeds = feeds;
        config.tls = tls.check(file_path, &source, config.grpc_listen)?;
        Ok(config)
    }

    fn resolve(file: ServerFile, o: Overrides, event_retention: chrono::Duration) -> Self {
        let data_dir = o
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let database_url = o
            .database_url
            .or(file.database_url)
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("fleetban.db").display()));
        let parse = |s: &str| {
            s.parse()
                .unwrap_or_else(|_| unreachable!("default address {s} parses"))
        };
        ServerConfig {
            http_listen: o
                .http_listen
                .or(file.http_listen)
                .unwrap_or_else(|| parse(DEFAULT_HTTP_LISTEN)),
            grpc_listen: o
                .grpc_listen
                .or(file.grpc_listen)
                .unwrap_or_else(|| parse(DEFAULT_GRPC_LISTEN)),
            data_dir,
            database_url,
            tls: TlsSettings {
                plaintext: false,
                names: Vec::new(),
                ca_files: None,
            },
            event_retention,
            policy: fleetban_policy::Policy::default(),
            policy_seed: crate::policy_config::PolicySeed {
                policy: fleetban_policy::Policy::default(),
                rules_toml: String::new(),
                jails: Vec::new(),
            },
            feeds: Vec::new(),
        }
    }

    /// Whether the database is the embedded SQLite file.
    pub fn is_embedded(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

impl TlsFile {
    fn check(
        self,
        path: &Path,
        source: &str,
        grpc_listen: SocketAddr,
    ) -> Result<TlsSettings, ConfigError> {
        let err = |key: &str, msg: String| ConfigError::key(path, source, key, msg);
        let plaintext = self.plaintext.unwrap_or(false);
        if plaintext && !crate::identity::tls::plaintext_allowed(&grpc_listen) {
            return Err(err(
                "tls.plaintext",
                format!("plaintext is only allowed on a loopback grpc_listen, not {grpc_listen}"),
            ));
        }
        let names = match self.names {
            Some(n) if n.is_empty() => {
                return Err(err("tls.names", "expected at least one name".into()))
            }
            Some(n) => n,
            None => crate::identity::tls::default_names(grpc_listen),
        };
        let ca_files = match (self.ca_cert, self.ca_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => return Err(err("tls.ca_cert", "needs tls.ca_key too".into())),
            (None, Some(_)) => return Err(err("tls.ca_key", "needs tls.ca_cert too".into())),
        };
        Ok(TlsSettings {
            plaintext,
            names,
            ca_files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_sqlite_in_the_data_dir() {
        let c = ServerConfig::resolve(
            ServerFile::default(),
            Overrides::default(),
            chrono::Duration::days(30),
        );
        assert_eq!(c.database_url, "sqlite:///var/lib/fleetban/fleetban.db");
        assert_eq!(c.http_listen.to_string(), DEFAULT_HTTP_LISTEN);
        assert!(c.is_embedded());
        let c = ServerConfig::resolve(
            ServerFile {
                data_dir: Some("/srv/fb".into()),
                ..Default::default()
            },
            Overrides::default(),
            chrono::Duration::days(30),
        );
        assert_eq!(c.database_url, "sqlite:///srv/fb/fleetban.db");
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = ServerFile {
            database_url: Some("postgres://file/db".into()),
            grpc_listen: Some("127.0.0.1:1".parse().expect("addr")),
            ..Default::default()
        };
        let o = Overrides {
            database_url: Some("postgres://flag/db".into()),
            ..Default::default()
        };
        let c = ServerConfig::resolve(file, o, chrono::Duration::days(30));
        assert_eq!(c.database_url, "postgres://flag/db");
        assert_eq!(c.grpc_listen.to_string(), "127.0.0.1:1");
        assert!(!c.is_embedded());
    }

    #[test]
    fn unknown_keys_are_refused_with_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("server.toml");
        std::fs::write(&p, "data_dir = \"/x\"\nhttp_lisen = \"127.0.0.1:1\"\n").expect("write");
        let e = ServerConfig::load(Some(&p), Overrides::default()).expect_err("refused");
        assert_eq!((e.line, e.key.as_str()), (2, "http_lisen"));
        std::fs::write(&p, "grpc_listen = \"nowhere\"\n").expect("write");
        let e = ServerConfig::load(Some(&p), Overrides::default()).expect_err("refused");
        assert_eq!((e.line, e.key.as_str()), (1, "grpc_listen"));
        std::fs::write(&p, "data_dir = \"/x\"\nevent_retention = \"forever\"\n").expect("write");
        let e = ServerConfig::load(Some(&p), Overrides::default()).expect_err("refused");
        assert_eq!((e.line, e.key.as_str()), (2, "event_retention"));
        std::fs::write(&p, "event_retention = \"12h\"\n").expect("write");
        let c = ServerConfig::load(Some(&p), Overrides::default()).expect("loads");
        assert_eq!(c.event_retention, chrono::Duration::hours(12));
    }

    #[test]
    fn tls_settings_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("server.toml");
        let load = |text: &str| {
            std::fs::write(&p, text).expect("write");
            ServerConfig::load(Some(&p), Overrides::default())
        };
        let c = load("").expect("defaults");
        assert!(!c.tls.plaintext);
        assert!(c.tls.names.contains(&"127.0.0.1".to_string()));
        assert_eq!(c.tls.ca_files, None);
        let e = load("grpc_listen = \"0.0.0.0:50051\"\n[tls]\nplaintext = true\n")
            .expect_err("refused");
        assert_eq!((e.line, e.key.as_str()), (3, "tls.plaintext"));
        let c = load("[tls]\nplaintext = true\n").expect("loopback plaintext");
        assert!(c.tls.plaintext);
        let e = load("[tls]\nca_cert = \"/x.pem\"\n").expect_err("refused");
        assert_eq!((e.line, e.key.as_str()), (2, "tls.ca_cert"));
        let e = load("[tls]\nnames = []\n").expect_err("refused");
        assert_eq!((e.line, e.key.as_str()), (2, "tls.names"));
        let c = load("[tls]\nnames = [\"fleetban.example\"]\nca_cert = \"/c\"\nca_key = \"/k\"\n")
            .expect("ok");
        assert_eq!(c.tls.names, vec!["fleetban.example".to_string()]);
        assert_eq!(c.tls.ca_files, Some(("/c".into(), "/k".into())));
    }
}

#[cfg(test)]
mod shipped {
    /// The example shipped in deploy/ stays valid.
    #[test]
    fn deploy_example_loads() {
        let p =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/server.toml");
        let c = super::ServerConfig::load(Some(&p), super::Overrides::default())
            .expect("example loads");
        assert_eq!(c.database_url, "sqlite:///var/lib/fleetban/fleetban.db");
    }
}
