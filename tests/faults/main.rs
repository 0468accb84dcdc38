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

#[sqlx::test]
async fn requests_get_503_database_unavailable_while_postgres_is_down(pool: PgPool) {
    let app = helpers::spawn_app_with(
        pool,
        std::collections::HashMap::from([("DB_TIMEOUT_SECS", "1".to_owned())]),
    )
    .await;
    app.index("party", "p1", "obama.jpg").await;
    {
        let _down = Stopped::new("postgres");
        let resp = app.search("party", "obama3.jpg").await;
        assert_eq!(resp.status(), 503);
        assert_eq!(helpers::error_code(resp).await, "database_unavailable");
    }
    wait_ready(&app, "ready").await;
    assert_eq!(app.found("party", "obama3.jpg").await, ["p1"]);
}

#[sqlx::test]
async fn indexing_gets_503_storage_unavailable_and_writes_no_rows_while_s3_is_down(pool: PgPool) {
    let app = helpers::spawn_app_with(
        pool,
        std::collections::HashMap::from([("S3_TIMEOUT_SECS", "2".to_owned())]),
    )
    .await;
    wait_ready(&app, "ready").await;
    {
        let _down = Stopped::new("s3");
        let resp = app
            .post_form(
                "/api/v2/index",
                &app.key,
                &[("session_id", "party"), ("photo_id", "p1")],
                Some(helpers::photo("obama.jpg")),
            )
            .await;
        assert_eq!(resp.status(), 503);
        assert_eq!(helpers::error_code(resp).await, "storage_unavailable");
        let rows: i64 =
            sqlx::query_scalar("select (select count(*) from photo) + (select count(*) from face)")
                .fetch_one(&app.db)
                .await
                .expect("count");
        assert_eq!(rows, 0, "no rows without their photo");
    }
    wait_ready(&app, "ready").await;
    app.index("party", "p1", "obama.jpg").await;
}

#[sqlx::test]
async fn rate_limits_fall_back_to_in_process_while_redis_is_down(pool: PgPool) {
    let app = helpers::spawn_app_with(
        pool,
        std::collections::HashMap::from([
            ("RATE_LIMIT_PER_SECOND", "1".to_owned()),
            ("RATE_LIMIT_BURST", "2".to_owned()),
            ("REDIS_TIMEOUT_SECS", "1".to_owned()),
        ]),
    )
    .await;
    let _down = Stopped::new("redis");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            app.get_with_key("/api/v2/sessions/x", &app.key)
                .await
                .status()
                .as_u16(),
        );
    }
    // Never silently unlimited: the in-process limiter still refuses the excess.
    assert_eq!(&statuses[..2], [404, 404], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let metrics = app
        .get("/api/v2/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics.contains("facepass_rate_limit_fallback_total"),
        "{metrics}"
    );
}
