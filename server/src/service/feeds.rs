//! Importing block-list feeds: a fetched list becomes decisions of origin
//! `feed`; entries that left the list are revoked. A list that cannot be
//! fetched or is mostly garbage changes nothing and is reported.

use fleetban_policy::{correlate, feed};
use ipnet::IpNet;
use tracing::{info, warn};

use super::{Service, ServiceError};
use crate::feeds::{FeedConfig, FetchError};
use crate::store::{Decision, DecisionKind, FeedPlan, FeedStatus, StoredFeed};

/// What one import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedReport {
    /// Valid entries listed.
    pub entries: usize,
    pub added: usize,
    pub revoked: usize,
    pub invalid_lines: usize,
    /// Entries left out because they are allowlisted or too broad.
    pub refused: usize,
}

impl Service {
    /// Whether `feed` was imported (by any replica) less than half an
    /// interval ago.
    pub async fn feed_recently_imported(&self, feed: &FeedConfig) -> Result<bool, ServiceError> {
        let now = self.clock.now();
        let half = chrono::Duration::from_std(feed.interval / 2).unwrap_or(chrono::Duration::MAX);
        Ok(self
            .store
            .feed_statuses()
            .await?
            .iter()
            .any(|s| s.name == feed.name && s.last_success.is_some_and(|t| now - t < half)))
    }

    /// The feeds added through the API.
    pub async fn stored_feeds(&self) -> Result<Vec<StoredFeed>, ServiceError> {
        Ok(self.store.stored_feeds().await?)
    }

    /// Adds a feed on behalf of `by`; the caller starts it.
    pub async fn add_feed(&self, feed: &FeedConfig, by: &str) -> Result<StoredFeed, ServiceError> {
        let stored = feed.to_stored(by, self.clock.now());
        self.store.add_feed(&stored).await?;
        info!(feed = %feed.name, by, "feed added");
        Ok(stored)
    }

    /// Removes a feed added through the API and revokes its bans in force
    /// (pushed to agents like any revocation); returns the revocations.
    pub async fn remove_feed(&self, name: &str, by: &str) -> Result<Vec<Decision>, ServiceError> {
        let revoked = self.store.remove_feed(name, by, self.clock.now()).await?;
        info!(feed = %name, by, revoked = revoked.len(), "feed removed");
        Ok(self.recorded(revoked))
    }

    /// The last import of every feed.
    pub async fn feed_statuses(&self) -> Result<Vec<FeedStatus>, ServiceError> {
        Ok(self.store.feed_statuses().await?)
    }

    async fn feed_failed(
        &self,
        cfg: &FeedConfig,
        message: String,
        invalid_lines: usize,
    ) -> ServiceError {
        let now = self.clock.now();
        let previous = self
            .store
            .feed_statuses()
            .await
            .ok()
            .and_then(|all| all.into_iter().find(|s| s.name == cfg.name));
        let status = FeedStatus {
            name: cfg.name.clone(),
            last_attempt: now,
            last_success: previous.as_ref().and_then(|p| p.last_success),
            entries: previous.as_ref().map_or(0, |p| p.entries),
            invalid_lines: invalid_lines as u64,
            last_error: message.clone(),
        };
        if let Err(e) = self.store.put_feed_status(&status).await {
            warn!(feed = %cfg.name, error = %e, "cannot record feed status");
        }
        self.metrics.feed_failures.inc();
        ServiceError::Feed {
            feed: cfg.name.clone(),
            message,
        }
    }

    /// Applies a fetched list (or records why it could not be fetched).
    pub async fn import_feed(
        &self,
        cfg: &FeedConfig,
        fetched: Result<String, FetchError>,
    ) -> Result<FeedReport, ServiceError> {
        let text = match fetched {
            Ok(t) => t,
            Err(e) => return Err(self.feed_failed(cfg, e.to_string(), 0).await),
        };
        let (entries, errors) = feed::parse(&text);
        if let Err(refused) =
            feed::assess(&entries, &errors, cfg.max_invalid_percent, cfg.allow_empty)
        {
            return Err(self
                .feed_failed(cfg, refused.to_string(), errors.len())
                .await);
        }
        for e in errors.iter().take(5) {
            warn!(feed = %cfg.name, line = e.line, text = %e.text, "feed line is not an address or network; skipped");
        }
        let now = self.clock.now();
        let policy = self.policy();
        let (wanted, refused) =
            correlate::from_feed(&policy, &cfg.name, &entries, cfg.bantime, now);
        // A ban ending before the next two imports is replaced now, so a
        // listed entry stays banned without a gap.
        let renew_before =
            now + chrono::Duration::from_std(cfg.interval * 2).unwrap_or(chrono::Duration::MAX);
        let targets: Vec<IpNet> = wanted.iter().map(|d| d.target).collect();
        let plan = |current: &[crate::store::Decision]| {
            let fresh: Vec<(i64, IpNet)> = current
                .iter()
                .filter(|d| d.kind == DecisionKind::Ban)
                .filter(|d| d.expires_at.is_none_or(|e| e > renew_before))
                .map(|d| (d.id, d.target))
                .collect();
            let (add, mut revoke) = feed::diff(&fresh, &targets);
            revoke.extend(
                current
                    .iter()
                    .filter(|d| d.expires_at.is_some_and(|e| e <= renew_before))
                    .filter(|d| !targets.contains(&d.target))
                    .map(|d| d.id),
            );
            FeedPlan {
                add: wanted
                    .iter()
                    .filter(|d| add.contains(&d.target))
                    .cloned()
                    .collect(),
                revoke,
            }
        };
        let recorded = self.store.sync_feed(&cfg.name, now, &plan).await?;
        let report = FeedReport {
            entries: entries.len(),
            added: recorded
                .iter()
                .filter(|d| d.kind == DecisionKind::Ban)
                .count(),
            revoked: recorded
                .iter()
                .filter(|d| d.kind == DecisionKind::Revoke)
                .count(),
            invalid_lines: errors.len(),
            refused: refused.len(),
        };
        self.recorded(recorded);
        self.store
            .put_feed_status(&FeedStatus {
                name: cfg.name.clone(),
                last_attempt: now,
                last_success: Some(now),
                entries: entries.len() as u64,
                invalid_lines: errors.len() as u64,
                last_error: String::new(),
            })
            .await?;
        Ok(report)
    }
}
