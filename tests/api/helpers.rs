use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use facepass::config::Config;
use facepass::startup::Application;
use facepass::state::load_engine;
use facepass::store::db::Db;
use facepass_face::FaceEngine;
use sqlx::PgPool;

/// Models are loaded and optimised once per test binary.
static ENGINE: LazyLock<Arc<FaceEngine>> = LazyLock::new(|| {
    let config = base_config(&HashMap::new());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(load_engine(&config.face))
        .expect("models load (run scripts/fetch-models.sh)")
});

/// The shared engine, loaded once.
pub async fn engine() -> Arc<FaceEngine> {
    tokio::task::spawn_blocking(|| ENGINE.clone())
        .await
        .expect("engine")
}

pub struct TestApp {
    pub address: String,
    pub db: PgPool,
    pub client: reqwest::Client,
    pub config: Config,
    /// Key of tenant `tenant-a`.
    pub key: String,
    /// Key of tenant `tenant-b`.
    pub other_key: String,
}

/// A real photo fetched by scripts/fetch-fixtures.sh.
pub fn photo(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/photos/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run scripts/fetch-fixtures.sh)"))
}

/// The environment (scripts/services.sh env, exported by scripts/test.sh) plus per-test
/// overrides: a random port, bucket and Redis prefix so tests never see each other's data.
/// The store's handle on a test's pool, with the default deadlines.
pub fn db_of(pool: &PgPool) -> Db {
    Db::new(pool.clone(), &base_config(&HashMap::new()).database)
}

pub fn base_config(overrides: &HashMap<&str, String>) -> Config {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    let root = env!("CARGO_MANIFEST_DIR");
    vars.insert(
        "FACE_DETECTOR_MODEL".into(),
        format!("{root}/models/scrfd_500m_bnkps.onnx"),
    );
    vars.insert(
        "FACE_EMBEDDER_MODEL".into(),
        format!("{root}/models/w600k_mbf.onnx"),
    );
    vars.insert("PORT".into(), "0".into());
    vars.insert("HOST".into(), "127.0.0.1".into());
    vars.insert("HTTP_WORKERS".into(), "1".into());
    let run = uuid::Uuid::new_v4().simple().to_string();
    // One bucket for all tests, a key prefix per test: SeaweedFS gives every bucket its own
    // volumes and runs out of them after a few hundred buckets.
    vars.insert("S3_BUCKET".into(), "facepass-test".into());
    vars.insert("S3_KEY_PREFIX".into(), format!("run-{run}/"));
    vars.insert("REDIS_KEY_PREFIX".into(), format!("test:{run}"));
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), v.clone());
    }
    Config::from_vars(&vars).expect("test configuration (is scripts/services.sh env exported?)")
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, HashMap::new()).await
}

pub async fn spawn_app_with(pool: PgPool, overrides: HashMap<&str, String>) -> TestApp {
    spawn_app_with_engine(pool, overrides, engine().await).await
}

/// A server running `engine` (e.g. another model) instead of the shared one.
pub async fn spawn_app_with_engine(
    pool: PgPool,
    overrides: HashMap<&str, String>,
    engine: Arc<FaceEngine>,
) -> TestApp {
    let key = format!("key-a-{}", uuid::Uuid::new_v4().simple());
    let other_key = format!("key-b-{}", uuid::Uuid::new_v4().simple());
    let mut overrides = overrides;
    overrides
        .entry("API_KEYS")
        .or_insert_with(|| format!("tenant-a:{key},tenant-b:{other_key}"));
    let config = base_config(&overrides);
    let app = Application::build_with(
        config.clone(),
        Db::new(pool.clone(), &config.database),
        engine,
    )
    .await
    .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        db: pool,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // Well under the server's keep-alive (actix: 5 s): a connection idle that long may
            // be closed by the server just as a request goes out on it (IncompleteMessage in
            // the fault tests, which wait seconds for a service to stop or start).
            .pool_idle_timeout(std::time::Duration::from_secs(1))
            .build()
            .expect("client"),
        config,
        key,
        other_key,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_with_key(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("X-API-Key", key)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete_with_key(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .header("X-API-Key", key)
            .send()
            .await
            .expect("request")
    }

    /// POSTs a multipart form: text fields, then the image as `file`.
    pub async fn post_form(
        &self,
        path: &str,
        key: &str,
        fields: &[(&str, &str)],
        file: Option<Vec<u8>>,
    ) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        if let Some(bytes) = file {
            form = form.part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name("photo.jpg"),
            );
        }
        self.client
            .post(self.url(path))
            .header("X-API-Key", key)
            .multipart(form)
            .send()
            .await
            .expect("request")
    }

    /// Indexes a fixture photo as tenant A and returns the JSON answer.
    pub async fn index(&self, session: &str, photo_id: &str, file: &str) -> serde_json::Value {
        let resp = self
            .post_form(
                "/api/v2/index",
                &self.key,
                &[("session_id", session), ("photo_id", photo_id)],
                Some(photo(file)),
            )
            .await;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(status, 200, "index {file}: {body}");
        body
    }

    /// Searches a session with a fixture selfie as tenant A.
    pub async fn search(&self, session: &str, file: &str) -> reqwest::Response {
        self.post_form(
            "/api/v2/search",
            &self.key,
            &[("session_id", session)],
            Some(photo(file)),
        )
        .await
    }

    /// The photo ids a search returned, sorted.
    pub async fn found(&self, session: &str, file: &str) -> Vec<String> {
        let resp = self.search(session, file).await;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(status, 200, "search {file}: {body}");
        let mut ids: Vec<String> = body["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["photo_id"].as_str().expect("photo_id").to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// The same state the server runs on, for calling library code (bulk commands, gc) directly.
    pub async fn state(&self) -> facepass::state::AppState {
        facepass::state::AppState::new(
            self.config.clone(),
            Db::new(self.db.clone(), &self.config.database),
            engine().await,
        )
        .await
        .expect("state")
    }

    /// The key prefix under which this test's tenant A keeps a session.
    pub fn session_prefix(&self, session: &str) -> String {
        format!(
            "{}tenants/tenant-a/sessions/{session}/",
            self.config.s3.key_prefix
        )
    }

    pub fn photo_store(&self) -> facepass::store::photos::PhotoStore {
        facepass::store::photos::PhotoStore::new(&self.config.s3).expect("store")
    }
}

/// Reads a JSON body and checks the error shape every error shares.
pub async fn error_code(resp: reqwest::Response) -> String {
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: serde_json::Value = resp.json().await.expect("json body");
    assert!(body["message"].is_string(), "{body}");
    body["code"].as_str().expect("code").to_owned()
}
