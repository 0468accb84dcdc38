use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{error_code, spawn_app};

#[sqlx::test]
async fn health_answers_200_with_name_and_version(pool: PgPool) {
    let app = spawn_app(pool).await;
    let resp = app.get("/api/v2/health").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(
        resp.headers()
            .get("x-content-type-options")
            .map(|v| v.as_bytes()),
        Some(&b"nosniff"[..])
    );
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[sqlx::test]
async fn ready_answers_200_when_every_component_is_up(pool: PgPool) {
    let app = spawn_app(pool).await;
    let resp = app.get("/api/v2/ready").await;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    for component in ["database", "storage", "redis", "models"] {
        assert_eq!(
            body["components"][component]["status"], "up",
            "{component}: {body}"
        );
    }
    assert!(
        body["components"]["database"]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("pgvector 0.8")),
        "{body}"
    );
}

#[sqlx::test(migrations = false)]
async fn ready_answers_503_naming_the_database_when_migrations_are_pending(pool: PgPool) {
    let app = spawn_app(pool).await;
    let resp = app.get("/api/v2/ready").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["components"]["database"]["status"], "down");
    assert!(
        body["components"]["database"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("migrations not applied")),
        "{body}"
    );
    assert_eq!(body["components"]["storage"]["status"], "up");
}

#[sqlx::test]
async fn unknown_route_is_a_json_404(pool: PgPool) {
    let app = spawn_app(pool).await;
    for path in ["/api/v2/nope", "/", "/api/v3/health"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_code(resp).await, "not_found", "{path}");
    }
}

#[sqlx::test]
async fn wrong_method_is_a_json_405_with_allow(pool: PgPool) {
    let app = spawn_app(pool).await;
    let resp = app
        .client
        .post(app.url("/api/v2/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        resp.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET")
    );
    assert_eq!(error_code(resp).await, "method_not_allowed");
}

#[sqlx::test]
async fn docs_and_openapi_document_are_served(pool: PgPool) {
    let app = spawn_app(pool).await;
    let resp = app.get("/docs/").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.expect("text");
    assert!(html.contains("swagger"), "{html}");
    let spec: serde_json::Value = app
        .get("/api/v2/openapi.json")
        .await
        .json()
        .await
        .expect("spec parses");
    assert!(spec["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    for path in ["/api/v2/health", "/api/v2/ready", "/api/v2/metrics"] {
        assert!(spec["paths"][path].is_object(), "{path} missing");
    }
}

#[sqlx::test]
async fn metrics_are_prometheus_text_and_count_requests(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.get("/api/v2/health").await;
    let resp = app.get("/api/v2/metrics").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("text");
    assert!(
        text.lines()
            .any(|l| l.starts_with("facepass_http_requests_total{")
                && l.contains("route=\"/api/v2/health\"")),
        "{text}"
    );
}
