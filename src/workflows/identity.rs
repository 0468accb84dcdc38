//! Identities: enroll a known person from a few photos, verify a probe against them (1:1),
//! identify a probe among them (1:N). The v2 routes and the v1 compatibility routes both call
//! these.

use std::time::Instant;

use metrics::{counter, histogram};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::domain::{IdentityId, TenantId, Threshold};
use crate::error::{ApiError, Code};
use crate::metrics::{
    ENROLLMENT_ATTEMPTS, ENROLLMENT_LATENCY, ENROLLMENT_SUCCESS, VERIFICATION_ATTEMPTS,
    VERIFICATION_LATENCY, VERIFICATION_SIMILARITY, VERIFICATION_VERIFIED,
};
use crate::state::AppState;
use crate::store::identities::{
    self, EnrollError, EnrollMode, EnrolledMatch, IdentityRow, NewIdentityEmbedding,
};
use crate::workflows::options::{analyze_probe, Probe, Recovered};
use facepass_face::embedding::cosine;
use facepass_face::{Face, FaceError};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FaceBox {
    /// [x1, y1, x2, y2] in pixels.
    pub bbox: [f32; 4],
    pub score: f32,
    /// Set when the face would have been missed under the indexing rules: `low_score` (it
    /// scores under FACE_DETECTION_THRESHOLD) or `light_retry` (found only on a brightened copy
    /// of a dark photo). A client may ask for a better-lit photo.
    pub recovered: Option<Recovered>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdentitySummary {
    pub identity_id: String,
    /// Enrollment images kept for this identity.
    pub images: i64,
    pub model_id: String,
    /// Tagging of already-indexed faces: pending, running, done or failed.
    pub tagging_status: String,
    /// Indexed faces tagged with this identity (when tagging is done).
    pub tagged_faces: i32,
    pub enrolled_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<IdentityRow> for IdentitySummary {
    fn from(r: IdentityRow) -> Self {
        Self {
            identity_id: r.identity_id,
            images: r.image_count,
            model_id: r.model_id,
            tagging_status: r.tagging_status,
            tagged_faces: r.tagged_faces,
            enrolled_at: r.enrolled_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnrollOutcome {
    pub identity: IdentitySummary,
    /// The face used from each image sent, in order.
    pub faces: Vec<FaceBox>,
    pub vector_dim: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerifyOutcome {
    pub verified: bool,
    /// Cosine similarity of the probe's face to the identity's template.
    pub similarity: f32,
    pub threshold: f32,
    pub identity_id: String,
    pub probe_face: FaceBox,
}

/// One of the identity's enrollment faces, compared with a verification probe.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnrolledFace {
    /// Which enrollment image, from 1, in the order the images were sent (appended images
    /// follow the earlier ones).
    pub image: i64,
    /// Hex sha256 of that image's bytes, to tell which of the client's images it was.
    pub image_sha256: String,
    /// The face used from that image, [x1, y1, x2, y2] in pixels.
    pub bbox: [f32; 4],
    /// Cosine similarity of the probe's face to this enrollment face.
    pub score: f32,
    pub enrolled_at: chrono::DateTime<chrono::Utc>,
}

impl From<EnrolledMatch> for EnrolledFace {
    fn from(m: EnrolledMatch) -> Self {
        Self {
            image: m.image,
            image_sha256: hex::encode(&m.image_sha256),
            bbox: m.bbox.corners(),
            score: m.similarity as f32,
            enrolled_at: m.enrolled_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Candidate {
    pub identity_id: String,
    pub similarity: f32,
    /// similarity >= threshold
    pub matched: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdentifyOutcome {
    pub probe_face: FaceBox,
    pub threshold: f32,
    /// Closest identities, best first.
    pub candidates: Vec<Candidate>,
}

/// 503 `feature_disabled` when ENABLE_VERIFICATION_FLOW=false.
pub fn require_enabled(state: &AppState) -> Result<(), ApiError> {
    if state.config.identity.enabled {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::FeatureDisabled,
            "identity verification is disabled on this server (ENABLE_VERIFICATION_FLOW=false)",
        ))
    }
}

fn not_enrolled(identity: &IdentityId) -> ApiError {
    ApiError::new(
        Code::IdentityNotEnrolled,
        format!("identity `{identity}` is not enrolled"),
    )
}

/// The largest usable face of one image and its box for the answer, or a 422 that names the
/// image when there is more than one.
pub(crate) async fn largest_face(
    state: &AppState,
    bytes: Vec<u8>,
    label: Option<String>,
) -> Result<(Face, FaceBox), ApiError> {
    let prefix = label.map(|l| format!("{l}: ")).unwrap_or_default();
    let probe = match analyze_probe(state, bytes).await {
        Ok(p) => p,
        Err(e @ (FaceError::Overloaded | FaceError::Inference(_))) => return Err(e.into()),
        Err(e) => {
            let api: ApiError = e.into();
            return Err(ApiError::new(
                api.code(),
                format!("{prefix}{}", api.message()),
            ));
        }
    };
    match probe {
        Probe::Face {
            face, recovered, ..
        } => {
            let boxed = face_box(&face, recovered);
            Ok((face, boxed))
        }
        Probe::NoFace => Err(ApiError::new(
            Code::NoFaceDetected,
            format!("{prefix}no face found"),
        )),
        Probe::TooSmall(face_px) => Err(ApiError::new(
            Code::NoFaceDetected,
            format!(
                "{prefix}the face is too small ({face_px} px; at least {} needed)",
                state.config.face.min_face_px
            ),
        )),
        Probe::LowScore => Err(ApiError::new(
            Code::NoFaceDetected,
            format!("{prefix}no usable face found"),
        )),
    }
}

fn face_box(face: &Face, recovered: Option<Recovered>) -> FaceBox {
    FaceBox {
        bbox: face.bbox.corners(),
        score: face.score,
        recovered,
    }
}

pub async fn enroll(
    state: &AppState,
    tenant: &TenantId,
    identity: &IdentityId,
    images: Vec<Vec<u8>>,
    mode: EnrollMode,
) -> Result<EnrollOutcome, ApiError> {
    require_enabled(state)?;
    let start = Instant::now();
    counter!(ENROLLMENT_ATTEMPTS).increment(1);
    let limits = &state.config.identity;
    if mode == EnrollMode::Replace && images.len() < limits.min_images {
        return Err(ApiError::new(
            Code::NotEnoughImages,
            format!(
                "enrollment needs at least {} images with a face; got {}",
                limits.min_images,
                images.len()
            ),
        ));
    }
    if images.is_empty() {
        return Err(ApiError::new(
            Code::NotEnoughImages,
            "send at least one image",
        ));
    }
    if images.len() > limits.max_images {
        return Err(ApiError::invalid_field(
            "images",
            format!("at most {} images per request", limits.max_images),
        ));
    }
    let total = images.len();
    let jobs = images.into_iter().enumerate().map(|(i, bytes)| async move {
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        let face = largest_face(state, bytes, Some(format!("image {} of {total}", i + 1))).await?;
        Ok::<_, ApiError>((sha, face))
    });
    let faces = futures_util::future::join_all(jobs)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let embeddings: Vec<NewIdentityEmbedding> = faces
        .iter()
        .map(|(sha, (f, _))| NewIdentityEmbedding {
            image_sha256: *sha,
            bbox: f.bbox.corners(),
            det_score: f.score,
            embedding: f
                .embedding
                .as_ref()
                .map(|e| e.as_slice().to_vec())
                .unwrap_or_default(),
        })
        .collect();
    let model_id = state.faces.engine().model_id().to_owned();
    let pk = identities::enroll(&state.db, tenant, identity, &model_id, mode, &embeddings)
        .await
        .map_err(|e| match e {
            EnrollError::ModelMismatch(_) => ApiError::new(Code::Conflict, e.to_string()),
            EnrollError::Db(db) => db.into(),
        })?;
    spawn_tagging(state, pk);
    let row = identities::find(&state.db, tenant, identity)
        .await?
        .ok_or_else(|| not_enrolled(identity))?;
    counter!(ENROLLMENT_SUCCESS).increment(1);
    histogram!(ENROLLMENT_LATENCY).record(start.elapsed().as_secs_f64());
    Ok(EnrollOutcome {
        vector_dim: row.template.as_slice().len(),
        identity: row.into(),
        faces: faces.iter().map(|(_, (_, b))| b.clone()).collect(),
    })
}

/// Tags the tenant's already-indexed faces in the background; progress shows in the identity's
/// `tagging_status`.
fn spawn_tagging(state: &AppState, identity_pk: i64) {
    let db = state.db.clone();
    let threshold = state.config.identity.verify_threshold.get();
    tokio::spawn(async move {
        if let Err(e) = identities::tag_faces(&db, identity_pk, threshold).await {
            tracing::warn!(error = %e, "tagging indexed faces failed");
            let _ = identities::mark_tagging_failed(&db, identity_pk).await;
        }
    });
}

pub async fn verify(
    state: &AppState,
    tenant: &TenantId,
    identity: &IdentityId,
    probe: Vec<u8>,
    threshold: Option<Threshold>,
) -> Result<VerifyOutcome, ApiError> {
    run_verify(state, tenant, identity, probe, threshold, 0)
        .await
        .map(|(outcome, _)| outcome)
}

/// `verify`, plus the identity's enrollment faces closest to the probe (at most `top_k`, best
/// first): what `/api/v1/verify` reports as `results`. The decision still rests on the template
/// (`similarity`); these show how each enrollment image compares.
pub async fn verify_with_enrolled(
    state: &AppState,
    tenant: &TenantId,
    identity: &IdentityId,
    probe: Vec<u8>,
    threshold: Option<Threshold>,
    top_k: i64,
) -> Result<(VerifyOutcome, Vec<EnrolledFace>), ApiError> {
    run_verify(state, tenant, identity, probe, threshold, top_k).await
}

async fn run_verify(
    state: &AppState,
    tenant: &TenantId,
    identity: &IdentityId,
    probe: Vec<u8>,
    threshold: Option<Threshold>,
    enrolled_top_k: i64,
) -> Result<(VerifyOutcome, Vec<EnrolledFace>), ApiError> {
    require_enabled(state)?;
    let start = Instant::now();
    counter!(VERIFICATION_ATTEMPTS).increment(1);
    let threshold = threshold.unwrap_or(state.config.identity.verify_threshold);
    let row = identities::find(&state.db, tenant, identity)
        .await?
        .ok_or_else(|| not_enrolled(identity))?;
    let (face, probe_face) = largest_face(state, probe, None).await?;
    let model_id = state.faces.engine().model_id();
    if row.model_id != model_id {
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "`{identity}` was enrolled with model {}; re-enroll it",
                row.model_id
            ),
        ));
    }
    let probe = face
        .embedding
        .as_ref()
        .map(|e| e.as_slice())
        .unwrap_or_default();
    let similarity = cosine(probe, row.template.as_slice());
    let enrolled = if enrolled_top_k > 0 {
        identities::enrolled_matches(&state.db, row.identity_pk, model_id, probe, enrolled_top_k)
            .await?
            .into_iter()
            .map(EnrolledFace::from)
            .collect()
    } else {
        Vec::new()
    };
    let verified = similarity >= threshold.get();
    histogram!(VERIFICATION_SIMILARITY).record(f64::from(similarity));
    if verified {
        counter!(VERIFICATION_VERIFIED).increment(1);
    }
    histogram!(VERIFICATION_LATENCY).record(start.elapsed().as_secs_f64());
    let outcome = VerifyOutcome {
        verified,
        similarity,
        threshold: threshold.get(),
        identity_id: row.identity_id,
        probe_face,
    };
    Ok((outcome, enrolled))
}

pub async fn identify(
    state: &AppState,
    tenant: &TenantId,
    probe: Vec<u8>,
    top_k: i64,
    threshold: Option<Threshold>,
) -> Result<IdentifyOutcome, ApiError> {
    require_enabled(state)?;
    let threshold = threshold.unwrap_or(state.config.identity.verify_threshold);
    let (face, probe_face) = largest_face(state, probe, None).await?;
    let probe = face
        .embedding
        .as_ref()
        .map(|e| e.as_slice())
        .unwrap_or_default();
    let model_id = state.faces.engine().model_id();
    let candidates = identities::nearest(&state.db, tenant, model_id, probe, top_k).await?;
    Ok(IdentifyOutcome {
        probe_face,
        threshold: threshold.get(),
        candidates: candidates
            .into_iter()
            .map(|c| Candidate {
                matched: c.similarity as f32 >= threshold.get(),
                similarity: c.similarity as f32,
                identity_id: c.identity_id,
            })
            .collect(),
    })
}
