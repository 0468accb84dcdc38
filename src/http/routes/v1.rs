//! /api/v1 compatibility for clients of the earlier face-pipeline service: the same request and
//! response shapes, errors as `{"detail": "<code>", "code", "message"}` with our stable codes.
//! The tenant comes from the API key; a `tenant_id` in the body (required, as the old service
//! required it) must match it, and so must an `X-Tenant-ID` header when one is sent.

use actix_web::body::BoxBody;
use actix_web::{get, post, web, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::MAX_TOP_K;
use crate::domain::Threshold;
use crate::error::ApiError;
use crate::http::auth::{tenant_mismatch, Tenant};
use crate::http::routes::form::decode_base64;
use crate::http::routes::identities::parse_identity;
use crate::state::AppState;
use crate::store::identities::EnrollMode;
use crate::workflows::identity::{self, EnrolledFace, FaceBox};
use crate::workflows::tenant_search::{self, TenantHit};

/// The v1 error body: the old service's `detail`, plus our `code` and `message`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"detail": "identity_not_enrolled", "code": "identity_not_enrolled", "message": "identity `alice` is not enrolled"}))]
pub struct V1Error {
    /// The stable snake_case error code (what the earlier service put here).
    detail: &'static str,
    /// The same code, as in v2 errors.
    code: &'static str,
    /// Human-readable explanation; wording may change, `code` does not.
    message: String,
}

/// An `ApiError` with the v1 body. Status, Retry-After and the log line of a cause are those of
/// `ApiError`'s own response.
fn v1_error(err: ApiError) -> HttpResponse {
    let body = V1Error {
        detail: err.code().as_str(),
        code: err.code().as_str(),
        message: err.message().to_owned(),
    };
    let json = serde_json::to_string(&body).unwrap_or_default();
    err.error_response().set_body(BoxBody::new(json))
}

fn respond<T: Serialize>(result: Result<T, ApiError>) -> HttpResponse {
    match result {
        Ok(body) => HttpResponse::Ok().json(body),
        Err(e) => v1_error(e),
    }
}

/// A JSON body, or the error the JSON extractor produced (already an `ApiError`, from
/// `startup::json_config`) so that it can take the v1 shape.
fn json_body<T>(body: Result<web::Json<T>, actix_web::Error>) -> Result<T, ApiError> {
    body.map(web::Json::into_inner)
        .map_err(|e| match e.as_error::<ApiError>() {
            Some(api) => ApiError::new(api.code(), api.message()),
            None => ApiError::bad_request(format!("invalid JSON body: {e}")),
        })
}

fn required<'a, T>(value: &'a Option<T>, field: &str) -> Result<&'a T, ApiError> {
    value.as_ref().ok_or_else(|| ApiError::missing_field(field))
}

/// The body's `tenant_id` must be the key's tenant.
fn check_tenant(tenant: &Tenant, claimed: &Option<String>) -> Result<(), ApiError> {
    if required(claimed, "tenant_id")? != tenant.id.as_str() {
        return Err(tenant_mismatch("tenant_id"));
    }
    Ok(())
}

fn decode_image(image: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    decode_base64(image)
        .ok_or_else(|| ApiError::invalid_field(field, "is not valid base64 image data"))
}

#[derive(Serialize, ToSchema)]
pub struct HealthV1 {
    /// Always `healthy` when the process answers.
    #[schema(example = "healthy")]
    status: &'static str,
    /// Always `facepass`.
    #[schema(example = "facepass")]
    service: &'static str,
    /// APP_NAME.
    name: String,
    /// APP_VERSION.
    version: String,
}

/// v1: liveness, as the earlier service answered it. Needs no key and touches no dependency;
/// for readiness (database, storage, models) use `GET /api/v2/ready`.
#[utoipa::path(tag = "v1", responses((status = 200, body = HealthV1)))]
#[get("/health")]
pub async fn health(state: web::Data<AppState>) -> web::Json<HealthV1> {
    web::Json(HealthV1 {
        status: "healthy",
        service: "facepass",
        name: state.config.app.name.clone(),
        version: state.config.app.version.clone(),
    })
}

#[derive(Deserialize, ToSchema)]
pub struct EnrollV1 {
    #[schema(required = true, value_type = String, example = "acme")]
    pub tenant_id: Option<String>,
    #[schema(required = true, value_type = String, example = "alice")]
    pub identity_id: Option<String>,
    /// Base64 images (`data:image/...;base64,` prefix accepted), at least ENROLL_MIN_IMAGES.
    #[schema(required = true, value_type = Vec<String>)]
    pub images_b64: Option<Vec<String>>,
}

/// v1: enroll an identity (replaces an earlier enrollment).
#[utoipa::path(
    tag = "v1",
    security(("api_key" = [])),
    request_body = EnrollV1,
    responses(
        (status = 200, description = "`{\"ok\": true, \"identity\": {...}, \"vector_dim\": 512}`"),
        (status = 400, description = "bad_request: the body is not JSON of this shape", body = V1Error),
        (status = 401, description = "missing_api_key, invalid_api_key", body = V1Error),
        (status = 403, description = "tenant_mismatch: `tenant_id` or `X-Tenant-ID` is not the key's tenant", body = V1Error),
        (status = 422, description = "not_enough_images, no_face_detected, invalid_image, invalid_field, missing_field", body = V1Error),
        (status = 503, description = "feature_disabled, overloaded, database_unavailable", body = V1Error),
    )
)]
#[post("/enroll_identity")]
pub async fn enroll_identity(
    state: web::Data<AppState>,
    tenant: Result<Tenant, ApiError>,
    body: Result<web::Json<EnrollV1>, actix_web::Error>,
) -> HttpResponse {
    respond(
        async {
            let tenant = tenant?;
            let body = json_body(body)?;
            check_tenant(&tenant, &body.tenant_id)?;
            let identity = parse_identity(required(&body.identity_id, "identity_id")?)?;
            let images = required(&body.images_b64, "images_b64")?
                .iter()
                .map(|image| decode_image(image, "images_b64"))
                .collect::<Result<Vec<_>, _>>()?;
            let outcome =
                identity::enroll(&state, &tenant.id, &identity, images, EnrollMode::Replace)
                    .await?;
            Ok(serde_json::json!({
                "ok": true,
                "identity": {
                    "tenant_id": tenant.id.as_str(),
                    "identity_id": outcome.identity.identity_id,
                    "images": outcome.identity.images,
                    "model_id": outcome.identity.model_id,
                    "enrolled_at": outcome.identity.enrolled_at,
                    "updated_at": outcome.identity.updated_at,
                },
                "vector_dim": outcome.vector_dim,
            }))
        }
        .await,
    )
}

#[derive(Deserialize, ToSchema)]
pub struct VerifyV1 {
    #[schema(required = true, value_type = String, example = "acme")]
    pub tenant_id: Option<String>,
    #[schema(required = true, value_type = String, example = "alice")]
    pub identity_id: Option<String>,
    /// Base64 image (`data:` prefix accepted); its largest face is the probe.
    #[schema(required = true, value_type = String)]
    pub image_b64: Option<String>,
    /// Similarity needed to verify (0-1, default VERIFY_HI_THRESHOLD).
    pub hi_threshold: Option<f32>,
}

#[derive(Serialize, ToSchema)]
pub struct VerifyV1Response {
    /// `similarity >= hi_threshold`.
    pub verified: bool,
    /// Cosine similarity of the probe's face to the identity's template (the normalised mean of
    /// its enrollment faces): what `verified` is decided on.
    pub similarity: f32,
    pub hi_threshold: f32,
    /// The same as `hi_threshold`, under its v2 name.
    pub threshold: f32,
    pub tenant_id: String,
    pub identity_id: String,
    /// The probe's face that was compared (its largest usable face).
    pub probe_face: FaceBox,
    /// The identity's enrollment faces, each compared with the probe, best first: at most
    /// VERIFY_TOP_K (default 50), which is every enrollment image unless the identity has more.
    /// They show how each image compares; the decision rests on the template (`similarity`).
    /// Indexed event photos are not searched here; `POST /api/v1/search` does that.
    pub results: Vec<EnrolledFace>,
    /// `results.len()`.
    pub count: usize,
}

/// v1: verify a probe image against an enrolled identity (1:1).
#[utoipa::path(
    tag = "v1",
    security(("api_key" = [])),
    request_body = VerifyV1,
    responses(
        (status = 200, body = VerifyV1Response),
        (status = 400, description = "bad_request: the body is not JSON of this shape", body = V1Error),
        (status = 401, description = "missing_api_key, invalid_api_key", body = V1Error),
        (status = 403, description = "tenant_mismatch: `tenant_id` or `X-Tenant-ID` is not the key's tenant", body = V1Error),
        (status = 404, description = "identity_not_enrolled", body = V1Error),
        (status = 409, description = "conflict: enrolled with another model, re-enroll", body = V1Error),
        (status = 422, description = "no_face_detected, invalid_image, invalid_field, missing_field", body = V1Error),
        (status = 503, description = "feature_disabled, overloaded, database_unavailable", body = V1Error),
    )
)]
#[post("/verify")]
pub async fn verify(
    state: web::Data<AppState>,
    tenant: Result<Tenant, ApiError>,
    body: Result<web::Json<VerifyV1>, actix_web::Error>,
) -> HttpResponse {
    respond(
        async {
            let tenant = tenant?;
            let body = json_body(body)?;
            check_tenant(&tenant, &body.tenant_id)?;
            let identity = parse_identity(required(&body.identity_id, "identity_id")?)?;
            let threshold = body
                .hi_threshold
                .map(|t| {
                    Threshold::parse(t).map_err(|e| ApiError::invalid_field("hi_threshold", e))
                })
                .transpose()?;
            let probe = decode_image(required(&body.image_b64, "image_b64")?, "image_b64")?;
            let (o, results) = identity::verify_with_enrolled(
                &state,
                &tenant.id,
                &identity,
                probe,
                threshold,
                state.config.v1.top_k,
            )
            .await?;
            Ok(VerifyV1Response {
                verified: o.verified,
                similarity: o.similarity,
                hi_threshold: o.threshold,
                threshold: o.threshold,
                tenant_id: tenant.id.to_string(),
                identity_id: o.identity_id,
                probe_face: o.probe_face,
                count: results.len(),
                results,
            })
        }
        .await,
    )
}

#[derive(Deserialize, ToSchema)]
pub struct SearchV1 {
    #[schema(required = true, value_type = String, example = "acme")]
    pub tenant_id: Option<String>,
    /// Base64 image (`data:` prefix accepted); its largest face is searched for.
    #[schema(required = true, value_type = String)]
    pub image_b64: Option<String>,
    /// Most hits to return (1-1000, default VERIFY_TOP_K = 50).
    #[schema(minimum = 1, maximum = 1000)]
    pub top_k: Option<i64>,
    /// Minimum cosine similarity of a hit (0-1, default FACE_SIMILARITY_THRESHOLD), as on
    /// `/api/v2/search`.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub threshold: Option<f32>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchV1Response {
    pub tenant_id: String,
    /// The probe's face that was searched for: its largest usable face (box and detector
    /// score).
    pub query: FaceBox,
    /// The tenant's indexed faces closest to `query`, across all its sessions, best first; one
    /// entry per face, each at least `threshold` similar. The search reads the approximate
    /// IVFFlat index (IVFFLAT_PROBES), so it can miss a match that exact session search
    /// (`POST /api/v2/search`) finds.
    pub hits: Vec<TenantHit>,
    /// `hits.len()`.
    pub count: usize,
    pub top_k: i64,
    pub threshold: f32,
    pub took_ms: f64,
}

/// v1 (legacy search): the tenant's indexed photos that show the person in a probe image,
/// across every session.
#[utoipa::path(
    tag = "v1",
    security(("api_key" = [])),
    request_body = SearchV1,
    responses(
        (status = 200, body = SearchV1Response),
        (status = 400, description = "bad_request: the body is not JSON of this shape", body = V1Error),
        (status = 401, description = "missing_api_key, invalid_api_key", body = V1Error),
        (status = 403, description = "tenant_mismatch: `tenant_id` or `X-Tenant-ID` is not the key's tenant", body = V1Error),
        (status = 413, description = "payload_too_large", body = V1Error),
        (status = 422, description = "no_face_detected, invalid_image, invalid_field (`top_k`, `threshold`, `image_b64`), missing_field", body = V1Error),
        (status = 503, description = "overloaded, database_unavailable, storage_unavailable", body = V1Error),
    )
)]
#[post("/search")]
pub async fn search(
    state: web::Data<AppState>,
    tenant: Result<Tenant, ApiError>,
    body: Result<web::Json<SearchV1>, actix_web::Error>,
) -> HttpResponse {
    respond(
        async {
            let tenant = tenant?;
            let body = json_body(body)?;
            check_tenant(&tenant, &body.tenant_id)?;
            let top_k = body.top_k.unwrap_or(state.config.v1.top_k);
            if !(1..=MAX_TOP_K).contains(&top_k) {
                return Err(ApiError::invalid_field(
                    "top_k",
                    format!("must be between 1 and {MAX_TOP_K}"),
                ));
            }
            let threshold = body
                .threshold
                .map(|t| Threshold::parse(t).map_err(|e| ApiError::invalid_field("threshold", e)))
                .transpose()?;
            let probe = decode_image(required(&body.image_b64, "image_b64")?, "image_b64")?;
            let outcome =
                tenant_search::search(&state, &tenant.id, probe, top_k, threshold).await?;
            Ok(SearchV1Response {
                tenant_id: tenant.id.to_string(),
                query: outcome.query,
                count: outcome.hits.len(),
                hits: outcome.hits,
                top_k: outcome.top_k,
                threshold: outcome.threshold,
                took_ms: outcome.took_ms,
            })
        }
        .await,
    )
}
