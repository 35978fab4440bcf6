//! Block-list feeds: where each list comes from, how often it is fetched,
//! and the fetching itself (HTTP(S) with rustls, or a local file). What a
//! fetched list changes is decided by the service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleetban_proto::config::ConfigError;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::service::Service;
use crate::store::StoredFeed;

/// One `[[feed]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedFile {
    pub name: String,
    /// `http://…` or `https://…`.
    pub url: Option<String>,
    /// A local file.
    pub path: Option<PathBuf>,
    /// How often the list is fetched (default 1h).
    pub interval: Option<String>,
    /// How long a listed entry stays banned without being listed again;
    /// default: until it leaves the list.
    pub bantime: Option<String>,
    /// Percent of lines that may be garbage before a fetch is refused
    /// (default 10).
    pub max_invalid_percent: Option<u8>,
    /// Whether an empty list is applied (revoking all of the feed's bans);
    /// default: an empty list is refused as a failed download.
    #[serde(default)]
    pub allow_empty: bool,
}

/// Where a feed is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedSource {
    Url(String),
    File(PathBuf),
}

impl std::fmt::Display for FeedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedSource::Url(u) => f.write_str(u),
            FeedSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A feed, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    pub name: String,
    pub source: FeedSource,
    pub interval: Duration,
    pub bantime: Option<chrono::Duration>,
    pub max_invalid_percent: u8,
    pub allow_empty: bool,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_INVALID_PERCENT: u8 = 10;
/// The largest list read (64 MiB: several million entries).
pub const MAX_FEED_BYTES: usize = 64 << 20;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why one feed is wrong: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedInvalid {
    pub key: &'static str,
    pub message: String,
}

impl FeedFile {
    /// Checks one feed; the error names the key (`feed.url`…).
    pub fn check(&self) -> Result<FeedConfig, FeedInvalid> {
        let err = |key: &'static str, m: String| FeedInvalid {
            key,
            message: format!("feed {:?}: {m}", self.name),
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(err(
                "feed.name",
                "expected 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let source = match (&self.url, &self.path) {
            (Some(u), None) if u.starts_with("http://") || u.starts_with("https://") => {
                FeedSource::Url(u.clone())
            }
            (Some(u), None) => return Err(err("feed.url", format!("{u:?}: expected http(s)://…"))),
            (None, Some(p)) => FeedSource::File(p.clone()),
            _ => return Err(err("feed.url", "set either url or path".into())),
        };
        let dur = |key: &'static str, v: &str| {
            humantime::parse_duration(v.trim())
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| err(key, format!("{v:?}: expected a duration such as 1h")))
        };
        let interval = match &self.interval {
            Some(v) => dur("feed.interval", v)?,
            None => DEFAULT_INTERVAL,
        };
        let bantime = match &self.bantime {
            Some(v) => Some(
                chrono::Duration::from_std(dur("feed.bantime", v)?)
                    .map_err(|e| err("feed.bantime", e.to_string()))?,
            ),
            None => None,
        };
        let max_invalid_percent = self
            .max_invalid_percent
            .unwrap_or(DEFAULT_MAX_INVALID_PERCENT);
        if max_invalid_percent > 100 {
            return Err(err(
                "feed.max_invalid_percent",
                format!("{max_invalid_percent}: expected 0 to 100"),
            ));
        }
        Ok(FeedConfig {
            name: self.name.clone(),
            source,
            interval,
            bantime,
            max_invalid_percent,
            allow_empty: self.allow_empty,
        })
    }
}

impl FeedConfig {
    /// Checks every `[[feed]]`; errors name the key.
    pub fn check_all(
        files: Vec<FeedFile>,
        path: &Path,
        source: &str,
    ) -> Result<Vec<FeedConfig>, ConfigError> {
        let mut out: Vec<FeedConfig> = Vec::with_capacity(files.len());
        for f in files {
            let feed = f
                .check()
                .map_err(|e| ConfigError::key(path, source, e.key, e.message))?;
            if out.iter().any(|o| o.name == feed.name) {
                return Err(ConfigError::key(
                    path,
                    source,
                    "feed.name",
                    format!("feed {:?}: two feeds have this name", f.name),
                ));
            }
            out.push(feed);
        }
        Ok(out)
    }

    /// A feed added through the API, as the scheduler runs it.
    pub fn from_stored(f: &StoredFeed) -> FeedConfig {
        FeedConfig {
            name: f.name.clone(),
            source: f.source.clone(),
            interval: Duration::from_secs(f.interval_s.max(1)),
            bantime: f.bantime_s.map(chrono::Duration::seconds),
            max_invalid_percent: f.max_invalid_percent,
            allow_empty: f.allow_empty,
        }
    }

    /// This feed as stored when added through the API by `by`.
    pub fn to_stored(&self, by: &str, now: chrono::DateTime<chrono::Utc>) -> StoredFeed {
        StoredFeed {
            name: self.name.clone(),
            source: self.source.clone(),
            interval_s: self.interval.as_secs(),
            bantime_s: self.bantime.map(|b| b.num_seconds()),
            max_invalid_percent: self.max_invalid_percent,
            allow_empty: self.allow_empty,
            created_at: now,
            created_by: by.to_owned(),
        }
    }
}

/// A feed could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot fetch {url}: {message}")]
    Http { url: String, message: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is larger than {MAX_FEED_BYTES} bytes")]
    TooLarge(String),
    #[error("{0} is not UTF-8 text")]
    NotText(String),
}

/// Reads a feed's text.
pub async fn fetch(client: &reqwest::Client, source: &FeedSource) -> Result<String, FetchError> {
    let bytes = match source {
        FeedSource::File(path) => {
            use tokio::io::AsyncReadExt;
            let err = |source| FetchError::File {
                path: path.clone(),
                source,
            };
            // Read at most one byte past the limit, so that a huge file (or
            // a device such as /dev/zero) is refused without being read.
            let file = tokio::fs::File::open(path).await.map_err(err)?;
            let mut bytes = Vec::new();
            file.take(MAX_FEED_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(err)?;
            bytes
        }
        FeedSource::Url(url) => {
            let http = |e: reqwest::Error| FetchError::Http {
                url: url.clone(),
                message: error_chain(&e),
            };
            let mut resp = client.get(url).send().await.map_err(http)?;
            if !resp.status().is_success() {
                return Err(FetchError::Status {
                    url: url.clone(),
                    status: resp.status().as_u16(),
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(http)? {
                if body.len() + chunk.len() > MAX_FEED_BYTES {
                    return Err(FetchError::TooLarge(url.clone()));
                }
                body.extend_from_slice(&chunk);
            }
            body
        }
    };
    if bytes.len() > MAX_FEED_BYTES {
        return Err(FetchError::TooLarge(source.to_string()));
    }
    String::from_utf8(bytes).map_err(|_| FetchError::NotText(source.to_string()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The HTTP client feeds are fetched with (rustls, no system TLS library).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .user_agent(concat!("fleetban-server/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Imports `feed` every `interval` until `stop`. A replica skips a round
/// when another one imported the feed less than half an interval ago.
pub async fn schedule(
    service: Arc<Service>,
    client: reqwest::Client,
    feed: FeedConfig,
    stop: CancellationToken,
) {
    let span = tracing::info_span!("server.feeds.import", feed = %feed.name);
    async move {
        let mut tick = tokio::time::interval(feed.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            match service.feed_recently_imported(&feed).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "cannot read feed status"),
            }
            let fetched = fetch(&client, &feed.source).await;
            match service.import_feed(&feed, fetched).await {
                Ok(r) => info!(
                    entries = r.entries,
                    added = r.added,
                    revoked = r.revoked,
                    invalid_lines = r.invalid_lines,
                    "feed imported"
                ),
                Err(e) => {
                    warn!(source = %feed.source, error = %e, "feed not imported; its bans stay")
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// How often a server reads the feeds added through the API, to follow
/// additions and removals made on other replicas (its own are followed at
/// once).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(15);

/// What to change in the running feeds: which to start (new, or changed:
/// stopped first) and which to stop (pure, for tests). Configured feeds are
/// never touched; a stored feed with a configured name is not run.
pub fn reconcile(
    configured: &[FeedConfig],
    running: &BTreeMap<String, FeedConfig>,
    stored: &[FeedConfig],
) -> (Vec<FeedConfig>, Vec<String>) {
    let wanted: Vec<&FeedConfig> = stored
        .iter()
        .filter(|f| !configured.iter().any(|c| c.name == f.name))
        .collect();
    let mut stop: Vec<String> = running
        .iter()
        .filter(|(name, cfg)| !wanted.iter().any(|w| &&w.name == name && *w == *cfg))
        .map(|(name, _)| name.clone())
        .collect();
    stop.sort();
    let start = wanted
        .into_iter()
        .filter(|w| running.get(&w.name) != Some(*w))
        .cloned()
        .collect();
    (start, stop)
}

/// Runs the configured feeds, and the feeds added through the API as they
/// come and go, until `stop`. `changed` wakes it when this server added or
/// removed one. Every replica runs every feed; [`schedule`] skips a round
/// another replica did, and the store serialises imports of one feed.
pub async fn supervise(
    service: Arc<Service>,
    client: reqwest::Client,
    configured: Vec<FeedConfig>,
    changed: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    for feed in &configured {
        tokio::spawn(schedule(
            service.clone(),
            client.clone(),
            feed.clone(),
            stop.child_token(),
        ));
    }
    let mut running: BTreeMap<String, FeedConfig> = BTreeMap::new();
    let mut tokens: BTreeMap<String, CancellationToken> = BTreeMap::new();
    loop {
        match service.stored_feeds().await {
            Ok(stored) => {
                let stored: Vec<FeedConfig> = stored.iter().map(FeedConfig::from_stored).collect();
                let (start, halt) = reconcile(&configured, &running, &stored);
                for name in halt {
                    running.remove(&name);
                    if let Some(t) = tokens.remove(&name) {
                        t.cancel();
                    }
                    info!(feed = %name, "feed stopped");
                }
                for feed in start {
                    let token = stop.child_token();
                    info!(feed = %feed.name, "feed started");
                    tokio::spawn(schedule(
                        service.clone(),
                        client.clone(),
                        feed.clone(),
                        token.clone(),
                    ));
                    tokens.insert(feed.name.clone(), token);
                    running.insert(feed.name.clone(), feed);
                }
            }
            Err(e) => warn!(error = %e, "cannot read the feeds added through the api"),
        }
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep(RELOAD_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(src: &str) -> Result<Vec<FeedConfig>, ConfigError> {
        #[derive(Deserialize)]
        struct F {
            feed: Vec<FeedFile>,
        }
        let f: F = fleetban_proto::config::parse(Path::new("s.toml"), src)?;
        FeedConfig::check_all(f.feed, Path::new("s.toml"), src)
    }

    #[test]
    fn feeds_load_with_defaults() {
        let f = check(
            "[[feed]]\nname = \"spam\"\nurl = \"https://example.org/list.txt\"\n\
             [[feed]]\nname = \"local\"\npath = \"/etc/fleetban/block.txt\"\ninterval = \"5m\"\nbantime = \"1d\"\n",
        )
        .unwrap();
        assert_eq!(f[0].interval, DEFAULT_INTERVAL);
        assert_eq!(f[0].bantime, None);
        assert_eq!(f[0].max_invalid_percent, 10);
        assert_eq!(
            f[1].source,
            FeedSource::File("/etc/fleetban/block.txt".into())
        );
        assert_eq!(f[1].bantime, Some(chrono::Duration::days(1)));
    }

    #[test]
    fn bad_feeds_name_their_key() {
        let e = check("[[feed]]\nname = \"x\"\nurl = \"ftp://h/l\"\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("feed.url", 3));
        let e = check("[[feed]]\nname = \"x\"\n").unwrap_err();
        assert!(e.message.contains("either url or path"), "{e}");
        let e = check("[[feed]]\nname = \"x\"\npath = \"/a\"\ninterval = \"often\"\n").unwrap_err();
        assert_eq!(e.key, "feed.interval");
        let e = check("[[feed]]\nname = \"a b\"\npath = \"/a\"\n").unwrap_err();
        assert_eq!(e.key, "feed.name");
        let e =
            check("[[feed]]\nname = \"a\"\npath = \"/a\"\n[[feed]]\nname = \"a\"\npath = \"/b\"\n")
                .unwrap_err();
        assert!(e.message.contains("two feeds"), "{e}");
        let e = check("[[feed]]\nname = \"a\"\npath = \"/a\"\nmax_invalid_percent = 101\n")
            .unwrap_err();
        assert_eq!(e.key, "feed.max_invalid_percent");
    }

    fn cfg(name: &str, secs: u64) -> FeedConfig {
        FeedConfig {
            name: name.into(),
            source: FeedSource::File(format!("/l/{name}").into()),
            interval: Duration::from_secs(secs),
            bantime: None,
            max_invalid_percent: 10,
            allow_empty: false,
        }
    }

    #[test]
    fn stored_feeds_are_started_changed_and_stopped() {
        let configured = vec![cfg("file", 60)];
        let mut running = BTreeMap::new();
        let (start, stop) = reconcile(&configured, &running, &[cfg("a", 60), cfg("file", 5)]);
        assert_eq!(start, vec![cfg("a", 60)], "a configured name wins");
        assert!(stop.is_empty());
        running.insert("a".to_owned(), cfg("a", 60));
        running.insert("b".to_owned(), cfg("b", 60));
        let (start, stop) = reconcile(&configured, &running, &[cfg("a", 60), cfg("b", 120)]);
        assert_eq!(start, vec![cfg("b", 120)]);
        assert_eq!(stop, vec!["b".to_owned()], "a changed feed restarts");
        let (start, stop) = reconcile(&configured, &running, &[cfg("b", 60)]);
        assert!(start.is_empty());
        assert_eq!(stop, vec!["a".to_owned()], "a removed feed stops");
    }
}
