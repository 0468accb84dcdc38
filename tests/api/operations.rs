use std::time::Duration;

use sqlx::PgPool;

use crate::helpers::{db_of, spawn_app};

async fn key_of(pool: &PgPool, photo_id: &str) -> String {
    sqlx::query_scalar("select s3_key from photo where photo_id = $1")
        .bind(photo_id)
        .fetch_one(pool)
        .await
        .expect("key")
}

#[sqlx::test]
async fn gc_finds_what_a_crash_leaves_and_fix_repairs_it(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.index("party", "p1", "obama.jpg").await;
    app.index("party", "p2", "obama2.jpg").await;
    let store = app.photo_store();

    // A crash between the S3 write and the database commit leaves an object and no row.
    let orphan = format!("{}photos/p3/0123abcd", app.session_prefix("party"));
    let orphan = orphan.as_str();
    store
        .put(
            orphan,
            b"bytes of an upload that never committed",
            "image/jpeg",
        )
        .await
        .expect("put");
    // Outside damage: an object removed behind the database's back.
    let lost = key_of(&app.db, "p2").await;
    store.delete(&lost).await.expect("delete");

    let state = app.state().await;
    // Young objects may still be committing: a grace period protects them.
    let report = facepass::workflows::gc::run(&state, false, Duration::from_secs(3600))
        .await
        .expect("gc");
    assert!(report.orphan_objects.is_empty(), "{report:?}");

    let report = facepass::workflows::gc::run(&state, false, Duration::ZERO)
        .await
        .expect("gc");
    assert_eq!(report.orphan_objects, [orphan]);
    assert_eq!(report.missing_objects.len(), 1);
    assert_eq!(report.missing_objects[0].1, "p2");
    assert!(
        store.exists(orphan).await.expect("head"),
        "a report changes nothing"
    );

    let report = facepass::workflows::gc::run(&state, true, Duration::ZERO)
        .await
        .expect("gc --fix");
    assert!(report.fixed);
    let report = facepass::workflows::gc::run(&state, false, Duration::ZERO)
        .await
        .expect("gc");
    assert!(
        report.orphan_objects.is_empty() && report.missing_objects.is_empty(),
        "{report:?}"
    );
    assert!(!store.exists(orphan).await.expect("head"));
    // The healthy photo is untouched; the broken one is gone with its faces.
    let photos: Vec<String> = sqlx::query_scalar("select photo_id from photo order by 1")
        .fetch_all(&app.db)
        .await
        .expect("rows");
    assert_eq!(photos, ["p1"]);
    assert_eq!(app.found("party", "obama3.jpg").await, ["p1"]);
}

#[sqlx::test]
async fn index_dir_indexes_a_folder_and_skips_what_is_already_there(pool: PgPool) {
    let app = spawn_app(pool).await;
    let dir = tempdir();
    for f in ["obama.jpg", "biden.jpg", "nofaces_chelsea.png"] {
        std::fs::write(dir.join(f), crate::helpers::photo(f)).expect("copy");
    }
    std::fs::write(dir.join("broken photo.jpg"), b"not a jpeg").expect("write");
    let state = app.state().await;
    let tenant = facepass::domain::TenantId::parse("tenant-a").expect("id");
    let session = facepass::domain::SessionId::parse("bulk").expect("id");
    let files = facepass::workflows::bulk::images_in(&dir).expect("list");
    assert_eq!(files.len(), 4);

    let first =
        facepass::workflows::bulk::index_dir(&state, files.clone(), &tenant, &session, 2).await;
    assert_eq!(first.indexed, 3, "{first:?}");
    assert_eq!(first.faces, 2);
    assert_eq!(first.failed.len(), 1);
    assert!(first.failed[0].1.starts_with("invalid_image"), "{first:?}");

    let again = facepass::workflows::bulk::index_dir(&state, files, &tenant, &session, 2).await;
    assert_eq!((again.indexed, again.unchanged), (0, 3), "{again:?}");
    assert_eq!(app.found("bulk", "obama3.jpg").await, ["obama.jpg"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[sqlx::test]
async fn db_stats_and_reindex_report_and_rebuild_the_ivfflat_index(pool: PgPool) {
    use facepass::store::maintenance;
    let app = spawn_app(pool).await;
    app.index("party", "p1", "gdp.jpg").await;
    app.index("party", "p2", "obama.jpg").await;
    assert_eq!(
        maintenance::ivfflat_lists(&db_of(&app.db))
            .await
            .expect("lists"),
        Some(100)
    );
    let lists = maintenance::reindex(&db_of(&app.db), None)
        .await
        .expect("reindex");
    assert_eq!(lists, 1, "few rows: one list");
    assert_eq!(
        maintenance::ivfflat_lists(&db_of(&app.db))
            .await
            .expect("lists"),
        Some(1)
    );
    let stats = maintenance::stats(&db_of(&app.db), 10, 5)
        .await
        .expect("stats");
    assert_eq!(stats.tenants.len(), 1);
    assert_eq!(stats.tenants[0].photos, 2);
    assert!(stats.faces >= 4);
    // With one list every probe scans everything: recall is exact.
    assert_eq!(stats.estimated_recall_at_10, Some(1.0));
    assert!(stats
        .indexes
        .iter()
        .any(|i| i.index == maintenance::IVFFLAT_INDEX));
}

/// A DBA's machine holds the database settings only: `facepass db` must not ask for S3's.
#[sqlx::test]
async fn db_stats_needs_only_the_database_settings(pool: PgPool) {
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&pool)
        .await
        .expect("name");
    let mut url =
        url::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL")).expect("url");
    url.set_path(&db);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facepass"))
        .args(["db", "stats", "--sample", "1"])
        .env_clear()
        .env("DATABASE_URL", url.as_str())
        .current_dir(std::env::temp_dir())
        .output()
        .expect("facepass runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "facepass db stats failed: {stderr}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON stats");
    assert_eq!(stats["faces"], 0, "{stats}");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("facepass-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}

/// The DBA scripts end to end: index, back up, lose the data, restore, search again.
#[sqlx::test]
async fn search_finds_the_same_photos_after_backup_and_restore(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.index("party", "o1", "obama.jpg").await;
    app.index("party", "o2", "obama2.jpg").await;
    app.index("party", "b1", "biden.jpg").await;
    let before = app.found("party", "obama3.jpg").await;
    assert_eq!(before, ["o1", "o2"]);

    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&app.db)
        .await
        .expect("name");
    let mut url =
        url::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL")).expect("url");
    url.set_path(&db);
    let dir = tempdir();
    let root = env!("CARGO_MANIFEST_DIR");
    let run = |script: &str, args: &[&str]| {
        let out = std::process::Command::new(format!("{root}/scripts/{script}"))
            .args(args)
            .env("DATABASE_URL", url.as_str())
            .output()
            .expect("script runs");
        assert!(
            out.status.success(),
            "{script} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        "backup_database.sh",
        &["--dir", dir.to_str().expect("utf-8"), "--name", "t"],
    );
    let dump = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "dump"))
        .expect("a dump");

    // Lose everything, then restore into a new database.
    sqlx::query("truncate tenant, api_key, session, photo, face, identity, identity_embedding")
        .execute(&app.db)
        .await
        .expect("truncate");
    assert!(app.search("party", "obama3.jpg").await.status() == 404);
    let restored = format!("facepass_restored_{}", uuid::Uuid::new_v4().simple());
    run(
        "restore_database.sh",
        &[dump.to_str().expect("utf-8"), "--target-db", &restored],
    );

    let mut restored_url = url.clone();
    restored_url.set_path(&restored);
    let restored_pool = PgPool::connect(restored_url.as_str())
        .await
        .expect("restored db");
    let again = crate::helpers::spawn_app_with(
        restored_pool.clone(),
        std::collections::HashMap::from([("S3_KEY_PREFIX", app.config.s3.key_prefix.clone())]),
    )
    .await;
    assert_eq!(again.found("party", "obama3.jpg").await, before);
    restored_pool.close().await;
    let mut admin = url.clone();
    admin.set_path("postgres");
    let admin = PgPool::connect(admin.as_str()).await.expect("admin");
    sqlx::query(&format!(
        "drop database if exists \"{restored}\" with (force)"
    ))
    .execute(&admin)
    .await
    .expect("drop restored");
    std::fs::remove_dir_all(&dir).ok();
}

/// A model change: re-embed beside the old faces, both models' servers keep finding the photos,
/// then clean up the old model's faces.
#[sqlx::test]
async fn reindex_with_a_new_model_keeps_every_server_answering(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.index("party", "o1", "obama.jpg").await;
    app.index("party", "b1", "biden.jpg").await;

    // The same weights under another file name: a different model id, as a new model has.
    let dir = tempdir();
    let new_model = dir.join("w600k_mbf_next.onnx");
    std::fs::copy(&app.config.face.embedder_model, &new_model).expect("copy model");
    let mut config = app.config.clone();
    config.face.embedder_model = new_model.clone();
    config.face.embedder_sha256 = None;
    let engine = facepass::state::load_engine(&config.face)
        .await
        .expect("new model");
    assert_ne!(
        engine.model_id(),
        app.state().await.faces.engine().model_id()
    );
    let state = facepass::state::AppState::new(
        config.clone(),
        facepass::store::db::Db::new(pool.clone(), &config.database),
        engine.clone(),
    )
    .await
    .expect("state");

    let summary = facepass::workflows::reembed::reembed(&state, None)
        .await
        .expect("reindex");
    assert_eq!((summary.photos, summary.faces), (2, 2), "{summary:?}");
    let again = facepass::workflows::reembed::reembed(&state, None)
        .await
        .expect("resume");
    assert_eq!(
        (again.photos, again.skipped),
        (0, 2),
        "a second run skips done photos"
    );

    let new_server = crate::helpers::spawn_app_with_engine(
        pool,
        std::collections::HashMap::from([("S3_KEY_PREFIX", app.config.s3.key_prefix.clone())]),
        engine,
    )
    .await;
    assert_eq!(
        app.found("party", "obama3.jpg").await,
        ["o1"],
        "old model still answers"
    );
    assert_eq!(
        new_server.found("party", "obama3.jpg").await,
        ["o1"],
        "new model answers"
    );

    let removed = facepass::workflows::reembed::cleanup(&state)
        .await
        .expect("cleanup");
    assert_eq!(removed, 2);
    assert!(
        app.found("party", "obama3.jpg").await.is_empty(),
        "old faces are gone"
    );
    assert_eq!(new_server.found("party", "obama3.jpg").await, ["o1"]);
    std::fs::remove_dir_all(&dir).ok();
}
