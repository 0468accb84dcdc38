//! The face engine: photo bytes in; faces out with box, 5 landmarks, detection score, quality
//! and a unit-length embedding. Pure Rust (tract-onnx); no web or database code here.
//!
//! Pipeline: `decode` (limits, EXIF orientation, RGB8) -> `detector` (SCRFD, optional tiles,
//! padded retry) -> `align` (similarity transform to the ArcFace template, 112x112 warp) ->
//! `quality` -> `embedder` (ArcFace). `engine::FaceEngine` ties them together,
//! `runtime::FaceRuntime` runs it off the async executor with a bounded queue.

pub mod align;
pub mod bench;
mod channel_last_conv3x3;
mod channel_last_depthwise;
mod channel_last_pointwise;
pub mod decode;
mod depthwise3x3;
pub mod detector;
pub mod embedder;
pub mod embedding;
pub mod engine;
pub mod error;
pub mod geometry;
mod grouped_conv;
pub mod letterbox;
mod model;
mod nearest_upsample;
mod pointwise_conv;
mod prelu;
pub mod profile;
pub mod quality;
mod rewrite;
mod rgb_conv3x3;
pub mod runtime;
mod sibling_convs;
mod simd;
pub mod tiling;
mod transpose;
mod window3x3;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod graph_testing;
#[cfg(test)]
mod tests;

pub use bench::{run_bench, BenchReport};
pub use embedding::Embedding;
pub use engine::{
    Analysis, AnalyzeOptions, EngineConfig, Face, FaceEngine, SkipReason, StageTimings,
};
pub use error::FaceError;
pub use geometry::{BBox, Detection};
pub use quality::Quality;
pub use runtime::FaceRuntime;
pub use tiling::TilingConfig;
