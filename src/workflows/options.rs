//! How a photo is analysed: for indexing (every face) and as a probe (its largest face).

use facepass_face::{Analysis, AnalyzeOptions, Face};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::FaceConfig;

/// How a photo is analysed for indexing: every face up to MAX_FACES_PER_PHOTO, those under
/// MIN_FACE_PX or FACE_DETECTION_THRESHOLD reported as skipped. Re-embedding with another model
/// (`facepass reembed`) uses the same rules, so both models see the same faces.
pub fn indexing_options(face: &FaceConfig) -> AnalyzeOptions {
    AnalyzeOptions {
        max_faces: face.max_faces_per_photo,
        min_face_px: face.min_face_px,
        min_score: face.detection_threshold.get(),
        embed: true,
        largest_only: false,
        light_retry: false,
    }
}

/// How a photo searched *with* is analysed (a search selfie, a verification or identification
/// probe, an enrollment photo): its largest face scoring PROBE_DETECTION_THRESHOLD or more,
/// at least MIN_FACE_PX, with the engine's retry for light. A probe's face may score under
/// FACE_DETECTION_THRESHOLD (harsh light lowers a close-up's score, docs/THRESHOLDS.md); it is
/// then reported as `recovered` (`probe_recovery`).
pub fn probe_options(face: &FaceConfig) -> AnalyzeOptions {
    AnalyzeOptions::probe(face.probe_detection_threshold.get(), face.min_face_px)
}

/// How a probe's face was found when the indexing rules alone would have missed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Recovered {
    /// It scores under FACE_DETECTION_THRESHOLD, at or above PROBE_DETECTION_THRESHOLD.
    LowScore,
    /// Found only on the gamma-lifted copy of a dark photo.
    LightRetry,
}

/// Whether a probe's face was recovered, so a client can ask for a better photo.
pub fn probe_recovery(face: &FaceConfig, analysis: &Analysis, used: &Face) -> Option<Recovered> {
    if analysis.light_retry {
        Some(Recovered::LightRetry)
    } else if used.score < face.detection_threshold.get() {
        Some(Recovered::LowScore)
    } else {
        None
    }
}
