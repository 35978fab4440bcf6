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
        let mut config = Self::resolve(file, overrides, event_retention);
        config.policy = seed.policy.clone();
        config.policy_seed = seed;
        config.feeds = feeds;
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
