//! Fault tests: each stops one real service (scripts/services.sh stop-one) while a server runs,
//! and checks that the server notices and recovers by itself once the service is back. They
//! share the machine's services, so scripts/test.sh runs them one at a time after the API tests.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::process::Command;
use std::time::Duration;

use sqlx::PgPool;

use helpers::{spawn_app, TestApp};

/// Stops a service for the life of the guard; starts it again on drop, even if the test fails.
struct Stopped(&'static str);

fn services(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
    let status = Command::new(script)
        .args(args)
        .status()
        .expect("services.sh runs");
    assert!(status.success(), "services.sh {args:?} failed");
}

impl Stopped {
    fn new(service: &'static str) -> Self {
        services(&["stop-one", service]);
        Self(service)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        services(&["start-one", self.0]);
    }
}

/// Polls /ready until its status is `want` (bounded: 30 tries, 0.5 s apart).
async fn wait_ready(app: &TestApp, want: &str) -> (u16, serde_json::Value) {
    let mut last = (0, serde_json::Value::Null);
    for _ in 0..30 {
        let resp = app.get("/api/v2/ready").await;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.expect("json");
        if body["status"] == want {
            return (status, body);
        }
        last = (status, body);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("ready never became {want}; last: {} {}", last.0, last.1);
}

#[sqlx::test]
async fn ready_names_the_database_when_postgres_stops_and_recovers_without_restart(pool: PgPool) {
    let app = spawn_app(pool).await;
    wait_ready(&app, "ready").await;
    {
        let _down = Stopped::new("postgres");
        let (status, body) = wait_ready(&app, "not_ready").await;
        assert_eq!(status, 503);
        assert_eq!(body["components"]["database"]["status"], "down", "{body}");
        assert_eq!(body["components"]["storage"]["status"], "up", "{body}");
        // Liveness does not depend on the database.
        assert_eq!(app.get("/api/v2/health").await.status(), 200);
    }
    let (status, _) = wait_ready(&app, "ready").await;
    assert_eq!(status, 200);
}

#[sqlx::test]
async fn ready_names_storage_when_s3_stops_and_recovers_without_restart(pool: PgPool) {
    let app = spawn_app(pool).await;
    wait_ready(&app, "ready").await;
    {
        let _down = Stopped::new("s3");
        let (status, body) = wait_ready(&app, "not_ready").await;
        assert_eq!(status, 503);
        assert_eq!(body["components"]["storage"]["status"], "down", "{body}");
        assert_eq!(body["components"]["database"]["status"], "up", "{body}");
    }
    let (status, _) = wait_ready(&app, "ready").await;
    assert_eq!(status, 200);
}

#[sqlx::test]
async fn ready_is_degraded_not_down_when_redis_stops(pool: PgPool) {
    let app = spawn_app(pool).await;
    wait_ready(&app, "ready").await;
    {
        let _down = Stopped::new("redis");
        let (status, body) = wait_ready(&app, "degraded").await;
        // Redis only backs shared rate limits: without it each replica limits on its own, so
        // a load balancer should keep sending traffic.
        assert_eq!(status, 200);
        assert_eq!(body["components"]["redis"]["status"], "down", "{body}");
    }
    let (status, _) = wait_ready(&app, "ready").await;
    assert_eq!(status, 200);
}
