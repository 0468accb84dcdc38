//! How a photo is analysed: for indexing (every face) and as a probe (its largest face, and
//! what became of it: `analyze_probe`, which every probe of every workflow goes through).

use facepass_face::{Analysis, AnalyzeOptions, Face, FaceError, SkipReason};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::FaceConfig;
use crate::state::AppState;

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

/// A probe's largest face, analysed with `probe_options`: usable, or why not.
pub enum Probe {
    /// Embedded (`face.embedding` is set). `others`: the faces beside it (`Analysis::others`).
    Face {
        face: Face,
        recovered: Option<Recovered>,
        others: usize,
    },
    /// No face was found.
    NoFace,
    /// Its largest face is under MIN_FACE_PX: its size in pixels.
    TooSmall(u32),
    /// Its faces score under PROBE_DETECTION_THRESHOLD.
    LowScore,
}

/// Runs a probe through the engine (one inference worker) and says what its largest face is.
pub async fn analyze_probe(state: &AppState, bytes: Vec<u8>) -> Result<Probe, FaceError> {
    let options = probe_options(&state.config.face);
    let analysis = state
        .faces
        .run(move |engine| engine.analyze(&bytes, &options))
        .await?;
    crate::metrics::record_inference(&analysis.timings);
    let recovered = analysis
        .faces
        .first()
        .and_then(|f| probe_recovery(&state.config.face, &analysis, f));
    let others = analysis.others;
    let Some(face) = analysis.faces.into_iter().next() else {
        return Ok(Probe::NoFace);
    };
    Ok(match (face.skipped, &face.embedding) {
        (None, Some(_)) => Probe::Face {
            face,
            recovered,
            others,
        },
        (Some(SkipReason::TooSmall), _) => Probe::TooSmall(face.quality.face_px),
        _ => Probe::LowScore,
    })
}
