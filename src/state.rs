//! `AppState`: the handles every request and every bulk command shares, and loading the face
//! engine they run. Imports `config`, `store`, `limits`, `domain` and the engine; the HTTP
//! layer and the workflows import this, never the other way round.

use std::sync::Arc;

use anyhow::Context;
use facepass_face::{EngineConfig, FaceEngine, FaceRuntime};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::ExposeSecret;

use crate::config::{Config, FaceConfig};
use crate::domain::StaticKeys;
use crate::limits::RateLimits;
use crate::store::cache::Cache;
use crate::store::db::Db;
use crate::store::photos::PhotoStore;

/// Handles shared by every request, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub photos: Arc<PhotoStore>,
    pub cache: Cache,
    pub faces: Arc<FaceRuntime>,
    pub static_keys: Arc<StaticKeys>,
    pub limits: Arc<RateLimits>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// Every handle the server needs; also what the bulk commands run on, so they take the same
    /// code paths as the HTTP routes.
    pub async fn new(config: Config, db: Db, engine: Arc<FaceEngine>) -> anyhow::Result<Self> {
        let photos = Arc::new(PhotoStore::new(&config.s3).context("S3 settings are not usable")?);
        if let Err(e) = photos.ensure_bucket().await {
            // Not fatal: /ready reports storage as down and the bucket is created on first use.
            tracing::warn!(error = %e, bucket = %photos.bucket_name(), "cannot create or reach the S3 bucket yet");
        }
        let cache = Cache::new(&config.redis).context("Redis settings are not usable")?;
        let faces = Arc::new(FaceRuntime::new(
            engine,
            config.face.inference_workers,
            config.face.inference_queue,
        ));
        Ok(AppState {
            static_keys: Arc::new(StaticKeys::new(
                config
                    .auth
                    .static_keys
                    .iter()
                    .map(|k| (k.key.expose_secret(), k.tenant.clone())),
            )),
            limits: Arc::new(RateLimits::new(&config.http, cache.clone())),
            config: Arc::new(config),
            db,
            photos,
            cache,
            faces,
            metrics: crate::metrics::install(),
        })
    }
}

/// Loads and optimises both models once; a missing file or wrong checksum stops start-up here.
pub async fn load_engine(config: &FaceConfig) -> anyhow::Result<Arc<FaceEngine>> {
    let engine_config = engine_config(config);
    let engine = tokio::task::spawn_blocking(move || FaceEngine::load(engine_config))
        .await
        .context("model loading panicked")??;
    Ok(Arc::new(engine))
}

fn engine_config(face: &FaceConfig) -> EngineConfig {
    let mut engine = EngineConfig::new(&face.detector_model, &face.embedder_model);
    engine.detector_sha256 = face.detector_sha256.clone();
    engine.embedder_sha256 = face.embedder_sha256.clone();
    engine.det_size = face.detector_size;
    // The engine keeps faces from the reference's floor up (or from a lower probe or indexing
    // threshold); those under the caller's threshold are reported as skipped (`low_score`), not
    // dropped silently. The floor must not rise above PROBE_DETECTION_THRESHOLD, or a probe
    // would lose the faces that threshold lets through.
    engine.det_threshold = face
        .detection_threshold
        .get()
        .min(face.probe_detection_threshold.get())
        .min(facepass_face::DEFAULT_DET_THRESHOLD);
    engine.embedding_dim = face.embedding_dimension;
    engine.max_pixels = face.max_image_pixels;
    engine.max_bytes = face.max_image_bytes;
    engine.tiling.enabled = face.tiling;
    engine
}
