//! /api/v2/identities: enrollment, 1:1 verification, 1:N identification.

use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::{IdentityId, Threshold};
use crate::error::{ApiError, Code, ErrorBody};
use crate::http::auth::Tenant;
use crate::http::routes::form::{read_form, Form, IMAGE_FIELDS};
use crate::state::AppState;
use crate::store::identities::{self as store, EnrollMode};
use crate::workflows::identity::{
    self, require_enabled, EnrollOutcome, IdentifyOutcome, IdentitySummary, VerifyOutcome,
};

pub fn parse_identity(raw: &str) -> Result<IdentityId, ApiError> {
    IdentityId::parse(raw).map_err(|e| ApiError::invalid_field("identity_id", e))
}

fn not_enrolled(identity: &IdentityId) -> ApiError {
    ApiError::new(
        Code::IdentityNotEnrolled,
        format!("identity `{identity}` is not enrolled"),
    )
}

fn threshold_field(form: &Form, name: &str) -> Result<Option<Threshold>, ApiError> {
    form.number::<f32>(name)?
        .map(|t| Threshold::parse(t).map_err(|e| ApiError::invalid_field(name, e)))
        .transpose()
}

#[derive(Deserialize, IntoParams)]
pub struct EnrollQuery {
    /// `replace` (default): the images replace any earlier enrollment; `append`: they are added.
    mode: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the request body; the form is read by `read_form`
pub struct EnrollForm {
    /// Three or more images (ENROLL_MIN_IMAGES), each with the person's face; repeat the field.
    /// In JSON: `images_b64`, an array of base64 strings.
    #[schema(value_type = Vec<String>, format = Binary)]
    images: Vec<Vec<u8>>,
}

/// Enroll (or re-enroll) an identity from several photos; the largest face of each is used.
#[utoipa::path(
    tag = "identities",
    security(("api_key" = [])),
    params(("identity_id" = String, Path), EnrollQuery),
    request_body(content = EnrollForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = EnrollOutcome),
        (status = 401, description = "missing_api_key / invalid_api_key", body = ErrorBody),
        (status = 409, description = "conflict: appending with another model", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 422, description = "not_enough_images, no_face_detected (names the image), invalid_image", body = ErrorBody),
        (status = 503, description = "feature_disabled, overloaded, database_unavailable", body = ErrorBody),
    )
)]
#[put("/identities/{identity_id}")]
#[tracing::instrument(name = "enroll", skip_all, fields(tenant = %tenant.id))]
pub async fn enroll(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
    query: web::Query<EnrollQuery>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<EnrollOutcome>, ApiError> {
    require_enabled(&state)?;
    let identity = parse_identity(&path)?;
    let mode = match query.mode.as_deref() {
        None | Some("replace") => EnrollMode::Replace,
        Some("append") => EnrollMode::Append,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "mode",
                "must be `replace` or `append`",
            ))
        }
    };
    let form = read_form(&req, payload, state.config.http.max_upload_bytes).await?;
    let images = form
        .files(IMAGE_FIELDS)
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    let outcome = identity::enroll(&state, &tenant.id, &identity, images, mode).await?;
    Ok(web::Json(outcome))
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the request body; the form is read by `read_form`
pub struct ProbeForm {
    /// The probe image; its largest face is used. In JSON: `image_b64`.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// Minimum similarity to count as verified (0-1, default VERIFY_HI_THRESHOLD).
    threshold: Option<f32>,
}

/// 1:1 verification of a probe photo against an enrolled identity.
#[utoipa::path(
    tag = "identities",
    security(("api_key" = [])),
    params(("identity_id" = String, Path)),
    request_body(content = ProbeForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = VerifyOutcome),
        (status = 401, description = "missing_api_key / invalid_api_key", body = ErrorBody),
        (status = 404, description = "identity_not_enrolled", body = ErrorBody),
        (status = 422, description = "no_face_detected, invalid_image, invalid_field", body = ErrorBody),
        (status = 503, description = "feature_disabled, overloaded", body = ErrorBody),
    )
)]
#[post("/identities/{identity_id}/verify")]
#[tracing::instrument(name = "verify", skip_all, fields(tenant = %tenant.id))]
pub async fn verify(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<VerifyOutcome>, ApiError> {
    require_enabled(&state)?;
    let identity = parse_identity(&path)?;
    let form = read_form(&req, payload, state.config.http.max_upload_bytes).await?;
    let threshold = threshold_field(&form, "threshold")?;
    let probe = form.one_file(IMAGE_FIELDS)?.to_vec();
    let outcome = identity::verify(&state, &tenant.id, &identity, probe, threshold).await?;
    Ok(web::Json(outcome))
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the request body; the form is read by `read_form`
pub struct IdentifyForm {
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// Candidates to return (1-100, default 5).
    top_k: Option<i64>,
    threshold: Option<f32>,
}

/// 1:N identification: the tenant's enrolled identities closest to a probe photo.
#[utoipa::path(
    tag = "identities",
    security(("api_key" = [])),
    request_body(content = IdentifyForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = IdentifyOutcome),
        (status = 401, description = "missing_api_key / invalid_api_key", body = ErrorBody),
        (status = 422, description = "no_face_detected, invalid_image, invalid_field", body = ErrorBody),
        (status = 503, description = "feature_disabled, overloaded", body = ErrorBody),
    )
)]
#[post("/identities/search")]
#[tracing::instrument(name = "identify", skip_all, fields(tenant = %tenant.id))]
pub async fn identify(
    state: web::Data<AppState>,
    tenant: Tenant,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<IdentifyOutcome>, ApiError> {
    require_enabled(&state)?;
    let form = read_form(&req, payload, state.config.http.max_upload_bytes).await?;
    let top_k = form.number::<i64>("top_k")?.unwrap_or(5);
    if !(1..=100).contains(&top_k) {
        return Err(ApiError::invalid_field(
            "top_k",
            "must be between 1 and 100",
        ));
    }
    let threshold = threshold_field(&form, "threshold")?;
    let probe = form.one_file(IMAGE_FIELDS)?.to_vec();
    let outcome = identity::identify(&state, &tenant.id, probe, top_k, threshold).await?;
    Ok(web::Json(outcome))
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// Page size (1-500, default 100).
    limit: Option<i64>,
    /// Return identities after this id (the `next` of the previous page).
    after: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct IdentityList {
    pub identities: Vec<IdentitySummary>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The tenant's identities, in id order, a page at a time.
#[utoipa::path(
    tag = "identities",
    security(("api_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, body = IdentityList),
        (status = 401, description = "missing_api_key / invalid_api_key", body = ErrorBody),
        (status = 422, description = "invalid_field", body = ErrorBody),
    )
)]
#[get("/identities")]
pub async fn list(
    state: web::Data<AppState>,
    tenant: Tenant,
    query: web::Query<ListQuery>,
) -> Result<web::Json<IdentityList>, ApiError> {
    require_enabled(&state)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 500",
        ));
    }
    let after = query.after.as_deref().map(parse_identity).transpose()?;
    let rows = store::list(
        &state.db,
        &tenant.id,
        after.as_ref().map(|a| a.as_str()),
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    let identities: Vec<IdentitySummary> = rows
        .into_iter()
        .take(limit as usize)
        .map(Into::into)
        .collect();
    let next = more
        .then(|| identities.last().map(|i| i.identity_id.clone()))
        .flatten();
    Ok(web::Json(IdentityList { identities, next }))
}

/// One identity.
#[utoipa::path(
    tag = "identities",
    security(("api_key" = [])),
    params(("identity_id" = String, Path)),
    responses(
        (status = 200, body = IdentitySummary),
        (status = 404, description = "identity_not_enrolled", body = ErrorBody),
    )
)]
#[get("/identities/{identity_id}")]
pub async fn get(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
) -> Result<web::Json<IdentitySummary>, ApiError> {
    require_enabled(&state)?;
    let identity = parse_identity(&path)?;
    let row = store::find(&state.db, &tenant.id, &identity)
        .await?
        .ok_or_else(|| not_enrolled(&identity))?;
    Ok(web::Json(row.into()))
}

/// Delete an identity: its embeddings and the tags it put on indexed faces.
#[utoipa::path(
    tag = "identities",
    security(("api_key" = [])),
    params(("identity_id" = String, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "identity_not_enrolled", body = ErrorBody),
    )
)]
#[delete("/identities/{identity_id}")]
pub async fn remove(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_enabled(&state)?;
    let identity = parse_identity(&path)?;
    if !store::delete(&state.db, &tenant.id, &identity).await? {
        return Err(not_enrolled(&identity));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, ToSchema)]
pub struct TaggedPhoto {
    pub session_id: String,
    pub photo_id: String,
    pub face_id: Uuid,
    pub bbox: [f32; 4],
    pub similarity: f32,
    /// Presigned GET URL of the photo.
    pub url: String,
}

#[derive(Serialize, ToSchema)]
pub struct TaggedPhotos {
    pub identity_id: String,
    pub tagging_status: String,
    pub photos: Vec<TaggedPhoto>,
}

/// Indexed photos in which this identity was recognised (identity tagging).
#[utoipa::path(
    tag = "identities",
    security(("api_key" = [])),
    params(("identity_id" = String, Path), ListQuery),
    responses(
        (status = 200, body = TaggedPhotos),
        (status = 404, description = "identity_not_enrolled", body = ErrorBody),
    )
)]
#[get("/identities/{identity_id}/photos")]
pub async fn photos(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<web::Json<TaggedPhotos>, ApiError> {
    require_enabled(&state)?;
    let identity = parse_identity(&path)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 500);
    let row = store::find(&state.db, &tenant.id, &identity)
        .await?
        .ok_or_else(|| not_enrolled(&identity))?;
    let tagged = store::tagged_photos(&state.db, row.identity_pk, limit).await?;
    let mut photos = Vec::with_capacity(tagged.len());
    for t in tagged {
        photos.push(TaggedPhoto {
            url: state.photos.presign_get(&t.s3_key).await?,
            session_id: t.session_id,
            photo_id: t.photo_id,
            face_id: t.face_id,
            bbox: t.bbox.corners(),
            similarity: t.similarity,
        });
    }
    Ok(web::Json(TaggedPhotos {
        identity_id: row.identity_id,
        tagging_status: row.tagging_status,
        photos,
    }))
}
