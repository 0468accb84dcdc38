//! Database upkeep for `facepass db stats` and `facepass db reindex`, and the health check
//! /ready runs.

use std::time::Duration;

use pgvector::Vector;
use serde::Serialize;
use sqlx::PgPool;

use crate::store::db::{timed, Db};

pub const IVFFLAT_INDEX: &str = "face_embedding_ivfflat_idx";

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TenantRows {
    pub tenant_id: String,
    pub sessions: i64,
    pub photos: i64,
    pub faces: i64,
    pub identities: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct IndexSize {
    pub index: String,
    pub bytes: i64,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub tenants: Vec<TenantRows>,
    pub faces: i64,
    pub table_bytes: i64,
    pub indexes: Vec<IndexSize>,
    pub ivfflat_lists: Option<i64>,
    pub recommended_lists: i64,
    pub probes: u32,
    /// Share of the exact top-10 (tenant-wide) that the IVFFlat index returns, on a sample.
    pub estimated_recall_at_10: Option<f64>,
    pub sample_size: usize,
}

/// lists = rows/1000 up to 1M rows, sqrt(rows) beyond (pgvector's guidance), at least 1.
pub fn recommended_lists(rows: i64) -> i64 {
    if rows <= 1_000_000 {
        (rows / 1000).max(1)
    } else {
        (rows as f64).sqrt() as i64
    }
}

pub async fn ivfflat_lists(db: &Db) -> Result<Option<i64>, sqlx::Error> {
    let pool = db.pool();
    db.unbounded("maintenance.ivfflat_lists", async {
        let options: Option<Vec<String>> =
            sqlx::query_scalar("select reloptions from pg_class where relname = $1")
                .bind(IVFFLAT_INDEX)
                .fetch_optional(pool)
                .await?
                .flatten();
        Ok(options
            .unwrap_or_default()
            .iter()
            .find_map(|o| o.strip_prefix("lists=").and_then(|v| v.parse().ok())))
    })
    .await
}

pub async fn stats(db: &Db, probes: u32, sample: usize) -> Result<Stats, sqlx::Error> {
    let pool = db.pool();
    db.unbounded("maintenance.stats", async {
        let tenants: Vec<TenantRows> = sqlx::query_as(
            "select t.tenant_id, \
                    (select count(*) from session s where s.tenant_id = t.tenant_id) as sessions, \
                    (select count(*) from photo p where p.tenant_id = t.tenant_id) as photos, \
                    (select count(*) from face f where f.tenant_id = t.tenant_id) as faces, \
                    (select count(*) from identity i where i.tenant_id = t.tenant_id) as identities \
             from tenant t order by t.tenant_id",
        )
        .fetch_all(pool)
        .await?;
        let faces: i64 = sqlx::query_scalar("select count(*) from face")
            .fetch_one(pool)
            .await?;
        let table_bytes: i64 = sqlx::query_scalar("select pg_total_relation_size('face')")
            .fetch_one(pool)
            .await?;
        let indexes: Vec<IndexSize> = sqlx::query_as(
            "select indexrelid::regclass::text as index, pg_relation_size(indexrelid) as bytes \
             from pg_index where indrelid = 'face'::regclass order by 1",
        )
        .fetch_all(pool)
        .await?;
        let estimated_recall_at_10 = if faces > 0 && sample > 0 {
            Some(recall(pool, probes, sample).await?)
        } else {
            None
        };
        Ok(Stats {
            tenants,
            faces,
            table_bytes,
            indexes,
            ivfflat_lists: ivfflat_lists(db).await?,
            recommended_lists: recommended_lists(faces),
            probes,
            estimated_recall_at_10,
            sample_size: sample,
        })
    })
    .await
}

/// Compares IVFFlat's top 10 with the exact top 10 for `sample` stored faces used as queries.
async fn recall(pool: &PgPool, probes: u32, sample: usize) -> Result<f64, sqlx::Error> {
    let queries: Vec<(String, Vector)> =
        sqlx::query_as("select tenant_id, embedding from face tablesample system (10) limit $1")
            .bind(sample as i64)
            .fetch_all(pool)
            .await?;
    let queries = if queries.is_empty() {
        sqlx::query_as("select tenant_id, embedding from face order by random() limit $1")
            .bind(sample as i64)
            .fetch_all(pool)
            .await?
    } else {
        queries
    };
    let top10 = "select face_pk from face where tenant_id = $1 order by embedding <=> $2 limit 10";
    let (mut found, mut total) = (0usize, 0usize);
    for (tenant, q) in &queries {
        let mut tx = pool.begin().await?;
        sqlx::query("set local enable_indexscan = off")
            .execute(&mut *tx)
            .await?;
        let exact: Vec<i64> = sqlx::query_scalar(top10)
            .bind(tenant)
            .bind(q)
            .fetch_all(&mut *tx)
            .await?;
        tx.rollback().await?;
        let mut tx = pool.begin().await?;
        sqlx::query(&format!("set local ivfflat.probes = {probes}"))
            .execute(&mut *tx)
            .await?;
        // Force the index so the estimate is about it, whatever the planner would pick.
        sqlx::query("set local enable_seqscan = off")
            .execute(&mut *tx)
            .await?;
        let approx: Vec<i64> = sqlx::query_scalar(top10)
            .bind(tenant)
            .bind(q)
            .fetch_all(&mut *tx)
            .await?;
        tx.rollback().await?;
        total += exact.len();
        found += exact.iter().filter(|pk| approx.contains(pk)).count();
    }
    Ok(if total == 0 {
        1.0
    } else {
        found as f64 / total as f64
    })
}

/// Rebuilds the IVFFlat index with `lists` for the current row count, without blocking writes:
/// a new index is built CONCURRENTLY, then swapped in. Returns the lists used.
pub async fn reindex(db: &Db, lists: Option<i64>) -> Result<i64, sqlx::Error> {
    let pool = db.pool();
    db.unbounded("maintenance.reindex", async {
        // One connection throughout: the memory setting must apply to the build.
        let mut conn = pool.acquire().await?;
        let rows: i64 = sqlx::query_scalar("select count(*) from face")
            .fetch_one(&mut *conn)
            .await?;
        let lists = lists.unwrap_or_else(|| recommended_lists(rows)).max(1);
        // The default 64MB fails at 1M rows with 1000 lists (299MB needed, docs/BENCHMARKS.md).
        sqlx::query("set maintenance_work_mem = '1GB'")
            .execute(&mut *conn)
            .await?;
        let tmp = format!("{IVFFLAT_INDEX}_new");
        sqlx::query(&format!("drop index concurrently if exists {tmp}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query(&format!(
            "create index concurrently {tmp} on face using ivfflat (embedding vector_cosine_ops) \
             with (lists = {lists})"
        ))
        .execute(&mut *conn)
        .await?;
        sqlx::query(&format!(
            "drop index concurrently if exists {IVFFLAT_INDEX}"
        ))
        .execute(&mut *conn)
        .await?;
        sqlx::query(&format!("alter index {tmp} rename to {IVFFLAT_INDEX}"))
            .execute(&mut *conn)
            .await?;
        Ok(lists)
    })
    .await
}

/// What /ready reports about the database.
#[derive(Debug)]
pub struct DbHealth {
    pub vector_extension: Option<String>,
    pub pending_migrations: Vec<i64>,
}

/// Checked with its own (short) deadline: /ready must answer quickly.
pub async fn health(db: &Db, timeout: Duration) -> Result<DbHealth, sqlx::Error> {
    let pool = db.pool();
    timed("health", timeout, async {
        let vector_extension: Option<String> =
            sqlx::query_scalar("select extversion from pg_extension where extname = 'vector'")
                .fetch_optional(pool)
                .await?;
        let pending_migrations = super::migrations::pending(db).await?;
        Ok(DbHealth {
            vector_extension,
            pending_migrations,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::recommended_lists;

    #[test]
    fn lists_follow_pgvector_guidance() {
        assert_eq!(recommended_lists(0), 1);
        assert_eq!(recommended_lists(50_000), 50);
        assert_eq!(recommended_lists(1_000_000), 1000);
        assert_eq!(recommended_lists(4_000_000), 2000);
    }
}
