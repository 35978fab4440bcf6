//! Feeds added through the API, in SQLite (one server process: no lock).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{ms, time, SqliteStore};
use crate::store::feeds::{columns, source, FeedStore, StoredFeed, REMOVED_REASON};
use crate::store::{feed_creator, Decision, Store, StoreError};
use fleetban_policy::Origin;

#[async_trait]
impl FeedStore for SqliteStore {
    async fn add_feed(&self, f: &StoredFeed) -> Result<(), StoreError> {
        let (url, path) = columns(&f.source);
        let done = sqlx::query(
            "INSERT INTO feeds (name, url, path, interval_s, bantime_s, max_invalid_percent, allow_empty, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (name) DO UPDATE SET url = ?2, path = ?3, interval_s = ?4, bantime_s = ?5,
               max_invalid_percent = ?6, allow_empty = ?7, created_at = ?8, created_by = ?9, removed_at = NULL
             WHERE feeds.removed_at IS NOT NULL",
        )
        .bind(&f.name)
        .bind(url)
        .bind(path)
        .bind(i64::try_from(f.interval_s).unwrap_or(i64::MAX))
        .bind(f.bantime_s)
        .bind(i32::from(f.max_invalid_percent))
        .bind(f.allow_empty)
        .bind(ms(f.created_at))
        .bind(&f.created_by)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists(format!("feed {:?}", f.name)));
        }
        Ok(())
    }

    async fn stored_feeds(&self) -> Result<Vec<StoredFeed>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, url, path, interval_s, bantime_s, max_invalid_percent, allow_empty, created_at, created_by
             FROM feeds WHERE removed_at IS NULL ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let interval: i64 = r.try_get("interval_s")?;
                let percent: i32 = r.try_get("max_invalid_percent")?;
                Ok(StoredFeed {
                    name: r.try_get("name")?,
                    source: source(r.try_get("url")?, r.try_get("path")?)?,
                    interval_s: u64::try_from(interval)
                        .map_err(|_| StoreError::Corrupt(format!("feed interval {interval}")))?,
                    bantime_s: r.try_get("bantime_s")?,
                    max_invalid_percent: u8::try_from(percent)
                        .map_err(|_| StoreError::Corrupt(format!("feed percent {percent}")))?,
                    allow_empty: r.try_get("allow_empty")?,
                    created_at: time(r.try_get("created_at")?)?,
                    created_by: r.try_get("created_by")?,
                })
            })
            .collect()
    }

    async fn remove_feed(
        &self,
        name: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decision>, StoreError> {
        let removed =
            sqlx::query("UPDATE feeds SET removed_at = ?2 WHERE name = ?1 AND removed_at IS NULL")
                .bind(name)
                .bind(ms(now))
                .execute(&self.pool)
                .await?;
        if removed.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("feed {name:?}")));
        }
        let creator = feed_creator(name);
        let ids: Vec<i64> = self
            .active_bans(now)
            .await?
            .into_iter()
            .filter(|d| d.creator == creator)
            .map(|d| d.id)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(
                self.revoke_as(id, Origin::Feed, by, REMOVED_REASON, now)
                    .await?,
            );
        }
        sqlx::query("DELETE FROM feed_status WHERE name = ?1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(out)
    }
}
