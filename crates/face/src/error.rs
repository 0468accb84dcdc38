//! One error type for the whole face engine.
//!
//! Display texts are written for API clients: they never contain filesystem paths or
//! decoder internals beyond a short cause. The fields keep the details for logs.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    /// Empty, truncated or corrupt image data in a format we accept.
    #[error("the image could not be decoded: {0}")]
    InvalidImage(String),

    /// Recognised but refused formats (GIF, BMP, TIFF, ...) and data that is not an image.
    #[error("unsupported image format ({0}); send JPEG, PNG or WebP")]
    UnsupportedFormat(String),

    /// The header declares more pixels than allowed; refused before any pixel is allocated.
    #[error(
        "the image is {width}x{height} ({pixels} pixels), above the limit of {max_pixels} pixels"
    )]
    ImageTooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        max_pixels: u64,
    },

    #[error("the image is {bytes} bytes, above the limit of {max_bytes} bytes")]
    PayloadTooLarge { bytes: usize, max_bytes: usize },

    /// A model file is missing or cannot be parsed and optimised. Only raised at startup; the
    /// message names the file (not its directory), `path` has the full location for logs.
    #[error("cannot load model file `{}`: {reason}", file_name(path))]
    ModelLoad { path: PathBuf, reason: String },

    #[error(
        "model file `{}` has sha256 {actual}, expected {expected}",
        file_name(path)
    )]
    ModelChecksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// An `EngineConfig` value that cannot work (e.g. a detector size not divisible by 32).
    #[error("invalid face engine configuration: {0}")]
    InvalidConfig(String),

    /// A vector that is not a valid embedding (NaN, wrong dimension, zero or not unit length).
    #[error("invalid embedding: {0}")]
    InvalidEmbedding(String),

    /// tract failed while running a model; a bug or a model that does not fit the pipeline.
    #[error("face model inference failed")]
    Inference(String),

    /// All inference workers are busy and the wait queue is full.
    #[error("the face engine is overloaded, retry later")]
    Overloaded,

    /// A worker thread panicked or was cancelled.
    #[error("internal face engine error")]
    Internal(String),
}

impl FaceError {
    /// A stable snake_case code for API error bodies and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            FaceError::InvalidImage(_) => "invalid_image",
            FaceError::UnsupportedFormat(_) => "unsupported_format",
            FaceError::ImageTooLarge { .. } => "image_too_large",
            FaceError::PayloadTooLarge { .. } => "payload_too_large",
            FaceError::ModelLoad { .. } => "model_load",
            FaceError::ModelChecksum { .. } => "model_checksum",
            FaceError::InvalidConfig(_) => "invalid_config",
            FaceError::InvalidEmbedding(_) => "invalid_embedding",
            FaceError::Inference(_) => "inference",
            FaceError::Overloaded => "overloaded",
            FaceError::Internal(_) => "internal",
        }
    }

    /// True when the request (the photo) is at fault rather than the server.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            FaceError::InvalidImage(_)
                | FaceError::UnsupportedFormat(_)
                | FaceError::ImageTooLarge { .. }
                | FaceError::PayloadTooLarge { .. }
                | FaceError::InvalidEmbedding(_)
        )
    }

    pub(crate) fn inference(err: impl std::fmt::Display) -> FaceError {
        FaceError::Inference(format!("{err:#}"))
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "<unnamed>".to_owned())
}
