//! Redis: state that every replica must share (rate-limit counters). Redis is optional at run
//! time: callers fall back to in-process state when it is down, and /ready says `degraded`.

use std::time::{Duration, Instant};

use deadpool_redis::{Config as PoolConfig, Pool, Runtime, Timeouts};
use secrecy::ExposeSecret;

use crate::config::RedisConfig;
use crate::metrics;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis timed out after {0:?}")]
    Timeout(Duration),
    #[error("redis pool: {0}")]
    Pool(String),
    #[error("redis: {0}")]
    Redis(#[from] deadpool_redis::redis::RedisError),
}

#[derive(Clone)]
pub struct Cache {
    pool: Pool,
    prefix: String,
    timeout: Duration,
}

impl Cache {
    /// Builds the pool; no connection is made until first use.
    pub fn new(config: &RedisConfig) -> Result<Self, CacheError> {
        let mut pool_config = PoolConfig::from_url(config.url.expose_secret());
        let mut deadpool = deadpool_redis::PoolConfig::new(16);
        deadpool.timeouts = Timeouts {
            wait: Some(config.timeout),
            create: Some(config.timeout),
            recycle: Some(config.timeout),
        };
        pool_config.pool = Some(deadpool);
        let pool = pool_config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| CacheError::Pool(e.to_string()))?;
        Ok(Self {
            pool,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
        })
    }

    /// Namespaced key: replicas of one deployment share keys, two deployments (or two test
    /// runs) sharing a Redis do not.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for p in parts {
            key.push(':');
            key.push_str(p);
        }
        key
    }

    /// Runs one command with the pool's timeout and a timing metric.
    pub async fn run<T: deadpool_redis::redis::FromRedisValue>(
        &self,
        operation: &'static str,
        cmd: &deadpool_redis::redis::Cmd,
    ) -> Result<T, CacheError> {
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, async {
            let mut conn = self
                .pool
                .get()
                .await
                .map_err(|e| CacheError::Pool(e.to_string()))?;
            Ok::<T, CacheError>(cmd.query_async(&mut conn).await?)
        })
        .await
        .unwrap_or(Err(CacheError::Timeout(self.timeout)));
        metrics::record_redis_call(operation, start.elapsed(), result.is_ok());
        result
    }

    /// Runs a Lua script atomically.
    pub async fn eval<T: deadpool_redis::redis::FromRedisValue>(
        &self,
        operation: &'static str,
        script: &redis::Script,
        keys: &[&str],
        args: &[i64],
    ) -> Result<T, CacheError> {
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, async {
            let mut conn = self
                .pool
                .get()
                .await
                .map_err(|e| CacheError::Pool(e.to_string()))?;
            let mut invocation = script.prepare_invoke();
            for k in keys {
                invocation.key(*k);
            }
            for a in args {
                invocation.arg(*a);
            }
            Ok::<T, CacheError>(invocation.invoke_async(&mut conn).await?)
        })
        .await
        .unwrap_or(Err(CacheError::Timeout(self.timeout)));
        metrics::record_redis_call(operation, start.elapsed(), result.is_ok());
        result
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        let pong: String = self
            .run("ping", &deadpool_redis::redis::cmd("PING"))
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(CacheError::Pool(format!("unexpected PING reply {pong:?}")))
        }
    }
}
