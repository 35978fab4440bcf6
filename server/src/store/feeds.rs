//! What the store keeps about feeds added through the API (feeds of the
//! configuration file are not stored). Implemented by both stores.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Decision, StoreError};
use crate::feeds::FeedSource;

/// A feed added through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFeed {
    pub name: String,
    pub source: FeedSource,
    pub interval_s: u64,
    /// How long its bans last; `None`: until the entry leaves the list.
    pub bantime_s: Option<i64>,
    pub max_invalid_percent: u8,
    pub allow_empty: bool,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

#[async_trait]
pub trait FeedStore: Send + Sync {
    /// Adds a feed (`AlreadyExists` when one of that name is in use; a
    /// removed feed's name may be used again).
    async fn add_feed(&self, feed: &StoredFeed) -> Result<(), StoreError>;
    /// Feeds in use, by name.
    async fn stored_feeds(&self) -> Result<Vec<StoredFeed>, StoreError>;
    /// Removes a feed (`NotFound` when none of that name is in use) and
    /// revokes its bans in force, at once; its status goes too. An import of
    /// it still under way (on any server process) then records nothing.
    async fn remove_feed(
        &self,
        name: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decision>, StoreError>;
}

/// The reason given to the revocations of a removed feed's bans.
pub const REMOVED_REASON: &str = "feed removed";

/// A stored source as its two columns (url, path).
pub(super) fn columns(source: &FeedSource) -> (Option<String>, Option<String>) {
    match source {
        FeedSource::Url(u) => (Some(u.clone()), None),
        FeedSource::File(p) => (None, Some(p.display().to_string())),
    }
}

/// The two columns back as a source.
pub(super) fn source(url: Option<String>, path: Option<String>) -> Result<FeedSource, StoreError> {
    match (url, path) {
        (Some(u), None) => Ok(FeedSource::Url(u)),
        (None, Some(p)) => Ok(FeedSource::File(p.into())),
        _ => Err(StoreError::Corrupt(
            "feed with neither or both of url and path".into(),
        )),
    }
}
