//! Liveness, readiness and Prometheus metrics. None of these need an API key.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok` when the process answers.
    status: &'static str,
    name: String,
    version: String,
}

/// Liveness: the process is up. Touches no dependency.
#[utoipa::path(tag = "health", responses((status = 200, body = HealthResponse)))]
#[get("/health")]
pub async fn health(state: web::Data<AppState>) -> web::Json<HealthResponse> {
    web::Json(HealthResponse {
        status: "ok",
        name: state.config.app.name.clone(),
        version: state.config.app.version.clone(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    Up,
    Down,
}

#[derive(Serialize, ToSchema)]
pub struct ComponentReport {
    status: ComponentStatus,
    /// How long the check took.
    latency_ms: u64,
    /// Why the component is down, or what is running (versions).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    /// Everything is up.
    Ready,
    /// Serving, but an optional component (Redis) is down: rate limits are per replica.
    Degraded,
    /// A required component is down: do not send traffic.
    NotReady,
}

#[derive(Serialize, ToSchema)]
pub struct ReadyResponse {
    status: ReadyStatus,
    components: BTreeMap<&'static str, ComponentReport>,
}

/// Per-component check budget: /ready must answer before a load balancer gives up on it.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness: PostgreSQL (with pgvector and current migrations), S3, models (required) and Redis
/// (optional: when it is down the service still works, with per-replica rate limits).
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "ready or degraded", body = ReadyResponse),
        (status = 503, description = "a required component is down; `components` names it", body = ReadyResponse)
    )
)]
#[get("/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let (database, s3, redis) = tokio::join!(
        check(|| database_check(&state)),
        check(|| async {
            state
                .photos
                .check()
                .await
                .map(|_| None)
                .map_err(|e| e.to_string())
        }),
        check(|| async {
            state
                .cache
                .ping()
                .await
                .map(|_| None)
                .map_err(|e| e.to_string())
        }),
    );
    let models = ComponentReport {
        status: ComponentStatus::Up,
        latency_ms: 0,
        detail: Some(state.faces.engine().model_id().to_string()),
    };
    let required_down = [&database, &s3]
        .iter()
        .any(|c| c.status == ComponentStatus::Down);
    let status = if required_down {
        ReadyStatus::NotReady
    } else if redis.status == ComponentStatus::Down {
        ReadyStatus::Degraded
    } else {
        ReadyStatus::Ready
    };
    let components = BTreeMap::from([
        ("database", database),
        ("storage", s3),
        ("redis", redis),
        ("models", models),
    ]);
    let body = ReadyResponse { status, components };
    if status == ReadyStatus::NotReady {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

async fn database_check(state: &AppState) -> Result<Option<String>, String> {
    let db = crate::store::maintenance::health(&state.db, CHECK_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let Some(version) = db.vector_extension else {
        return Err("the `vector` extension is not installed".to_owned());
    };
    if !db.pending_migrations.is_empty() {
        return Err(format!(
            "migrations not applied: {:?} (run `facepass migrate up`)",
            db.pending_migrations
        ));
    }
    Ok(Some(format!("pgvector {version}")))
}

async fn check<F, Fut>(f: F) -> ComponentReport
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, String>>,
{
    let start = Instant::now();
    let result = match tokio::time::timeout(CHECK_TIMEOUT, f()).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    let latency_ms = start.elapsed().as_millis() as u64;
    match result {
        Ok(detail) => ComponentReport {
            status: ComponentStatus::Up,
            latency_ms,
            detail,
        },
        Err(reason) => ComponentReport {
            status: ComponentStatus::Down,
            latency_ms,
            detail: Some(reason),
        },
    }
}

/// Prometheus metrics in text format.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    crate::metrics::set_inferences_in_flight(state.faces.in_flight() + state.faces.queued());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
