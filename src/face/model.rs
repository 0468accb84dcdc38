//! Reading, checking and optimising ONNX model files with tract.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use super::error::FaceError;
use super::prelu::PreluExpansion;
use super::{grouped_conv, nearest_upsample, sibling_convs, transpose};

/// An optimised, immutable tract plan; shared by all threads (tract keeps per-run state in a
/// `SimpleState` created by `run`).
pub(crate) type Plan = Arc<TypedRunnableModel>;

/// A model file read into memory and verified.
#[derive(Clone)]
pub(crate) struct ModelFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// `<file stem>-<first 12 hex digits of sha256>`, stored next to every embedding so that
    /// vectors of different models are never compared.
    pub id: String,
}

pub(crate) fn read_model_file(
    path: &Path,
    expected_sha256: Option<&str>,
) -> Result<ModelFile, FaceError> {
    let bytes = std::fs::read(path).map_err(|e| FaceError::ModelLoad {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if let Some(expected) = expected_sha256 {
        if !expected.trim().eq_ignore_ascii_case(&sha) {
            return Err(FaceError::ModelChecksum {
                path: path.to_owned(),
                expected: expected.trim().to_lowercase(),
                actual: sha,
            });
        }
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_owned());
    Ok(ModelFile {
        path: path.to_owned(),
        id: format!("{stem}-{}", &sha[..12]),
        bytes,
    })
}

/// Parses the ONNX graph, pins input 0 to a concrete f32 shape (symbolic batch or spatial
/// sizes otherwise block optimisation) and optimises it once.
pub(crate) fn optimise(file: &ModelFile, input_shape: &[usize]) -> Result<Plan, FaceError> {
    optimise_oriented(file, input_shape, false)
}

/// [`optimise`], with every convolution kernel transposed when `transposed` (see
/// [`transpose`]): the plan then takes the transposed image and gives transposed maps.
pub(crate) fn optimise_oriented(
    file: &ModelFile,
    input_shape: &[usize],
    transposed: bool,
) -> Result<Plan, FaceError> {
    let load_err = |e: TractError| FaceError::ModelLoad {
        path: file.path.clone(),
        reason: format!("{e:#}"),
    };
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert("PRelu", |_, _| {
        Ok((
            tract_onnx::tract_hir::ops::expandable::expand(PreluExpansion),
            vec![],
        ))
    });
    let model = onnx
        .model_for_read(&mut std::io::Cursor::new(&file.bytes))
        .map_err(load_err)?;
    let mut typed = model
        .with_input_fact(0, f32::fact(input_shape.to_vec()).into())
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .map_err(load_err)?;
    if transposed {
        transpose::transpose_kernels(&mut typed).map_err(load_err)?;
    }
    grouped_conv::substitute(&mut typed).map_err(load_err)?;
    sibling_convs::merge(&mut typed).map_err(load_err)?;
    nearest_upsample::substitute(&mut typed).map_err(load_err)?;
    typed
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(load_err)
}

/// Shape of each output of an optimised plan; every output of our models is concrete once the
/// input is.
pub(crate) fn output_shapes(plan: &Plan, path: &Path) -> Result<Vec<Vec<usize>>, FaceError> {
    let model = plan.model();
    model
        .output_outlets()
        .map_err(|e| FaceError::ModelLoad {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?
        .iter()
        .map(|outlet| {
            let fact = model
                .outlet_fact(*outlet)
                .map_err(|e| FaceError::ModelLoad {
                    path: path.to_owned(),
                    reason: format!("{e:#}"),
                })?;
            fact.shape
                .as_concrete()
                .map(|s| s.to_vec())
                .ok_or_else(|| FaceError::ModelLoad {
                    path: path.to_owned(),
                    reason: format!("output shape {:?} is not concrete", fact.shape),
                })
        })
        .collect()
}

/// Runs a plan on one NCHW f32 tensor and returns the outputs.
pub(crate) fn run(plan: &Plan, input: Tensor) -> Result<TVec<TValue>, FaceError> {
    plan.run(tvec![input.into()]).map_err(FaceError::inference)
}

/// A contiguous f32 view of an output.
pub(crate) fn output_slice(value: &TValue) -> Result<&[f32], FaceError> {
    let view = value
        .to_plain_array_view::<f32>()
        .map_err(FaceError::inference)?;
    view.to_slice()
        .ok_or_else(|| FaceError::Inference("model output is not contiguous".into()))
}
