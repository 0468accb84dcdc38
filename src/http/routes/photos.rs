//! Single photos: metadata with faces, and deletion.

use actix_web::{delete, get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::PhotoId;
use crate::error::{ApiError, Code, ErrorBody};
use crate::http::auth::Tenant;
use crate::http::routes::sessions::parse_session;
use crate::state::AppState;
use crate::store::catalog;

#[derive(Deserialize, IntoParams)]
pub struct PhotoQuery {
    /// The session the photo belongs to.
    session_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct PhotoFace {
    pub face_id: Uuid,
    pub bbox: [f32; 4],
    /// [[x, y]; 5]: eyes, nose, mouth corners.
    pub landmarks: Vec<[f32; 2]>,
    pub score: f32,
    pub size_px: f32,
    pub sharpness: f32,
    pub model_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct PhotoResponse {
    pub photo_id: String,
    pub session_id: String,
    pub width: i32,
    pub height: i32,
    pub size_bytes: i64,
    pub content_type: String,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
    pub indexed_at: chrono::DateTime<chrono::Utc>,
    pub faces: Vec<PhotoFace>,
    /// Presigned GET URL (expires after S3_PRESIGN_EXPIRY_SECS).
    pub url: String,
}

fn parse_photo(raw: &str) -> Result<PhotoId, ApiError> {
    PhotoId::parse(raw).map_err(|e| ApiError::invalid_field("photo_id", e))
}

fn not_found(photo: &PhotoId) -> ApiError {
    ApiError::new(Code::PhotoNotFound, format!("photo `{photo}` not found"))
}

/// A photo's metadata, its faces and a presigned URL.
#[utoipa::path(
    tag = "photos",
    security(("api_key" = [])),
    params(("photo_id" = String, Path, description = "the photo id"), PhotoQuery),
    responses(
        (status = 200, body = PhotoResponse),
        (status = 401, description = "missing_api_key / invalid_api_key", body = ErrorBody),
        (status = 404, description = "photo_not_found", body = ErrorBody),
        (status = 422, description = "invalid_field", body = ErrorBody),
    )
)]
#[get("/photos/{photo_id}")]
pub async fn get_photo(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
    query: web::Query<PhotoQuery>,
) -> Result<web::Json<PhotoResponse>, ApiError> {
    let photo = parse_photo(&path)?;
    let session = parse_session(&query.session_id)?;
    let row = catalog::find_photo(&state.db, &tenant.id, &session, &photo)
        .await?
        .ok_or_else(|| not_found(&photo))?;
    let faces = catalog::photo_faces(&state.db, row.photo_pk).await?;
    Ok(web::Json(PhotoResponse {
        url: state.photos.presign_get(&row.s3_key).await?,
        photo_id: row.photo_id,
        session_id: session.to_string(),
        width: row.width,
        height: row.height,
        size_bytes: row.size_bytes,
        content_type: row.content_type,
        sha256: hex::encode(&row.sha256),
        indexed_at: row.indexed_at,
        faces: faces
            .into_iter()
            .map(|f| PhotoFace {
                face_id: f.face_id,
                bbox: f.bbox.corners(),
                landmarks: f.landmarks.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
                score: f.det_score,
                size_px: f.size_px,
                sharpness: f.sharpness,
                model_id: f.model_id,
            })
            .collect(),
    }))
}

/// Delete a photo, its faces and its stored object.
#[utoipa::path(
    tag = "photos",
    security(("api_key" = [])),
    params(("photo_id" = String, Path, description = "the photo id"), PhotoQuery),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "missing_api_key / invalid_api_key", body = ErrorBody),
        (status = 404, description = "photo_not_found", body = ErrorBody),
        (status = 503, description = "database_unavailable, storage_unavailable", body = ErrorBody),
    )
)]
#[delete("/photos/{photo_id}")]
#[tracing::instrument(name = "delete_photo", skip_all, fields(tenant = %tenant.id))]
pub async fn delete_photo(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
    query: web::Query<PhotoQuery>,
) -> Result<HttpResponse, ApiError> {
    let photo = parse_photo(&path)?;
    let session = parse_session(&query.session_id)?;
    state.photos.check().await?;
    let key = catalog::delete_photo(&state.db, &tenant.id, &session, &photo)
        .await?
        .ok_or_else(|| not_found(&photo))?;
    if let Err(e) = state.photos.delete(&key).await {
        tracing::warn!(error = %e, "could not delete the object of a deleted photo; gc will");
    }
    Ok(HttpResponse::NoContent().finish())
}
