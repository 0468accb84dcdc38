//! Searching a session with a selfie: its largest face, compared exactly with every face of the
//! session (`store::catalog::search_session`), one hit per photo with a presigned URL.

use metrics::counter;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{SessionId, TenantId, Threshold};
use crate::error::{ApiError, Code};
use crate::metrics::SEARCHES;
use crate::state::AppState;
use crate::store::catalog;

pub const DEFAULT_TOP_K: i64 = 50;

/// A session search, checked.
pub struct SearchRequest {
    pub tenant: TenantId,
    pub session: SessionId,
    /// The selfie's bytes.
    pub selfie: Vec<u8>,
    /// 1..=MAX_TOP_K.
    pub top_k: i64,
    pub threshold: Threshold,
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

pub struct SearchOutcome {
    /// The selfie face that was searched for (the largest).
    pub query_face: QueryFace,
    /// Other faces seen in the selfie, not searched.
    pub other_faces: usize,
    /// One entry per photo, best first.
    pub hits: Vec<SearchHit>,
}

/// The photos of a session that show the selfie's person: 404 `session_not_found`, 422
/// `no_face_detected` when the selfie has no usable face.
pub async fn search_session(
    state: &AppState,
    req: SearchRequest,
) -> Result<SearchOutcome, ApiError> {
    let session_row = catalog::find_session(&state.db, &req.tenant, &req.session)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                Code::SessionNotFound,
                format!("session `{}` not found", req.session),
            )
        })?;

    let options = crate::workflows::options::probe_options(&state.config.face);
    let selfie = req.selfie;
    let analysis = state
        .faces
        .run(move |engine| engine.analyze(&selfie, &options))
        .await?;
    crate::metrics::record_inference(&analysis.timings);
    let Some((face, embedding)) = analysis
        .faces
        .iter()
        .find_map(|f| f.embedding.as_ref().map(|e| (f, e)))
    else {
        counter!(SEARCHES, "outcome" => "no_face").increment(1);
        return Err(ApiError::new(
            Code::NoFaceDetected,
            "no face found in the selfie",
        ));
    };

    let model_id = state.faces.engine().model_id();
    let rows = catalog::search_session(
        &state.db,
        &req.tenant,
        session_row.session_pk,
        model_id,
        embedding.as_slice(),
        req.threshold.get(),
        req.top_k,
    )
    .await?;
    let mut hits = Vec::with_capacity(rows.len());
    for row in rows {
        hits.push(SearchHit {
            url: state.photos.presign_get(&row.s3_key).await?,
            photo_id: row.photo_id,
            face_id: row.face_id,
            bbox: row.bbox.corners(),
            similarity: row.similarity as f32,
        });
    }
    counter!(SEARCHES, "outcome" => if hits.is_empty() { "no_match" } else { "match" })
        .increment(1);
    Ok(SearchOutcome {
        query_face: QueryFace {
            bbox: face.bbox.corners(),
            score: face.score,
        },
        other_faces: analysis.others,
        hits,
    })
}
