//! Hostile and unlucky input: each case gets a clear 4xx, writes nothing, and the server stays up.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{error_code, photo, spawn_app, spawn_app_with, TestApp};

async fn rows(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "select (select count(*) from photo) + (select count(*) from face) \
              + (select count(*) from identity) + (select count(*) from identity_embedding)",
    )
    .fetch_one(&app.db)
    .await
    .expect("count")
}

fn multipart(fields: &[(&str, Vec<u8>)]) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in fields {
        form = form.part(
            name.to_string(),
            reqwest::multipart::Part::bytes(value.clone()).file_name("x.jpg"),
        );
    }
    form
}

#[sqlx::test]
async fn bad_input_to_every_upload_route_gets_a_clear_4xx_and_writes_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let jpg = photo("obama.jpg");
    let long_id = "x".repeat(10 * 1024);
    let routes: [(&str, reqwest::Method, &str); 4] = [
        ("index", reqwest::Method::POST, "/api/v2/index"),
        ("search", reqwest::Method::POST, "/api/v2/search"),
        ("enroll", reqwest::Method::PUT, "/api/v2/identities/someone"),
        (
            "verify",
            reqwest::Method::POST,
            "/api/v2/identities/someone/verify",
        ),
    ];
    // (case, fields, acceptable statuses)
    type Case<'a> = (&'a str, Vec<(&'a str, Vec<u8>)>, &'a [u16]);
    let cases: Vec<Case> = vec![
        ("empty form", vec![], &[400, 404, 422]),
        (
            "zero-byte file",
            vec![
                ("session_id", b"s".to_vec()),
                ("photo_id", b"p".to_vec()),
                ("file", vec![]),
            ],
            &[404, 422],
        ),
        (
            "text as jpeg",
            vec![
                ("session_id", b"s".to_vec()),
                ("photo_id", b"p".to_vec()),
                ("file", b"plain text".to_vec()),
            ],
            &[404, 422],
        ),
        (
            "truncated jpeg",
            vec![
                ("session_id", b"s".to_vec()),
                ("photo_id", b"p".to_vec()),
                ("file", jpg[..jpg.len() / 4].to_vec()),
            ],
            &[404, 422],
        ),
        (
            "10 KB id",
            vec![
                ("session_id", long_id.as_bytes().to_vec()),
                ("photo_id", b"p".to_vec()),
                ("file", jpg.clone()),
            ],
            &[404, 422],
        ),
        (
            "non-UTF-8 id",
            vec![
                ("session_id", vec![0xff, 0xfe, 0x41]),
                ("photo_id", b"p".to_vec()),
                ("file", jpg.clone()),
            ],
            &[404, 422],
        ),
        (
            "shell id",
            vec![
                ("session_id", b"$(reboot);`id`".to_vec()),
                ("photo_id", b"p".to_vec()),
                ("file", jpg.clone()),
            ],
            &[404, 422],
        ),
        (
            "duplicate field",
            vec![
                ("session_id", b"s".to_vec()),
                ("session_id", b"t".to_vec()),
                ("photo_id", b"p".to_vec()),
                ("file", jpg.clone()),
            ],
            &[400, 404],
        ),
    ];
    let mut tried = 0;
    for (route, method, path) in &routes {
        for (case, fields, allowed) in &cases {
            let resp = app
                .client
                .request(method.clone(), app.url(path))
                .header("X-API-Key", &app.key)
                .multipart(multipart(fields))
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            assert!(
                allowed.contains(&status),
                "{route} / {case}: status {status}"
            );
            let code = error_code(resp).await;
            assert!(
                !code.is_empty() && code != "internal",
                "{route} / {case}: {code}"
            );
            tried += 1;
        }
        let resp = app
            .client
            .request(method.clone(), app.url(path))
            .header("X-API-Key", &app.key)
            .header("content-type", "image/jpeg")
            .body(jpg.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{route}");
        let resp = app
            .client
            .request(method.clone(), app.url(path))
            .header("X-API-Key", &app.key)
            .json(&serde_json::json!({"session_id": "s", "photo_id": "p", "file": "not base64!!", "image_b64": "%%%"}))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{route}");
        assert_eq!(error_code(resp).await, "invalid_field");
        tried += 2;
    }
    assert_eq!(tried, 40);
    assert_eq!(rows(&app).await, 0, "nothing was written");
    assert!(app
        .photo_store()
        .list(&app.session_prefix("s"))
        .await
        .expect("list")
        .is_empty());
    assert_eq!(app.get("/api/v2/health").await.status(), StatusCode::OK);
}

#[sqlx::test]
async fn a_30_mb_upload_is_refused_with_413_before_its_body_is_read(pool: PgPool) {
    let app = spawn_app(pool).await;
    let body = vec![b'x'; 30 << 20];
    let resp = app
        .client
        .post(app.url("/api/v2/index"))
        .header("X-API-Key", &app.key)
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body(body)
        .send()
        .await;
    // The server may answer before the client finished sending and close the connection.
    match resp {
        Ok(resp) => {
            assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(error_code(resp).await, "payload_too_large");
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    assert_eq!(app.get("/api/v2/health").await.status(), StatusCode::OK);
}

#[sqlx::test]
async fn presigned_urls_expire_and_open_only_their_own_object(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        HashMap::from([("S3_PRESIGN_EXPIRY_SECS", "2".to_owned())]),
    )
    .await;
    app.index("party", "o1", "obama.jpg").await;
    app.index("party", "o2", "obama2.jpg").await;
    let resp = app.search("party", "obama3.jpg").await;
    let body: serde_json::Value = resp.json().await.expect("json");
    let urls: Vec<String> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["url"].as_str().expect("url").to_owned())
        .collect();
    assert_eq!(urls.len(), 2);
    assert_eq!(reqwest::get(&urls[0]).await.expect("get").status(), 200);

    // The signature of one object does not open another.
    let key_of = |u: &str| u.split('?').next().unwrap_or_default().to_owned();
    let forged = urls[0].replacen(&key_of(&urls[0]), &key_of(&urls[1]), 1);
    assert_eq!(reqwest::get(&forged).await.expect("get").status(), 403);

    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        reqwest::get(&urls[0]).await.expect("get").status(),
        403,
        "expired"
    );
}

#[sqlx::test]
async fn a_search_during_re_indexing_sees_old_or_new_faces_never_none(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        HashMap::from([("RATE_LIMIT_BURST", "200".to_owned())]),
    )
    .await;
    app.index("party", "p1", "obama.jpg").await;
    let writer = async {
        for i in 0..6 {
            let file = if i % 2 == 0 {
                "obama2.jpg"
            } else {
                "obama.jpg"
            };
            app.index("party", "p1", file).await;
        }
    };
    let reader = async {
        let mut seen = Vec::new();
        for _ in 0..12 {
            seen.push(app.found("party", "obama3.jpg").await);
        }
        seen
    };
    let ((), seen) = tokio::join!(writer, reader);
    for found in seen {
        assert_eq!(found, ["p1"], "a search saw a half-written photo");
    }
}
