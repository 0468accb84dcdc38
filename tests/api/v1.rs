//! /api/v1: the earlier face-pipeline's routes, as its clients and its deployment plan call them.

use std::collections::HashMap;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{photo, spawn_app, spawn_app_with, TestApp};

/// Three different photos of Obama.
const ENROLL: [&str; 3] = ["obama.jpg", "obama2.jpg", "32bit.png"];

fn b64(file: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(photo(file))
}

/// POSTs a JSON body with `key` and any extra headers; returns the status and the JSON body,
/// after checking that the body is JSON.
async fn post(
    app: &TestApp,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, Value) {
    let mut req = app.client.post(app.url(path)).json(&body);
    if let Some(key) = key {
        req = req.header("X-API-Key", key);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    read(req.send().await.expect("request")).await
}

async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        ct.starts_with("application/json"),
        "{status}: content-type {ct}"
    );
    (status, resp.json().await.expect("json"))
}

/// The v1 error shape: `detail` and `code` hold the same stable code, `message` explains.
#[track_caller]
fn assert_v1_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["detail"], want_code, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn hit_photo_ids(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits: {body}"))
        .iter()
        .map(|h| h["photo_id"].as_str().expect("photo_id").to_owned())
        .collect()
}

/// The deployment plan's smoke steps, in its order and with its bodies, plus the `X-API-Key`
/// header (the production variant also sends `X-Tenant-ID`, as here). The tenant has photos
/// indexed beforehand, as a partner's tenant does, so that legacy search has something to find.
#[sqlx::test]
async fn the_deployment_plans_smoke_steps_pass(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.index("event-1", "obama-at-the-podium", "obama.jpg")
        .await;
    app.index("event-2", "biden-on-stage", "biden.jpg").await;
    let headers = [("X-Tenant-ID", "tenant-a")];
    let key = Some(app.key.as_str());

    // 1. Health.
    let resp = app
        .client
        .get(app.url("/api/v1/health"))
        .header("X-API-Key", &app.key)
        .header("X-Tenant-ID", "tenant-a")
        .send()
        .await
        .expect("request");
    let (status, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], "facepass");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    // 2. Enrollment with three images.
    let (status, body) = post(
        &app,
        "/api/v1/enroll_identity",
        key,
        &headers,
        json!({"tenant_id": "tenant-a", "identity_id": "smoke-obama",
               "images_b64": ENROLL.iter().map(|f| b64(f)).collect::<Vec<_>>()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["identity"]["tenant_id"], "tenant-a");
    assert_eq!(body["identity"]["identity_id"], "smoke-obama");
    assert_eq!(body["identity"]["images"], 3);
    assert_eq!(body["vector_dim"], 512);

    // 3. Enrollment with one image: refused.
    let (status, body) = post(
        &app,
        "/api/v1/enroll_identity",
        key,
        &headers,
        json!({"tenant_id": "tenant-a", "identity_id": "smoke-one", "images_b64": [b64("obama.jpg")]}),
    )
    .await;
    assert_v1_error(status, &body, 422, "not_enough_images");

    // 4. Verify the same person.
    let verify = |identity: &str, file: &str| json!({"tenant_id": "tenant-a", "identity_id": identity, "image_b64": b64(file)});
    let (status, body) = post(
        &app,
        "/api/v1/verify",
        key,
        &headers,
        verify("smoke-obama", "obama3.jpg"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verified"], true, "{body}");
    assert_eq!(body["tenant_id"], "tenant-a");
    assert_eq!(body["identity_id"], "smoke-obama");
    assert!(
        f64_of(&body["similarity"]) >= f64_of(&body["hi_threshold"]),
        "{body}"
    );
    assert_eq!(body["probe_face"]["bbox"].as_array().map(Vec::len), Some(4));
    let results = body["results"].as_array().expect("results");
    assert_eq!(body["count"], 3, "one result per enrollment image: {body}");
    assert_eq!(results.len(), 3);
    let mut images: Vec<i64> = results
        .iter()
        .map(|r| r["image"].as_i64().expect("image"))
        .collect();
    let scores: Vec<f64> = results.iter().map(|r| f64_of(&r["score"])).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {body}"
    );
    assert!(scores[0] > 0.3, "{body}");
    images.sort();
    assert_eq!(images, [1, 2, 3]);
    let sha = &results[0]["image_sha256"];
    assert_eq!(sha.as_str().map(str::len), Some(64), "{body}");

    // 5. Verify another person.
    let (status, body) = post(
        &app,
        "/api/v1/verify",
        key,
        &headers,
        verify("smoke-obama", "biden.jpg"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verified"], false, "{body}");
    assert!(
        f64_of(&body["similarity"]) < f64_of(&body["hi_threshold"]),
        "{body}"
    );
    assert_eq!(body["count"], 3, "{body}");
    assert!(
        body["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|r| f64_of(&r["score"]) < f64_of(&body["hi_threshold"])),
        "{body}"
    );

    // 6. Verify an identity that was never enrolled.
    let (status, body) = post(
        &app,
        "/api/v1/verify",
        key,
        &headers,
        verify("smoke-nobody", "obama3.jpg"),
    )
    .await;
    assert_v1_error(status, &body, 404, "identity_not_enrolled");

    // 7. Legacy search.
    let (status, body) = post(
        &app,
        "/api/v1/search",
        key,
        &headers,
        json!({"tenant_id": "tenant-a", "image_b64": b64("obama3.jpg"), "top_k": 5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(hit_photo_ids(&body), ["obama-at-the-podium"], "{body}");
    assert_eq!(body["count"], 1);
    assert_eq!(body["top_k"], 5);
    let hit = &body["hits"][0];
    assert_eq!(hit["session_id"], "event-1");
    assert!(
        f64_of(&hit["score"]) >= f64_of(&body["threshold"]),
        "{body}"
    );
    assert_eq!(hit["bbox"].as_array().map(Vec::len), Some(4));
    assert!(hit["face_id"].is_string(), "{body}");
    assert_eq!(body["query"]["bbox"].as_array().map(Vec::len), Some(4));
    assert!(f64_of(&body["query"]["score"]) > 0.5, "{body}");
    let url = hit["url"].as_str().expect("url");
    let fetched = app.client.get(url).send().await.expect("presigned GET");
    assert_eq!(fetched.status(), 200, "the presigned URL serves the photo");
    assert_eq!(
        fetched.bytes().await.expect("bytes").as_ref(),
        photo("obama.jpg")
    );
}

#[sqlx::test]
async fn v1_search_finds_the_probes_own_photo_first_and_never_another_tenants(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.index("wedding", "the-probe-itself", "obama3.jpg").await;
    app.index("gala", "same-person-elsewhere", "obama.jpg")
        .await;
    app.index("gala", "someone-else", "biden.jpg").await;
    // Tenant B indexes the very same photo.
    let resp = app
        .post_form(
            "/api/v2/index",
            &app.other_key,
            &[("session_id", "wedding"), ("photo_id", "tenant-b-copy")],
            Some(photo("obama3.jpg")),
        )
        .await;
    assert_eq!(resp.status(), 200);

    let search = |key: &str, extra: Value| {
        let mut body =
            json!({"image_b64": format!("data:image/jpeg;base64,{}", b64("obama3.jpg"))});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let key = key.to_owned();
        let app = &app;
        async move { post(app, "/api/v1/search", Some(&key), &[], body).await }
    };

    let (status, body) = search(&app.key, json!({"tenant_id": "tenant-a"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        hit_photo_ids(&body),
        ["the-probe-itself", "same-person-elsewhere"],
        "across sessions, best first, not another person, not tenant B: {body}"
    );
    assert_eq!(body["count"], 2);
    assert_eq!(body["top_k"], 50, "VERIFY_TOP_K's default");
    assert_eq!(body["tenant_id"], "tenant-a");
    assert_eq!(body["hits"][0]["session_id"], "wedding");
    assert_eq!(body["hits"][1]["session_id"], "gala");
    assert!(f64_of(&body["hits"][0]["score"]) > 0.99, "{body}");
    assert!(f64_of(&body["hits"][1]["score"]) < f64_of(&body["hits"][0]["score"]));

    let (_, body) = search(&app.key, json!({"tenant_id": "tenant-a", "top_k": 1})).await;
    assert_eq!(hit_photo_ids(&body), ["the-probe-itself"], "{body}");

    let (_, body) = search(&app.key, json!({"tenant_id": "tenant-a", "threshold": 0.9})).await;
    assert_eq!(hit_photo_ids(&body), ["the-probe-itself"], "{body}");

    let (status, body) = search(&app.other_key, json!({"tenant_id": "tenant-b"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(hit_photo_ids(&body), ["tenant-b-copy"], "{body}");
}

#[sqlx::test]
async fn v1_search_refuses_bad_bodies_with_stable_codes(pool: PgPool) {
    let app = spawn_app(pool).await;
    let probe = b64("obama3.jpg");
    let cases = [
        (
            "not base64",
            json!({"tenant_id": "tenant-a", "image_b64": "this is *not* base64!"}),
            422,
            "invalid_field",
        ),
        (
            "no face",
            json!({"tenant_id": "tenant-a", "image_b64": b64("nofaces_coffee.png")}),
            422,
            "no_face_detected",
        ),
        (
            "top_k 0",
            json!({"tenant_id": "tenant-a", "image_b64": probe, "top_k": 0}),
            422,
            "invalid_field",
        ),
        (
            "top_k 10000",
            json!({"tenant_id": "tenant-a", "image_b64": probe, "top_k": 10000}),
            422,
            "invalid_field",
        ),
        (
            "threshold 1.5",
            json!({"tenant_id": "tenant-a", "image_b64": probe, "threshold": 1.5}),
            422,
            "invalid_field",
        ),
        (
            "missing tenant_id",
            json!({"image_b64": probe}),
            422,
            "missing_field",
        ),
        (
            "missing image_b64",
            json!({"tenant_id": "tenant-a"}),
            422,
            "missing_field",
        ),
        (
            "top_k not a number",
            json!({"tenant_id": "tenant-a", "image_b64": probe, "top_k": "ten"}),
            400,
            "bad_request",
        ),
        (
            "another tenant's id",
            json!({"tenant_id": "tenant-b", "image_b64": probe}),
            403,
            "tenant_mismatch",
        ),
    ];
    for (what, body, want_status, want_code) in cases {
        let (status, answer) = post(&app, "/api/v1/search", Some(&app.key), &[], body).await;
        assert_eq!(status.as_u16(), want_status, "{what}: {answer}");
        assert_v1_error(status, &answer, want_status, want_code);
        assert!(
            !answer.to_string().contains(&probe[..40]),
            "{what}: the image is not echoed"
        );
    }

    let resp = app
        .client
        .post(app.url("/api/v1/search"))
        .header("X-API-Key", &app.key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    let (status, body) = read(resp).await;
    assert_v1_error(status, &body, 400, "bad_request");

    let (status, body) = post(
        &app,
        "/api/v1/search",
        None,
        &[],
        json!({"tenant_id": "tenant-a", "image_b64": probe}),
    )
    .await;
    assert_v1_error(status, &body, 401, "missing_api_key");
}

#[sqlx::test]
async fn x_tenant_id_must_name_the_keys_tenant_on_v1_and_v2(pool: PgPool) {
    let app = spawn_app(pool).await;
    let probe = b64("obama3.jpg");
    for path in [
        "/api/v1/search",
        "/api/v1/verify",
        "/api/v1/enroll_identity",
    ] {
        let (status, body) = post(
            &app,
            path,
            Some(&app.key),
            &[("X-Tenant-ID", "tenant-b")],
            json!({"tenant_id": "tenant-a", "identity_id": "x", "image_b64": probe,
                   "images_b64": [probe]}),
        )
        .await;
        assert_v1_error(status, &body, 403, "tenant_mismatch");
    }

    let identities = |tenant_header: &'static str| {
        app.client
            .get(app.url("/api/v2/identities"))
            .header("X-API-Key", &app.key)
            .header("X-Tenant-ID", tenant_header)
            .send()
    };
    let (status, body) = read(identities("tenant-b").await.expect("request")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "tenant_mismatch", "{body}");
    assert_eq!(body["type"], "auth", "{body}");
    for matching in ["tenant-a", ""] {
        let (status, body) = read(identities(matching).await.expect("request")).await;
        assert_eq!(status, 200, "X-Tenant-ID {matching:?}: {body}");
    }

    // Without a key the header decides nothing: health answers, other routes want a key.
    let resp = app
        .client
        .get(app.url("/api/v1/health"))
        .header("X-Tenant-ID", "tenant-b")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let resp = app
        .client
        .get(app.url("/api/v2/identities"))
        .header("X-Tenant-ID", "tenant-a")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 401);
}

#[sqlx::test]
async fn v1_routes_answer_the_shapes_old_clients_expect(pool: PgPool) {
    let app = spawn_app(pool).await;
    let key = Some(app.key.as_str());
    let (status, body) = post(
        &app,
        "/api/v1/enroll_identity",
        key,
        &[],
        json!({
            "tenant_id": "tenant-a",
            "identity_id": "obama",
            "images_b64": ENROLL.iter().map(|f| b64(f)).collect::<Vec<_>>(),
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["vector_dim"], 512);
    assert_eq!(body["identity"]["identity_id"], "obama");

    let (status, body) = post(
        &app,
        "/api/v1/verify",
        key,
        &[],
        json!({"tenant_id": "tenant-a", "identity_id": "obama",
               "image_b64": format!("data:image/jpeg;base64,{}", b64("obama3.jpg")),
               "hi_threshold": 0.4}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verified"], true);
    assert!(body["similarity"].is_number());
    assert!((f64_of(&body["hi_threshold"]) - 0.4).abs() < 1e-6, "{body}");

    let (status, body) = post(
        &app,
        "/api/v1/verify",
        key,
        &[],
        json!({"tenant_id": "tenant-a", "identity_id": "obama", "image_b64": b64("obama3.jpg"),
               "hi_threshold": 2}),
    )
    .await;
    assert_v1_error(status, &body, 422, "invalid_field");

    let (status, body) = post(
        &app,
        "/api/v1/verify",
        key,
        &[],
        json!({"tenant_id": "tenant-b", "identity_id": "obama", "image_b64": b64("obama3.jpg")}),
    )
    .await;
    assert_v1_error(status, &body, 403, "tenant_mismatch");

    let (status, body) = post(
        &app,
        "/api/v1/enroll_identity",
        key,
        &[],
        json!({"identity_id": "obama", "images_b64": [b64("obama.jpg")]}),
    )
    .await;
    assert_v1_error(status, &body, 422, "missing_field");
}

#[sqlx::test]
async fn v1_search_works_when_identities_are_disabled(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        HashMap::from([
            ("ENABLE_VERIFICATION_FLOW", "false".to_owned()),
            ("VERIFY_TOP_K", "1".to_owned()),
        ]),
    )
    .await;
    app.index("party", "p1", "obama.jpg").await;
    app.index("party", "p2", "obama2.jpg").await;
    let (status, body) = post(
        &app,
        "/api/v1/search",
        Some(&app.key),
        &[],
        json!({"tenant_id": "tenant-a", "image_b64": b64("obama3.jpg")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["top_k"], 1, "VERIFY_TOP_K sets the default: {body}");
    assert_eq!(body["count"], 1, "{body}");

    let (status, body) = post(
        &app,
        "/api/v1/verify",
        Some(&app.key),
        &[],
        json!({"tenant_id": "tenant-a", "identity_id": "x", "image_b64": b64("obama3.jpg")}),
    )
    .await;
    assert_v1_error(status, &body, 503, "feature_disabled");
}
