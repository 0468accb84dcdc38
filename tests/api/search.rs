use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{error_code, photo, spawn_app, TestApp};

/// Obama in two photos, Biden in one, three strangers in another.
async fn event(app: &TestApp) {
    app.index("party", "obama-1", "obama.jpg").await;
    app.index("party", "obama-2", "obama2.jpg").await;
    app.index("party", "biden", "biden.jpg").await;
    app.index("party", "group", "gdp.jpg").await;
}

#[sqlx::test]
async fn a_selfie_finds_exactly_the_photos_its_person_is_in(pool: PgPool) {
    let app = spawn_app(pool).await;
    event(&app).await;
    assert_eq!(
        app.found("party", "obama3.jpg").await,
        ["obama-1", "obama-2"]
    );

    let resp = app.search("party", "obama3.jpg").await;
    let body: serde_json::Value = resp.json().await.expect("json");
    let results = body["results"].as_array().expect("results");
    let sims: Vec<f64> = results
        .iter()
        .map(|r| r["similarity"].as_f64().expect("sim"))
        .collect();
    assert!(
        sims.windows(2).all(|w| w[0] >= w[1]),
        "not sorted: {sims:?}"
    );
    assert!(sims.iter().all(|s| *s >= 0.5), "{sims:?}");
    for r in results {
        let url = r["url"].as_str().expect("url");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        // The presigned URL serves exactly the indexed bytes.
        let bytes = reqwest::get(url)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let name = if r["photo_id"] == "obama-1" {
            "obama.jpg"
        } else {
            "obama2.jpg"
        };
        assert_eq!(bytes.as_ref(), photo(name).as_slice());
    }
    assert_eq!(body["query_face"]["bbox"].as_array().map(Vec::len), Some(4));
}

#[sqlx::test]
async fn the_response_counts_the_faces_of_a_selfie_that_were_not_searched(pool: PgPool) {
    let app = spawn_app(pool).await;
    event(&app).await;
    let alone: serde_json::Value = app
        .search("party", "obama3.jpg")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(alone["other_faces"], 0, "{alone}");
    // A group photo as the "selfie": its largest face is searched, the others are counted.
    let group: serde_json::Value = app
        .search("party", "gdp.jpg")
        .await
        .json()
        .await
        .expect("json");
    let others = group["other_faces"].as_u64().expect("other_faces");
    assert!(others >= 2, "gdp.jpg shows several people: {group}");
    let found: Vec<&str> = group["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["photo_id"].as_str())
        .collect();
    assert_eq!(found, ["group"], "{group}");
}

#[sqlx::test]
async fn a_different_person_finds_none_of_them(pool: PgPool) {
    let app = spawn_app(pool).await;
    event(&app).await;
    assert!(app.found("party", "yaoming.jpg").await.is_empty());
    assert_eq!(app.found("party", "biden.jpg").await, ["biden"]);
}

#[sqlx::test]
async fn search_is_limited_to_its_session(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.index("party", "obama-1", "obama.jpg").await;
    app.index("other-party", "obama-2", "obama2.jpg").await;
    assert_eq!(app.found("party", "obama3.jpg").await, ["obama-1"]);
    assert_eq!(app.found("other-party", "obama3.jpg").await, ["obama-2"]);
}

#[sqlx::test]
async fn search_errors_have_clear_codes(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.index("party", "obama-1", "obama.jpg").await;

    let resp = app.search("no-such-session", "obama3.jpg").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "session_not_found");

    let resp = app.search("party", "nofaces_chelsea.png").await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(resp).await, "no_face_detected");

    for (field, value) in [
        ("top_k", "0"),
        ("top_k", "-3"),
        ("top_k", "1001"),
        ("top_k", "ten"),
        ("threshold", "NaN"),
        ("threshold", "-1"),
        ("threshold", "2"),
    ] {
        let resp = app
            .post_form(
                "/api/v2/search",
                &app.key,
                &[("session_id", "party"), (field, value)],
                Some(photo("obama3.jpg")),
            )
            .await;
        assert_eq!(
            resp.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value}"
        );
        assert_eq!(error_code(resp).await, "invalid_field", "{field}={value}");
    }
}

#[sqlx::test]
async fn top_k_and_threshold_shape_the_results(pool: PgPool) {
    let app = spawn_app(pool).await;
    event(&app).await;
    let resp = app
        .post_form(
            "/api/v2/search",
            &app.key,
            &[("session_id", "party"), ("top_k", "1"), ("threshold", "0")],
            Some(photo("obama3.jpg")),
        )
        .await;
    let body: serde_json::Value = resp.json().await.expect("json");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{body}");
    assert!(results[0]["photo_id"]
        .as_str()
        .is_some_and(|p| p.starts_with("obama")));
}
