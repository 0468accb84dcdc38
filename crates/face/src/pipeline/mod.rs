//! A photo's way through the engine, one module per stage: `decode` (limits, EXIF orientation,
//! RGB8) -> `letterbox` and `tiling` (the detector's inputs) -> `detector` (SCRFD, padded
//! retry) -> `light` (a gamma-lifted copy for a dark probe without a face) -> `align`
//! (similarity transform to the ArcFace template, 112x112 warp) -> `quality` -> `embedder`
//! (ArcFace). `engine::FaceEngine` ties them together; `runtime::FaceRuntime`
//! runs it off the async executor with a bounded queue. Stages may import each other and
//! `crate::ops::model`, never an operator directly.

pub mod align;
pub mod decode;
pub mod detector;
pub mod embedder;
pub mod engine;
pub mod letterbox;
pub mod light;
pub mod quality;
pub mod runtime;
pub mod tiling;
