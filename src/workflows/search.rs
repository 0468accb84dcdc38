//! Searching a session with a selfie, or up to three: each one's largest face, combined into
//! one query, compared exactly with every face of the session (`store::catalog::search_session`),
//! one hit per photo with a presigned URL.

use metrics::counter;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use facepass_face::Embedding;

use crate::domain::{SessionId, TenantId, Threshold};
use crate::error::{ApiError, Code};
use crate::metrics::SEARCHES;
use crate::state::AppState;
use crate::store::catalog;
use crate::workflows::options::{analyze_probe, Probe, Recovered};

pub const DEFAULT_TOP_K: i64 = 50;
/// Most selfies one search takes. Three already find 98-100% of a person's photos on the hard
/// sets of docs/THRESHOLDS.md ("Several selfies"), against 87-99% for one.
pub const MAX_SELFIES: usize = 3;

/// A session search, checked.
pub struct SearchRequest {
    pub tenant: TenantId,
    pub session: SessionId,
    /// The selfies' bytes, 1..=MAX_SELFIES of them.
    pub selfies: Vec<Vec<u8>>,
    /// 1..=MAX_TOP_K.
    pub top_k: i64,
    pub threshold: Threshold,
}

#[derive(Clone, Serialize, ToSchema)]
pub struct QueryFace {
    pub bbox: [f32; 4],
    pub score: f32,
    /// Set when the face would have been missed under the indexing rules: `low_score` (it
    /// scores under FACE_DETECTION_THRESHOLD) or `light_retry` (found only on a brightened copy
    /// of a dark photo). A client may ask for a better-lit selfie.
    pub recovered: Option<Recovered>,
}

/// What became of one selfie of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SelfieStatus {
    /// Its face is part of the query.
    Used,
    /// No face was found.
    NoFace,
    /// Its largest face is under MIN_FACE_PX.
    TooSmall,
    /// Its faces score under PROBE_DETECTION_THRESHOLD.
    LowScore,
    /// Its face matches none of the other selfies' at the search threshold, so it is left out
    /// (a wrong selfie would otherwise pull in another person's photos).
    Disagrees,
}

#[derive(Serialize, ToSchema)]
pub struct SelfieReport {
    /// Position among the selfies sent, from 0.
    pub index: usize,
    pub status: SelfieStatus,
    /// Its largest usable face, when it has one.
    pub face: Option<QueryFace>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchHit {
    pub photo_id: String,
    /// The photo's best-matching face.
    pub face_id: Uuid,
    pub bbox: [f32; 4],
    /// Cosine similarity of that face to the query (the selfie's face, or the normalised mean
    /// of the selfies' faces).
    pub similarity: f32,
    /// Presigned GET URL of the photo (expires after S3_PRESIGN_EXPIRY_SECS).
    pub url: String,
}

pub struct SearchOutcome {
    /// The face searched for: the largest of the first selfie used.
    pub query_face: QueryFace,
    /// Other faces seen in the selfies used, not searched.
    pub other_faces: usize,
    /// One entry per selfie sent, in order.
    pub selfies: Vec<SelfieReport>,
    /// One entry per photo, best first.
    pub hits: Vec<SearchHit>,
}

/// The photos of a session that show the selfies' person: 404 `session_not_found`, 422
/// `no_face_detected` when no selfie has a usable face. The selfies are analysed one after
/// another, so a search holds one inference worker at a time however many it sends.
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

    let total = req.selfies.len();
    let mut selfies = Vec::with_capacity(total);
    for (index, bytes) in req.selfies.into_iter().enumerate() {
        selfies.push(look_at_selfie(state, index, bytes).await?);
    }
    agree(&mut selfies, req.threshold.get());
    let used: Vec<&Selfie> = selfies
        .iter()
        .filter(|s| s.report.status == SelfieStatus::Used)
        .collect();
    let Some(first) = used.first() else {
        counter!(SEARCHES, "outcome" => "no_face").increment(1);
        let message = if total == 1 {
            "no face found in the selfie".to_owned()
        } else {
            format!("no face found in any of the {total} selfies")
        };
        return Err(ApiError::new(Code::NoFaceDetected, message));
    };
    let query_face =
        first.report.face.clone().ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("a selfie was used without a face"))
        })?;
    let other_faces = used.iter().map(|s| s.others).sum();
    let embedding = mean_embedding(&used)?;

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
        query_face,
        other_faces,
        selfies: selfies.into_iter().map(|s| s.report).collect(),
        hits,
    })
}

/// One selfie, looked at.
struct Selfie {
    report: SelfieReport,
    embedding: Option<Embedding>,
    others: usize,
}

async fn look_at_selfie(
    state: &AppState,
    index: usize,
    bytes: Vec<u8>,
) -> Result<Selfie, ApiError> {
    let (status, face, embedding, others) = match analyze_probe(state, bytes).await? {
        Probe::Face {
            face,
            recovered,
            others,
        } => (
            SelfieStatus::Used,
            Some(QueryFace {
                bbox: face.bbox.corners(),
                score: face.score,
                recovered,
            }),
            face.embedding,
            others,
        ),
        Probe::NoFace => (SelfieStatus::NoFace, None, None, 0),
        Probe::TooSmall(_) => (SelfieStatus::TooSmall, None, None, 0),
        Probe::LowScore => (SelfieStatus::LowScore, None, None, 0),
    };
    Ok(Selfie {
        report: SelfieReport {
            index,
            status,
            face,
        },
        embedding,
        others,
    })
}

/// Leaves out a selfie whose face matches none of the others' at `threshold`. Two selfies of
/// one person scored at least 0.377 against each other on ../shared/faceeval, a wrong person at
/// most 0.176; with one wrong selfie of three, the check cuts the wrong person's photos returned
/// from 15% to 0.1%. When no two agree, the first face is kept: it is the guest's own choice.
fn agree(selfies: &mut [Selfie], threshold: f32) {
    let faces: Vec<(usize, &Embedding)> = selfies
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.embedding.as_ref().map(|e| (i, e)))
        .collect();
    if faces.len() < 2 {
        return;
    }
    let agrees: Vec<(usize, bool)> = faces
        .iter()
        .map(|(i, e)| {
            let ok = faces
                .iter()
                .any(|(j, other)| i != j && e.cosine(other) >= threshold);
            (*i, ok)
        })
        .collect();
    let keep_first_only = agrees.iter().all(|(_, ok)| !ok);
    for (k, (i, ok)) in agrees.into_iter().enumerate() {
        if !(ok || keep_first_only && k == 0) {
            selfies[i].report.status = SelfieStatus::Disagrees;
        }
    }
}

/// The normalised mean of the selfies' embeddings: it found more true photos than the best of
/// the selfies at the same false-match rate (docs/THRESHOLDS.md, "Several selfies").
fn mean_embedding(used: &[&Selfie]) -> Result<Embedding, ApiError> {
    let embeddings: Vec<&Embedding> = used.iter().filter_map(|s| s.embedding.as_ref()).collect();
    let dim = embeddings.first().map_or(0, |e| e.dim());
    if embeddings.len() == 1 {
        return Ok(embeddings[0].clone());
    }
    let mut sum = vec![0.0f32; dim];
    for e in &embeddings {
        for (s, v) in sum.iter_mut().zip(e.as_slice()) {
            *s += v;
        }
    }
    Embedding::from_model_output(sum, dim).map_err(ApiError::internal)
}
