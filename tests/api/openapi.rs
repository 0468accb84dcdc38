//! The OpenAPI document is checked in (tests/snapshots/openapi.json) so that every API change
//! shows up in review. After an intended change: UPDATE_SNAPSHOTS=1 scripts/test.sh.

#[test]
fn openapi_document_matches_the_snapshot() {
    let spec = serde_json::to_string_pretty(&facepass::http::openapi()).expect("spec");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/openapi.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, format!("{spec}\n")).expect("write snapshot");
        return;
    }
    let saved = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        saved.trim_end() == spec.trim_end(),
        "the OpenAPI document changed; review it and run UPDATE_SNAPSHOTS=1 scripts/test.sh"
    );
}

#[test]
fn openapi_document_lists_every_route() {
    let spec = facepass::http::openapi();
    let mut routes: Vec<String> = spec
        .paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("DELETE", item.delete.is_some()),
            ]
            .into_iter()
            .filter(|(_, present)| *present)
            .map(move |(m, _)| format!("{m} {path}"))
        })
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        [
            "DELETE /api/v2/identities/{identity_id}",
            "DELETE /api/v2/photos/{photo_id}",
            "DELETE /api/v2/sessions/{session_id}",
            "GET /api/v1/health",
            "GET /api/v2/health",
            "GET /api/v2/identities",
            "GET /api/v2/identities/{identity_id}",
            "GET /api/v2/identities/{identity_id}/photos",
            "GET /api/v2/metrics",
            "GET /api/v2/photos/{photo_id}",
            "GET /api/v2/ready",
            "GET /api/v2/sessions/{session_id}",
            "POST /api/v1/enroll_identity",
            "POST /api/v1/search",
            "POST /api/v1/verify",
            "POST /api/v2/identities/search",
            "POST /api/v2/identities/{identity_id}/verify",
            "POST /api/v2/index",
            "POST /api/v2/search",
            "PUT /api/v2/identities/{identity_id}",
        ]
    );
}
