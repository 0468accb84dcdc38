//! POST /api/v2/search: the photos of a session a selfie's person appears in.

use std::time::Instant;

use actix_web::{post, web, HttpRequest};
use metrics::counter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::domain::{SessionId, Threshold};
use crate::error::{ApiError, Code, ErrorBody};
use crate::face::AnalyzeOptions;
use crate::indexing::{bbox4, box_of};
use crate::metrics::SEARCHES;
use crate::routes::form::{read_form, IMAGE_FIELDS};
use crate::routes::parse_id;
use crate::startup::AppState;
use crate::store::catalog;

pub const DEFAULT_TOP_K: i64 = 50;
pub const MAX_TOP_K: i64 = 1000;

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the request body; the form is read by `read_form`
pub struct SearchForm {
    #[schema(example = "wedding-2026-11-21")]
    session_id: String,
    /// The selfie: its largest face is searched for.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Most photos to return (1-1000, default 50).
    #[schema(minimum = 1, maximum = 1000)]
    top_k: Option<i64>,
    /// Minimum cosine similarity (0-1, default FACE_SIMILARITY_THRESHOLD).
    #[schema(minimum = 0.0, maximum = 1.0)]
    threshold: Option<f32>,
}

#[derive(Serialize, ToSchema)]
pub struct QueryFace {
    pub bbox: [f32; 4],
    pub score: f32,
}

#[derive(Serialize, ToSchema)]
pub struct SearchHit {
    pub photo_id: String,
    /// The photo's best-matching face.
    pub face_id: Uuid,
    pub bbox: [f32; 4],
    /// Cosine similarity of that face to the selfie's face.
    pub similarity: f32,
    /// Presigned GET URL of the photo (expires after S3_PRESIGN_EXPIRY_SECS).
    pub url: String,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    pub session_id: String,
    /// The selfie face that was searched for (the largest).
    pub query_face: QueryFace,
    /// Other faces seen in the selfie, not searched.
    pub other_faces: usize,
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
        (status = 422, description = "no_face_detected, invalid_image, invalid_field", body = ErrorBody),
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
    let bytes = form.one_file(IMAGE_FIELDS)?.to_vec();

    let session_row = catalog::find_session(&state.db, &tenant.id, &session)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                Code::SessionNotFound,
                format!("session `{session}` not found"),
            )
        })?;

    let options = AnalyzeOptions {
        max_faces: state.config.face.max_faces_per_photo,
        min_face_px: 0,
        min_score: state.config.face.detection_threshold.get(),
        embed: true,
        largest_only: true,
    };
    let analysis = state
        .faces
        .run(move |engine| engine.analyze(&bytes, &options))
        .await?;
    crate::metrics::record_inference(&analysis.timings);
    let mut found = analysis.faces.iter().filter(|f| f.embedding.is_some());
    let Some(face) = found.next() else {
        counter!(SEARCHES, "outcome" => "no_face").increment(1);
        return Err(ApiError::new(
            Code::NoFaceDetected,
            "no face found in the selfie",
        ));
    };
    let embedding = face
        .embedding
        .as_ref()
        .map(|e| e.as_slice())
        .unwrap_or_default();
    let other_faces = analysis.faces.len().saturating_sub(1);

    let model_id = state.faces.engine().model_id().to_owned();
    let hits = catalog::search_session(
        &state.db,
        &tenant.id,
        session_row.session_pk,
        &model_id,
        embedding,
        threshold.get(),
        top_k,
    )
    .await?;
    let mut results = Vec::with_capacity(hits.len());
    for hit in hits {
        results.push(SearchHit {
            url: state.photos.presign_get(&hit.s3_key).await?,
            photo_id: hit.photo_id,
            face_id: hit.face_id,
            bbox: bbox4(&hit.bbox),
            similarity: hit.similarity as f32,
        });
    }
    counter!(SEARCHES, "outcome" => if results.is_empty() { "no_match" } else { "match" })
        .increment(1);
    Ok(web::Json(SearchResponse {
        session_id: session.to_string(),
        query_face: QueryFace {
            bbox: box_of(&face.bbox),
            score: face.score,
        },
        other_faces,
        threshold: threshold.get(),
        top_k,
        results,
        took_ms: start.elapsed().as_secs_f64() * 1000.0,
    }))
}
