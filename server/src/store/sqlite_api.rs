//! [`ApiStore`] on SQLite. Addresses are text here, so the address filter of
//! decisions and events runs in Rust over pages read in order.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::api::*;
use super::rollup;
use super::sqlite::{decision_from, ms, time, SqliteStore, WRITE_TX};
use super::{from_version, to_version, StoreError};

fn unique_violation(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists(what()),
        _ => StoreError::Database(e),
    }
}

fn opt_time(r: &SqliteRow, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    r.try_get::<Option<i64>, _>(col)?.map(time).transpose()
}

fn uuid(r: &SqliteRow, col: &str) -> Result<Uuid, StoreError> {
    let s: String = r.try_get(col)?;
    Uuid::parse_str(&s).map_err(|_| StoreError::Corrupt(format!("{col} {s:?}")))
}

fn user(r: &SqliteRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        password_hash: r.try_get("password_hash")?,
        role: r.try_get("role")?,
        created_at: time(r.try_get("created_at")?)?,
        disabled_at: opt_time(r, "disabled_at")?,
    })
}

fn session(r: &SqliteRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: uuid(r, "id")?,
        user_id: r.try_get("user_id")?,
        created_at: time(r.try_get("created_at")?)?,
        expires_at: time(r.try_get("expires_at")?)?,
        revoked_at: opt_time(r, "revoked_at")?,
    })
}

fn token(r: &SqliteRow) -> Result<ApiTokenRecord, StoreError> {
    let scopes: String = r.try_get("scopes")?;
    Ok(ApiTokenRecord {
        id: uuid(r, "id")?,
        name: r.try_get("name")?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        created_by: r.try_get("created_by")?,
        created_at: time(r.try_get("created_at")?)?,
        expires_at: opt_time(r, "expires_at")?,
        revoked_at: opt_time(r, "revoked_at")?,
        last_used_at: opt_time(r, "last_used_at")?,
    })
}

fn bouncer(r: &SqliteRow) -> Result<BouncerRecord, StoreError> {
    Ok(BouncerRecord {
        name: r.try_get("name")?,
        created_at: time(r.try_get("created_at")?)?,
        revoked_at: opt_time(r, "revoked_at")?,
        last_pull_at: opt_time(r, "last_pull_at")?,
        last_version: to_version(r.try_get("last_version")?)?,
    })
}

fn audit(r: &SqliteRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: r.try_get("id")?,
        at: time(r.try_get("at")?)?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        detail: r.try_get("detail")?,
        source: r.try_get("source")?,
    })
}

fn event(r: &SqliteRow) -> Result<EventRecord, StoreError> {
    let ip: String = r.try_get("ip")?;
    Ok(EventRecord {
        id: uuid(r, "id")?,
        agent_id: r.try_get("agent_id")?,
        jail: r.try_get("jail")?,
        ip: ip
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("event address {ip:?}")))?,
        user: r.try_get("username")?,
        occurred_at: time(r.try_get("occurred_at")?)?,
        received_at: time(r.try_get("received_at")?)?,
    })
}

const USER_COLUMNS: &str = "id, name, password_hash, role, created_at, disabled_at";
const SESSION_COLUMNS: &str = "id, user_id, created_at, expires_at, revoked_at";
const TOKEN_COLUMNS: &str =
    "id, name, scopes, created_by, created_at, expires_at, revoked_at, last_used_at";
const BOUNCER_COLUMNS: &str = "name, created_at, revoked_at, last_pull_at, last_version";
const EVENT_COLUMNS: &str = "id, agent_id, jail, ip, username, occurred_at, received_at";
const DECISION_COLUMNS: [&str; 13] = [
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

fn decision_select() -> String {
    let cols: Vec<String> = DECISION_COLUMNS
        .iter()
        .flat_map(|c| [format!("d.{c} AS d_{c}"), format!("r.{c} AS r_{c}")])
        .collect();
    format!(
        "SELECT {} FROM decisions d LEFT JOIN decisions r ON r.revokes = d.id",
        cols.join(", ")
    )
}

fn decision_row(r: &SqliteRow) -> Result<DecisionRow, StoreError> {
    let revocation = match r.try_get::<Option<i64>, _>("r_id")? {
        Some(_) => Some(decision_from(r, "r_")?),
        None => None,
    };
    Ok(DecisionRow {
        decision: decision_from(r, "d_")?,
        revocation,
    })
}

/// Keyset condition and order; `limit` rows.
fn push_page(
    q: &mut QueryBuilder<'_, Sqlite>,
    time_col: &str,
    id_col: &str,
    integer_id: bool,
    after: Option<&Cursor>,
    order: Order,
    limit: i64,
) {
    if let Some(c) = after {
        let op = match order {
            Order::Desc => "<",
            Order::Asc => ">",
        };
        q.push(format!(" AND ({time_col}, {id_col}) {op} ("));
        q.push_bind(ms(c.at));
        q.push(", ");
        if integer_id {
            q.push_bind(c.id.parse::<i64>().unwrap_or(0));
        } else {
            q.push_bind(c.id.clone());
        }
        q.push(")");
    }
    let dir = match order {
        Order::Desc => "DESC",
        Order::Asc => "ASC",
    };
    q.push(format!(" ORDER BY {time_col} {dir}, {id_col} {dir} LIMIT "));
    q.push_bind(limit);
}

fn push_event_filter(q: &mut QueryBuilder<'_, Sqlite>, f: &EventFilter) {
    q.push(" WHERE 1");
    // A single address is an exact match; a prefix is filtered in Rust.
    if let Some(ip) = f.ip.filter(|n| n.prefix_len() == n.max_prefix_len()) {
        q.push(" AND ip = ").push_bind(ip.addr().to_string());
    }
    if let Some(j) = &f.jail {
        q.push(" AND jail = ").push_bind(j.clone());
    }
    if let Some(a) = &f.agent {
        q.push(" AND agent_id = ").push_bind(a.clone());
    }
    if let Some(s) = f.since {
        q.push(" AND occurred_at >= ").push_bind(ms(s));
    }
    if let Some(u) = f.until {
        q.push(" AND occurred_at < ").push_bind(ms(u));
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// Rows read per round when filtering addresses in Rust.
const SCAN_BATCH: i64 = 500;

#[async_trait]
impl ApiStore for SqliteStore {
    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        role: &str,
        now: DateTime<Utc>,
    ) -> Result<UserRecord, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO users (name, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4)
             RETURNING {USER_COLUMNS}"
        ))
        .bind(name)
        .bind(password_hash)
        .bind(role)
        .bind(ms(now))
        .fetch_one(self.pool())
        .await
        .map_err(|e| unique_violation(e, || format!("user {name:?}")))?;
        user(&row)
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(user)
            .transpose()
    }

    async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
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
        let mut tx = self.pool().begin_with(WRITE_TX).await?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET disabled_at = ?2 WHERE name = ?1 AND disabled_at IS NULL RETURNING id",
        )
        .bind(name)
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or_else(|| StoreError::NotFound(format!("user {name:?}")))?;
        sqlx::query(
            "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = ?2 WHERE name = ?1")
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
        let done = sqlx::query("UPDATE users SET role = ?2 WHERE name = ?1")
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
            "INSERT INTO sessions (id, user_id, refresh_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(s.id.to_string())
        .bind(s.user_id)
        .bind(refresh_hash)
        .bind(ms(s.created_at))
        .bind(ms(s.expires_at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"
        ))
        .bind(id.to_string())
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
        let mut tx = self.pool().begin_with(WRITE_TX).await?;
        let rotated = sqlx::query(&format!(
            "UPDATE sessions SET refresh_hash = ?2, previous_hash = ?1
             WHERE refresh_hash = ?1 AND revoked_at IS NULL AND expires_at > ?3
             RETURNING {SESSION_COLUMNS}"
        ))
        .bind(old_hash)
        .bind(new_hash)
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = if let Some(row) = rotated {
            Refresh::Rotated(session(&row)?)
        } else {
            let reused = sqlx::query(&format!(
                "UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?2) WHERE previous_hash = ?1
                 RETURNING {SESSION_COLUMNS}"
            ))
            .bind(old_hash)
            .bind(ms(now))
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
        sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1")
            .bind(id.to_string())
            .bind(ms(now))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn create_api_token(&self, t: &ApiTokenRecord, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, token_hash, scopes, created_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(t.id.to_string())
        .bind(&t.name)
        .bind(hash)
        .bind(t.scopes.join(" "))
        .bind(&t.created_by)
        .bind(ms(t.created_at))
        .bind(t.expires_at.map(ms))
        .execute(self.pool())
        .await
        .map_err(|e| unique_violation(e, || "token".to_owned()))?;
        Ok(())
    }

    async fn api_token_by_hash(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?1"
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
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .bind(ms(now))
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("token {id}")));
        }
        Ok(())
    }

    async fn api_token_used(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1")
            .bind(id.to_string())
            .bind(ms(now))
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
            "INSERT INTO bouncers (name, key_hash, created_at) VALUES (?1, ?2, ?3) RETURNING {BOUNCER_COLUMNS}"
        ))
        .bind(name)
        .bind(key_hash)
        .bind(ms(now))
        .fetch_one(self.pool())
        .await
        .map_err(|e| unique_violation(e, || format!("bouncer {name:?}")))?;
        bouncer(&row)
    }

    async fn bouncer_by_key_hash(&self, hash: &str) -> Result<Option<BouncerRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {BOUNCER_COLUMNS} FROM bouncers WHERE key_hash = ?1 AND revoked_at IS NULL"
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
            "UPDATE bouncers SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        )
        .bind(name)
        .bind(ms(now))
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
        sqlx::query("UPDATE bouncers SET last_pull_at = ?2, last_version = ?3 WHERE name = ?1")
            .bind(name)
            .bind(ms(now))
            .bind(from_version(version))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, detail, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(ms(e.at))
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
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, at, actor, action, target, detail, source FROM audit_log WHERE 1",
        );
        if let Some(a) = actor {
            q.push(" AND actor = ").push_bind(a.to_owned());
        }
        if let Some(a) = action {
            q.push(" AND action = ").push_bind(a.to_owned());
        }
        push_page(
            &mut q,
            "at",
            "id",
            true,
            page.after.as_ref(),
            page.order,
            i64::from(page.limit),
        );
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
            "INSERT INTO server_secrets (name, value, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(ms(now))
        .execute(self.pool())
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = ?1")
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
        let mut out = Vec::new();
        let mut after = page.after.clone();
        loop {
            let mut q = QueryBuilder::<Sqlite>::new(decision_select());
            q.push(" WHERE d.kind = 'ban'");
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
            match f.status {
                Some(DecisionStatus::Active) => {
                    q.push(" AND r.id IS NULL AND (d.expires_at IS NULL OR d.expires_at > ")
                        .push_bind(ms(now))
                        .push(")");
                }
                Some(DecisionStatus::Expired) => {
                    q.push(" AND r.id IS NULL AND d.expires_at <= ")
                        .push_bind(ms(now));
                }
                Some(DecisionStatus::Revoked) => {
                    q.push(" AND r.id IS NOT NULL");
                }
                None => {}
            }
            if let Some(s) = f.since {
                q.push(" AND d.created_at >= ").push_bind(ms(s));
            }
            if let Some(u) = f.until {
                q.push(" AND d.created_at < ").push_bind(ms(u));
            }
            let batch = if f.target.is_some() {
                SCAN_BATCH
            } else {
                i64::from(page.limit)
            };
            push_page(
                &mut q,
                "d.created_at",
                "d.id",
                true,
                after.as_ref(),
                page.order,
                batch,
            );
            let rows = q.build().fetch_all(self.pool()).await?;
            let done = (rows.len() as i64) < batch;
            for row in &rows {
                let r = decision_row(row)?;
                after = Some(Cursor {
                    at: r.decision.created_at,
                    id: r.decision.id.to_string(),
                });
                if f.target.is_none_or(|t| overlaps(&t, &r.decision.target)) {
                    out.push(r);
                    if out.len() >= page.limit as usize {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    async fn decision(&self, id: i64) -> Result<Option<DecisionRow>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(decision_select());
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
        let prefix = f.ip.filter(|n| n.prefix_len() < n.max_prefix_len());
        let mut out = Vec::new();
        let mut after = page.after.clone();
        loop {
            let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {EVENT_COLUMNS} FROM events"));
            push_event_filter(&mut q, f);
            let batch = if prefix.is_some() {
                SCAN_BATCH
            } else {
                i64::from(page.limit)
            };
            push_page(
                &mut q,
                "occurred_at",
                "id",
                false,
                after.as_ref(),
                page.order,
                batch,
            );
            let rows = q.build().fetch_all(self.pool()).await?;
            let done = (rows.len() as i64) < batch;
            for row in &rows {
                let e = event(row)?;
                after = Some(Cursor {
                    at: e.occurred_at,
                    id: e.id.to_string(),
                });
                if prefix.is_none_or(|p| p.contains(&e.ip)) {
                    out.push(e);
                    if out.len() >= page.limit as usize {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    async fn event_groups(
        &self,
        f: &EventFilter,
        key: EventKey,
        limit: u32,
    ) -> Result<Vec<EventGroup>, StoreError> {
        let col = match key {
            EventKey::Ip => "ip",
            EventKey::Jail => "jail",
            EventKey::Agent => "agent_id",
        };
        let prefix = f.ip.filter(|n| n.prefix_len() < n.max_prefix_len());
        // A prefix filter needs the address of every event: group by it too,
        // then fold in Rust.
        let group = if prefix.is_some() {
            format!("{col}, ip")
        } else {
            col.to_owned()
        };
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {col} AS key, ip AS addr, count(*) AS n, min(occurred_at) AS first, max(occurred_at) AS last FROM events"
        ));
        push_event_filter(&mut q, f);
        q.push(format!(" GROUP BY {group}"));
        let rows = q.build().fetch_all(self.pool()).await?;
        let mut groups: std::collections::BTreeMap<String, EventGroup> = Default::default();
        for r in &rows {
            if let Some(p) = prefix {
                let addr: String = r.try_get("addr")?;
                match addr.parse::<std::net::IpAddr>() {
                    Ok(a) if p.contains(&a) => {}
                    _ => continue,
                }
            }
            let key: String = r.try_get("key")?;
            let g = EventGroup {
                key: key.clone(),
                count: u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
                first: time(r.try_get("first")?)?,
                last: time(r.try_get("last")?)?,
            };
            groups
                .entry(key)
                .and_modify(|e| {
                    e.count += g.count;
                    e.first = e.first.min(g.first);
                    e.last = e.last.max(g.last);
                })
                .or_insert(g);
        }
        let mut out: Vec<EventGroup> = groups.into_values().collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        out.truncate(limit as usize);
        Ok(out)
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
                "SELECT minute, n FROM event_minutes WHERE minute >= ?1 AND minute < ?2",
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
        // Buckets in milliseconds, rounded down also before 1970.
        let step_ms = step.saturating_mul(1000).max(1);
        let sql = format!(
            "SELECT ({col} / ?3 - ({col} % ?3 < 0)) * ?3 AS start, count(*) AS n
             FROM {table} WHERE {col} >= ?1 AND {col} < ?2{extra} GROUP BY 1"
        );
        for (from, to) in split.raw {
            let rows: Vec<(i64, i64)> = sqlx::query_as(&sql)
                .bind(ms(from))
                .bind(ms(to))
                .bind(step_ms)
                .fetch_all(self.pool())
                .await?;
            parts.extend(
                rows.into_iter()
                    .map(|(start, n)| (start.div_euclid(1000), n)),
            );
        }
        rollup::merge(parts)
    }
}
