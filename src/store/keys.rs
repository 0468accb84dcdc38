//! API keys stored in the database (only their SHA-256).

use uuid::Uuid;

use crate::domain::{KeyHash, TenantId};
use crate::store::db::Db;

/// The tenant of an unrevoked key with this hash.
pub async fn tenant_for(db: &Db, hash: &KeyHash) -> Result<Option<TenantId>, sqlx::Error> {
    let tenant: Option<String> = db
        .call(
            "keys.tenant_for",
            sqlx::query_scalar(
                "select tenant_id from api_key where key_hash = $1 and revoked_at is null",
            )
            .bind(&hash[..])
            .fetch_optional(db.pool()),
        )
        .await?;
    // Rows were checked on insert; a bad one would mean tampering, so treat it as no key.
    Ok(tenant.and_then(|t| TenantId::parse(&t).ok()))
}

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct KeyRow {
    pub api_key_id: Uuid,
    pub tenant_id: String,
    pub key_prefix: String,
    pub label: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn create(
    db: &Db,
    tenant: &TenantId,
    hash: &KeyHash,
    prefix: &str,
    label: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    let pool = db.pool();
    db.call("keys.create", async {
        let mut tx = pool.begin().await?;
        sqlx::query("insert into tenant (tenant_id) values ($1) on conflict do nothing")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        let id = Uuid::new_v4();
        sqlx::query(
            "insert into api_key (api_key_id, tenant_id, key_hash, key_prefix, label) \
             values ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(tenant.as_str())
        .bind(&hash[..])
        .bind(prefix)
        .bind(label)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    })
    .await
}

/// Revokes at once: the next request with this key is refused (keys are not cached).
pub async fn revoke(db: &Db, id: Uuid) -> Result<bool, sqlx::Error> {
    let pool = db.pool();
    db.call("keys.revoke", async {
        let done = sqlx::query(
            "update api_key set revoked_at = now() where api_key_id = $1 and revoked_at is null",
        )
        .bind(id)
        .execute(pool)
        .await?;
        Ok(done.rows_affected() == 1)
    })
    .await
}

pub async fn list(db: &Db) -> Result<Vec<KeyRow>, sqlx::Error> {
    let pool = db.pool();
    db.call("keys.list", async {
        sqlx::query_as(
            "select api_key_id, tenant_id, key_prefix, label, created_at, revoked_at \
             from api_key order by tenant_id, created_at",
        )
        .fetch_all(pool)
        .await
    })
    .await
}
