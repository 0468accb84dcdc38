//! Reading, checking and optimising ONNX model files with tract.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use crate::error::FaceError;
use crate::ops::channel_last::{
    conv3x3 as channel_last_conv3x3, depthwise as channel_last_depthwise,
    pointwise as channel_last_pointwise,
};
use crate::ops::narrow_conv3x3::Relu;
use crate::ops::prelu::PreluExpansion;
use crate::ops::simd::Isa;
use crate::ops::{
    depthwise3x3, grouped_conv, narrow_conv3x3, nearest_upsample, pointwise_conv, sibling_convs,
    transpose,
};

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

/// How an optimised plan lays out its maps; the default is the model's own (NCHW).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Layout {
    /// Every convolution kernel transposed ([`transpose`]): the plan then takes the transposed
    /// image and gives transposed maps.
    pub transposed: bool,
    /// Convolutions run channel-last inside the plan (tract's `conv_nhwc` transform; inputs and
    /// outputs keep their shapes). Pays where depthwise convolutions have many channels on
    /// small maps, the recogniser's case: tract's channel-last depthwise loop runs along the
    /// channels, its NCHW one along short rows. The detector's first maps have few channels on
    /// large maps, where it lost, so the detector keeps NCHW (docs/PERFORMANCE.md).
    pub channels_last: bool,
}

/// Parses the ONNX graph, pins input 0 to a concrete f32 shape (symbolic batch or spatial
/// sizes otherwise block optimisation) and optimises it once, laid out as `layout` says.
pub(crate) fn optimise(
    file: &ModelFile,
    input_shape: &[usize],
    layout: Layout,
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
    if layout.transposed {
        transpose::transpose_kernels(&mut typed).map_err(load_err)?;
    }
    // Our vector kernels where the CPU runs one of their instruction sets (simd.rs); tract's
    // operators elsewhere.
    let isa = Isa::detect();
    // Strided depthwise convolutions of an NCHW plan go to `depthwise3x3` where it runs.
    let strided_depthwise = !layout.channels_last && isa.is_none();
    if let (true, Some(isa)) = (layout.channels_last, isa) {
        // The recogniser's first two layers (3x3 over RGB, then over 64 groups of 2 channels),
        // before they would turn channel-last (see narrow_conv3x3); `grouped_conv` where neither
        // instruction set runs.
        narrow_conv3x3::substitute(&mut typed, isa, Relu::Fuse).map_err(load_err)?;
    }
    grouped_conv::substitute(&mut typed, strided_depthwise).map_err(load_err)?;
    sibling_convs::merge(&mut typed).map_err(load_err)?;
    nearest_upsample::substitute(&mut typed).map_err(load_err)?;
    if layout.channels_last {
        channels_last(&mut typed).map_err(load_err)?;
        if let Some(isa) = isa {
            channel_last_pointwise::substitute(&mut typed, isa).map_err(load_err)?;
        }
    } else {
        if let Some(isa) = isa {
            // The first layer (3x3 over RGB), its ReLU left as tract's pass: fused, the
            // depthwise layer after it ran slower on Zen 5 (docs/PERFORMANCE.md).
            narrow_conv3x3::substitute(&mut typed, isa, Relu::Keep).map_err(load_err)?;
            // SCRFD's merged heads, which run channel-last (see channel_last::conv3x3).
            channel_last_conv3x3::substitute(&mut typed, isa).map_err(load_err)?;
            pointwise_conv::substitute(&mut typed, isa).map_err(load_err)?;
            // The other 1x1 layers (wide ones, and those before the heads) channel-last, where
            // tract folds the moves between them and the channel-last depthwise layers.
            channel_last_pointwise::substitute(&mut typed, isa).map_err(load_err)?;
        }
        // The widest depthwise layers run channel-last (faster there), the rest as ours.
        channel_last_depthwise::substitute(&mut typed).map_err(load_err)?;
        if let Some(isa) = isa {
            depthwise3x3::substitute(&mut typed, isa).map_err(load_err)?;
        }
    }
    let mut optimised = typed.into_optimized().map_err(load_err)?;
    if layout.channels_last && isa.is_some() {
        // The move tract leaves before the recogniser's first channel-last 1x1 layer goes into
        // it: the layer reads channel-first planes as fast, and the move's pass is saved.
        channel_last_pointwise::read_planes_after_moves(&mut optimised).map_err(load_err)?;
    }
    optimised.into_runnable().map_err(load_err)
}

/// Every convolution wrapped in moves to and from channel-last; tract's optimiser then folds
/// the moves that meet between two convolutions (through element-wise ops such as our PRelu).
pub(crate) fn channels_last(model: &mut TypedModel) -> TractResult<()> {
    let transform = tract_onnx::tract_core::transform::get_transform("conv_nhwc")?
        .ok_or_else(|| TractError::msg("this tract has no conv_nhwc transform"))?;
    transform.transform(model)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::graph_testing::{
        conv, konst, run as optimise_and_run, run_counting_moves, tensor,
    };
    use crate::ops::prelu::Prelu;
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// conv 3x3 -> PRelu -> depthwise 3x3 -> PRelu -> depthwise 3x3 / 2 -> PRelu -> conv 1x1,
    /// as in MobileFaceNet.
    fn recogniser_block() -> TypedModel {
        let mut model = TypedModel::default();
        let x = model
            .add_source("x", f32::fact([1, 8, 10, 12]))
            .expect("source");
        let mut wire = x;
        let layers = [
            (
                conv(8, 16, 1, [3, 3], 1, 1, DataFormat::NCHW),
                [16, 8, 3, 3],
            ),
            (
                conv(16, 16, 16, [3, 3], 1, 1, DataFormat::NCHW),
                [16, 1, 3, 3],
            ),
            (
                conv(16, 16, 16, [3, 3], 2, 1, DataFormat::NCHW),
                [16, 1, 3, 3],
            ),
            (
                conv(16, 24, 1, [1, 1], 1, 0, DataFormat::NCHW),
                [24, 16, 1, 1],
            ),
        ];
        for (i, (op, kernel)) in layers.into_iter().enumerate() {
            let k = konst(&mut model, &format!("k{i}"), &kernel, i);
            let b = konst(&mut model, &format!("b{i}"), &[kernel[0]], 10 + i);
            wire = model
                .wire_node(format!("conv{i}"), op, &[wire, k, b])
                .expect("conv")[0];
            if i < 3 {
                let slope = konst(&mut model, &format!("s{i}"), &[1, kernel[0], 1, 1], 20 + i);
                wire = model
                    .wire_node(format!("prelu{i}"), Prelu, &[wire, slope])
                    .expect("prelu")[0];
            }
        }
        model.select_output_outlets(&[wire]).expect("output");
        model
    }

    #[test]
    fn channels_last_gives_the_same_maps_with_moves_only_at_the_ends() {
        let input = tensor(&[1, 8, 10, 12], 7);
        let nchw = optimise_and_run(recogniser_block(), tvec![input.clone().into()]);

        let mut model = recogniser_block();
        channels_last(&mut model).expect("conv_nhwc");
        let (nhwc, moves) = run_counting_moves(model, tvec![input.into()]);
        // One move in, one out: PRelu lets the moves between the depthwise convolutions cancel.
        assert!(moves <= 2, "{moves} axis moves left");

        assert_eq!(nhwc[0].shape(), nchw[0].shape());
        let (a, b) = (
            output_slice(&nchw[0]).unwrap(),
            output_slice(&nhwc[0]).unwrap(),
        );
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "largest difference {worst}");
    }
}
