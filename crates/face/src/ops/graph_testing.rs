//! Test helpers for the tract graph rewrites (`grouped_conv`, `sibling_convs`, `transpose`,
//! `depthwise3x3`, `pointwise_conv`, the channel-last ones): deterministic values, convolutions and
//! constants, and a model optimised and run as `model::optimise` would.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// `len` values in [-1, 1), different for each `seed`.
pub(crate) fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed * 104_729) % 251) as f32 / 125.0 - 1.0)
        .collect()
}

/// A tensor of `shape` filled with [`values`].
pub(crate) fn tensor(shape: &[usize], seed: usize) -> Tensor {
    let len = shape.iter().product();
    Tensor::from_shape(shape, &values(len, seed)).expect("shape and values agree")
}

/// A constant of `shape` filled with [`values`], added to `model`.
pub(crate) fn konst(model: &mut TypedModel, name: &str, shape: &[usize], seed: usize) -> OutletId {
    model
        .add_const(name, tensor(shape, seed))
        .expect("constant")
}

/// A float convolution, OIHW kernel, the same stride and padding on both spatial axes.
pub(crate) fn conv(
    cin: usize,
    cout: usize,
    group: usize,
    kernel: [usize; 2],
    stride: usize,
    pad: usize,
    format: DataFormat,
) -> Conv {
    Conv {
        pool_spec: PoolSpec {
            data_format: format,
            kernel_shape: tvec!(kernel[0], kernel[1]),
            padding: PaddingSpec::Explicit(tvec!(pad, pad), tvec!(pad, pad)),
            dilations: None,
            strides: Some(tvec!(stride, stride)),
            input_channels: cin,
            output_channels: cout,
        },
        kernel_fmt: KernelFormat::OIHW,
        group,
        q_params: None,
    }
}

/// Optimises `model` and runs it on `inputs`.
pub(crate) fn run(model: TypedModel, inputs: TVec<TValue>) -> TVec<TValue> {
    let plan = model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .expect("model optimises");
    plan.run(inputs).expect("model runs")
}

/// Optimises `model`, runs it on `inputs`, and counts the axis moves left in the plan, which
/// the channel-last rewrites must keep to the ends of a chain.
pub(crate) fn run_counting_moves(model: TypedModel, inputs: TVec<TValue>) -> (TVec<TValue>, usize) {
    let plan = model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .expect("model optimises");
    let moves = plan
        .model()
        .nodes()
        .iter()
        .filter(|n| n.op.name() == "MoveAxis")
        .count();
    (plan.run(inputs).expect("model runs"), moves)
}

/// `max(wire, 0)`, a ReLU as tract-onnx wires ONNX's.
pub(crate) fn relu_of(model: &mut TypedModel, name: &str, wire: OutletId) -> OutletId {
    let zero = model
        .add_const(format!("{name}.zero"), tensor4(&[[[[0f32]]]]))
        .expect("constant");
    model
        .wire_node(
            name,
            tract_onnx::tract_core::ops::math::max(),
            &[wire, zero],
        )
        .expect("max")[0]
}
