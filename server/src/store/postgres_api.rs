//! [`ApiStore`] on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::api::*;
use super::postgres::{decision_from, PgStore};
use super::rollup;
use super::{from_version, to_version, StoreError};

fn unique_violation(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            StoreError::AlreadyExists(what())
        }
        _ => StoreError::Database(e),
    }
}

fn user(r: &PgRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        password_hash: r.try_get("password_hash")?,
        role: r.try_get("role")?,
        created_at: r.try_get("created_at")?,
        disabled_at: r.try_get("disabled_at")?,
    })
}

fn session(r: &PgRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn token(r: &PgRow) -> Result<ApiTokenRecord, StoreError> {
    let scopes: String = r.try_get("scopes")?;
    Ok(ApiTokenRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

fn bouncer(r: &PgRow) -> Result<BouncerRecord, StoreError> {
    Ok(BouncerRecord {
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_pull_at: r.try_get("last_pull_at")?,
        last_version: to_version(r.try_get("last_version")?)?,
    })
}

fn audit(r: &PgRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        detail: r.try_get("detail")?,
        source: r.try_get("source")?,
    })
}

fn event(r: &PgRow) -> Result<EventRecord, StoreError> {
    let ip: String = r.try_get("ip")?;
    Ok(EventRecord {
        id: r.try_get("id")?,
        agent_id: r.try_get("agent_id")?,
        jail: r.try_get("jail")?,
        ip: ip
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("event address {ip:?}")))?,
        user: r.try_get("username")?,
        occurred_at: r.try_get("occurred_at")?,
        received_at: r.try_get("received_at")?,
    })
}

const USER_COLUMNS: &str = "id, name, password_hash, role, created_at, disabled_at";
const SESSION_COLUMNS: &str = "id, user_id, created_at, expires_at, revoked_at";
const TOKEN_COLUMNS: &str =
    "id, name, scopes, created_by, created_at, expires_at, revoked_at, last_used_at";
const BOUNCER_COLUMNS: &str = "name, created_at, revoked_at, last_pull_at, last_version";
const EVENT_COLUMNS: &str =
    "id, agent_id, jail, host(ip) AS ip, username, occurred_at, received_at";

/// Both sides of a ban row and its revocation, prefixed `d_` and `r_`.
fn decision_select() -> String {
    let cols = [
        "id",
        "version",
        "kind",
        "target",
        "origin",
        "reason",
        "creator",
        "jail",
        "scope",
        "created_at",
        "expires_at",
        "revokes",
        "ports",
    ];
    let mut s = String::from("SELECT ");
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        for side in ["d", "r"] {
            if *c == "target" {
                s.push_str(&format!("{side}.target::text AS {side}_target"));
            } else {
                s.push_str(&format!("{side}.{c} AS {side}_{c}"));
            }
            if side == "d" {
                s.push_str(", ");
            }
        }
    }
    s.push_str(" FROM decisions d LEFT JOIN decisions r ON r.revokes = d.id");
    s
}

fn decision_row(r: &PgRow) -> Result<DecisionRow, StoreError> {
    let revocation = match r.try_get::<Option<i64>, _>("r_id")? {
        Some(_) => Some(decision_from(r, "r_")?),
        None => None,
    };
    Ok(DecisionRow {
        decision: decision_from(r, "d_")?,
        revocation,
    })
}

fn push_page(
    q: &mut QueryBuilder<'_, Postgres>,
    time_col: &str,
    id_col: &str,
    id_cast: &str,
    page: &Page,
) {
    if let Some(c) = &page.after {
        let op = match page.order {
            Order::Desc => "<",
            Order::Asc => ">",
        };
        q.push(format!(" AND ({time_col}, {id_col}) {op} ("));
        q.push_bind(c.at);
        q.push(", ");
        q.push_bind(c.id.clone());
        q.push(format!("::{id_cast})"));
    }
    let dir = match page.order {
        Order::Desc => "DESC",
        Order::Asc => "ASC",
    };
    q.push(format!(" ORDER BY {time_col} {dir}, {id_col} {dir} LIMIT "));
    q.push_bind(i64::from(page.limit));
}

/// For a /24 (IPv4) or /64 (IPv6) prefix, the network as the key of the
/// `events_network_time` index, which lists its events newest first
/// (migration 0006). Only an exact match is used: with a second condition on
/// the address the planner multiplies the two selectivities, expects a few
/// rows and sorts them all again. A single address has its own index
/// (`events_ip_time`); other prefixes are read by address range and sorted.
fn network_key(net: &IpNet) -> Option<IpNet> {
    let key_len = match net {
        IpNet::V4(_) => 24,
        IpNet::V6(_) => 64,
    };
    (net.prefix_len() == key_len).then(|| net.trunc())
}

fn push_event_filter(q: &mut QueryBuilder<'_, Postgres>, f: &EventFilter) {
    q.push(" WHERE TRUE");
    if let Some(ip) = f.ip {
        if let Some(net) = network_key(&ip) {
            q.push(" AND event_network(ip) = ");
            q.push_bind(net.to_string());
            q.push("::cidr");
        } else {
            q.push(" AND ip <<= ");
            q.push_bind(ip.to_string());
            q.push("::inet");
        }
    }
    if let Some(j) = &f.jail {
        q.push(" AND jail = ");
        q.push_bind(j.clone());
    }
    if let Some(a) = &f.agent {
        q.push(" AND agent_id = ");
        q.push_bind(a.clone());
    }
    if let Some(s) = f.since {
        q.push(" AND occurred_at >= ");
        q.push_bind(s);
    }
    if let Some(u) = f.until {
        q.push(" AND occurred_at < ");
        q.push_bind(u);
    }
}

#[async_trait]
impl ApiStore for PgStore {
    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        role: &str,
        now: DateTime<Utc>,
    ) -> Result<UserRecord, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO users (name, password_hash, role, created_at) VALUES ($1, $2, $3, $4)
             RETURNING {USER_COLUMNS}"
        ))
        .bind(name)
        .bind(password_hash)
        .bind(role)
        .bind(now)
        .fetch_one(self.pool())
        .await
        .map_err(|e| unique_violation(e, || format!("user {name:?}")))?;
        user(&row)
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(user)
            .transpose()
    }

    async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(user)
            .transpose()
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(user)
            .collect()
    }

    async fn disable_user(&self, name: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET disabled_at = $2 WHERE name = $1 AND disabled_at IS NULL RETURNING id",
        )
        .bind(name)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or_else(|| StoreError::NotFound(format!("user {name:?}")))?;
        sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = $2 WHERE name = $1")
            .bind(name)
            .bind(password_hash)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {name:?}")));
        }
        Ok(())
    }

    async fn set_role(&self, name: &str, role: &str) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET role = $2 WHERE name = $1")
            .bind(name)
            .bind(role)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {name:?}")));
        }
        Ok(())
    }

    async fn create_session(
        &self,
        s: &SessionRecord,
        refresh_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, refresh_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(s.id)
        .bind(s.user_id)
        .bind(refresh_hash)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(session)
        .transpose()
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Refresh, StoreError> {
        let mut tx = self.pool().begin().await?;
        let rotated = sqlx::query(&format!(
            "UPDATE sessions SET refresh_hash = $2, previous_hash = $1
             WHERE refresh_hash = $1 AND revoked_at IS NULL AND expires_at > $3
             RETURNING {SESSION_COLUMNS}"
        ))
        .bind(old_hash)
        .bind(new_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = if let Some(row) = rotated {
            Refresh::Rotated(session(&row)?)
        } else {
            let reused = sqlx::query(&format!(
                "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $2) WHERE previous_hash = $1
                 RETURNING {SESSION_COLUMNS}"
            ))
            .bind(old_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            match reused {
                Some(row) => Refresh::Reused(session(&row)?),
                None => Refresh::Unknown,
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn revoke_session(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn create_api_token(&self, t: &ApiTokenRecord, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, token_hash, scopes, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(t.id)
        .bind(&t.name)
        .bind(hash)
        .bind(t.scopes.join(" "))
        .bind(&t.created_by)
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(self.pool())
        .await
        .map_err(|e| unique_violation(e, || "token".to_owned()))?;
        Ok(())
    }

    async fn api_token_by_hash(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1"
        ))
        .bind(hash)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(token)
        .transpose()
    }

    async fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(token)
        .collect()
    }

    async fn revoke_api_token(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("token {id}")));
        }
        Ok(())
    }

    async fn api_token_used(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn create_bouncer(
        &self,
        name: &str,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<BouncerRecord, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO bouncers (name, key_hash, created_at) VALUES ($1, $2, $3) RETURNING {BOUNCER_COLUMNS}"
        ))
        .bind(name)
        .bind(key_hash)
        .bind(now)
        .fetch_one(self.pool())
        .await
        .map_err(|e| unique_violation(e, || format!("bouncer {name:?}")))?;
        bouncer(&row)
    }

    async fn bouncer_by_key_hash(&self, hash: &str) -> Result<Option<BouncerRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {BOUNCER_COLUMNS} FROM bouncers WHERE key_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(hash)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(bouncer)
        .transpose()
    }

    async fn bouncers(&self) -> Result<Vec<BouncerRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {BOUNCER_COLUMNS} FROM bouncers ORDER BY name"
        ))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(bouncer)
        .collect()
    }

    async fn revoke_bouncer(&self, name: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE bouncers SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .bind(now)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("bouncer {name:?}")));
        }
        Ok(())
    }

    async fn bouncer_pulled(
        &self,
        name: &str,
        version: u64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE bouncers SET last_pull_at = $2, last_version = $3 WHERE name = $1")
            .bind(name)
            .bind(now)
            .bind(from_version(version))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, detail, source) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.detail)
        .bind(&e.source)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn audit_log(
        &self,
        actor: Option<&str>,
        action: Option<&str>,
        page: &Page,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT id, at, actor, action, target, detail, source FROM audit_log WHERE TRUE",
        );
        if let Some(a) = actor {
            q.push(" AND actor = ").push_bind(a.to_owned());
        }
        if let Some(a) = action {
            q.push(" AND action = ").push_bind(a.to_owned());
        }
        push_page(&mut q, "at", "id", "bigint", page);
        q.build()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(audit)
            .collect()
    }

    async fn secret_or_init(
        &self,
        name: &str,
        candidate: &str,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(self.pool())
                .await?,
        )
    }

    async fn list_decisions(
        &self,
        f: &DecisionFilter,
        now: DateTime<Utc>,
        page: &Page,
    ) -> Result<Vec<DecisionRow>, StoreError> {
        let mut q = QueryBuilder::<Postgres>::new(decision_select());
        q.push(" WHERE d.kind = 'ban'");
        if let Some(t) = f.target {
            q.push(" AND d.target && ")
                .push_bind(t.to_string())
                .push("::cidr");
        }
        if let Some(o) = f.origin {
            q.push(" AND d.origin = ").push_bind(o.as_str());
        }
        if let Some(j) = &f.jail {
            q.push(" AND d.jail = ").push_bind(j.clone());
        }
        if let Some(a) = &f.agent {
            q.push(" AND d.creator = ").push_bind(format!("agent:{a}"));
        }
        if let Some(s) = &f.scope {
            q.push(" AND d.scope = ").push_bind(s.clone());
        }
        // "Not revoked" tests the join column: Postgres then plans an anti
        // join with a sound row estimate and walks the newest bans in index
        // order; `r.id IS NULL` kept the outer join, estimated one row and
        // sorted every unexpired ban (docs/benchmarks.md, REST API).
        match f.status {
            Some(DecisionStatus::Active) => {
                q.push(" AND r.revokes IS NULL AND (d.expires_at IS NULL OR d.expires_at > ")
                    .push_bind(now)
                    .push(")");
            }
            Some(DecisionStatus::Expired) => {
                q.push(" AND r.revokes IS NULL AND d.expires_at <= ")
                    .push_bind(now);
            }
            Some(DecisionStatus::Revoked) => {
                q.push(" AND r.id IS NOT NULL");
            }
            None => {}
        }
        if let Some(s) = f.since {
            q.push(" AND d.created_at >= ").push_bind(s);
        }
        if let Some(u) = f.until {
            q.push(" AND d.created_at < ").push_bind(u);
        }
        push_page(&mut q, "d.created_at", "d.id", "bigint", page);
        q.build()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(decision_row)
            .collect()
    }

    async fn decision(&self, id: i64) -> Result<Option<DecisionRow>, StoreError> {
        let mut q = QueryBuilder::<Postgres>::new(decision_select());
        q.push(" WHERE d.id = ").push_bind(id);
        q.build()
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(decision_row)
            .transpose()
    }

    async fn list_events(
        &self,
        f: &EventFilter,
        page: &Page,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {EVENT_COLUMNS} FROM events"));
        push_event_filter(&mut q, f);
        push_page(&mut q, "occurred_at", "id", "uuid", page);
        q.build()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(event)
            .collect()
    }

    async fn event_groups(
        &self,
        f: &EventFilter,
        key: EventKey,
        limit: u32,
    ) -> Result<Vec<EventGroup>, StoreError> {
        let col = match key {
            EventKey::Ip => "host(ip)",
            EventKey::Jail => "jail",
            EventKey::Agent => "agent_id",
        };
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {col} AS key, count(*) AS n, min(occurred_at) AS first, max(occurred_at) AS last FROM events"
        ));
        push_event_filter(&mut q, f);
        q.push(format!(" GROUP BY {col} ORDER BY n DESC, key LIMIT "))
            .push_bind(i64::from(limit));
        q.build()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(EventGroup {
                    key: r.try_get("key")?,
                    count: u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
                    first: r.try_get("first")?,
                    last: r.try_get("last")?,
                })
            })
            .collect()
    }

    async fn series(
        &self,
        series: Series,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        step: i64,
    ) -> Result<Vec<Bucket>, StoreError> {
        let (table, col, extra) = match series {
            Series::Events => ("events", "occurred_at", ""),
            Series::Decisions => ("decisions", "created_at", " AND kind = 'ban'"),
        };
        let split = match series {
            Series::Events => rollup::split(since, until, step),
            Series::Decisions => rollup::Split {
                minutes: None,
                raw: vec![(since, until)],
            },
        };
        let mut parts: Vec<(i64, i64)> = Vec::new();
        if let Some((lo, hi)) = split.minutes {
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT minute, sum(n)::bigint FROM event_minutes
                 WHERE minute >= $1 AND minute < $2 GROUP BY minute",
            )
            .bind(lo)
            .bind(hi)
            .fetch_all(self.pool())
            .await?;
            parts.extend(
                rows.into_iter()
                    .map(|(minute, n)| (rollup::bucket_of(minute * 60, step), n)),
            );
        }
        let sql = format!(
            "SELECT floor(extract(epoch FROM {col}) / $3)::bigint * $4 AS start, count(*) AS n
             FROM {table} WHERE {col} >= $1 AND {col} < $2{extra} GROUP BY 1"
        );
        for (from, to) in split.raw {
            let rows: Vec<(i64, i64)> = sqlx::query_as(&sql)
                .bind(from)
                .bind(to)
                .bind(step as f64)
                .bind(step)
                .fetch_all(self.pool())
                .await?;
            parts.extend(rows);
        }
        rollup::merge(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::network_key;

    fn key(net: &str) -> Option<String> {
        network_key(&net.parse().expect("net")).map(|n| n.to_string())
    }

    #[test]
    fn networks_are_their_own_key() {
        assert_eq!(key("198.51.100.0/24").as_deref(), Some("198.51.100.0/24"));
        assert_eq!(key("198.51.100.77/24").as_deref(), Some("198.51.100.0/24"));
        assert_eq!(
            key("2001:db8:1:2::/64").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            key("2001:db8:1:2::9/64").as_deref(),
            Some("2001:db8:1:2::/64")
        );
    }

    #[test]
    fn other_prefixes_and_addresses_have_none() {
        for net in [
            "198.51.100.7/32",
            "198.51.100.0/26",
            "198.51.0.0/16",
            "2001:db8::1/128",
            "2001:db8::/80",
            "2001:db8::/48",
        ] {
            assert_eq!(key(net), None, "{net}");
        }
    }
}
