//! Tenant-wide face search: the tenant's indexed faces, across all its sessions, closest to the
//! largest face of a probe photo. `POST /api/v1/search` calls this. Unlike session search
//! (`/api/v2/search`, exact within one session), it reads the approximate IVFFlat index, so a
//! match in a list that was not probed can be missed; IVFFLAT_PROBES trades recall for speed.

use std::time::Instant;

use metrics::counter;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{TenantId, Threshold};
use crate::error::{ApiError, Code};
use crate::metrics::SEARCHES;
use crate::state::AppState;
use crate::store::catalog::{self, TenantQuery};
use crate::workflows::identity::{largest_face, FaceBox};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantHit {
    /// Cosine similarity of this face to the probe's face (0-1 in practice).
    pub score: f32,
    pub photo_id: String,
    pub session_id: String,
    pub face_id: Uuid,
    /// The matching face in the photo, [x1, y1, x2, y2] in pixels of the upright photo.
    pub bbox: [f32; 4],
    /// Presigned GET URL of the photo (expires after S3_PRESIGN_EXPIRY_SECS).
    pub url: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantSearchOutcome {
    /// The probe's face that was searched for: its largest usable face.
    pub query: FaceBox,
    pub threshold: f32,
    pub top_k: i64,
    /// Best first; one entry per matching face (a photo showing the person twice appears twice).
    pub hits: Vec<TenantHit>,
    pub took_ms: f64,
}

#[tracing::instrument(name = "tenant_search", skip_all, fields(tenant = %tenant))]
pub async fn search(
    state: &AppState,
    tenant: &TenantId,
    probe: Vec<u8>,
    top_k: i64,
    threshold: Option<Threshold>,
) -> Result<TenantSearchOutcome, ApiError> {
    let start = Instant::now();
    let threshold = threshold.unwrap_or(state.config.face.similarity_threshold);
    let (face, query_face) = match largest_face(state, probe, None).await {
        Ok(found) => found,
        Err(e) => {
            if e.code() == Code::NoFaceDetected {
                counter!(SEARCHES, "outcome" => "no_face").increment(1);
            }
            return Err(e);
        }
    };
    let embedding = face
        .embedding
        .as_ref()
        .map(|e| e.as_slice())
        .unwrap_or_default();
    let query = TenantQuery {
        tenant,
        model_id: state.faces.engine().model_id(),
        embedding,
        threshold: threshold.get(),
        top_k,
        probes: state.config.database.ivfflat_probes,
    };
    let found = catalog::search_tenant(&state.db, &query).await?;
    let mut hits = Vec::with_capacity(found.len());
    for hit in found {
        hits.push(TenantHit {
            url: state.photos.presign_get(&hit.s3_key).await?,
            score: hit.similarity as f32,
            photo_id: hit.photo_id,
            session_id: hit.session_id,
            face_id: hit.face_id,
            bbox: hit.bbox.corners(),
        });
    }
    counter!(SEARCHES, "outcome" => if hits.is_empty() { "no_match" } else { "match" })
        .increment(1);
    Ok(TenantSearchOutcome {
        query: query_face,
        threshold: threshold.get(),
        top_k,
        hits,
        took_ms: start.elapsed().as_secs_f64() * 1000.0,
    })
}
