//! The embedded SQLite store: fleetban's default for a one-machine start.
//! One writer at a time (SQLite's own lock) keeps versions in commit order.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use fleetban_policy::{NewDecision, Origin};
use ipnet::IpNet;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::Row;

/// How every write transaction starts: taking the write lock at once, so a
/// writer in another process (the CLI beside the server) is waited for
/// (`busy_timeout`). A deferred transaction that read first would instead
/// fail with `database is locked` when the other writer committed between
/// its read and its write.
pub(super) const WRITE_TX: &str = "BEGIN IMMEDIATE";

use fleetban_policy::JailRule;

use super::{
    count, facts, feed_creator, firewall_state, from_version, jail_rule, parse_origin,
    parse_target, redact, seconds, to_version, AgentInfo, AgentRecord, Decide, Decision,
    DecisionKind, FactsQuery, FeedStatus, FirewallState, NewEvent, PlanFeed, Store, StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

const DECISION_COLUMNS: &str =
    "id, version, kind, target, origin, reason, creator, jail, scope, created_at, expires_at, revokes, ports";

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens the database file named by `url` (`sqlite://PATH`), creating it
    /// if missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let connect_err = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(connect_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: redact(url),
                source,
            })?;
        Ok(SqliteStore { pool })
    }

    /// Ends decision `id` on behalf of `creator`.
    async fn revoke_as(
        &self,
        id: i64,
        origin: Origin,
        creator: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Decision, StoreError> {
        let mut tx = self.pool.begin_with(WRITE_TX).await?;
        let version = next_version(&mut tx).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO decisions (version, kind, target, origin, reason, creator, jail, scope, created_at, revokes, ports)
             SELECT ?1, 'revoke', target, ?2, ?3, ?4, jail, scope, ?5, id, ports FROM decisions WHERE id = ?6 AND kind = 'ban'
             RETURNING {DECISION_COLUMNS}"
        ))
        .bind(version)
        .bind(origin.as_str())
        .bind(reason)
        .bind(creator)
        .bind(ms(now))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::AlreadyExists(format!("revocation of decision {id}"))
            }
            _ => StoreError::Database(e),
        })?;
        let row = row.ok_or_else(|| StoreError::NotFound(format!("decision {id}")))?;
        let stored = decision(&row)?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn next_policy_version(
        tx: &mut sqlx::SqliteConnection,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        to_version(
            sqlx::query_scalar(
                "UPDATE policy_state SET version = version + 1, updated_at = ?1, updated_by = ?2 RETURNING version",
            )
            .bind(ms(now))
            .bind(by)
            .fetch_one(tx)
            .await?,
        )
    }

    async fn insert_rule(
        tx: &mut sqlx::SqliteConnection,
        rule: &JailRule,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO jail_policies (agent_group, jail, enabled, maxretry, findtime_s, bantime_s, updated_at, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (agent_group, jail) DO UPDATE SET enabled = ?3, maxretry = ?4, findtime_s = ?5,
               bantime_s = ?6, updated_at = ?7, updated_by = ?8",
        )
        .bind(&rule.group)
        .bind(&rule.jail)
        .bind(rule.enabled)
        .bind(rule.maxretry.map(i64::from))
        .bind(seconds(rule.findtime))
        .bind(seconds(rule.bantime))
        .bind(ms(now))
        .bind(by)
        .execute(tx)
        .await?;
        Ok(())
    }

    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("time {ms}")))
}

fn decision(row: &SqliteRow) -> Result<Decision, StoreError> {
    decision_from(row, "")
}

/// A decision from columns named with `prefix` (`""` for plain names).
pub(super) fn decision_from(row: &SqliteRow, prefix: &str) -> Result<Decision, StoreError> {
    let c = |name: &str| format!("{prefix}{name}");
    Ok(Decision {
        id: row.try_get(c("id").as_str())?,
        version: to_version(row.try_get(c("version").as_str())?)?,
        kind: DecisionKind::parse(row.try_get(c("kind").as_str())?)?,
        target: parse_target(row.try_get(c("target").as_str())?)?,
        origin: parse_origin(row.try_get(c("origin").as_str())?)?,
        reason: row.try_get(c("reason").as_str())?,
        creator: row.try_get(c("creator").as_str())?,
        jail: row.try_get(c("jail").as_str())?,
        scope: row.try_get(c("scope").as_str())?,
        created_at: time(row.try_get(c("created_at").as_str())?)?,
        expires_at: row
            .try_get::<Option<i64>, _>(c("expires_at").as_str())?
            .map(time)
            .transpose()?,
        revokes: row.try_get(c("revokes").as_str())?,
        ports: row.try_get(c("ports").as_str())?,
    })
}

async fn next_version(tx: &mut sqlx::SqliteConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("UPDATE block_list_version SET version = version + 1 RETURNING version")
            .fetch_one(tx)
            .await?,
    )
}

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_agent(&self, a: &AgentInfo, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agents (id, hostname, version, jails, first_seen, last_seen, agent_group)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET hostname = ?2, version = ?3, jails = ?4, last_seen = ?5, agent_group = ?6",
        )
        .bind(&a.id)
        .bind(&a.hostname)
        .bind(&a.version)
        .bind(a.jails.join(","))
        .bind(ms(now))
        .bind(&a.group)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_agent(
        &self,
        id: &str,
        now: DateTime<Utc>,
        applied: Option<u64>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE agents SET last_seen = ?2, applied_version = COALESCE(?3, applied_version) WHERE id = ?1",
        )
        .bind(id)
        .bind(ms(now))
        .bind(applied.map(from_version))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownAgent(id.to_owned()));
        }
        Ok(())
    }

    async fn record_firewall(
        &self,
        id: &str,
        now: DateTime<Utc>,
        state: &FirewallState,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE agents SET last_seen = ?2, enforced = ?3, drift_total = ?4, firewall_backend = ?5 WHERE id = ?1",
        )
        .bind(id)
        .bind(ms(now))
        .bind(count(state.enforced))
        .bind(count(state.drift_total))
        .bind(&state.backend)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownAgent(id.to_owned()));
        }
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        // The oldest decision an agent has yet to apply is the one right
        // after its applied version (versions are unique and indexed).
        let rows = sqlx::query(
            "SELECT id, hostname, version, jails, first_seen, last_seen, applied_version, agent_group, \
             enforced, drift_total, firewall_backend, \
             (SELECT d.created_at FROM decisions d WHERE d.version > agents.applied_version ORDER BY d.version LIMIT 1) AS behind_since \
             FROM agents ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let jails: String = r.try_get("jails")?;
                Ok(AgentRecord {
                    info: AgentInfo {
                        id: r.try_get("id")?,
                        hostname: r.try_get("hostname")?,
                        version: r.try_get("version")?,
                        jails: jails
                            .split(',')
                            .filter(|j| !j.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        group: r.try_get("agent_group")?,
                    },
                    first_seen: time(r.try_get("first_seen")?)?,
                    last_seen: time(r.try_get("last_seen")?)?,
                    applied_version: to_version(r.try_get("applied_version")?)?,
                    firewall: firewall_state(
                        r.try_get("enforced")?,
                        r.try_get("drift_total")?,
                        r.try_get("firewall_backend")?,
                    )?,
                    behind_since: r
                        .try_get::<Option<i64>, _>("behind_since")?
                        .map(time)
                        .transpose()?,
                })
            })
            .collect()
    }

    async fn insert_events(
        &self,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with(WRITE_TX).await?;
        let mut inserted = 0;
        for e in events {
            let done = sqlx::query(
                "INSERT INTO events (id, agent_id, jail, ip, username, occurred_at, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.id.to_string())
            .bind(&e.agent_id)
            .bind(&e.jail)
            .bind(e.ip.to_string())
            .bind(e.user.as_deref())
            .bind(ms(e.occurred_at))
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(|err| match &err {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                    StoreError::UnknownAgent(e.agent_id.clone())
                }
                _ => StoreError::Database(err),
            })?;
            inserted += done.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn event_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn record_decision(
        &self,
        d: &NewDecision,
        now: DateTime<Utc>,
    ) -> Result<Decision, StoreError> {
        let mut tx = self.pool.begin_with(WRITE_TX).await?;
        let version = next_version(&mut tx).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO decisions (version, kind, target, origin, reason, creator, jail, scope, created_at, expires_at, ports)
             VALUES (?1, 'ban', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING {DECISION_COLUMNS}"
        ))
        .bind(version)
        .bind(d.target.to_string())
        .bind(d.origin.as_str())
        .bind(&d.reason)
        .bind(&d.creator)
        .bind(&d.jail)
        .bind(&d.scope)
        .bind(ms(now))
        .bind(d.expires_at.map(ms))
        .bind(&d.ports)
        .fetch_one(&mut *tx)
        .await?;
        let stored = decision(&row)?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn revoke_decision(
        &self,
        id: i64,
        creator: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Decision, StoreError> {
        self.revoke_as(id, Origin::Manual, creator, reason, now)
            .await
    }

    async fn active_bans(&self, now: DateTime<Utc>) -> Result<Vec<Decision>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DECISION_COLUMNS} FROM decisions d WHERE kind = 'ban'
               AND (expires_at IS NULL OR expires_at > ?1)
               AND NOT EXISTS (SELECT 1 FROM decisions r WHERE r.revokes = d.id)
             ORDER BY version"
        ))
        .bind(ms(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decision).collect()
    }

    async fn active_bans_for(
        &self,
        target: IpNet,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decision>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DECISION_COLUMNS} FROM decisions d WHERE kind = 'ban' AND target = ?2
               AND (expires_at IS NULL OR expires_at > ?1)
               AND NOT EXISTS (SELECT 1 FROM decisions r WHERE r.revokes = d.id)
             ORDER BY version"
        ))
        .bind(ms(now))
        .bind(target.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decision).collect()
    }

    async fn decisions_since(&self, version: u64) -> Result<Vec<Decision>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DECISION_COLUMNS} FROM decisions WHERE version > ?1 ORDER BY version"
        ))
        .bind(from_version(version))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decision).collect()
    }

    async fn block_list_version(&self) -> Result<u64, StoreError> {
        to_version(
            sqlx::query_scalar("SELECT version FROM block_list_version")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn expired_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM decisions d WHERE kind = 'ban' AND expires_at > ?1 AND expires_at <= ?2
               AND NOT EXISTS (SELECT 1 FROM decisions r WHERE r.revokes = d.id)
             ORDER BY id",
        )
        .bind(ms(after))
        .bind(ms(until))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM events WHERE occurred_at < ?1")
            .bind(ms(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn active_bans_covering(
        &self,
        target: IpNet,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decision>, StoreError> {
        // SQLite knows no networks: the active list is filtered here.
        Ok(self
            .active_bans(now)
            .await?
            .into_iter()
            .filter(|d| d.target.contains(&target))
            .collect())
    }

    async fn failure_stats(
        &self,
        ip: IpAddr,
        since: DateTime<Utc>,
    ) -> Result<(u32, u32), StoreError> {
        let (hosts, failures): (i64, i64) =
            sqlx::query_as("SELECT count(DISTINCT agent_id), count(*) FROM events WHERE ip = ?1 AND occurred_at >= ?2")
                .bind(ip.to_string())
                .bind(ms(since))
                .fetch_one(&self.pool)
                .await?;
        Ok((
            u32::try_from(hosts).unwrap_or(u32::MAX),
            u32::try_from(failures).unwrap_or(u32::MAX),
        ))
    }

    async fn ban_count(&self, target: IpNet) -> Result<u32, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM decisions WHERE kind = 'ban' AND target = ?1")
                .bind(target.to_string())
                .fetch_one(&self.pool)
                .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn banned_in_prefix(
        &self,
        prefix: IpNet,
        since: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let targets: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT target FROM decisions WHERE kind = 'ban' AND created_at >= ?1",
        )
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await?;
        let n = targets
            .iter()
            .filter_map(|t| parse_target(t).ok())
            .filter(|t| *t != prefix && prefix.contains(t))
            .count();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn decide(
        &self,
        q: &FactsQuery,
        now: DateTime<Utc>,
        decide: Decide<'_>,
    ) -> Result<Vec<Decision>, StoreError> {
        // One server process owns an SQLite database; the service serialises
        // its own correlation.
        let active = self.active_bans_covering(q.target, now).await?;
        let previous = if q.history {
            self.ban_count(q.target).await?
        } else {
            0
        };
        let failures = match q.failures {
            Some((ip, since)) => self.failure_stats(ip, since).await?,
            None => (0, 0),
        };
        let prefix = match q.prefix {
            Some((p, since)) => Some(self.banned_in_prefix(p, since).await?),
            None => None,
        };
        let mut out = Vec::new();
        for d in decide(&facts(active, previous, failures, prefix)) {
            out.push(self.record_decision(&d, now).await?);
        }
        Ok(out)
    }

    async fn sync_feed(
        &self,
        feed: &str,
        now: DateTime<Utc>,
        plan: PlanFeed<'_>,
    ) -> Result<Vec<Decision>, StoreError> {
        let creator = feed_creator(feed);
        let removed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM feeds WHERE name = ?1 AND removed_at IS NOT NULL)",
        )
        .bind(feed)
        .fetch_one(&self.pool)
        .await?;
        if removed {
            return Err(StoreError::NotFound(format!("feed {feed:?}")));
        }
        let current: Vec<Decision> = self
            .active_bans(now)
            .await?
            .into_iter()
            .filter(|d| d.creator == creator)
            .collect();
        let plan = plan(&current);
        let mut out = Vec::new();
        for d in &plan.add {
            out.push(self.record_decision(d, now).await?);
        }
        for &id in &plan.revoke {
            out.push(
                self.revoke_as(
                    id,
                    Origin::Feed,
                    &creator,
                    "no longer listed in the feed",
                    now,
                )
                .await?,
            );
        }
        Ok(out)
    }

    async fn put_feed_status(&self, f: &FeedStatus) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO feed_status (name, last_attempt, last_success, entries, invalid_lines, last_error)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6
             WHERE NOT EXISTS (SELECT 1 FROM feeds WHERE name = ?1 AND removed_at IS NOT NULL)
             ON CONFLICT (name) DO UPDATE SET last_attempt = ?2, last_success = ?3, entries = ?4,
               invalid_lines = ?5, last_error = ?6",
        )
        .bind(&f.name)
        .bind(ms(f.last_attempt))
        .bind(f.last_success.map(ms))
        .bind(i64::try_from(f.entries).unwrap_or(i64::MAX))
        .bind(i64::try_from(f.invalid_lines).unwrap_or(i64::MAX))
        .bind(&f.last_error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn feed_statuses(&self) -> Result<Vec<FeedStatus>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, last_attempt, last_success, entries, invalid_lines, last_error FROM feed_status ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FeedStatus {
                    name: r.try_get("name")?,
                    last_attempt: time(r.try_get("last_attempt")?)?,
                    last_success: r
                        .try_get::<Option<i64>, _>("last_success")?
                        .map(time)
                        .transpose()?,
                    entries: u64::try_from(r.try_get::<i64, _>("entries")?).unwrap_or(0),
                    invalid_lines: u64::try_from(r.try_get::<i64, _>("invalid_lines")?)
                        .unwrap_or(0),
                    last_error: r.try_get("last_error")?,
                })
            })
            .collect()
    }

    async fn jail_rules(&self) -> Result<Vec<JailRule>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_group, jail, enabled, maxretry, findtime_s, bantime_s FROM jail_policies
             ORDER BY agent_group, jail",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                jail_rule(
                    r.try_get("agent_group")?,
                    r.try_get("jail")?,
                    r.try_get("enabled")?,
                    r.try_get("maxretry")?,
                    r.try_get("findtime_s")?,
                    r.try_get("bantime_s")?,
                )
            })
            .collect()
    }

    async fn put_jail_rule(
        &self,
        rule: &JailRule,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with(WRITE_TX).await?;
        let version = Self::next_policy_version(&mut tx, by, now).await?;
        Self::insert_rule(&mut tx, rule, by, now).await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn delete_jail_rule(
        &self,
        group: &str,
        jail: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with(WRITE_TX).await?;
        let done = sqlx::query("DELETE FROM jail_policies WHERE agent_group = ?1 AND jail = ?2")
            .bind(group)
            .bind(jail)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "jail policy {jail:?} of group {group:?}"
            )));
        }
        let version = Self::next_policy_version(&mut tx, by, now).await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn fleet_rules(&self) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT fleet_rules FROM policy_state")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn set_fleet_rules(
        &self,
        rules: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with(WRITE_TX).await?;
        let version = Self::next_policy_version(&mut tx, by, now).await?;
        sqlx::query("UPDATE policy_state SET fleet_rules = ?1")
            .bind(rules)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn seed_policies(
        &self,
        rules: &str,
        jails: &[JailRule],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(WRITE_TX).await?;
        let seeded: Option<String> = sqlx::query_scalar("SELECT fleet_rules FROM policy_state")
            .fetch_one(&mut *tx)
            .await?;
        if seeded.is_some() {
            return Ok(false);
        }
        for rule in jails {
            Self::insert_rule(&mut tx, rule, "config", now).await?;
        }
        Self::next_policy_version(&mut tx, "config", now).await?;
        sqlx::query("UPDATE policy_state SET fleet_rules = ?1")
            .bind(rules)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn policy_version(&self) -> Result<u64, StoreError> {
        to_version(
            sqlx::query_scalar("SELECT version FROM policy_state")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

mod feeds;
mod identity;
