use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{error_code, photo, spawn_app, spawn_app_with, TestApp};

/// Three different photos of Obama.
const ENROLL: [&str; 3] = ["obama.jpg", "obama2.jpg", "32bit.png"];

async fn enroll(
    app: &TestApp,
    key: &str,
    id: &str,
    files: &[&str],
    query: &str,
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new();
    for f in files {
        form = form.part(
            "images",
            reqwest::multipart::Part::bytes(photo(f)).file_name(f.to_string()),
        );
    }
    app.client
        .put(app.url(&format!("/api/v2/identities/{id}{query}")))
        .header("X-API-Key", key)
        .multipart(form)
        .send()
        .await
        .expect("request")
}

async fn verify(app: &TestApp, key: &str, id: &str, file: &str) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(photo(file)).file_name(file.to_string()),
    );
    app.client
        .post(app.url(&format!("/api/v2/identities/{id}/verify")))
        .header("X-API-Key", key)
        .multipart(form)
        .send()
        .await
        .expect("request")
}

async fn json(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

#[sqlx::test]
async fn enrollment_then_verification_of_the_same_and_another_person(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (status, body) = json(enroll(&app, &app.key, "obama", &ENROLL, "").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["identity"]["images"], 3);
    assert_eq!(body["vector_dim"], 512);
    assert_eq!(body["faces"].as_array().map(Vec::len), Some(3));
    let norm: f64 = sqlx::query_scalar("select vector_norm(template)::float8 from identity")
        .fetch_one(&app.db)
        .await
        .expect("template");
    assert!((norm - 1.0).abs() < 1e-3, "template is unit length: {norm}");

    let (status, body) = json(verify(&app, &app.key, "obama", "obama3.jpg").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verified"], true, "{body}");
    assert!(body["similarity"].as_f64().expect("sim") >= body["threshold"].as_f64().expect("t"));

    let (status, body) = json(verify(&app, &app.key, "obama", "biden.jpg").await).await;
    assert_eq!(status, 200);
    assert_eq!(body["verified"], false, "{body}");
    assert!(body["similarity"].as_f64().expect("sim") < 0.3, "{body}");
}

#[sqlx::test]
async fn enrollment_errors_name_the_problem(pool: PgPool) {
    let app = spawn_app(pool).await;
    let resp = enroll(&app, &app.key, "obama", &["obama.jpg"], "").await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(resp).await, "not_enough_images");

    let resp = enroll(
        &app,
        &app.key,
        "obama",
        &["obama.jpg", "nofaces_chelsea.png", "obama2.jpg"],
        "",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (_, body) = json(resp).await;
    assert_eq!(body["code"], "no_face_detected");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("image 2 of 3")),
        "{body}"
    );

    let resp = verify(&app, &app.key, "nobody", "obama3.jpg").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "identity_not_enrolled");

    let identities: i64 = sqlx::query_scalar("select count(*) from identity")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(identities, 0, "failed enrollments store nothing");
}

#[sqlx::test]
async fn re_enrollment_replaces_and_append_adds(pool: PgPool) {
    let app = spawn_app(pool).await;
    enroll(&app, &app.key, "person", &ENROLL, "").await;
    let (status, body) = json(
        enroll(
            &app,
            &app.key,
            "person",
            &["biden.jpg", "biden.jpg", "biden.jpg"],
            "",
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["identity"]["images"], 3);
    let (_, body) = json(verify(&app, &app.key, "person", "obama3.jpg").await).await;
    assert_eq!(
        body["verified"], false,
        "the old enrollment is gone: {body}"
    );

    let (status, body) =
        json(enroll(&app, &app.key, "person", &["obama.jpg"], "?mode=append").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["identity"]["images"], 4);
}

#[sqlx::test]
async fn identities_are_listed_read_and_deleted_per_tenant(pool: PgPool) {
    let app = spawn_app(pool).await;
    enroll(&app, &app.key, "a-obama", &ENROLL, "").await;
    enroll(&app, &app.key, "b-biden", &["biden.jpg"; 3], "").await;

    let (_, page) = json(
        app.get_with_key("/api/v2/identities?limit=1", &app.key)
            .await,
    )
    .await;
    assert_eq!(page["identities"][0]["identity_id"], "a-obama");
    assert_eq!(page["next"], "a-obama");
    let (_, page) = json(
        app.get_with_key("/api/v2/identities?limit=1&after=a-obama", &app.key)
            .await,
    )
    .await;
    assert_eq!(page["identities"][0]["identity_id"], "b-biden");
    assert!(page.get("next").is_none(), "{page}");

    // Another tenant sees none of it.
    let (_, page) = json(app.get_with_key("/api/v2/identities", &app.other_key).await).await;
    assert_eq!(page["identities"].as_array().map(Vec::len), Some(0));
    for resp in [
        app.get_with_key("/api/v2/identities/a-obama", &app.other_key)
            .await,
        verify(&app, &app.other_key, "a-obama", "obama3.jpg").await,
        app.delete_with_key("/api/v2/identities/a-obama", &app.other_key)
            .await,
    ] {
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(resp).await, "identity_not_enrolled");
    }

    let resp = app
        .delete_with_key("/api/v2/identities/a-obama", &app.key)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = app
        .get_with_key("/api/v2/identities/a-obama", &app.key)
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn one_to_n_search_ranks_the_right_identity_first(pool: PgPool) {
    let app = spawn_app(pool).await;
    enroll(&app, &app.key, "obama", &ENROLL, "").await;
    enroll(&app, &app.key, "biden", &["biden.jpg"; 3], "").await;
    enroll(&app, &app.key, "yao", &["yaoming.jpg"; 3], "").await;
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(photo("obama3.jpg")).file_name("p.jpg"),
    );
    let (status, body) = json(
        app.client
            .post(app.url("/api/v2/identities/search"))
            .header("X-API-Key", &app.key)
            .multipart(form)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let candidates = body["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 3);
    assert_eq!(candidates[0]["identity_id"], "obama");
    assert_eq!(candidates[0]["matched"], true);
    assert!(
        candidates[1..].iter().all(|c| c["matched"] == false),
        "{body}"
    );
}

/// Polls until background tagging of the identity has finished.
async fn tagged(app: &TestApp, id: &str) -> serde_json::Value {
    for _ in 0..50 {
        let (_, body) = json(
            app.get_with_key(&format!("/api/v2/identities/{id}/photos"), &app.key)
                .await,
        )
        .await;
        if body["tagging_status"] == "done" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("tagging of {id} did not finish");
}

fn photo_ids(body: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = body["photos"]
        .as_array()
        .expect("photos")
        .iter()
        .map(|p| p["photo_id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[sqlx::test]
async fn enrollment_tags_indexed_faces_and_new_photos_get_tagged(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.index("party", "o1", "obama3.jpg").await;
    app.index("party", "b1", "biden.jpg").await;
    enroll(&app, &app.key, "obama", &ENROLL, "").await;
    assert_eq!(photo_ids(&tagged(&app, "obama").await), ["o1"]);

    // Indexed after the enrollment: tagged at index time.
    app.index("party", "o2", "obama_partial_face.jpg").await;
    assert_eq!(photo_ids(&tagged(&app, "obama").await), ["o1", "o2"]);

    // Tags never cross tenants: B's identical photo is not tagged with A's identity.
    let resp = app
        .post_form(
            "/api/v2/index",
            &app.other_key,
            &[("session_id", "party"), ("photo_id", "x")],
            Some(photo("obama3.jpg")),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let foreign: i64 = sqlx::query_scalar(
        "select count(*) from face where tenant_id = 'tenant-b' and identity_pk is not null",
    )
    .fetch_one(&app.db)
    .await
    .expect("count");
    assert_eq!(foreign, 0);

    // Deleting the identity clears its tags.
    app.delete_with_key("/api/v2/identities/obama", &app.key)
        .await;
    let left: i64 = sqlx::query_scalar("select count(*) from face where identity_pk is not null")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

#[sqlx::test]
async fn the_feature_flag_disables_identities_but_not_search(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        HashMap::from([("ENABLE_VERIFICATION_FLOW", "false".to_owned())]),
    )
    .await;
    let resp = enroll(&app, &app.key, "obama", &ENROLL, "").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(resp).await, "feature_disabled");
    let resp = verify(&app, &app.key, "obama", "obama3.jpg").await;
    assert_eq!(error_code(resp).await, "feature_disabled");
    app.index("party", "p1", "obama.jpg").await;
    assert_eq!(app.found("party", "obama3.jpg").await, ["p1"]);
}

#[sqlx::test]
async fn a_verify_probe_says_when_its_face_was_recovered(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (status, body) = json(enroll(&app, &app.key, "obama", &ENROLL, "").await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["faces"][0]["recovered"].is_null(), "{body}");

    // Too dark for any face at the first look; the retry for light finds it.
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(crate::search::darkened("obama3.jpg", 0.03, 2.5))
            .file_name("dark.png"),
    );
    let resp = app
        .client
        .post(app.url("/api/v2/identities/obama/verify"))
        .header("X-API-Key", &app.key)
        .multipart(form)
        .send()
        .await
        .expect("request");
    let (status, body) = json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["probe_face"]["recovered"], "light_retry", "{body}");

    let (status, body) = json(verify(&app, &app.key, "obama", "obama3.jpg").await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["probe_face"]["recovered"].is_null(), "{body}");
}
