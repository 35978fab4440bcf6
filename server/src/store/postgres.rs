//! The Postgres store: the database of a fleet, shareable by several servers.

use std::time::Duration;

use async_trait::async_trait;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use fleetban_policy::{NewDecision, Origin};
use ipnet::IpNet;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use super::{
    from_version, parse_origin, parse_target, redact, to_version, AgentInfo, AgentRecord, Decision,
    DecisionKind, NewEvent, Store, StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

const DECISION_COLUMNS: &str =
    "id, version, kind, target::text AS target, origin, reason, creator, jail, scope, \
     created_at, expires_at, revokes";

pub struct PgStore {
    pool: PgPool,
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
        Ok(PgStore { pool })
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
    })
}

/// Bumps the block-list version inside `tx`; the row lock orders concurrent
/// writers, so versions follow commit order.
async fn next_version(tx: &mut sqlx::PgConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("UPDATE block_list_version SET version = version + 1 RETURNING version")
            .fetch_one(tx)
            .await?,
    )
}

#[async_trait]
impl Store for PgStore {
    async fn upsert_agent(&self, a: &AgentInfo, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agents (id, hostname, version, jails, first_seen, last_seen) VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (id) DO UPDATE SET hostname = $2, version = $3, jails = $4, last_seen = $5",
        )
        .bind(&a.id)
        .bind(&a.hostname)
        .bind(&a.version)
        .bind(a.jails.join(","))
        .bind(now)
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

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, hostname, version, jails, first_seen, last_seen, applied_version FROM agents ORDER BY id",
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
                    },
                    first_seen: r.try_get("first_seen")?,
                    last_seen: r.try_get("last_seen")?,
                    applied_version: to_version(r.try_get("applied_version")?)?,
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
        let version = next_version(&mut tx).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO decisions (version, kind, target, origin, reason, creator, jail, scope, created_at, expires_at)
             VALUES ($1, 'ban', $2::cidr, $3, $4, $5, $6, $7, $8, $9) RETURNING {DECISION_COLUMNS}"
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
        let mut tx = self.pool.begin().await?;
        let version = next_version(&mut tx).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO decisions (version, kind, target, origin, reason, creator, jail, scope, created_at, revokes)
             SELECT $1, 'revoke', target, $2, $3, $4, jail, scope, $5, id FROM decisions WHERE id = $6 AND kind = 'ban'
             RETURNING {DECISION_COLUMNS}"
        ))
        .bind(version)
        .bind(Origin::Manual.as_str())
        .bind(reason)
        .bind(creator)
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
        let stored = decision(&row)?;
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
        let rows = sqlx::query(&format!(
            "SELECT {DECISION_COLUMNS} FROM decisions d WHERE kind = 'ban' AND target >>= $2::cidr
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

    async fn failure_stats(
        &self,
        ip: IpAddr,
        since: DateTime<Utc>,
    ) -> Result<(u32, u32), StoreError> {
        let (hosts, failures): (i64, i64) = sqlx::query_as(
            "SELECT count(DISTINCT agent_id), count(*) FROM events WHERE ip = $1::inet AND occurred_at >= $2",
        )
        .bind(ip.to_string())
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            u32::try_from(hosts).unwrap_or(u32::MAX),
            u32::try_from(failures).unwrap_or(u32::MAX),
        ))
    }

    async fn ban_count(&self, target: IpNet) -> Result<u32, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM decisions WHERE kind = 'ban' AND target = $1::cidr",
        )
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
        let n: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT target) FROM decisions WHERE kind = 'ban' AND target <<= $1::cidr
               AND target <> $1::cidr AND created_at >= $2",
        )
        .bind(prefix.to_string())
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}
