//! Building the application: shared state, the HTTP server, its middleware and routes.

use std::net::TcpListener;
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{http, web, App, HttpServer};
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::StaticKeys;
use crate::config::{Config, FaceConfig};
use crate::error::ApiError;
use crate::face::{FaceEngine, FaceRuntime};
use crate::limits::RateLimits;
use crate::openapi::{ApiDoc, SPEC_PATH};
use crate::routes::{self, RouteTable};
use crate::store::cache::Cache;
use crate::store::photos::PhotoStore;
use crate::{metrics, middleware};

/// Handles shared by every request, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
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
    pub async fn new(config: Config, db: PgPool, engine: Arc<FaceEngine>) -> anyhow::Result<Self> {
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
            static_keys: Arc::new(StaticKeys::new(&config.auth)),
            limits: Arc::new(RateLimits::new(&config.http, cache.clone())),
            config: Arc::new(config),
            db,
            photos,
            cache,
            faces,
            metrics: metrics::install(),
        })
    }
}

pub struct Application {
    port: u16,
    server: Server,
    db: PgPool,
}

impl Application {
    /// Connects to everything named in `config`, loads the models and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = crate::store::db::connect_lazy(&config.database)
            .context("DATABASE_URL is not usable")?;
        let engine = load_engine(&config.face).await?;
        Self::build_with(config, db, engine).await
    }

    /// Like `build`, with a given pool and engine (tests share one engine per process).
    pub async fn build_with(
        config: Config,
        db: PgPool,
        engine: Arc<FaceEngine>,
    ) -> anyhow::Result<Self> {
        let state = AppState::new(config.clone(), db.clone(), engine).await?;
        let listener = TcpListener::bind((config.app.host, config.app.port))
            .with_context(|| format!("cannot listen on {}:{}", config.app.host, config.app.port))?;
        let port = listener.local_addr()?.port();
        let server = server(state, listener, &config)?;
        Ok(Self { port, server, db })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM. On the signal the listener closes at once (new connections
    /// are refused), requests in flight get `SHUTDOWN_TIMEOUT_SECS` to finish, then the
    /// database pool is closed so PostgreSQL sees clean disconnects.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        self.db.close().await;
        tracing::info!("database pool closed");
        served
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

fn engine_config(face: &FaceConfig) -> crate::face::EngineConfig {
    let mut engine = crate::face::EngineConfig::new(&face.detector_model, &face.embedder_model);
    engine.detector_sha256 = face.detector_sha256.clone();
    engine.embedder_sha256 = face.embedder_sha256.clone();
    engine.det_size = face.detector_size;
    // The engine keeps faces from the reference's floor up; those under
    // FACE_DETECTION_THRESHOLD are reported as skipped (`low_score`), not dropped silently.
    engine.det_threshold = face
        .detection_threshold
        .get()
        .min(crate::face::engine::DEFAULT_DET_THRESHOLD);
    engine.embedding_dim = face.embedding_dimension;
    engine.max_pixels = face.max_image_pixels;
    engine.max_bytes = face.max_image_bytes;
    engine.tiling.enabled = face.tiling;
    engine
}

/// The whole API, and the OpenAPI document generated from the same list of handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .service(utoipa_actix_web::scope("/api/v2").configure(routes::configure))
        .service(utoipa_actix_web::scope("/api/v1").configure(routes::configure_v1))
        .split_for_parts()
        .1
}

fn server(state: AppState, listener: TcpListener, config: &Config) -> anyhow::Result<Server> {
    let max_upload = config.http.max_upload_bytes;
    let cors_origins = config.http.cors_origins.clone();
    let data = web::Data::new(state);
    let spec = web::Data::new(openapi());
    let table = web::Data::new(RouteTable::from_spec(&spec));
    let server = HttpServer::new(move || {
        let (app, _) = App::new()
            .app_data(data.clone())
            .app_data(table.clone())
            .app_data(json_config(max_upload))
            .app_data(query_config())
            .app_data(path_config())
            .wrap(middleware::json_errors())
            .wrap(cors(&cors_origins))
            .wrap(middleware::security_headers())
            .wrap(from_fn(middleware::request_context))
            .into_utoipa_app()
            .openapi(ApiDoc::openapi())
            .service(utoipa_actix_web::scope("/api/v2").configure(routes::configure))
            .service(utoipa_actix_web::scope("/api/v1").configure(routes::configure_v1))
            .split_for_parts();
        // The spec is served by its own route inside the /api/v2 scope (a scope answers every
        // path under it); Swagger UI only points at it.
        app.app_data(spec.clone())
            .service(
                SwaggerUi::new("/docs/{_:.*}").config(utoipa_swagger_ui::Config::from(SPEC_PATH)),
            )
            .service(web::redirect("/docs", "/docs/"))
            .default_service(web::to(routes::fallback))
    })
    .workers(config.app.workers)
    .shutdown_timeout(config.app.shutdown_timeout.as_secs())
    .listen(listener)?
    .run();
    Ok(server)
}

fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "DELETE"])
        .allowed_headers([
            http::header::CONTENT_TYPE,
            http::header::ACCEPT,
            http::header::HeaderName::from_static(crate::auth::API_KEY_HEADER),
            http::header::HeaderName::from_static(crate::auth::TENANT_HEADER),
            middleware::REQUEST_ID,
        ])
        .expose_headers([middleware::REQUEST_ID, http::header::RETRY_AFTER])
        .max_age(3600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let api = match &err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => {
                    ApiError::new(crate::error::Code::PayloadTooLarge, err.to_string())
                }
                E::ContentType => ApiError::new(
                    crate::error::Code::UnsupportedMediaType,
                    "expected Content-Type: application/json",
                ),
                _ => ApiError::bad_request(format!("invalid JSON body: {err}")),
            };
            api.into()
        })
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _req| ApiError::bad_request(format!("invalid query: {err}")).into())
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|err, _req| ApiError::bad_request(format!("invalid path: {err}")).into())
}
