//! Agent identity in SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{ms, time, SqliteStore, WRITE_TX};
use crate::store::identity::{
    Enrollment, IdentityStore, NewEnrollment, NewToken, Refusal, StoredCa, TokenRecord,
};
use crate::store::StoreError;

const ENROLLMENT_COLUMNS: &str =
    "agent_id, cert_sha256, agent_group, token_id, enrolled_at, revoked_at";

fn enrollment(row: &SqliteRow) -> Result<Enrollment, StoreError> {
    Ok(Enrollment {
        agent_id: row.try_get("agent_id")?,
        cert_sha256: row.try_get("cert_sha256")?,
        group: row.try_get("agent_group")?,
        token_id: row.try_get("token_id")?,
        enrolled_at: time(row.try_get("enrolled_at")?)?,
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(time)
            .transpose()?,
    })
}

const TOKEN_COLUMNS: &str = "id, agent_group, created_at, expires_at, max_uses, uses, revoked_at";

fn token_record(r: &SqliteRow) -> Result<TokenRecord, StoreError> {
    let count = |c: &str| -> Result<u32, StoreError> {
        let n: i32 = r.try_get(c)?;
        u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("token {c} {n}")))
    };
    Ok(TokenRecord {
        id: r.try_get("id")?,
        group: r.try_get("agent_group")?,
        created_at: time(r.try_get("created_at")?)?,
        expires_at: time(r.try_get("expires_at")?)?,
        max_uses: count("max_uses")?,
        uses: count("uses")?,
        revoked_at: r
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(time)
            .transpose()?,
    })
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn certificate_authority(&self) -> Result<Option<StoredCa>, StoreError> {
        let row = sqlx::query("SELECT cert_pem, key_pem FROM certificate_authority")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(StoredCa {
                cert_pem: r.try_get("cert_pem")?,
                key_pem: r.try_get("key_pem")?,
            })
        })
        .transpose()
    }

    async fn init_certificate_authority(
        &self,
        ca: &StoredCa,
        now: DateTime<Utc>,
    ) -> Result<StoredCa, StoreError> {
        sqlx::query(
            "INSERT INTO certificate_authority (singleton, cert_pem, key_pem, created_at)
             VALUES (1, ?1, ?2, ?3) ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(&ca.cert_pem)
        .bind(&ca.key_pem)
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        self.certificate_authority()
            .await?
            .ok_or_else(|| StoreError::Corrupt("certificate authority missing".into()))
    }

    async fn create_token(&self, t: &NewToken, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, secret_sha256, agent_group, created_at, expires_at, max_uses)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&t.id)
        .bind(&t.secret_sha256)
        .bind(t.group.as_deref())
        .bind(ms(now))
        .bind(ms(t.expires_at))
        .bind(i32::try_from(t.max_uses).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::AlreadyExists(format!("enrollment token {}", t.id))
            }
            _ => StoreError::Database(e),
        })?;
        Ok(())
    }

    async fn enroll(
        &self,
        e: &NewEnrollment,
        now: DateTime<Utc>,
    ) -> Result<Enrollment, StoreError> {
        let mut tx = self.pool.begin_with(WRITE_TX).await?;
        let used = sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1
             WHERE secret_sha256 = ?1 AND expires_at > ?2 AND uses < max_uses AND revoked_at IS NULL
             RETURNING id, agent_group",
        )
        .bind(&e.token_sha256)
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token) = used else {
            let row = sqlx::query(
                "SELECT id, expires_at > ?2 AS live, revoked_at IS NOT NULL AS revoked FROM enrollment_tokens WHERE secret_sha256 = ?1",
            )
            .bind(&e.token_sha256)
            .bind(ms(now))
            .fetch_optional(&mut *tx)
            .await?;
            return Err(StoreError::Refused(match row {
                None => Refusal::UnknownToken,
                Some(r) if r.try_get::<bool, _>("revoked")? => {
                    Refusal::RevokedToken(r.try_get("id")?)
                }
                Some(r) if r.try_get::<bool, _>("live")? => Refusal::UsedUpToken(r.try_get("id")?),
                Some(r) => Refusal::ExpiredToken(r.try_get("id")?),
            }));
        };
        let token_id: String = token.try_get("id")?;
        let group: Option<String> = token.try_get("agent_group")?;
        let row = sqlx::query(&format!(
            "INSERT INTO enrollments (agent_id, cert_sha256, agent_group, token_id, hostname, enrolled_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (agent_id) DO UPDATE SET cert_sha256 = EXCLUDED.cert_sha256,
                 agent_group = EXCLUDED.agent_group, token_id = EXCLUDED.token_id,
                 hostname = EXCLUDED.hostname, enrolled_at = EXCLUDED.enrolled_at, revoked_at = NULL
             WHERE enrollments.revoked_at IS NOT NULL
             RETURNING {ENROLLMENT_COLUMNS}"
        ))
        .bind(&e.agent_id)
        .bind(&e.cert_sha256)
        .bind(group.as_deref())
        .bind(&token_id)
        .bind(&e.hostname)
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::Refused(Refusal::AlreadyEnrolled(
                e.agent_id.clone(),
            )));
        };
        let stored = enrollment(&row)?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn credential(&self, cert_sha256: &str) -> Result<Option<Enrollment>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE cert_sha256 = ?1"
        ))
        .bind(cert_sha256)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(enrollment).transpose()
    }

    async fn revoke_agent(
        &self,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Enrollment, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE enrollments SET revoked_at = COALESCE(revoked_at, ?2) WHERE agent_id = ?1
             RETURNING {ENROLLMENT_COLUMNS}"
        ))
        .bind(agent_id)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => enrollment(&r),
            None => Err(StoreError::NotFound(format!("enrolled agent {agent_id:?}"))),
        }
    }

    async fn revoked_agents(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT agent_id FROM enrollments WHERE revoked_at IS NOT NULL")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn enrollments(&self) -> Result<Vec<Enrollment>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments ORDER BY agent_id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(enrollment)
        .collect()
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens ORDER BY created_at DESC, id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(token_record)
        .collect()
    }

    async fn revoke_token(&self, id: &str, now: DateTime<Utc>) -> Result<TokenRecord, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(id)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => token_record(&r),
            None => Err(StoreError::NotFound(format!("enrollment token {id:?}"))),
        }
    }
}
