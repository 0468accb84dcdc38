use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{error_code, spawn_app};

#[sqlx::test]
async fn a_session_reports_its_photo_and_face_counts(pool: PgPool) {
    let app = spawn_app(pool).await;
    let group = app.index("party", "p1", "gdp.jpg").await;
    app.index("party", "p2", "obama.jpg").await;
    let group_faces = group["faces"].as_array().map(Vec::len).unwrap_or_default();
    let resp = app.get_with_key("/api/v2/sessions/party", &app.key).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["photo_count"], 2);
    assert_eq!(body["face_count"], group_faces as i64 + 1);

    let resp = app.get_with_key("/api/v2/sessions/nope", &app.key).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "session_not_found");
}

#[sqlx::test]
async fn deleting_a_session_removes_its_rows_and_objects(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.index("party", "p1", "gdp.jpg").await;
    app.index("party", "p2", "obama.jpg").await;
    app.index("keep", "p3", "obama2.jpg").await;
    let store = app.photo_store();
    assert_eq!(
        store
            .list(&app.session_prefix("party"))
            .await
            .expect("list")
            .len(),
        2
    );

    let resp = app
        .delete_with_key("/api/v2/sessions/party", &app.key)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let (photos, faces, sessions): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from photo), (select count(*) from face), (select count(*) from session)",
    )
    .fetch_one(&app.db)
    .await
    .expect("counts");
    assert_eq!(
        (photos, faces, sessions),
        (1, 1, 1),
        "only the other session is left"
    );
    assert!(store
        .list(&app.session_prefix("party"))
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store
            .list(&app.session_prefix("keep"))
            .await
            .expect("list")
            .len(),
        1
    );

    let resp = app
        .delete_with_key("/api/v2/sessions/party", &app.key)
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn a_photo_can_be_read_and_deleted(pool: PgPool) {
    let app = spawn_app(pool).await;
    let indexed = app.index("party", "p1", "gdp.jpg").await;
    let resp = app
        .get_with_key("/api/v2/photos/p1?session_id=party", &app.key)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(
        body["faces"].as_array().map(Vec::len),
        indexed["faces"].as_array().map(Vec::len)
    );
    assert_eq!(body["content_type"], "image/jpeg");
    assert_eq!(
        body["faces"][0]["landmarks"].as_array().map(Vec::len),
        Some(5)
    );
    let key: String = sqlx::query_scalar("select s3_key from photo")
        .fetch_one(&app.db)
        .await
        .expect("key");

    let resp = app
        .delete_with_key("/api/v2/photos/p1?session_id=party", &app.key)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let faces: i64 = sqlx::query_scalar("select count(*) from face")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(faces, 0);
    assert!(!app.photo_store().exists(&key).await.expect("head"));

    let resp = app
        .get_with_key("/api/v2/photos/p1?session_id=party", &app.key)
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "photo_not_found");
    let resp = app.get_with_key("/api/v2/photos/p1", &app.key).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(resp).await, "bad_request");
}
