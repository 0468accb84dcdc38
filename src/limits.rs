//! Rate limits. Per API key: shared by all replicas through Redis (GCRA in a Lua script, using
//! Redis's clock), with an in-process governor limiter taking over whenever Redis is down, so
//! a Redis outage never means "unlimited". Per client address: failed authentications.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics::counter;
use redis::Script;

use crate::config::HttpConfig;
use crate::error::{ApiError, Code};
use crate::metrics::{RATE_LIMITED, RATE_LIMIT_FALLBACK};
use crate::store::cache::Cache;

/// GCRA: KEYS[1] holds the theoretical arrival time (ms). ARGV: emission interval (ms), burst.
/// Returns 0 when allowed, else the milliseconds to wait.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1000)
return 0
"#;

pub struct RateLimits {
    cache: Cache,
    script: Script,
    interval_ms: i64,
    burst: i64,
    local: DefaultKeyedRateLimiter<String>,
    auth_failures: DefaultKeyedRateLimiter<IpAddr>,
    last_fallback_log: AtomicU64,
}

impl RateLimits {
    pub fn new(config: &HttpConfig, cache: Cache) -> Self {
        let per_second = NonZeroU32::new(config.rate_limit_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(NonZeroU32::MIN);
        let failures = NonZeroU32::new(config.auth_failures_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            cache,
            script: Script::new(GCRA),
            interval_ms: (1000 / i64::from(per_second.get())).max(1),
            burst: i64::from(burst.get()),
            local: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            auth_failures: RateLimiter::keyed(Quota::per_minute(failures).allow_burst(failures)),
            last_fallback_log: AtomicU64::new(0),
        }
    }

    /// One request by the key `key_id`: Ok, or 429 `rate_limited` with Retry-After.
    pub async fn check_key(&self, key_id: &str) -> Result<(), ApiError> {
        let key = self.cache.key(&["ratelimit", key_id]);
        let shared: Result<i64, _> = self
            .cache
            .eval(
                "rate_limit",
                &self.script,
                &[&key],
                &[self.interval_ms, self.burst],
            )
            .await;
        let wait = match shared {
            Ok(0) => None,
            Ok(ms) => Some(Duration::from_millis(ms.max(1) as u64)),
            Err(e) => {
                counter!(RATE_LIMIT_FALLBACK).increment(1);
                self.log_fallback(&e);
                self.local
                    .check_key(&key_id.to_owned())
                    .err()
                    .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
            }
        };
        match wait {
            None => Ok(()),
            Some(wait) => {
                counter!(RATE_LIMITED, "limit" => "api_key").increment(1);
                Err(limited(wait, "too many requests for this API key"))
            }
        }
    }

    /// Counts a failed authentication from `ip`; Err(429) once the address is over its quota.
    pub fn record_auth_failure(&self, ip: IpAddr) -> Result<(), ApiError> {
        match self.auth_failures.check_key(&ip) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                counter!(RATE_LIMITED, "limit" => "auth_failures").increment(1);
                Err(limited(
                    not_until.wait_time_from(DefaultClock::default().now()),
                    "too many failed authentication attempts from this address",
                ))
            }
        }
    }

    /// At most one warning a minute: an outage must not flood the logs.
    fn log_fallback(&self, error: &dyn std::fmt::Display) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_fallback_log.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .last_fallback_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %error, "Redis unavailable: rate limits are per replica until it is back");
        }
    }
}

fn limited(wait: Duration, message: &str) -> ApiError {
    ApiError::new(Code::RateLimited, message).with_retry_after(wait.as_secs().max(1))
}
