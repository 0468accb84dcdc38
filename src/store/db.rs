//! The PostgreSQL pool and its health check.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseConfig;
use crate::metrics;

/// Builds the pool without connecting: the server starts (and /ready reports the database as
/// down) even when PostgreSQL is not up yet, and reconnects by itself once it is.
pub fn connect_lazy(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(config.url())?
        .application_name("facepass")
        // A statement that runs longer than the request deadline is of no use to anyone.
        .options([
            (
                "statement_timeout",
                format!("{}", config.timeout.as_millis().max(1) * 6),
            ),
            // JIT compiles the vector scans for ~80 ms and saves nothing (docs/BENCHMARKS.md).
            ("jit", "off".to_owned()),
        ]);
    Ok(pool_options(config).connect_lazy_with(options))
}

pub fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.timeout)
        // Ask the server before handing out a connection that sat idle: after a PostgreSQL
        // restart the pool drops dead connections instead of failing the next request.
        .test_before_acquire(true)
        .idle_timeout(Some(Duration::from_secs(300)))
}

/// What /ready reports about the database.
#[derive(Debug)]
pub struct DbHealth {
    pub vector_extension: Option<String>,
    pub pending_migrations: Vec<i64>,
}

/// Runs `f`, records its duration under `operation`, and fails after `timeout`.
pub async fn timed<T, F>(operation: &'static str, timeout: Duration, f: F) -> Result<T, sqlx::Error>
where
    F: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let start = Instant::now();
    let result = match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    };
    metrics::record_db_call(operation, start.elapsed(), result.is_ok());
    result
}

pub async fn health(pool: &PgPool, timeout: Duration) -> Result<DbHealth, sqlx::Error> {
    timed("health", timeout, async {
        let vector_extension: Option<String> =
            sqlx::query_scalar("select extversion from pg_extension where extname = 'vector'")
                .fetch_optional(pool)
                .await?;
        let pending_migrations = super::migrations::pending(pool).await?;
        Ok(DbHealth {
            vector_extension,
            pending_migrations,
        })
    })
    .await
}
