//! POST /api/v2/search: the photos of a session a selfie's person appears in (one selfie, or up
//! to three of the same person).

use std::time::Instant;

use actix_web::{post, web, HttpRequest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::MAX_TOP_K;
use crate::domain::{SessionId, Threshold};
use crate::error::{ApiError, Code, ErrorBody};
use crate::http::auth::Tenant;
use crate::http::routes::form::{read_form, IMAGE_FIELDS};
use crate::http::routes::parse_id;
use crate::state::AppState;
use crate::workflows::search::{
    search_session, QueryFace, SearchHit, SearchRequest, SelfieReport, DEFAULT_TOP_K, MAX_SELFIES,
};

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the request body; the form is read by `read_form`
pub struct SearchForm {
    #[schema(example = "wedding-2026-11-21")]
    session_id: String,
    /// The selfie: its largest face is searched for. Repeat the field (or send `images_b64` in
    /// JSON) for up to 3 selfies of the same person: their faces are averaged into one query,
    /// leaving out a selfie whose face matches none of the others.
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<u8>,
    /// Most photos to return (1-1000, default 50).
    #[schema(minimum = 1, maximum = 1000)]
    top_k: Option<i64>,
    /// Minimum cosine similarity (0-1, default FACE_SIMILARITY_THRESHOLD).
    #[schema(minimum = 0.0, maximum = 1.0)]
    threshold: Option<f32>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    pub session_id: String,
    /// The face searched for: the largest of the first selfie used.
    pub query_face: QueryFace,
    /// Other faces seen in the selfies used, not searched.
    pub other_faces: usize,
    /// One entry per selfie sent, in order: whether its face was used, and why not.
    pub selfies: Vec<SelfieReport>,
    pub threshold: f32,
    pub top_k: i64,
    /// One entry per photo, best first.
    pub results: Vec<SearchHit>,
    pub took_ms: f64,
}

/// Find the photos of a session that show the person in a selfie.
#[utoipa::path(
    tag = "search",
    security(("api_key" = [])),
    request_body(content = SearchForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "missing_api_key / invalid_api_key", body = ErrorBody),
        (status = 404, description = "session_not_found", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 422, description = "no_face_detected, invalid_image, invalid_field, too_many_selfies", body = ErrorBody),
        (status = 429, description = "rate_limited", body = ErrorBody),
        (status = 503, description = "overloaded, database_unavailable", body = ErrorBody),
    )
)]
#[post("/search")]
#[tracing::instrument(name = "search", skip_all, fields(tenant = %tenant.id))]
pub async fn search(
    state: web::Data<AppState>,
    tenant: Tenant,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<SearchResponse>, ApiError> {
    let start = Instant::now();
    let form = read_form(&req, payload, state.config.http.max_upload_bytes).await?;
    let session: SessionId = parse_id(&form, "session_id")?;
    let top_k = form.number::<i64>("top_k")?.unwrap_or(DEFAULT_TOP_K);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(ApiError::invalid_field(
            "top_k",
            format!("must be between 1 and {MAX_TOP_K}"),
        ));
    }
    let threshold = match form.number::<f32>("threshold")? {
        None => state.config.face.similarity_threshold,
        Some(t) => Threshold::parse(t).map_err(|e| ApiError::invalid_field("threshold", e))?,
    };
    let selfies = form.files(IMAGE_FIELDS);
    if selfies.is_empty() {
        return Err(ApiError::missing_field(IMAGE_FIELDS[0]));
    }
    if selfies.len() > MAX_SELFIES {
        return Err(ApiError::new(
            Code::TooManySelfies,
            format!(
                "{} selfies sent; a search takes at most {MAX_SELFIES}",
                selfies.len()
            ),
        ));
    }
    let selfies = selfies.into_iter().map(<[u8]>::to_vec).collect();
    let outcome = search_session(
        &state,
        SearchRequest {
            tenant: tenant.id,
            session: session.clone(),
            selfies,
            top_k,
            threshold,
        },
    )
    .await?;
    Ok(web::Json(SearchResponse {
        session_id: session.to_string(),
        query_face: outcome.query_face,
        other_faces: outcome.other_faces,
        selfies: outcome.selfies,
        threshold: threshold.get(),
        top_k,
        results: outcome.hits,
        took_ms: start.elapsed().as_secs_f64() * 1000.0,
    }))
}
