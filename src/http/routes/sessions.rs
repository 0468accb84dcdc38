//! Sessions: counts and deletion.

use actix_web::{delete, get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::SessionId;
use crate::error::{ApiError, Code, ErrorBody};
use crate::http::auth::Tenant;
use crate::state::AppState;
use crate::store::catalog;

#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    pub session_id: String,
    pub photo_count: i64,
    pub face_count: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

fn not_found(session: &SessionId) -> ApiError {
    ApiError::new(
        Code::SessionNotFound,
        format!("session `{session}` not found"),
    )
}

pub fn parse_session(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw).map_err(|e| ApiError::invalid_field("session_id", e))
}

/// A session's photo and face counts.
#[utoipa::path(
    tag = "sessions",
    security(("api_key" = [])),
    params(("session_id" = String, Path, description = "the session id")),
    responses(
        (status = 200, body = SessionResponse),
        (status = 401, description = "missing_api_key / invalid_api_key", body = ErrorBody),
        (status = 404, description = "session_not_found", body = ErrorBody),
        (status = 422, description = "invalid_field", body = ErrorBody),
    )
)]
#[get("/sessions/{session_id}")]
pub async fn get_session(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
) -> Result<web::Json<SessionResponse>, ApiError> {
    let session = parse_session(&path)?;
    let row = catalog::find_session(&state.db, &tenant.id, &session)
        .await?
        .ok_or_else(|| not_found(&session))?;
    let (photo_count, face_count) = catalog::session_counts(&state.db, row.session_pk).await?;
    Ok(web::Json(SessionResponse {
        session_id: row.session_id,
        photo_count,
        face_count,
        created_at: row.created_at,
    }))
}

/// Delete a session: every photo, face and stored object of it.
#[utoipa::path(
    tag = "sessions",
    security(("api_key" = [])),
    params(("session_id" = String, Path, description = "the session id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "missing_api_key / invalid_api_key", body = ErrorBody),
        (status = 404, description = "session_not_found", body = ErrorBody),
        (status = 503, description = "database_unavailable, storage_unavailable", body = ErrorBody),
    )
)]
#[delete("/sessions/{session_id}")]
#[tracing::instrument(name = "delete_session", skip_all, fields(tenant = %tenant.id))]
pub async fn delete_session(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = parse_session(&path)?;
    // Refuse while storage is down rather than leave objects nobody can find.
    state.photos.check().await?;
    let keys = catalog::delete_session(&state.db, &tenant.id, &session)
        .await?
        .ok_or_else(|| not_found(&session))?;
    // The rows are gone; remove every object under the session prefix (also those of failed
    // or replaced uploads). What fails here is left for `facepass gc`.
    let prefix = state.photos.session_prefix(&tenant.id, &session);
    let mut objects = state.photos.list(&prefix).await.unwrap_or(keys);
    objects.sort();
    objects.dedup();
    for key in objects {
        if let Err(e) = state.photos.delete(&key).await {
            tracing::warn!(error = %e, "could not delete an object of a deleted session; gc will");
        }
    }
    Ok(HttpResponse::NoContent().finish())
}
