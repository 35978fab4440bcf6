//! The Postgres store: the database of a fleet, shareable by several servers.

use std::time::Duration;

use async_trait::async_trait;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use fleetban_policy::{NewDecision, Origin};
use ipnet::IpNet;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use fleetban_policy::JailRule;
use sqlx::PgConnection;

use super::{
    count, facts, feed_creator, firewall_state, from_version, jail_rule, parse_origin,
    parse_target, redact, seconds, to_version, AgentInfo, AgentRecord, Change, Changes, Decide,
    Decision, DecisionKind, FactsQuery, FeedStatus, FirewallState, NewEvent, PlanFeed, Store,
    StoreError,
};

/// Channel announcing a new block-list version (payload: the version).
const DECISIONS_CHANNEL: &str = "fleetban_decisions";
/// Channel announcing a new policy version (payload: the version).
const POLICIES_CHANNEL: &str = "fleetban_policies";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

const DECISION_COLUMNS: &str =
    "id, version, kind, target::text AS target, origin, reason, creator, jail, scope, \
     created_at, expires_at, revokes, ports";

pub struct PgStore {
    pool: PgPool,
    url: String,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(url),
                source,
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: redact(url),
                source,
            })?;
        Ok(PgStore {
            pool,
            url: redact(url),
        })
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn decision(row: &PgRow) -> Result<Decision, StoreError> {
    decision_from(row, "")
}

/// A decision from columns named with `prefix` (`""` for plain names).
pub(super) fn decision_from(row: &PgRow, prefix: &str) -> Result<Decision, StoreError> {
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
        created_at: row.try_get(c("created_at").as_str())?,
        expires_at: row.try_get(c("expires_at").as_str())?,
        revokes: row.try_get(c("revokes").as_str())?,
        ports: row.try_get(c("ports").as_str())?,
    })
}

/// Bumps the block-list version inside `tx`; the row lock orders concurrent
/// writers, so versions follow commit order. The other server processes
/// hear of it when `tx` commits.
async fn next_version(tx: &mut PgConnection) -> Result<i64, StoreError> {
    let version: i64 =
        sqlx::query_scalar("UPDATE block_list_version SET version = version + 1 RETURNING version")
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(DECISIONS_CHANNEL)
        .bind(version.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(version)
}

/// Bumps the policy version inside `tx`, announced at commit.
async fn next_policy_version(
    tx: &mut PgConnection,
    by: &str,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE policy_state SET version = version + 1, updated_at = $1, updated_by = $2 RETURNING version",
    )
    .bind(now)
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(POLICIES_CHANNEL)
        .bind(version.to_string())
        .execute(&mut *tx)
        .await?;
    to_version(version)
}

/// Serialises, until `tx` ends, every transaction that takes the same key,
/// in whichever server process.
async fn lock(tx: &mut PgConnection, key: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(tx)
        .await?;
    Ok(())
}

async fn insert_ban(
    tx: &mut PgConnection,
    d: &NewDecision,
    now: DateTime<Utc>,
) -> Result<Decision, StoreError> {
    let version = next_version(tx).await?;
    let row = sqlx::query(&format!(
        "INSERT INTO decisions (version, kind, target, origin, reason, creator, jail, scope, created_at, expires_at, ports)
         VALUES ($1, 'ban', $2::cidr, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {DECISION_COLUMNS}"
    ))
    .bind(version)
    .bind(d.target.to_string())
    .bind(d.origin.as_str())
    .bind(&d.reason)
    .bind(&d.creator)
    .bind(&d.jail)
    .bind(&d.scope)
    .bind(now)
    .bind(d.expires_at)
    .bind(&d.ports)
    .fetch_one(&mut *tx)
    .await?;
    decision(&row)
}

/// Which decision a revocation ends, and on whose behalf.
struct Revocation<'a> {
    id: i64,
    origin: Origin,
    creator: &'a str,
    reason: &'a str,
}

async fn insert_revoke(
    tx: &mut PgConnection,
    r: &Revocation<'_>,
    now: DateTime<Utc>,
) -> Result<Decision, StoreError> {
    let id = r.id;
    let version = next_version(tx).await?;
    let row = sqlx::query(&format!(
        "INSERT INTO decisions (version, kind, target, origin, reason, creator, jail, scope, created_at, revokes, ports)
         SELECT $1, 'revoke', target, $2, $3, $4, jail, scope, $5, id, ports FROM decisions WHERE id = $6 AND kind = 'ban'
         RETURNING {DECISION_COLUMNS}"
    ))
    .bind(version)
    .bind(r.origin.as_str())
    .bind(r.reason)
    .bind(r.creator)
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            StoreError::AlreadyExists(format!("revocation of decision {id}"))
        }
        _ => StoreError::Database(e),
    })?;
    let row = row.ok_or_else(|| StoreError::NotFound(format!("decision {id}")))?;
    decision(&row)
}

async fn active_covering(
    c: &mut PgConnection,
    target: IpNet,
    now: DateTime<Utc>,
) -> Result<Vec<Decision>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {DECISION_COLUMNS} FROM decisions d WHERE kind = 'ban' AND target >>= $2::cidr
           AND (expires_at IS NULL OR expires_at > $1)
           AND NOT EXISTS (SELECT 1 FROM decisions r WHERE r.revokes = d.id)
         ORDER BY version"
    ))
    .bind(now)
    .bind(target.to_string())
    .fetch_all(c)
    .await?;
    rows.iter().map(decision).collect()
}

async fn count_failures(
    c: &mut PgConnection,
    ip: IpAddr,
    since: DateTime<Utc>,
) -> Result<(u32, u32), StoreError> {
    let (hosts, failures): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT agent_id), count(*) FROM events WHERE ip = $1::inet AND occurred_at >= $2",
    )
    .bind(ip.to_string())
    .bind(since)
    .fetch_one(c)
    .await?;
    Ok((
        u32::try_from(hosts).unwrap_or(u32::MAX),
        u32::try_from(failures).unwrap_or(u32::MAX),
    ))
}

async fn count_bans(c: &mut PgConnection, target: IpNet) -> Result<u32, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM decisions WHERE kind = 'ban' AND target = $1::cidr",
    )
    .bind(target.to_string())
    .fetch_one(c)
    .await?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

async fn count_banned_in(
    c: &mut PgConnection,
    prefix: IpNet,
    since: DateTime<Utc>,
) -> Result<u32, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT target) FROM decisions WHERE kind = 'ban' AND target <<= $1::cidr
           AND target <> $1::cidr AND created_at >= $2",
    )
    .bind(prefix.to_string())
    .bind(since)
    .fetch_one(c)
    .await?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Notifications of other server processes: a `PgListener` that is opened
/// again (and reports [`Change::Resync`]) whenever its connection drops.
struct PgChanges {
    pool: PgPool,
    url: String,
    listener: Option<sqlx::postgres::PgListener>,
}

impl PgChanges {
    async fn open(pool: &PgPool) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
        let mut l = sqlx::postgres::PgListener::connect_with(pool).await?;
        l.listen_all([DECISIONS_CHANNEL, POLICIES_CHANNEL]).await?;
        Ok(l)
    }
}

#[async_trait]
impl Changes for PgChanges {
    async fn next(&mut self) -> Change {
        let mut retry = Duration::from_millis(100);
        loop {
            let Some(listener) = self.listener.as_mut() else {
                match Self::open(&self.pool).await {
                    Ok(l) => {
                        tracing::info!(database = %self.url, "listening for changes again");
                        self.listener = Some(l);
                        return Change::Resync;
                    }
                    Err(e) => {
                        // Warned once per outage; retries are debug.
                        if retry == Duration::from_millis(100) {
                            tracing::warn!(error = %e, "cannot listen for changes; retrying");
                        } else {
                            tracing::debug!(error = %e, retry_ms = retry.as_millis() as u64, "cannot listen for changes");
                        }
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            };
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let Ok(version) = n.payload().parse::<u64>() else {
                        tracing::warn!(
                            channel = n.channel(),
                            payload = n.payload(),
                            "unexpected notification"
                        );
                        continue;
                    };
                    return match n.channel() {
                        POLICIES_CHANNEL => Change::Policies(version),
                        _ => Change::Decisions(version),
                    };
                }
                // The connection dropped: whatever was announced meanwhile is
                // read from the tables.
                Ok(None) | Err(_) => {
                    tracing::warn!("change listener lost its connection");
                    self.listener = None;
                }
            }
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn upsert_agent(&self, a: &AgentInfo, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agents (id, hostname, version, jails, first_seen, last_seen, agent_group)
             VALUES ($1, $2, $3, $4, $5, $5, $6)
             ON CONFLICT (id) DO UPDATE SET hostname = $2, version = $3, jails = $4, last_seen = $5, agent_group = $6",
        )
        .bind(&a.id)
        .bind(&a.hostname)
        .bind(&a.version)
        .bind(a.jails.join(","))
        .bind(now)
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
            "UPDATE agents SET last_seen = $2, applied_version = COALESCE($3, applied_version) WHERE id = $1",
        )
        .bind(id)
        .bind(now)
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
            "UPDATE agents SET last_seen = $2, enforced = $3, drift_total = $4, firewall_backend = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(now)
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
        // after its applied version (versions are unique and indexed). It
        // is looked up once per distinct applied version, not per agent:
        // 10,000 agents cost at most as many index probes as versions
        // they are spread over (docs/benchmarks.md).
        let rows = sqlx::query(
            "WITH v AS MATERIALIZED (SELECT DISTINCT applied_version FROM agents), \
             b AS MATERIALIZED (SELECT v.applied_version, \
                 (SELECT d.created_at FROM decisions d WHERE d.version > v.applied_version ORDER BY d.version LIMIT 1) AS behind_since \
                 FROM v) \
             SELECT a.id, a.hostname, a.version, a.jails, a.first_seen, a.last_seen, a.applied_version, a.agent_group, \
             a.enforced, a.drift_total, a.firewall_backend, b.behind_since \
             FROM agents a JOIN b ON b.applied_version = a.applied_version ORDER BY a.id",
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
                    first_seen: r.try_get("first_seen")?,
                    last_seen: r.try_get("last_seen")?,
                    applied_version: to_version(r.try_get("applied_version")?)?,
                    firewall: firewall_state(
                        r.try_get("enforced")?,
                        r.try_get("drift_total")?,
                        r.try_get("firewall_backend")?,
                    )?,
                    behind_since: r.try_get("behind_since")?,
                })
            })
            .collect()
    }

    async fn insert_events(
        &self,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let ids: Vec<_> = events.iter().map(|e| e.id).collect();
        let agents: Vec<_> = events.iter().map(|e| e.agent_id.as_str()).collect();
        let jails: Vec<_> = events.iter().map(|e| e.jail.as_str()).collect();
        let ips: Vec<_> = events.iter().map(|e| e.ip.to_string()).collect();
        let users: Vec<_> = events
            .iter()
            .map(|e| e.user.as_deref().unwrap_or(""))
            .collect();
        let times: Vec<_> = events.iter().map(|e| e.occurred_at).collect();
        let done = sqlx::query(
            "INSERT INTO events (id, agent_id, jail, ip, username, occurred_at, received_at)
             SELECT id, agent, jail, ip::inet, NULLIF(username, ''), occurred_at, $7
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
                  AS t(id, agent, jail, ip, username, occurred_at)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&agents)
        .bind(&jails)
        .bind(&ips)
        .bind(&users)
        .bind(&times)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                StoreError::UnknownAgent(agents.first().map(|a| (*a).to_owned()).unwrap_or_default())
            }
            _ => StoreError::Database(e),
        })?;
        Ok(done.rows_affected())
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
        let mut tx = self.pool.begin().await?;
        let stored = insert_ban(&mut tx, d, now).await?;
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
        let mut tx = self.pool.begin().await?;
        let r = Revocation {
            id,
            origin: Origin::Manual,
            creator,
            reason,
        };
        let stored = insert_revoke(&mut tx, &r, now).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn active_bans(&self, now: DateTime<Utc>) -> Result<Vec<Decision>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DECISION_COLUMNS} FROM decisions d WHERE kind = 'ban'
               AND (expires_at IS NULL OR expires_at > $1)
               AND NOT EXISTS (SELECT 1 FROM decisions r WHERE r.revokes = d.id)
             ORDER BY version"
        ))
        .bind(now)
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
            "SELECT {DECISION_COLUMNS} FROM decisions d WHERE kind = 'ban' AND target = $2::cidr
               AND (expires_at IS NULL OR expires_at > $1)
               AND NOT EXISTS (SELECT 1 FROM decisions r WHERE r.revokes = d.id)
             ORDER BY version"
        ))
        .bind(now)
        .bind(target.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decision).collect()
    }

    async fn decisions_since(&self, version: u64) -> Result<Vec<Decision>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DECISION_COLUMNS} FROM decisions WHERE version > $1 ORDER BY version"
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
            "SELECT id FROM decisions d WHERE kind = 'ban' AND expires_at > $1 AND expires_at <= $2
               AND NOT EXISTS (SELECT 1 FROM decisions r WHERE r.revokes = d.id)
             ORDER BY id",
        )
        .bind(after)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM events WHERE occurred_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn active_bans_covering(
        &self,
        target: IpNet,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decision>, StoreError> {
        active_covering(&mut *self.pool.acquire().await?, target, now).await
    }

    async fn failure_stats(
        &self,
        ip: IpAddr,
        since: DateTime<Utc>,
    ) -> Result<(u32, u32), StoreError> {
        count_failures(&mut *self.pool.acquire().await?, ip, since).await
    }

    async fn ban_count(&self, target: IpNet) -> Result<u32, StoreError> {
        count_bans(&mut *self.pool.acquire().await?, target).await
    }

    async fn banned_in_prefix(
        &self,
        prefix: IpNet,
        since: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        count_banned_in(&mut *self.pool.acquire().await?, prefix, since).await
    }

    async fn decide(
        &self,
        q: &FactsQuery,
        now: DateTime<Utc>,
        decide: Decide<'_>,
    ) -> Result<Vec<Decision>, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx, &q.lock).await?;
        // Read committed: each query below sees every event and decision
        // committed before the lock was granted.
        let active = active_covering(&mut tx, q.target, now).await?;
        let previous = if q.history {
            count_bans(&mut tx, q.target).await?
        } else {
            0
        };
        let failures = match q.failures {
            Some((ip, since)) => count_failures(&mut tx, ip, since).await?,
            None => (0, 0),
        };
        let prefix = match q.prefix {
            Some((p, since)) => Some(count_banned_in(&mut tx, p, since).await?),
            None => None,
        };
        let new = decide(&facts(active, previous, failures, prefix));
        let mut out = Vec::with_capacity(new.len());
        for d in &new {
            out.push(insert_ban(&mut tx, d, now).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn sync_feed(
        &self,
        feed: &str,
        now: DateTime<Utc>,
        plan: PlanFeed<'_>,
    ) -> Result<Vec<Decision>, StoreError> {
        let creator = feed_creator(feed);
        let mut tx = self.pool.begin().await?;
        lock(&mut tx, &creator).await?;
        let removed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM feeds WHERE name = $1 AND removed_at IS NOT NULL)",
        )
        .bind(feed)
        .fetch_one(&mut *tx)
        .await?;
        if removed {
            return Err(StoreError::NotFound(format!("feed {feed:?}")));
        }
        let rows = sqlx::query(&format!(
            "SELECT {DECISION_COLUMNS} FROM decisions d WHERE kind = 'ban' AND creator = $2
               AND (expires_at IS NULL OR expires_at > $1)
               AND NOT EXISTS (SELECT 1 FROM decisions r WHERE r.revokes = d.id)
             ORDER BY version"
        ))
        .bind(now)
        .bind(&creator)
        .fetch_all(&mut *tx)
        .await?;
        let current = rows.iter().map(decision).collect::<Result<Vec<_>, _>>()?;
        let plan = plan(&current);
        let mut out = Vec::new();
        for d in &plan.add {
            out.push(insert_ban(&mut tx, d, now).await?);
        }
        for &id in &plan.revoke {
            let r = Revocation {
                id,
                origin: Origin::Feed,
                creator: &creator,
                reason: "no longer listed in the feed",
            };
            out.push(insert_revoke(&mut tx, &r, now).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn put_feed_status(&self, f: &FeedStatus) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO feed_status (name, last_attempt, last_success, entries, invalid_lines, last_error)
             SELECT $1, $2, $3, $4, $5, $6
             WHERE NOT EXISTS (SELECT 1 FROM feeds WHERE name = $1 AND removed_at IS NOT NULL)
             ON CONFLICT (name) DO UPDATE SET last_attempt = $2, last_success = $3, entries = $4,
               invalid_lines = $5, last_error = $6",
        )
        .bind(&f.name)
        .bind(f.last_attempt)
        .bind(f.last_success)
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
                    last_attempt: r.try_get("last_attempt")?,
                    last_success: r.try_get("last_success")?,
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
                    r.try_get::<Option<i32>, _>("maxretry")?.map(i64::from),
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
        let mut tx = self.pool.begin().await?;
        let version = next_policy_version(&mut tx, by, now).await?;
        sqlx::query(
            "INSERT INTO jail_policies (agent_group, jail, enabled, maxretry, findtime_s, bantime_s, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (agent_group, jail) DO UPDATE SET enabled = $3, maxretry = $4, findtime_s = $5,
               bantime_s = $6, updated_at = $7, updated_by = $8",
        )
        .bind(&rule.group)
        .bind(&rule.jail)
        .bind(rule.enabled)
        .bind(rule.maxretry.map(|m| i32::try_from(m).unwrap_or(i32::MAX)))
        .bind(seconds(rule.findtime))
        .bind(seconds(rule.bantime))
        .bind(now)
        .bind(by)
        .execute(&mut *tx)
        .await?;
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM jail_policies WHERE agent_group = $1 AND jail = $2")
            .bind(group)
            .bind(jail)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "jail policy {jail:?} of group {group:?}"
            )));
        }
        let version = next_policy_version(&mut tx, by, now).await?;
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
        let mut tx = self.pool.begin().await?;
        let version = next_policy_version(&mut tx, by, now).await?;
        sqlx::query("UPDATE policy_state SET fleet_rules = $1")
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
        let mut tx = self.pool.begin().await?;
        // The row lock makes replicas starting together seed once.
        let seeded: Option<String> =
            sqlx::query_scalar("SELECT fleet_rules FROM policy_state FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        if seeded.is_some() {
            return Ok(false);
        }
        for rule in jails {
            sqlx::query(
                "INSERT INTO jail_policies (agent_group, jail, enabled, maxretry, findtime_s, bantime_s, updated_at, updated_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'config') ON CONFLICT DO NOTHING",
            )
            .bind(&rule.group)
            .bind(&rule.jail)
            .bind(rule.enabled)
            .bind(rule.maxretry.map(|m| i32::try_from(m).unwrap_or(i32::MAX)))
            .bind(seconds(rule.findtime))
            .bind(seconds(rule.bantime))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        next_policy_version(&mut tx, "config", now).await?;
        sqlx::query("UPDATE policy_state SET fleet_rules = $1")
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

    async fn changes(&self) -> Result<Option<Box<dyn Changes>>, StoreError> {
        let listener = PgChanges::open(&self.pool).await?;
        Ok(Some(Box::new(PgChanges {
            pool: self.pool.clone(),
            url: self.url.clone(),
            listener: Some(listener),
        })))
    }
}

mod feeds;
mod identity;
