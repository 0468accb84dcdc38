//! ArcFace recogniser: aligned 112x112 RGB crop in, L2-normalised embedding out.

use image::RgbImage;
use tract_onnx::prelude::*;

use crate::embedding::Embedding;
use crate::error::FaceError;
use crate::ops::model::{optimise, output_shapes, output_slice, run, Layout, ModelFile, Plan};
use crate::pipeline::align::ALIGNED_SIZE;
use crate::profile::{profile_plan, PlanProfile};

const INPUT_MEAN: f32 = 127.5;
const INPUT_STD: f32 = 127.5;

pub struct Embedder {
    plan: Plan,
    dim: usize,
    model_id: String,
}

impl Embedder {
    /// Optimises for batch 1: measured faster per face in tract than batching (see MODELS.md),
    /// so faces run one by one and parallelism comes from concurrent requests. Channel-last
    /// inside the plan ([`Layout::channels_last`]).
    pub(crate) fn load(file: &ModelFile, dim: usize) -> Result<Embedder, FaceError> {
        let s = ALIGNED_SIZE as usize;
        let layout = Layout {
            transposed: false,
            channels_last: true,
        };
        let plan = optimise(file, &[1, 3, s, s], layout)?;
        let shapes = output_shapes(&plan, &file.path)?;
        let produced: usize = shapes.first().map(|s| s.iter().product()).unwrap_or(0);
        if produced != dim {
            return Err(FaceError::ModelLoad {
                path: file.path.clone(),
                reason: format!(
                    "embedding output has shape {:?}, expected {dim} values",
                    shapes.first()
                ),
            });
        }
        Ok(Embedder {
            plan,
            dim,
            model_id: file.id.clone(),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub(crate) fn profile(&self, runs: usize) -> Result<PlanProfile, FaceError> {
        let s = ALIGNED_SIZE as usize;
        profile_plan(&self.plan, &[1, 3, s, s], runs)
    }

    pub fn embed(&self, aligned: &RgbImage) -> Result<Embedding, FaceError> {
        let s = ALIGNED_SIZE as usize;
        if aligned.dimensions() != (ALIGNED_SIZE, ALIGNED_SIZE) {
            return Err(FaceError::Internal(format!(
                "aligned crop is {:?}, expected {s}x{s}",
                aligned.dimensions()
            )));
        }
        let plane = s * s;
        let mut input = vec![0.0f32; 3 * plane];
        for (i, px) in aligned.as_raw().chunks_exact(3).enumerate() {
            for c in 0..3 {
                input[c * plane + i] = (f32::from(px[c]) - INPUT_MEAN) / INPUT_STD;
            }
        }
        let tensor: Tensor = tract_ndarray::Array4::from_shape_vec((1, 3, s, s), input)
            .map_err(FaceError::inference)?
            .into();
        let outputs = run(&self.plan, tensor)?;
        let values = output_slice(&outputs[0])?.to_vec();
        // A NaN or zero output is the model's fault, not the photo's.
        Embedding::from_model_output(values, self.dim)
            .map_err(|e| FaceError::Inference(e.to_string()))
    }
}
