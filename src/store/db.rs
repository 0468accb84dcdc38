//! The PostgreSQL pool and the timeout-and-metric wrapper every call goes through.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseConfig;
use crate::metrics;

/// The PostgreSQL pool and the deadlines its calls run under: what every store function of the
/// request path takes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    /// DB_TIMEOUT_SECS: acquiring a connection, and each call of the request path.
    timeout: Duration,
    statement_timeout: Duration,
}

impl Db {
    pub fn new(pool: PgPool, config: &DatabaseConfig) -> Self {
        Self {
            pool,
            timeout: config.timeout,
            statement_timeout: config.statement_timeout(),
        }
    }

    /// Builds the pool without connecting: the server starts (and /ready reports the database
    /// as down) even when PostgreSQL is not up yet, and reconnects by itself once it is.
    pub fn connect_lazy(config: &DatabaseConfig) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(config.url())?
            .application_name("facepass")
            .options([
                (
                    "statement_timeout",
                    format!("{}", config.statement_timeout().as_millis().max(1)),
                ),
                // JIT compiles the vector scans for ~80 ms and saves nothing
                // (docs/BENCHMARKS.md).
                ("jit", "off".to_owned()),
            ]);
        Ok(Self::new(
            pool_options(config).connect_lazy_with(options),
            config,
        ))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One call of the request path: timed under `operation`, failed after DB_TIMEOUT_SECS.
    pub async fn call<T, F>(&self, operation: &'static str, f: F) -> Result<T, sqlx::Error>
    where
        F: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        timed(operation, self.timeout, f).await
    }

    /// A call of a bulk or DBA command (`facepass gc`, `reembed`, `db`, `migrate`) that reads
    /// or writes whole tables: timed under `operation`, with no deadline of its own. The
    /// server's pool still bounds each statement (`connect_lazy`); the DBA commands' pool
    /// (`cli::setup::connect`) does not, since an index build may take minutes.
    pub async fn unbounded<T, E, F>(&self, operation: &'static str, f: F) -> Result<T, E>
    where
        F: std::future::Future<Output = Result<T, E>>,
        E: From<sqlx::Error>,
    {
        timed(operation, Duration::MAX, f).await
    }

    /// A whole transaction (several statements, e.g. a photo with all its faces): timed under
    /// `operation`, failed after the statement timeout, the longest any statement may run.
    pub async fn transaction<T, E, F>(&self, operation: &'static str, f: F) -> Result<T, E>
    where
        F: std::future::Future<Output = Result<T, E>>,
        E: From<sqlx::Error>,
    {
        timed(operation, self.statement_timeout, f).await
    }
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

/// Runs `f`, records its duration under `operation`, and fails after `timeout` (as a pool
/// time-out: the caller gets `database_unavailable`).
pub async fn timed<T, E, F>(operation: &'static str, timeout: Duration, f: F) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: From<sqlx::Error>,
{
    let start = Instant::now();
    let result = match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(E::from(sqlx::Error::PoolTimedOut)),
    };
    metrics::record_db_call(operation, start.elapsed(), result.is_ok());
    result
}
