//! `FaceEngine`: both models loaded once, and the photo-to-faces pipeline.

use std::path::PathBuf;
use std::time::Instant;

use image::RgbImage;
use serde::Serialize;

use crate::embedding::Embedding;
use crate::error::FaceError;
use crate::geometry::{BBox, Detection};
use crate::ops::model::read_model_file;
use crate::pipeline::align::{align_face, Affine};
use crate::pipeline::decode::{decode_image, DecodeLimits, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS};
use crate::pipeline::detector::{ms_since, DetectParams, DetectTimings, Detector};
use crate::pipeline::embedder::Embedder;
use crate::pipeline::light;
use crate::pipeline::quality::Quality;
use crate::pipeline::tiling::TilingConfig;
use crate::profile::PlanProfile;

pub const DEFAULT_DET_SIZE: u32 = 640;
/// InsightFace's default detection threshold.
pub const DEFAULT_DET_THRESHOLD: f32 = 0.5;
pub const DEFAULT_NMS_IOU: f32 = 0.4;
pub const DEFAULT_EMBEDDING_DIM: usize = 512;
/// Canvas side relative to the photo for the retry when no face is found (1.0 disables).
pub const DEFAULT_RETRY_PAD: f32 = 2.0;

/// Everything the engine needs; built by the server's config module.
#[derive(Debug, Clone, Serialize)]
pub struct EngineConfig {
    pub detector_model: PathBuf,
    pub embedder_model: PathBuf,
    /// Expected sha256 (hex) of each file; loading fails when it differs.
    pub detector_sha256: Option<String>,
    pub embedder_sha256: Option<String>,
    /// Side of the square detector input; a multiple of 32.
    pub det_size: u32,
    /// Floor score for detections; callers filter further with `AnalyzeOptions::min_score`.
    pub det_threshold: f32,
    pub nms_iou: f32,
    pub embedding_dim: usize,
    pub max_pixels: u64,
    pub max_bytes: usize,
    pub tiling: TilingConfig,
    /// See `DEFAULT_RETRY_PAD`.
    pub retry_pad: f32,
}

impl EngineConfig {
    /// Defaults for everything but the model paths.
    pub fn new(detector_model: impl Into<PathBuf>, embedder_model: impl Into<PathBuf>) -> Self {
        EngineConfig {
            detector_model: detector_model.into(),
            embedder_model: embedder_model.into(),
            detector_sha256: None,
            embedder_sha256: None,
            det_size: DEFAULT_DET_SIZE,
            det_threshold: DEFAULT_DET_THRESHOLD,
            nms_iou: DEFAULT_NMS_IOU,
            embedding_dim: DEFAULT_EMBEDDING_DIM,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_bytes: DEFAULT_MAX_BYTES,
            tiling: TilingConfig::default(),
            retry_pad: DEFAULT_RETRY_PAD,
        }
    }

    fn validate(&self) -> Result<(), FaceError> {
        let bad = |m: String| Err(FaceError::InvalidConfig(m));
        if !(0.0..=1.0).contains(&self.det_threshold) {
            return bad(format!(
                "det_threshold {} is not in 0..=1",
                self.det_threshold
            ));
        }
        if !(0.0..=1.0).contains(&self.nms_iou) {
            return bad(format!("nms_iou {} is not in 0..=1", self.nms_iou));
        }
        if self.embedding_dim == 0 || self.max_pixels == 0 || self.max_bytes == 0 {
            return bad("embedding_dim, max_pixels and max_bytes must be positive".into());
        }
        if !self.retry_pad.is_finite() || self.retry_pad > 4.0 {
            return bad(format!("retry_pad {} is not in 0..=4", self.retry_pad));
        }
        Ok(())
    }
}

/// What `analyze` should do with the faces it finds.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzeOptions {
    /// At most this many faces are embedded, largest first; the rest are `max_faces`.
    pub max_faces: usize,
    /// Faces whose box is smaller than this (min of width, height) are `too_small`.
    pub min_face_px: u32,
    /// Faces scoring below this are `low_score` (detection itself uses the engine floor).
    pub min_score: f32,
    /// False: detect and measure only.
    pub embed: bool,
    /// Only the largest face scoring `min_score` or more is reported (selfie search,
    /// verification); the largest face of all when none does, skipped as `low_score`.
    pub largest_only: bool,
    /// When no face is usable and the photo is dark, look again on a gamma-lifted copy
    /// (`pipeline::light`). Probes only: see `probe`.
    pub light_retry: bool,
}

impl AnalyzeOptions {
    /// A probe: a selfie, a verification or identification photo, an enrollment photo. Only
    /// its largest face is analysed and embedded; the others are counted
    /// ([`Analysis::others`]).
    ///
    /// Probes get the retry for light, index photos do not: on ../shared/faceeval the retry
    /// added no face to the 22 no-face photos, but it bought nothing for indexing either (the
    /// faces it recovers are close-up selfies, and a group photo has faces, so it never fires)
    /// while it would add a second detection (~19 ms) to every dark photo without a face.
    pub fn probe(min_score: f32, min_face_px: u32) -> Self {
        AnalyzeOptions {
            max_faces: 1,
            min_face_px,
            min_score,
            embed: true,
            largest_only: true,
            light_retry: true,
        }
    }
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            max_faces: 64,
            min_face_px: 20,
            min_score: DEFAULT_DET_THRESHOLD,
            embed: true,
            largest_only: false,
            light_retry: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    TooSmall,
    LowScore,
    MaxFaces,
}

#[derive(Debug, Clone, Serialize)]
pub struct Face {
    pub bbox: BBox,
    pub landmarks: [[f32; 2]; 5],
    pub score: f32,
    pub quality: Quality,
    /// Present when the face was embedded: not skipped and `AnalyzeOptions::embed`.
    pub embedding: Option<Embedding>,
    pub skipped: Option<SkipReason>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimings {
    pub decode_ms: f64,
    pub detect_ms: f64,
    pub align_ms: f64,
    pub embed_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Size after applying the EXIF orientation; boxes are in this frame.
    pub width: u32,
    pub height: u32,
    /// Id of the embedding model (`<file stem>-<sha256 prefix>`); store it with every vector.
    pub model_id: String,
    /// Largest first.
    pub faces: Vec<Face>,
    /// Faces left out by `largest_only`: detected beside the one reported, scoring
    /// `min_score` or more.
    pub others: usize,
    /// The faces come from the gamma-lifted copy (`AnalyzeOptions::light_retry`); their
    /// embeddings are of the lifted crops.
    pub light_retry: bool,
    pub timings: StageTimings,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpsProfile {
    pub detector: PlanProfile,
    pub embedder: PlanProfile,
}

pub struct FaceEngine {
    config: EngineConfig,
    detector: Detector,
    embedder: Embedder,
    detector_id: String,
}

impl FaceEngine {
    /// Reads, checks and optimises both models. Slow (about a second); call once at startup
    /// and share the engine behind an `Arc`.
    pub fn load(config: EngineConfig) -> Result<FaceEngine, FaceError> {
        config.validate()?;
        let det_file = read_model_file(&config.detector_model, config.detector_sha256.as_deref())?;
        let emb_file = read_model_file(&config.embedder_model, config.embedder_sha256.as_deref())?;
        let detector = Detector::load(&det_file, config.det_size)?;
        let embedder = Embedder::load(&emb_file, config.embedding_dim)?;
        tracing::info!(
            detector = %det_file.id,
            embedder = %emb_file.id,
            det_size = config.det_size,
            "face models loaded"
        );
        Ok(FaceEngine {
            config,
            detector,
            embedder,
            detector_id: det_file.id,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Id of the embedding model, e.g. `w600k_mbf-9cc6e4a75f0e`.
    pub fn model_id(&self) -> &str {
        self.embedder.model_id()
    }

    pub fn detector_model_id(&self) -> &str {
        &self.detector_id
    }

    pub fn embedding_dim(&self) -> usize {
        self.embedder.dim()
    }

    /// Per-operator timings of both models (one detector pass, one face), `runs` runs each,
    /// with the `nodes` slowest nodes of each (all of them if 0).
    pub fn profile_ops(&self, runs: usize, nodes: usize) -> Result<OpsProfile, FaceError> {
        let mut detector = self.detector.profile(runs)?;
        let mut embedder = self.embedder.profile(runs)?;
        detector.keep_slowest(nodes);
        embedder.keep_slowest(nodes);
        Ok(OpsProfile { detector, embedder })
    }

    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_pixels: self.config.max_pixels,
            max_bytes: self.config.max_bytes,
        }
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<RgbImage, FaceError> {
        decode_image(bytes, &self.decode_limits())
    }

    pub fn detect_params(&self) -> DetectParams {
        DetectParams {
            threshold: self.config.det_threshold,
            nms_iou: self.config.nms_iou,
            tiling: self.config.tiling.clone(),
            retry_pad: self.config.retry_pad,
        }
    }

    /// Faces in the photo, largest first, with the engine's settings.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>, FaceError> {
        self.detect_with(img, &self.detect_params(), &mut DetectTimings::default())
    }

    /// Detection with explicit settings (tiling on or off, threshold) and step timings.
    pub fn detect_with(
        &self,
        img: &RgbImage,
        params: &DetectParams,
        timings: &mut DetectTimings,
    ) -> Result<Vec<Detection>, FaceError> {
        self.detector.detect(img, params, timings)
    }

    /// The aligned 112x112 crop and its transform.
    pub fn align(&self, img: &RgbImage, det: &Detection) -> (RgbImage, Affine) {
        align_face(img, &det.landmarks)
    }

    /// Embedding of an aligned 112x112 crop.
    pub fn embed_aligned(&self, aligned: &RgbImage) -> Result<Embedding, FaceError> {
        self.embedder.embed(aligned)
    }

    pub fn embed_face(&self, img: &RgbImage, det: &Detection) -> Result<Embedding, FaceError> {
        let (aligned, _) = self.align(img, det);
        self.embed_aligned(&aligned)
    }

    /// Decode, detect, align, measure and embed.
    pub fn analyze(&self, bytes: &[u8], opts: &AnalyzeOptions) -> Result<Analysis, FaceError> {
        let t = Instant::now();
        let img = self.decode(bytes)?;
        let decode_ms = ms_since(t);
        let mut analysis = self.analyze_image(&img, opts)?;
        analysis.timings.decode_ms = decode_ms;
        Ok(analysis)
    }

    /// `analyze` for an already decoded photo.
    pub fn analyze_image(
        &self,
        img: &RgbImage,
        opts: &AnalyzeOptions,
    ) -> Result<Analysis, FaceError> {
        let first = self.analyze_once(img, opts)?;
        if !opts.light_retry || first.faces.iter().any(|f| f.skipped.is_none()) {
            return Ok(first);
        }
        let t = Instant::now();
        let Some(lifted) = light::lifted_if_dark(img) else {
            return Ok(first);
        };
        let lift_ms = ms_since(t);
        let mut retry = self.analyze_once(&lifted, opts)?;
        let mut timings = first.timings;
        timings.detect_ms += lift_ms + retry.timings.detect_ms;
        timings.align_ms += retry.timings.align_ms;
        timings.embed_ms += retry.timings.embed_ms;
        if retry.faces.iter().any(|f| f.skipped.is_none()) {
            retry.light_retry = true;
            retry.timings = timings;
            Ok(retry)
        } else {
            // Nothing usable either way: the first look's faces say why.
            Ok(Analysis { timings, ..first })
        }
    }

    fn analyze_once(&self, img: &RgbImage, opts: &AnalyzeOptions) -> Result<Analysis, FaceError> {
        let mut timings = StageTimings::default();
        let t = Instant::now();
        let mut dets = self.detect(img)?;
        timings.detect_ms = ms_since(t);
        let mut others = 0;
        if opts.largest_only && !dets.is_empty() {
            // Largest first: the first that passes the score, else the largest (low_score).
            let pick = dets
                .iter()
                .position(|d| d.score >= opts.min_score)
                .unwrap_or(0);
            others = dets
                .iter()
                .enumerate()
                .filter(|(i, d)| *i != pick && d.score >= opts.min_score)
                .count();
            dets.swap(0, pick);
            dets.truncate(1);
        }

        let mut faces = Vec::with_capacity(dets.len());
        let mut accepted = 0usize;
        for det in dets {
            let skipped = if det.score < opts.min_score {
                Some(SkipReason::LowScore)
            } else if det.bbox.min_side() < opts.min_face_px as f32 {
                Some(SkipReason::TooSmall)
            } else if accepted >= opts.max_faces {
                Some(SkipReason::MaxFaces)
            } else {
                accepted += 1;
                None
            };

            let t = Instant::now();
            let (aligned, _) = self.align(img, &det);
            let quality = Quality::measure(&det, &aligned);
            timings.align_ms += ms_since(t);

            let embedding = if skipped.is_none() && opts.embed {
                let t = Instant::now();
                let e = self.embed_aligned(&aligned)?;
                timings.embed_ms += ms_since(t);
                Some(e)
            } else {
                None
            };
            faces.push(Face {
                bbox: det.bbox,
                landmarks: det.landmarks,
                score: det.score,
                quality,
                embedding,
                skipped,
            });
        }
        Ok(Analysis {
            width: img.width(),
            height: img.height(),
            model_id: self.model_id().to_owned(),
            faces,
            others,
            light_retry: false,
            timings,
        })
    }
}
