//! How a photo is analysed: for indexing (every face) and as a probe (its largest face).

use facepass_face::AnalyzeOptions;

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
    }
}

/// How a photo searched *with* is analysed (a search selfie, a verification or identification
/// probe, an enrollment photo): its largest face, under the same size and score rules as an
/// indexed face, so a probe is never a face indexing would have skipped.
pub fn probe_options(face: &FaceConfig) -> AnalyzeOptions {
    AnalyzeOptions::probe(face.detection_threshold.get(), face.min_face_px)
}
