//! The face engine: photo bytes in; faces out with box, 5 landmarks, detection score, quality
//! and a unit-length embedding. Pure Rust (tract-onnx); this crate depends on no web, database
//! or storage crate, so the server can only call it, never the other way round.
//!
//! - [`pipeline`]: what happens to a photo, stage by stage, and `FaceEngine` tying them together.
//! - `ops` (private): the tract operators and SIMD kernels that make both models fast; the
//!   pipeline reaches them only through `ops::model` (load, check, optimise, run).
//! - [`Embedding`], [`BBox`]/[`Detection`], [`FaceError`]: the engine's vocabulary.
//! - [`bench`], [`profile`]: per-stage and per-operator timings for `facepass bench`.

// No unwrap/expect on any code path outside tests; the few true invariants carry an allow with
// the reason next to them.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod bench;
pub mod embedding;
pub mod error;
pub mod geometry;
mod ops;
pub mod pipeline;
pub mod profile;

/// Shared by the fuzz-style property tests of this crate and of the server (feature `fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

#[cfg(test)]
#[global_allocator]
static METER: fuzzing::PeakMeter = fuzzing::PeakMeter;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub use bench::{run_bench, BenchReport};
pub use embedding::Embedding;
pub use error::FaceError;
pub use geometry::{BBox, Detection};
pub use pipeline::engine::{
    Analysis, AnalyzeOptions, EngineConfig, Face, FaceEngine, SkipReason, StageTimings,
    DEFAULT_DET_THRESHOLD,
};
pub use pipeline::quality::Quality;
pub use pipeline::runtime::FaceRuntime;
pub use pipeline::tiling::TilingConfig;
