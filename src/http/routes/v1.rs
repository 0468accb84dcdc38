//! /api/v1 compatibility for clients of the earlier face-pipeline service: the same request and
//! response shapes, errors as `{"detail": "<code>"}`. The tenant comes from the API key; a
//! `tenant_id` in the body must match it.

use actix_web::{post, web, HttpResponse, ResponseError};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::Threshold;
use crate::error::ApiError;
use crate::http::auth::Tenant;
use crate::http::routes::form::decode_base64;
use crate::http::routes::identities::parse_identity;
use crate::state::AppState;
use crate::store::identities::EnrollMode;
use crate::workflows::identity;

/// The v1 error shape, plus our stable code and message.
fn v1_error(err: ApiError) -> HttpResponse {
    let mut resp = HttpResponse::build(err.status_code());
    resp.json(serde_json::json!({
        "detail": err.code().as_str(),
        "code": err.code().as_str(),
        "message": err.message(),
    }))
}

/// Why a v1 request is refused before it is run.
enum Refusal {
    Auth(ApiError),
    TenantMismatch,
}

impl Refusal {
    fn respond(self) -> HttpResponse {
        match self {
            Refusal::Auth(e) => v1_error(e),
            Refusal::TenantMismatch => HttpResponse::Forbidden().json(serde_json::json!({
                "detail": "tenant_mismatch",
                "code": "tenant_mismatch",
                "message": "tenant_id does not match the API key's tenant",
            })),
        }
    }
}

fn tenant_of(tenant: Result<Tenant, ApiError>, claimed: &str) -> Result<Tenant, Refusal> {
    let tenant = tenant.map_err(Refusal::Auth)?;
    if claimed != tenant.id.as_str() {
        return Err(Refusal::TenantMismatch);
    }
    Ok(tenant)
}

fn decode_all(images: &[String], field: &str) -> Result<Vec<Vec<u8>>, ApiError> {
    images
        .iter()
        .map(|s| {
            decode_base64(s)
                .ok_or_else(|| ApiError::invalid_field(field, "is not valid base64 image data"))
        })
        .collect()
}

#[derive(Deserialize, ToSchema)]
pub struct EnrollV1 {
    pub tenant_id: String,
    pub identity_id: String,
    /// Base64 images (`data:image/...;base64,` prefix accepted).
    pub images_b64: Vec<String>,
}

/// v1: enroll an identity (replaces an earlier enrollment).
#[utoipa::path(
    tag = "v1",
    security(("api_key" = [])),
    request_body = EnrollV1,
    responses(
        (status = 200, description = "`{\"ok\": true, \"identity\": {...}, \"vector_dim\": 512}`"),
        (status = 403, description = "`{\"detail\": \"tenant_mismatch\"}`"),
        (status = 422, description = "`{\"detail\": \"not_enough_images\"}` and other codes"),
    )
)]
#[post("/enroll_identity")]
pub async fn enroll_identity(
    state: web::Data<AppState>,
    tenant: Result<Tenant, ApiError>,
    body: web::Json<EnrollV1>,
) -> HttpResponse {
    let tenant = match tenant_of(tenant, &body.tenant_id) {
        Ok(t) => t,
        Err(refusal) => return refusal.respond(),
    };
    let result = async {
        let identity = parse_identity(&body.identity_id)?;
        let images = decode_all(&body.images_b64, "images_b64")?;
        identity::enroll(&state, &tenant.id, &identity, images, EnrollMode::Replace).await
    }
    .await;
    match result {
        Ok(outcome) => HttpResponse::Ok().json(serde_json::json!({
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
        })),
        Err(e) => v1_error(e),
    }
}

#[derive(Deserialize, ToSchema)]
pub struct VerifyV1 {
    pub tenant_id: String,
    pub identity_id: String,
    pub image_b64: String,
    /// Similarity needed to verify (default VERIFY_HI_THRESHOLD).
    pub hi_threshold: Option<f32>,
}

/// v1: verify a probe image against an enrolled identity.
#[utoipa::path(
    tag = "v1",
    security(("api_key" = [])),
    request_body = VerifyV1,
    responses(
        (status = 200, description = "`{\"verified\": bool, \"similarity\": f, \"hi_threshold\": f, ...}`"),
        (status = 404, description = "`{\"detail\": \"identity_not_enrolled\"}`"),
        (status = 403, description = "`{\"detail\": \"tenant_mismatch\"}`"),
    )
)]
#[post("/verify")]
pub async fn verify(
    state: web::Data<AppState>,
    tenant: Result<Tenant, ApiError>,
    body: web::Json<VerifyV1>,
) -> HttpResponse {
    let tenant = match tenant_of(tenant, &body.tenant_id) {
        Ok(t) => t,
        Err(refusal) => return refusal.respond(),
    };
    let result = async {
        let identity = parse_identity(&body.identity_id)?;
        let threshold = body
            .hi_threshold
            .map(|t| Threshold::parse(t).map_err(|e| ApiError::invalid_field("hi_threshold", e)))
            .transpose()?;
        let probe = decode_all(std::slice::from_ref(&body.image_b64), "image_b64")?;
        let probe = probe.into_iter().next().unwrap_or_default();
        identity::verify(&state, &tenant.id, &identity, probe, threshold).await
    }
    .await;
    match result {
        Ok(o) => HttpResponse::Ok().json(serde_json::json!({
            "verified": o.verified,
            "similarity": o.similarity,
            "hi_threshold": o.threshold,
            "threshold": o.threshold,
            "tenant_id": tenant.id.as_str(),
            "identity_id": o.identity_id,
            "probe_face": o.probe_face,
        })),
        Err(e) => v1_error(e),
    }
}
