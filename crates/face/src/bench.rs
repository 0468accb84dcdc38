//! `facepass bench`: per-stage medians of the face pipeline on a set of photos.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::error::FaceError;
use crate::pipeline::detector::{ms_since, DetectTimings};
use crate::pipeline::engine::{AnalyzeOptions, FaceEngine};
use crate::profile::median;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub detector_model: String,
    pub embedder_model: String,
    pub det_size: u32,
    pub tiling_enabled: bool,
    pub threads: usize,
    pub repeats: usize,
    pub photos: usize,
    /// Medians over every run of every photo (per face for align and embed).
    pub stages: StageMedians,
    pub per_photo: Vec<PhotoBench>,
    /// Wall time of the measured runs (after one warm-up pass) and resulting throughput.
    pub wall_ms: f64,
    pub photos_per_sec: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageMedians {
    pub decode_ms: f64,
    pub detect_preprocess_ms: f64,
    pub detect_model_ms: f64,
    pub detect_postprocess_ms: f64,
    pub detect_total_ms: f64,
    pub align_per_face_ms: f64,
    pub embed_per_face_ms: f64,
    pub end_to_end_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhotoBench {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub faces: usize,
    pub embedded: usize,
    pub detect_passes: u32,
    pub detect_ms: f64,
    pub end_to_end_ms: f64,
}

/// One run of one photo.
#[derive(Default)]
struct Sample {
    photo: usize,
    width: u32,
    height: u32,
    faces: usize,
    embedded: usize,
    decode_ms: f64,
    detect: DetectTimings,
    detect_ms: f64,
    align_ms: Vec<f64>,
    embed_ms: Vec<f64>,
    total_ms: f64,
}

/// Runs every photo `repeats` times through decode, detect, align and embed, on `threads`
/// OS threads (1 or 2; tract itself stays single-threaded per run), after one warm-up pass.
/// Faces are selected with `AnalyzeOptions::default()` rules.
pub fn run_bench(
    engine: &FaceEngine,
    photos: &[(String, Vec<u8>)],
    repeats: usize,
    threads: usize,
) -> Result<BenchReport, FaceError> {
    let threads = threads.clamp(1, 2);
    let repeats = repeats.max(1);
    let opts = AnalyzeOptions::default();
    for i in 0..photos.len() {
        run_one(engine, photos, i, &opts)?;
    }

    let jobs = photos.len() * repeats;
    let next = AtomicUsize::new(0);
    let samples = Mutex::new(Vec::with_capacity(jobs));
    let first_error = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                if job >= jobs {
                    break;
                }
                match run_one(engine, photos, job % photos.len(), &opts) {
                    Ok(s) => lock(&samples).push(s),
                    Err(e) => {
                        lock(&first_error).get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    let wall_ms = ms_since(start);
    if let Some(e) = lock(&first_error).take() {
        return Err(e);
    }
    let samples = std::mem::take(&mut *lock(&samples));

    let all = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    let stages = StageMedians {
        decode_ms: all(&|s| s.decode_ms),
        detect_preprocess_ms: all(&|s| s.detect.preprocess_ms),
        detect_model_ms: all(&|s| s.detect.model_ms),
        detect_postprocess_ms: all(&|s| s.detect.postprocess_ms),
        detect_total_ms: all(&|s| s.detect_ms),
        align_per_face_ms: median(samples.iter().flat_map(|s| s.align_ms.clone()).collect()),
        embed_per_face_ms: median(samples.iter().flat_map(|s| s.embed_ms.clone()).collect()),
        end_to_end_ms: all(&|s| s.total_ms),
    };
    let per_photo = photos
        .iter()
        .enumerate()
        .filter_map(|(i, (name, _))| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.photo == i).collect();
            let first = mine.first()?;
            Some(PhotoBench {
                name: name.clone(),
                width: first.width,
                height: first.height,
                faces: first.faces,
                embedded: first.embedded,
                detect_passes: first.detect.passes,
                detect_ms: median(mine.iter().map(|s| s.detect_ms).collect()),
                end_to_end_ms: median(mine.iter().map(|s| s.total_ms).collect()),
            })
        })
        .collect();
    Ok(BenchReport {
        detector_model: engine.detector_model_id().to_owned(),
        embedder_model: engine.model_id().to_owned(),
        det_size: engine.config().det_size,
        tiling_enabled: engine.config().tiling.enabled,
        threads,
        repeats,
        photos: photos.len(),
        stages,
        per_photo,
        wall_ms,
        photos_per_sec: if wall_ms > 0.0 {
            jobs as f64 * 1000.0 / wall_ms
        } else {
            0.0
        },
    })
}

fn run_one(
    engine: &FaceEngine,
    photos: &[(String, Vec<u8>)],
    photo: usize,
    opts: &AnalyzeOptions,
) -> Result<Sample, FaceError> {
    let start = Instant::now();
    let mut s = Sample {
        photo,
        ..Sample::default()
    };
    let t = Instant::now();
    let img = engine.decode(&photos[photo].1)?;
    s.decode_ms = ms_since(t);
    s.width = img.width();
    s.height = img.height();

    let t = Instant::now();
    let dets = engine.detect_with(&img, &engine.detect_params(), &mut s.detect)?;
    s.detect_ms = ms_since(t);
    s.faces = dets.len();

    for det in dets
        .iter()
        .filter(|d| d.score >= opts.min_score && d.bbox.min_side() >= opts.min_face_px as f32)
    {
        if s.embedded >= opts.max_faces {
            break;
        }
        let t = Instant::now();
        let (aligned, _) = engine.align(&img, det);
        s.align_ms.push(ms_since(t));
        let t = Instant::now();
        engine.embed_aligned(&aligned)?;
        s.embed_ms.push(ms_since(t));
        s.embedded += 1;
    }
    s.total_ms = ms_since(start);
    Ok(s)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking bench thread already failed the run; the data is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
