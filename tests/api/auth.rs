use std::collections::HashMap;

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{error_code, photo, spawn_app, spawn_app_with};

#[sqlx::test]
async fn routes_need_a_valid_key(pool: PgPool) {
    let app = spawn_app(pool).await;
    let resp = app.get("/api/v2/sessions/party").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(resp).await, "missing_api_key");

    let resp = app
        .get_with_key("/api/v2/sessions/party", "wrong-key-0123456789")
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(resp).await, "invalid_api_key");

    // Health, ready and metrics stay open for probes and scrapers.
    for path in ["/api/v2/health", "/api/v2/ready", "/api/v2/metrics"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
}

#[sqlx::test]
async fn another_tenant_sees_nothing_of_ours(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.index("party", "p1", "obama.jpg").await;
    let other = &app.other_key;

    // Exactly like ids that do not exist.
    let resp = app.get_with_key("/api/v2/sessions/party", other).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "session_not_found");
    let resp = app
        .get_with_key("/api/v2/photos/p1?session_id=party", other)
        .await;
    assert_eq!(error_code(resp).await, "photo_not_found");
    let resp = app
        .post_form(
            "/api/v2/search",
            other,
            &[("session_id", "party")],
            Some(photo("obama2.jpg")),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "session_not_found");
    let resp = app
        .delete_with_key("/api/v2/photos/p1?session_id=party", other)
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = app.delete_with_key("/api/v2/sessions/party", other).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // The same names in B's own space are separate: indexing there leaves A untouched.
    let resp = app
        .post_form(
            "/api/v2/index",
            other,
            &[("session_id", "party"), ("photo_id", "p1")],
            Some(photo("biden.jpg")),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(app.found("party", "obama2.jpg").await, ["p1"]);
    let tenants: Vec<String> =
        sqlx::query_scalar("select tenant_id from photo where photo_id = 'p1' order by 1")
            .fetch_all(&app.db)
            .await
            .expect("rows");
    assert_eq!(tenants, ["tenant-a", "tenant-b"]);
}

#[sqlx::test]
async fn database_keys_work_until_revoked(pool: PgPool) {
    let app = spawn_app(pool).await;
    let key = facepass::domain::generate_key();
    let tenant = facepass::domain::TenantId::parse("tenant-c").expect("id");
    let id = facepass::store::keys::create(
        &facepass::store::db::Db::new(app.db.clone(), &app.config.database),
        &tenant,
        &facepass::domain::hash_key(&key),
        &key[..11],
        Some("test"),
    )
    .await
    .expect("create");
    let stored: Vec<u8> = sqlx::query_scalar("select key_hash from api_key")
        .fetch_one(&app.db)
        .await
        .expect("hash");
    assert_ne!(stored, key.as_bytes(), "only the hash is stored");

    let resp = app.get_with_key("/api/v2/sessions/x", &key).await;
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "the key authenticates"
    );

    assert!(facepass::store::keys::revoke(
        &facepass::store::db::Db::new(app.db.clone(), &app.config.database),
        id
    )
    .await
    .expect("revoke"));
    let resp = app.get_with_key("/api/v2/sessions/x", &key).await;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "revocation is immediate"
    );
}

#[sqlx::test]
async fn a_key_over_its_rate_gets_429_with_retry_after(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        HashMap::from([
            ("RATE_LIMIT_PER_SECOND", "1".to_owned()),
            ("RATE_LIMIT_BURST", "3".to_owned()),
        ]),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let resp = app.get_with_key("/api/v2/sessions/x", &app.key).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key("retry-after"));
            assert_eq!(error_code(resp).await, "rate_limited");
        }
    }
    assert_eq!(&statuses[..3], [404, 404, 404], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    // Another key has its own budget.
    let resp = app.get_with_key("/api/v2/sessions/x", &app.other_key).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn repeated_invalid_keys_from_one_address_get_429(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        HashMap::from([("AUTH_FAILURES_PER_MINUTE", "5".to_owned())]),
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let resp = app
            .get_with_key("/api/v2/sessions/x", &format!("guess-{i}-0123456789abcdef"))
            .await;
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(&statuses[..5], [401; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], [429; 3], "{statuses:?}");
}
