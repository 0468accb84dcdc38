//! Reversible schema migrations, embedded in the binary. `facepass migrate` drives these; tests
//! use the same functions.

use std::collections::BTreeSet;

use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationType, Migrator};
use sqlx::PgPool;

use crate::store::db::Db;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The up migrations, by version.
pub fn ups() -> impl Iterator<Item = &'static Migration> {
    MIGRATOR
        .iter()
        .filter(|m| m.migration_type == MigrationType::ReversibleUp)
}

fn down_of(version: i64) -> Option<&'static Migration> {
    MIGRATOR
        .iter()
        .find(|m| m.version == version && m.migration_type == MigrationType::ReversibleDown)
}

pub fn latest_version() -> i64 {
    ups().map(|m| m.version).max().unwrap_or(0)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    pub applied: bool,
    pub applied_at: Option<String>,
    pub checksum_ok: bool,
}

async fn applied_versions(pool: &PgPool) -> Result<BTreeSet<i64>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(BTreeSet::new());
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("select version from _sqlx_migrations where success order by version")
            .fetch_all(pool)
            .await?;
    Ok(versions.into_iter().collect())
}

/// Versions embedded in this binary that the database has not applied.
pub async fn pending(db: &Db) -> Result<Vec<i64>, sqlx::Error> {
    let pool = db.pool();
    db.unbounded("migrations.pending", async {
        let applied = applied_versions(pool).await?;
        Ok(ups()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    })
    .await
}

pub async fn status(db: &Db) -> Result<Vec<MigrationStatus>, MigrateError> {
    let pool = db.pool();
    db.unbounded("migrations.status", async {
        let mut conn = pool.acquire().await?;
        conn.ensure_migrations_table().await?;
        let applied = conn.list_applied_migrations().await?;
        let applied_at: Vec<(i64, String)> = sqlx::query_as(
            "select version, installed_on::text from _sqlx_migrations where success",
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(ups()
            .map(|m| {
                let row = applied.iter().find(|a| a.version == m.version);
                MigrationStatus {
                    version: m.version,
                    description: m.description.to_string(),
                    applied: row.is_some(),
                    applied_at: applied_at
                        .iter()
                        .find(|(v, _)| *v == m.version)
                        .map(|(_, t)| t.clone()),
                    checksum_ok: row.is_none_or(|a| a.checksum == m.checksum),
                }
            })
            .collect())
    })
    .await
}

/// Applies every pending up migration with version <= `to` (all when `None`), in order, each in
/// its own transaction. Returns the versions applied.
pub async fn up(db: &Db, to: Option<i64>) -> Result<Vec<i64>, MigrateError> {
    let pool = db.pool();
    db.unbounded("migrations.up", async {
        let mut conn = pool.acquire().await?;
        conn.lock().await?;
        let result = async {
            conn.ensure_migrations_table().await?;
            if let Some(version) = conn.dirty_version().await? {
                return Err(MigrateError::Dirty(version));
            }
            let applied = conn.list_applied_migrations().await?;
            for a in &applied {
                if let Some(m) = ups().find(|m| m.version == a.version) {
                    if m.checksum != a.checksum {
                        return Err(MigrateError::VersionMismatch(a.version));
                    }
                }
            }
            let mut done = Vec::new();
            for m in ups() {
                if to.is_some_and(|to| m.version > to) {
                    break;
                }
                if applied.iter().any(|a| a.version == m.version) {
                    continue;
                }
                conn.apply(m).await?;
                done.push(m.version);
            }
            Ok(done)
        }
        .await;
        conn.unlock().await?;
        result
    })
    .await
}

/// Reverts applied migrations newest first until the schema is at version `to`
/// (0 = nothing left). Returns the versions reverted.
pub async fn down(db: &Db, to: i64) -> Result<Vec<i64>, MigrateError> {
    let pool = db.pool();
    db.unbounded("migrations.down", async {
        let mut conn = pool.acquire().await?;
        conn.lock().await?;
        let result = async {
            conn.ensure_migrations_table().await?;
            if let Some(version) = conn.dirty_version().await? {
                return Err(MigrateError::Dirty(version));
            }
            let mut applied = conn.list_applied_migrations().await?;
            applied.sort_by_key(|a| std::cmp::Reverse(a.version));
            let mut done = Vec::new();
            for a in applied.into_iter().filter(|a| a.version > to) {
                let m = down_of(a.version).ok_or(MigrateError::VersionMissing(a.version))?;
                conn.revert(m).await?;
                done.push(a.version);
            }
            Ok(done)
        }
        .await;
        conn.unlock().await?;
        result
    })
    .await
}

/// The version one step below the newest applied one (what `migrate down` goes to by default).
pub async fn previous_version(db: &Db) -> Result<i64, sqlx::Error> {
    let pool = db.pool();
    db.unbounded("migrations.previous_version", async {
        let applied = applied_versions(pool).await?;
        let mut it = applied.iter().rev();
        it.next();
        Ok(it.next().copied().unwrap_or(0))
    })
    .await
}

/// The SQL that `up`/`down` would run, for `--dry-run`.
pub fn sql_for(versions: &[i64], direction: MigrationType) -> String {
    let mut out = String::new();
    for v in versions {
        if let Some(m) = MIGRATOR
            .iter()
            .find(|m| m.version == *v && m.migration_type == direction)
        {
            out.push_str(&format!(
                "-- {} {} ({})\n{}\n\n",
                if direction == MigrationType::ReversibleDown {
                    "down"
                } else {
                    "up"
                },
                m.version,
                m.description,
                m.sql.trim_end()
            ));
        }
    }
    out
}

/// What `up(pool, to)` would apply, without applying it.
pub async fn plan_up(db: &Db, to: Option<i64>) -> Result<Vec<i64>, sqlx::Error> {
    db.unbounded("migrations.plan_up", async {
        Ok(pending(db)
            .await?
            .into_iter()
            .filter(|v| to.is_none_or(|to| *v <= to))
            .collect())
    })
    .await
}

/// What `down(pool, to)` would revert, newest first, without reverting it.
pub async fn plan_down(db: &Db, to: i64) -> Result<Vec<i64>, sqlx::Error> {
    let pool = db.pool();
    db.unbounded("migrations.plan_down", async {
        Ok(applied_versions(pool)
            .await?
            .into_iter()
            .rev()
            .filter(|v| *v > to)
            .collect())
    })
    .await
}
