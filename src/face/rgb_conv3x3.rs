//! A network's first layer, a 3x3 convolution of the RGB input, in AVX-512 or AVX2
//! (`simd.rs`): one vector of output columns (16 or 8) of 8 output channels at a time, each of
//! the 27 input vectors (masked loads, every other column for stride 2, as in `depthwise3x3`)
//! multiplied into 8 accumulators held in registers; a ReLU after it is fused.
//!
//! Used for the recogniser (3 -> 128 channels, stride 2, at 112x112): tract 0.35-0.44 ms,
//! here 0.22-0.24 (onnxruntime 0.14; AVX-512 on Zen 5); the recogniser took 0.04-0.57 ms less in each of six
//! alternated pairs (minimum of 30 runs). Its output goes to the grouped convolution, which
//! reads NCHW too.
//! The detector's first layer (3 -> 16 at 640x640) also ran faster here (1.5-1.7 -> 0.85-1.0
//! ms), but the depthwise layer after it then ran 0.3-0.4 ms slower every time, for a reason not
//! found, and the net was within the noise: the detector keeps tract's.
//!
//! [`substitute`] swaps it in for every convolution of a decluttered model with at most
//! [`MAX_IN_CHANNELS`] input channels, a multiple of 8 output channels, one group, 3x3, stride 1
//! or 2 on both axes, padding 1 before, (N)CHW, f32, constant kernel and bias, absorbing a ReLU
//! that is its only reader.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;

use super::rewrite::constant_kernel_and_bias;
use super::simd::{Isa, Simd};
use super::window3x3::{self, load_columns, store_columns, Maps, Tap, Window3x3, WindowKernel};

/// An image's channels, not a feature map's.
pub(crate) const MAX_IN_CHANNELS: usize = 4;

/// Output channels computed together: each input vector loaded feeds this many accumulators.
const GROUP: usize = 8;

/// `out[o, y, x] = bias[o] + sum over (i, dy, dx) of weights[o, i, dy, dx] *
/// input[i, y * stride + dy - 1, x * stride + dx - 1]`, zero outside the input; then `max(0, .)`
/// if `relu`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RgbConv3x3 {
    pub in_channels: usize,
    pub out_channels: usize,
    pub window: Window3x3,
    /// OIHW: `[out_channels, in_channels, 3, 3]`.
    pub weights: Arc<Vec<f32>>,
    /// The same, `[out_channels / GROUP, in_channels * 9, GROUP]`: a tap's weights for one group
    /// of output channels side by side.
    pub grouped: Arc<Vec<f32>>,
    pub bias: Arc<Vec<f32>>,
    pub relu: bool,
    /// What the kernel is compiled for; the CPU supports it.
    pub isa: Isa,
}

impl Eq for RgbConv3x3 {}

impl RgbConv3x3 {
    /// `weights` OIHW, one bias per output channel; `out_channels` a multiple of [`GROUP`].
    fn new(
        [in_channels, out_channels]: [usize; 2],
        window: Window3x3,
        weights: Vec<f32>,
        bias: Vec<f32>,
        isa: Isa,
    ) -> RgbConv3x3 {
        let taps = in_channels * 9;
        let grouped = (0..out_channels / GROUP)
            .flat_map(|g| (0..taps).flat_map(move |tap| (0..GROUP).map(move |r| (g, tap, r))))
            .map(|(g, tap, r)| weights[(g * GROUP + r) * taps + tap])
            .collect();
        RgbConv3x3 {
            in_channels,
            out_channels,
            window,
            weights: Arc::new(weights),
            grouped: Arc::new(grouped),
            bias: Arc::new(bias),
            relu: false,
            isa,
        }
    }
}

impl Op for RgbConv3x3 {
    fn name(&self) -> StaticName {
        "RgbConv3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "in {} out {} stride {} relu {} {:?}",
            self.in_channels, self.out_channels, self.window.stride, self.relu, self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for RgbConv3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        // The kernel writes every value (each output row, column block and channel group).
        ensure!(self.out_channels.is_multiple_of(GROUP));
        let output = self.window.eval(
            self,
            self.isa,
            &input,
            [self.in_channels, self.out_channels],
        )?;
        Ok(tvec!(output))
    }
}

impl TypedOp for RgbConv3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let fact = self
            .window
            .output_fact(inputs[0], self.in_channels, self.out_channels)?;
        Ok(tvec!(fact))
    }

    as_op!();
}

impl WindowKernel for RgbConv3x3 {
    /// Row by row; `out_channels` is a multiple of [`GROUP`] (`eval` checks).
    #[inline(always)]
    unsafe fn run<S: Simd>(&self, maps: Maps<'_, S>) {
        for y in 0..maps.out_hw[0] {
            row::<S>(
                self,
                maps.input,
                maps.hw,
                maps.out,
                maps.out_hw,
                y,
                maps.taps,
            );
        }
    }
}

/// Output row `y`, every output channel.
///
/// # Safety
/// Runs only where `S` does; `input.len() == in_channels * h * w`,
/// `out.len() == out_channels * oh * ow`, `out_channels` is a multiple of [`GROUP`], `taps`
/// were made for `w`, `ow`, the op's stride and `S::LANES`, and every output's window starts
/// inside or one before the input.
#[inline(always)]
unsafe fn row<S: Simd>(
    op: &RgbConv3x3,
    input: &[f32],
    [h, w]: [usize; 2],
    out: &mut [f32],
    [oh, ow]: [usize; 2],
    y: usize,
    taps: &[[Tap<S>; 3]],
) {
    let s = op.window.stride;
    let cin = op.in_channels;
    let zero = S::zero();
    let grouped = op.grouped.as_ptr();
    // Input rows of the three kernel rows per input channel, null outside the map.
    let mut rows = [[std::ptr::null::<f32>(); 3]; MAX_IN_CHANNELS];
    for (i, channel_rows) in rows.iter_mut().enumerate().take(cin) {
        for (dy, row) in channel_rows.iter_mut().enumerate() {
            if let Some(iy) = (y * s + dy).checked_sub(1).filter(|&iy| iy < h) {
                *row = input.as_ptr().wrapping_add((i * h + iy) * w);
            }
        }
    }
    for (b, block) in taps.iter().enumerate() {
        let x0 = b * S::LANES;
        for g in (0..op.out_channels).step_by(GROUP) {
            let mut acc = [zero; GROUP];
            for (r, a) in acc.iter_mut().enumerate() {
                *a = S::splat(op.bias[g + r]);
            }
            for (i, channel_rows) in rows.iter().enumerate().take(cin) {
                for (dy, &row) in channel_rows.iter().enumerate() {
                    if row.is_null() {
                        continue;
                    }
                    for (dx, tap) in block.iter().enumerate() {
                        let v = load_columns::<S>(row, tap, s);
                        let tap = (i * 3 + dy) * 3 + dx;
                        let k = grouped.wrapping_add((g / GROUP * cin * 9 + tap) * GROUP);
                        for (r, a) in acc.iter_mut().enumerate() {
                            *a = S::fmadd(v, S::splat(*k.wrapping_add(r)), *a);
                        }
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let v = if op.relu { S::max(*a, zero) } else { *a };
                let dst = out.as_mut_ptr().wrapping_add(((g + r) * oh + y) * ow + x0);
                store_columns::<S>(dst, ow - x0, v);
            }
        }
    }
}

/// Replaces every convolution [`RgbConv3x3`] handles, with its ReLU; returns how many.
pub(crate) fn substitute(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    window3x3::substitute(
        model,
        "rgb-conv-3x3",
        |model, node, conv, window| rgb_conv_for(model, node, conv, window, isa),
        |op| op.relu = true,
    )
}

fn rgb_conv_for(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    window: Window3x3,
    isa: Isa,
) -> TractResult<Option<RgbConv3x3>> {
    let (cin, cout) = (conv.input_channels(), conv.output_channels());
    if conv.group != 1 || cin > MAX_IN_CHANNELS || !cout.is_multiple_of(GROUP) {
        return Ok(None);
    }
    let Some((weights, bias)) = constant_kernel_and_bias(model, node, &[cout, cin, 3, 3], cout)?
    else {
        return Ok(None);
    };
    Ok(Some(RgbConv3x3::new(
        [cin, cout],
        window,
        weights,
        bias,
        isa,
    )))
}

#[cfg(test)]
mod tests {
    use super::super::graph_testing::{conv, konst, relu_of, run, tensor, values};
    use super::*;
    use tract_onnx::tract_core::ops::nn::DataFormat;

    fn op(
        cin: usize,
        cout: usize,
        stride: usize,
        pad_after: [usize; 2],
        relu: bool,
        isa: Isa,
    ) -> RgbConv3x3 {
        let weights = values(cout * cin * 9, 1);
        let bias = values(cout, 2);
        RgbConv3x3 {
            relu,
            ..RgbConv3x3::new(
                [cin, cout],
                Window3x3 {
                    stride,
                    pad_after,
                    batch_axis: false,
                },
                weights,
                bias,
                isa,
            )
        }
    }

    #[test]
    fn matches_the_definition_at_every_edge() {
        // Widths below, at and past one and two vectors of 8 and 16 columns, for every
        // instruction set this CPU runs.
        let cases = |isa| {
            [
                (op(3, 8, 2, [1, 1], true, isa), [9, 33]),
                (op(3, 16, 2, [0, 0], false, isa), [8, 32]),
                (op(1, 8, 1, [1, 1], false, isa), [5, 17]),
                (op(4, 8, 1, [1, 1], true, isa), [6, 7]),
                (op(3, 8, 2, [1, 1], false, isa), [4, 15]),
            ]
        };
        for (op, [h, w]) in Isa::supported_all().flat_map(cases) {
            let input = values(op.in_channels * h * w, 3);
            let tensor = Tensor::from_shape(&[op.in_channels, h, w], &input).unwrap();
            let got = op
                .eval(&EvalContext::out_of_plan(), tvec!(tensor.into_tvalue()))
                .unwrap()
                .remove(0);
            let [oh, ow] = op.window.output_hw([h, w]).unwrap();
            assert_eq!(got.shape(), &[op.out_channels, oh, ow], "{op:?}");
            let got = got.to_plain_array_view::<f32>().unwrap();
            let got = got.as_slice().unwrap();
            for o in 0..op.out_channels {
                for y in 0..oh {
                    for x in 0..ow {
                        let mut want = op.bias[o];
                        for i in 0..op.in_channels {
                            for dy in 0..3 {
                                for dx in 0..3 {
                                    let iy = (y * op.window.stride + dy) as i64 - 1;
                                    let ix = (x * op.window.stride + dx) as i64 - 1;
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                        continue;
                                    }
                                    want += op.weights
                                        [((o * op.in_channels + i) * 3 + dy) * 3 + dx]
                                        * input[(i * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                        if op.relu {
                            want = want.max(0.0);
                        }
                        let g = got[(o * oh + y) * ow + x];
                        assert!((g - want).abs() < 1e-4, "[{o}, {y}, {x}]: {g} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn replaces_the_rgb_convolution_and_its_relu_only() {
        // 3 -> 16 with a ReLU, then 16 -> 8, which is no image's first layer.
        let mut model = TypedModel::default();
        let mut wire = model.add_source("x", f32::fact([1, 3, 14, 19])).unwrap();
        for (i, (cin, cout, relu)) in [(3, 16, true), (16, 8, false)].into_iter().enumerate() {
            let k = konst(&mut model, &format!("k{i}"), &[cout, cin, 3, 3], 4 + i);
            let b = konst(&mut model, &format!("b{i}"), &[cout], 10 + i);
            let op = conv(cin, cout, 1, [3, 3], 2, 1, DataFormat::NCHW);
            wire = model
                .wire_node(format!("conv{i}"), op, &[wire, k, b])
                .unwrap()[0];
            if relu {
                wire = relu_of(&mut model, &format!("relu{i}"), wire);
            }
        }
        model.select_output_outlets(&[wire]).unwrap();
        let model = model.into_decluttered().unwrap();

        let input = tvec!(tensor(&[1, 3, 14, 19], 8).into_tvalue());
        let want = run(model.clone(), input.clone()).remove(0);
        for isa in Isa::supported_all() {
            let mut ours = model.clone();
            assert_eq!(substitute(&mut ours, isa).unwrap(), 1);
            assert!(ours
                .nodes
                .iter()
                .any(|n| n.op_as::<RgbConv3x3>().is_some_and(|op| op.relu)));
            let got = run(ours, input.clone()).remove(0);
            want.close_enough(&got, true).unwrap();
        }
    }
}
