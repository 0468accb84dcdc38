//! POST /api/v2/index: add (or replace) a photo in a session.

use actix_web::{post, web, HttpRequest};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::{PhotoId, SessionId};
use crate::error::{ApiError, ErrorBody};
use crate::http::auth::Tenant;
use crate::http::routes::form::{read_form, IMAGE_FIELDS};
use crate::http::routes::parse_id;
use crate::state::AppState;
use crate::workflows::indexing::{index_photo, IndexOutcome, IndexRequest};

/// multipart/form-data fields (or the same names in a JSON object, `file` as base64).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the request body; the form is read by `read_form`
pub struct IndexForm {
    /// The partner's photo id: 1-128 characters of [A-Za-z0-9_.:-].
    #[schema(example = "IMG_0042.jpg")]
    photo_id: String,
    /// The event session: 1-128 characters of [A-Za-z0-9_.:-].
    #[schema(example = "wedding-2026-11-21")]
    session_id: String,
    /// JPEG, PNG or WebP image (base64 in JSON, `data:` prefix accepted).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Index a photo: detect every face, store the photo and the faces. Re-indexing a photo id
/// replaces its faces atomically; identical bytes are recognised and not processed again.
#[utoipa::path(
    tag = "index",
    security(("api_key" = [])),
    request_body(content = IndexForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "indexed (possibly with zero faces)", body = IndexOutcome),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "missing_api_key / invalid_api_key", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 422, description = "invalid_field, missing_field, invalid_image, image_too_large", body = ErrorBody),
        (status = 429, description = "rate_limited", body = ErrorBody),
        (status = 503, description = "overloaded, database_unavailable, storage_unavailable", body = ErrorBody),
    )
)]
#[post("/index")]
#[tracing::instrument(name = "index", skip_all, fields(tenant = %tenant.id))]
pub async fn index(
    state: web::Data<AppState>,
    tenant: Tenant,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<IndexOutcome>, ApiError> {
    let form = read_form(&req, payload, state.config.http.max_upload_bytes).await?;
    let photo: PhotoId = parse_id(&form, "photo_id")?;
    let session: SessionId = parse_id(&form, "session_id")?;
    let bytes = form.one_file(IMAGE_FIELDS)?.to_vec();
    let outcome = index_photo(
        &state,
        IndexRequest {
            tenant: tenant.id,
            session,
            photo,
            bytes,
        },
    )
    .await?;
    Ok(web::Json(outcome))
}
