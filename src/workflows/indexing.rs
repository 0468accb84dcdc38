//! Indexing one photo: detect and embed its faces, store the bytes in S3 and the faces in
//! PostgreSQL. `POST /api/v2/index` calls this, and so does `facepass index-dir` (`bulk`).
//!
//! Order of writes: S3 first, then one database transaction. A crash between the two leaves at
//! most an unreferenced object (which `facepass gc` finds), never a face row pointing at a
//! missing photo. Every upload gets its own object key, so a re-index writes a new object and
//! the old one is removed only after the new rows are committed.

use std::time::Instant;

use metrics::counter;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{PhotoId, SessionId, TenantId};
use crate::error::ApiError;
use crate::metrics::{FACES_INDEXED, PHOTOS_INDEXED};
use crate::state::AppState;
use crate::store::catalog::{self, NewFace, NewPhoto};
use facepass_face::{Analysis, SkipReason};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IndexedFace {
    pub face_id: Uuid,
    /// [x1, y1, x2, y2] in pixels of the upright photo.
    pub bbox: [f32; 4],
    /// Detector confidence, 0-1.
    pub score: f32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SkippedFace {
    pub bbox: [f32; 4],
    pub score: f32,
    /// `too_small`, `low_score` or `max_faces`.
    #[schema(value_type = String, example = "too_small")]
    pub reason: SkipReason,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Timings {
    pub decode_ms: f64,
    pub detect_ms: f64,
    pub embed_ms: f64,
    pub storage_ms: f64,
    pub database_ms: f64,
    pub total_ms: f64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IndexOutcome {
    pub photo_id: String,
    pub session_id: String,
    pub width: u32,
    pub height: u32,
    /// Faces stored and searchable.
    pub faces: Vec<IndexedFace>,
    /// Faces seen but not stored, with the reason.
    pub skipped: Vec<SkippedFace>,
    /// True when these exact bytes were already indexed under this photo id: nothing was redone.
    pub unchanged: bool,
    pub timings: Timings,
}

pub struct IndexRequest {
    pub tenant: TenantId,
    pub session: SessionId,
    pub photo: PhotoId,
    pub bytes: Vec<u8>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

pub async fn index_photo(state: &AppState, req: IndexRequest) -> Result<IndexOutcome, ApiError> {
    let start = Instant::now();
    let mut timings = Timings::default();
    let sha256: [u8; 32] = Sha256::digest(&req.bytes).into();
    let model_id = state.faces.engine().model_id().to_owned();

    // Identical bytes already indexed with the current model: answer from the database.
    let t = Instant::now();
    let existing = catalog::find_photo(&state.db, &req.tenant, &req.session, &req.photo).await?;
    if let Some(photo) = existing.filter(|p| p.sha256 == sha256) {
        let models = catalog::photo_model_ids(&state.db, photo.photo_pk).await?;
        if models.iter().all(|m| *m == model_id) {
            let faces = catalog::photo_faces(&state.db, photo.photo_pk).await?;
            timings.database_ms = ms(t);
            timings.total_ms = ms(start);
            return Ok(IndexOutcome {
                photo_id: photo.photo_id,
                session_id: req.session.to_string(),
                width: photo.width as u32,
                height: photo.height as u32,
                faces: faces
                    .into_iter()
                    .map(|f| IndexedFace {
                        face_id: f.face_id,
                        bbox: f.bbox.corners(),
                        score: f.det_score,
                    })
                    .collect(),
                skipped: Vec::new(),
                unchanged: true,
                timings,
            });
        }
    }
    timings.database_ms = ms(t);

    let options = crate::workflows::options::indexing_options(&state.config.face);
    let bytes = std::sync::Arc::new(req.bytes);
    let analysis = {
        let bytes = bytes.clone();
        state
            .faces
            .run(move |engine| engine.analyze(&bytes, &options))
            .await?
    };
    timings.decode_ms = analysis.timings.decode_ms;
    timings.detect_ms = analysis.timings.detect_ms;
    timings.embed_ms = analysis.timings.align_ms + analysis.timings.embed_ms;
    crate::metrics::record_inference(&analysis.timings);

    let (faces, indexed, skipped) = faces_to_store(&analysis);

    // One object per upload attempt: two requests for the same photo id (even with the same
    // bytes) never share a key, so the clean-up of one can never delete what the other is about
    // to commit.
    let key = format!(
        "{}{}-{}",
        state
            .photos
            .photo_prefix(&req.tenant, &req.session, &req.photo),
        &hex::encode(sha256)[..16],
        Uuid::new_v4().simple()
    );
    let content_type = sniff_content_type(&bytes);
    let t = Instant::now();
    state.photos.put(&key, &bytes, content_type).await?;
    timings.storage_ms = ms(t);

    let t = Instant::now();
    let new_photo = NewPhoto {
        tenant: &req.tenant,
        session: &req.session,
        photo: &req.photo,
        s3_key: &key,
        sha256: &sha256,
        size_bytes: bytes.len() as i64,
        content_type,
        width: analysis.width as i32,
        height: analysis.height as i32,
        model_id: &model_id,
    };
    // Faces that match an enrolled identity are tagged in the same transaction.
    let tag_at = state
        .config
        .identity
        .enabled
        .then(|| state.config.identity.verify_threshold.get());
    let stored = catalog::store_photo(&state.db, &new_photo, &faces, tag_at).await;
    let previous_key = match stored {
        Ok(previous) => previous,
        Err(e) => {
            // Best effort: without the rows the new object is garbage. If this fails too, gc
            // finds it.
            if let Err(cleanup) = state.photos.delete(&key).await {
                tracing::warn!(error = %cleanup, "could not remove the object of a failed index");
            }
            return Err(e.into());
        }
    };
    timings.database_ms += ms(t);
    if let Some(old) = previous_key {
        if let Err(e) = state.photos.delete(&old).await {
            tracing::warn!(error = %e, "could not remove the replaced photo object; gc will");
        }
    }
    counter!(PHOTOS_INDEXED).increment(1);
    counter!(FACES_INDEXED).increment(indexed.len() as u64);
    timings.total_ms = ms(start);
    Ok(IndexOutcome {
        photo_id: req.photo.to_string(),
        session_id: req.session.to_string(),
        width: analysis.width,
        height: analysis.height,
        faces: indexed,
        skipped,
        unchanged: false,
        timings,
    })
}

/// Splits an analysis into the faces to store (with the ids they get) and those skipped.
pub fn faces_to_store(analysis: &Analysis) -> (Vec<NewFace>, Vec<IndexedFace>, Vec<SkippedFace>) {
    let mut faces = Vec::new();
    let mut indexed = Vec::new();
    let mut skipped = Vec::new();
    for face in &analysis.faces {
        let bbox = face.bbox.corners();
        match (face.skipped, &face.embedding) {
            (None, Some(embedding)) => {
                let face_id = Uuid::new_v4();
                let mut landmarks = [0f32; 10];
                for (i, p) in face.landmarks.iter().enumerate() {
                    landmarks[2 * i] = p[0];
                    landmarks[2 * i + 1] = p[1];
                }
                faces.push(NewFace {
                    face_id,
                    bbox,
                    landmarks,
                    det_score: face.score,
                    size_px: face.quality.face_px as f32,
                    sharpness: face.quality.sharpness,
                    embedding: embedding.as_slice().to_vec(),
                });
                indexed.push(IndexedFace {
                    face_id,
                    bbox,
                    score: face.score,
                });
            }
            (reason, _) => skipped.push(SkippedFace {
                bbox,
                score: face.score,
                reason: reason.unwrap_or(SkipReason::LowScore),
            }),
        }
    }
    (faces, indexed, skipped)
}

/// The stored object's Content-Type, from the bytes (the decoder accepted them already).
pub fn sniff_content_type(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        _ => "application/octet-stream",
    }
}
