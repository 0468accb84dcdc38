//! 3x3 convolutions over few input channels per group, in AVX-512 or AVX2 (`simd.rs`): a
//! network's first layer (3x3 over RGB), grouped ones of 2 to 16 input channels per group,
//! and narrow ones of up to 16 input channels (SCRFD's neck).
//! One vector of output columns (16 or 8) of a block of output channels at a time (8, or fewer
//! when a group has fewer), each of the group's input vectors (masked loads, every other column
//! for stride 2, as in `depthwise3x3`) multiplied into the block's accumulators held in
//! registers; a ReLU after it is fused unless the caller keeps it apart ([`Relu`]).
//!
//! Used for the recogniser's first layer (3 -> 128 channels, stride 2, at 112x112): tract
//! 0.35-0.44 ms, here 0.22-0.24 (onnxruntime 0.14; AVX-512 on Zen 5); the recogniser took
//! 0.04-0.57 ms less in each of six alternated pairs (minimum of 30 runs). And for its second,
//! 3x3 over 128 channels at 56x56 in 64 groups of 2 (blocks of 2 output channels):
//! `grouped_conv`'s direct loop 0.78-0.83 ms, here 0.37-0.45 (Zen 5, AVX-512). Both read NCHW,
//! before the plan turns channel-last.
//! The detector's first layer (3 -> 16 at 640x640, stride 2): tract 1.6-2.0 ms, here 1.0-1.2
//! (Zen 5, fastest of 30, four alternated pairs; the detector 0.4-1.2 ms faster in each) with
//! its ReLU left as tract's pass ([`Relu::Keep`]): with the ReLU fused, the depthwise layer
//! after it ran 0.6-0.8 ms slower every time, for a reason not found (not page faults, not the
//! order of the writes). The detector's seven neck layers (3x3, 16 -> 16 at 80x80 to 20x20,
//! three of stride 2): tract's pad, im2col and product 1.28 ms, here 0.86 (fastest of 30, three
//! alternated pairs, AVX-512 on an Intel Xeon, model 207; onnxruntime ~0.6). Blocks of 16
//! output channels instead of 8 were slower there (0.39 -> 0.50 ms at 80x80).
//!
//! [`substitute`] swaps it in for every convolution of a decluttered model with one group of at
//! most [`MAX_IN_CHANNELS`] input channels and a multiple of 8 output channels, or several
//! groups of 2 to [`MAX_IN_CHANNELS`] input channels (not depthwise); 3x3, stride 1 or 2 on
//! both axes, padding 1 before, (N)CHW, f32, constant kernel and bias, absorbing a ReLU that is
//! its only reader with [`Relu::Fuse`].

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;

use crate::ops::rewrite::constant_kernel_and_bias;
use crate::ops::simd::{Isa, Simd};
use crate::ops::window3x3::{
    self, load_columns, store_columns, Maps, Tap, Window3x3, WindowKernel,
};

/// Input channels per group: an image's, a narrow group's or a narrow map's (each output
/// vector reads this many input channels times nine taps).
pub(crate) const MAX_IN_CHANNELS: usize = 16;

/// Output channels computed together: each input vector loaded feeds this many accumulators
/// (fewer when a group has fewer output channels).
const GROUP: usize = 8;

/// `out[o, y, x] = bias[o] + sum over (i, dy, dx) of weights[o, i, dy, dx] *
/// input[g * cpg + i, y * stride + dy - 1, x * stride + dx - 1]` for output channel `o` of
/// convolution group `g` and the `cpg` input channels per group, zero outside the input; then
/// `max(0, .)` if `relu`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NarrowConv3x3 {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Convolution groups: 1 for an image's first layer.
    pub groups: usize,
    pub window: Window3x3,
    /// OIHW: `[out_channels, in_channels / groups, 3, 3]`.
    pub weights: Arc<Vec<f32>>,
    /// Output channels computed together ([`block_for`]).
    pub block: usize,
    /// The same, `[out_channels / block, in_channels / groups * 9, block]`: a tap's weights for
    /// one block of output channels side by side.
    pub grouped: Arc<Vec<f32>>,
    pub bias: Arc<Vec<f32>>,
    pub relu: bool,
    /// What the kernel is compiled for; the CPU supports it.
    pub isa: Isa,
}

impl Eq for NarrowConv3x3 {}

/// Output channels per block for `per_group` output channels per convolution group: the most
/// of 8, 4, 2 and 1 that divides it (a block stays inside one group).
fn block_for(per_group: usize) -> usize {
    [GROUP, 4, 2]
        .into_iter()
        .find(|&b| per_group.is_multiple_of(b))
        .unwrap_or(1)
}

impl NarrowConv3x3 {
    /// `weights` OIHW, one bias per output channel; `in_channels` and `out_channels` whole
    /// multiples of `groups`, at most [`MAX_IN_CHANNELS`] input channels per group.
    fn new(
        [in_channels, out_channels, groups]: [usize; 3],
        window: Window3x3,
        weights: Vec<f32>,
        bias: Vec<f32>,
        isa: Isa,
    ) -> NarrowConv3x3 {
        let block = block_for(out_channels / groups);
        let taps = in_channels / groups * 9;
        let grouped = (0..out_channels / block)
            .flat_map(|g| (0..taps).flat_map(move |tap| (0..block).map(move |r| (g, tap, r))))
            .map(|(g, tap, r)| weights[(g * block + r) * taps + tap])
            .collect();
        NarrowConv3x3 {
            in_channels,
            out_channels,
            groups,
            window,
            weights: Arc::new(weights),
            block,
            grouped: Arc::new(grouped),
            bias: Arc::new(bias),
            relu: false,
            isa,
        }
    }

    /// Whether the shape is one [`NarrowConv3x3::new`] takes.
    fn takes([in_channels, out_channels, groups]: [usize; 3]) -> bool {
        groups > 0
            && in_channels.is_multiple_of(groups)
            && out_channels.is_multiple_of(groups)
            && (1..=MAX_IN_CHANNELS).contains(&(in_channels / groups))
            && out_channels > 0
    }
}

impl Op for NarrowConv3x3 {
    fn name(&self) -> StaticName {
        "NarrowConv3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "in {} out {} groups {} stride {} relu {} {:?}",
            self.in_channels,
            self.out_channels,
            self.groups,
            self.window.stride,
            self.relu,
            self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for NarrowConv3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        // The kernel writes every value (each output row, column block and block of channels).
        ensure!(
            Self::takes([self.in_channels, self.out_channels, self.groups])
                && (self.out_channels / self.groups).is_multiple_of(self.block)
                && self.weights.len() == self.out_channels * self.in_channels / self.groups * 9
                && self.grouped.len() == self.weights.len()
                && self.bias.len() == self.out_channels
        );
        let output = self.window.eval(
            self,
            self.isa,
            &input,
            [self.in_channels, self.out_channels],
        )?;
        Ok(tvec!(output))
    }
}

impl TypedOp for NarrowConv3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let fact = self
            .window
            .output_fact(inputs[0], self.in_channels, self.out_channels)?;
        Ok(tvec!(fact))
    }

    as_op!();
}

impl WindowKernel for NarrowConv3x3 {
    /// Row by row, block of output channels by block; the shape is one `new` takes (`eval`
    /// checks).
    #[inline(always)]
    unsafe fn run<S: Simd>(&self, maps: Maps<'_, S>) {
        match self.block {
            GROUP => self.rows::<S, GROUP>(maps),
            4 => self.rows::<S, 4>(maps),
            2 => self.rows::<S, 2>(maps),
            _ => self.rows::<S, 1>(maps),
        }
    }
}

impl NarrowConv3x3 {
    /// # Safety
    /// As [`row`], with `B == self.block`.
    #[inline(always)]
    unsafe fn rows<S: Simd, const B: usize>(&self, maps: Maps<'_, S>) {
        for y in 0..maps.out_hw[0] {
            for o in (0..self.out_channels).step_by(B) {
                row::<S, B>(
                    self,
                    maps.input,
                    maps.hw,
                    maps.out,
                    maps.out_hw,
                    [y, o],
                    maps.taps,
                );
            }
        }
    }
}

/// Output row `y` of the `B` output channels from `o` (inside one convolution group).
///
/// # Safety
/// Runs only where `S` does; `input.len() == in_channels * h * w`,
/// `out.len() == out_channels * oh * ow`, `B` is the op's block and `o` a multiple of it below
/// `out_channels`, the shape is one `NarrowConv3x3::new` takes, `taps` were made for `w`, `ow`,
/// the op's stride and `S::LANES`, and every output's window starts inside or one before the
/// input.
#[inline(always)]
unsafe fn row<S: Simd, const B: usize>(
    op: &NarrowConv3x3,
    input: &[f32],
    [h, w]: [usize; 2],
    out: &mut [f32],
    [oh, ow]: [usize; 2],
    [y, o]: [usize; 2],
    taps: &[[Tap<S>; 3]],
) {
    let s = op.window.stride;
    let cin = op.in_channels / op.groups;
    // The group's first input channel.
    let first = o / (op.out_channels / op.groups) * cin;
    let zero = S::zero();
    let grouped = op.grouped.as_ptr();
    // Input rows of the three kernel rows per input channel of the group, null outside the map.
    let mut rows = [[std::ptr::null::<f32>(); 3]; MAX_IN_CHANNELS];
    for (i, channel_rows) in rows.iter_mut().enumerate().take(cin) {
        for (dy, row) in channel_rows.iter_mut().enumerate() {
            if let Some(iy) = (y * s + dy).checked_sub(1).filter(|&iy| iy < h) {
                *row = input.as_ptr().wrapping_add(((first + i) * h + iy) * w);
            }
        }
    }
    for (b, block) in taps.iter().enumerate() {
        let x0 = b * S::LANES;
        let mut acc = [zero; B];
        for (r, a) in acc.iter_mut().enumerate() {
            *a = S::splat(op.bias[o + r]);
        }
        for (i, channel_rows) in rows.iter().enumerate().take(cin) {
            for (dy, &row) in channel_rows.iter().enumerate() {
                if row.is_null() {
                    continue;
                }
                for (dx, tap) in block.iter().enumerate() {
                    let v = load_columns::<S>(row, tap, s);
                    let tap = (i * 3 + dy) * 3 + dx;
                    let k = grouped.wrapping_add((o / B * cin * 9 + tap) * B);
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = S::fmadd(v, S::splat(*k.wrapping_add(r)), *a);
                    }
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            let v = if op.relu { S::max(*a, zero) } else { *a };
            let dst = out.as_mut_ptr().wrapping_add(((o + r) * oh + y) * ow + x0);
            store_columns::<S>(dst, ow - x0, v);
        }
    }
}

/// Whether a ReLU after the convolution goes into it or stays a pass of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relu {
    Fuse,
    Keep,
}

/// Replaces every convolution [`NarrowConv3x3`] handles, with its ReLU if `relu` says so; returns
/// how many.
pub(crate) fn substitute(model: &mut TypedModel, isa: Isa, relu: Relu) -> TractResult<usize> {
    let fuse: fn(&mut NarrowConv3x3) = |op| op.relu = true;
    window3x3::substitute(
        model,
        "rgb-conv-3x3",
        |model, node, conv, window| rgb_conv_for(model, node, conv, window, isa),
        (relu == Relu::Fuse).then_some(fuse),
    )
}

fn rgb_conv_for(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    window: Window3x3,
    isa: Isa,
) -> TractResult<Option<NarrowConv3x3>> {
    let (cin, cout, groups) = (conv.input_channels(), conv.output_channels(), conv.group);
    // Grouped but not depthwise (depthwise layers have their own operators), or one group of
    // whole blocks.
    let shape = [cin, cout, groups];
    let wanted = if groups == 1 {
        cout.is_multiple_of(GROUP)
    } else {
        cin / groups >= 2
    };
    if !wanted || !NarrowConv3x3::takes(shape) {
        return Ok(None);
    }
    let kernel_shape = [cout, cin / groups, 3, 3];
    let Some((weights, bias)) = constant_kernel_and_bias(model, node, &kernel_shape, cout)? else {
        return Ok(None);
    };
    Ok(Some(NarrowConv3x3::new(shape, window, weights, bias, isa)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::graph_testing::{conv, konst, relu_of, run, tensor, values};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    fn op(
        [cin, cout, groups]: [usize; 3],
        stride: usize,
        pad_after: [usize; 2],
        relu: bool,
        isa: Isa,
    ) -> NarrowConv3x3 {
        let weights = values(cout * cin / groups * 9, 1);
        let bias = values(cout, 2);
        NarrowConv3x3 {
            relu,
            ..NarrowConv3x3::new(
                [cin, cout, groups],
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
        // instruction set this CPU runs; one group (blocks of 8 output channels) and groups of
        // 2 input channels with 2, 4 and 1 output channels each (blocks of 2, 4 and 1).
        let cases = |isa| {
            [
                (op([3, 8, 1], 2, [1, 1], true, isa), [9, 33]),
                (op([3, 16, 1], 2, [0, 0], false, isa), [8, 32]),
                (op([1, 8, 1], 1, [1, 1], false, isa), [5, 17]),
                (op([4, 8, 1], 1, [1, 1], true, isa), [6, 7]),
                (op([3, 8, 1], 2, [1, 1], false, isa), [4, 15]),
                (op([8, 8, 4], 1, [1, 1], false, isa), [7, 17]),
                (op([6, 12, 3], 1, [1, 1], true, isa), [5, 16]),
                (op([6, 3, 3], 2, [1, 1], false, isa), [9, 33]),
                (op([16, 16, 1], 1, [1, 1], false, isa), [6, 21]),
                (op([16, 16, 1], 2, [1, 1], true, isa), [9, 33]),
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
            let cpg = op.in_channels / op.groups;
            let first = |o: usize| o / (op.out_channels / op.groups) * cpg;
            for o in 0..op.out_channels {
                for y in 0..oh {
                    for x in 0..ow {
                        let mut want = op.bias[o];
                        for i in 0..cpg {
                            for dy in 0..3 {
                                for dx in 0..3 {
                                    let iy = (y * op.window.stride + dy) as i64 - 1;
                                    let ix = (x * op.window.stride + dx) as i64 - 1;
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                        continue;
                                    }
                                    let c = first(o) + i;
                                    want += op.weights[((o * cpg + i) * 3 + dy) * 3 + dx]
                                        * input[(c * h + iy as usize) * w + ix as usize];
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
    fn replaces_the_rgb_and_grouped_convolutions_and_a_relu_only() {
        // 3 -> 16 with a ReLU, 16 -> 16 in 8 groups of 2, a depthwise 16 -> 16 (for another
        // operator), 16 -> 16 in one group, and a 16 -> 12 (not whole blocks: tract's).
        let mut model = TypedModel::default();
        let mut wire = model.add_source("x", f32::fact([1, 3, 14, 19])).unwrap();
        let layers = [
            (3, 16, 1, 2, true),
            (16, 16, 8, 1, false),
            (16, 16, 16, 1, false),
            (16, 16, 1, 1, false),
            (16, 12, 1, 1, false),
        ];
        for (i, (cin, cout, group, stride, relu)) in layers.into_iter().enumerate() {
            let k = konst(
                &mut model,
                &format!("k{i}"),
                &[cout, cin / group, 3, 3],
                4 + i,
            );
            let b = konst(&mut model, &format!("b{i}"), &[cout], 10 + i);
            let op = conv(cin, cout, group, [3, 3], stride, 1, DataFormat::NCHW);
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
            let mut kept = model.clone();
            assert_eq!(substitute(&mut kept, isa, Relu::Keep).unwrap(), 3);
            assert!(
                kept.nodes
                    .iter()
                    .filter_map(|n| n.op_as::<NarrowConv3x3>())
                    .all(|op| !op.relu),
                "{isa:?}: the ReLU stays a node"
            );
            let got = run(kept, input.clone()).remove(0);
            want.close_enough(&got, true).unwrap();

            let mut ours = model.clone();
            assert_eq!(substitute(&mut ours, isa, Relu::Fuse).unwrap(), 3);
            let ops: Vec<(usize, usize, bool)> = ours
                .nodes
                .iter()
                .filter_map(|n| n.op_as::<NarrowConv3x3>())
                .map(|op| (op.groups, op.block, op.relu))
                .collect();
            assert_eq!(ops, [(1, 8, true), (8, 2, false), (1, 8, false)], "{isa:?}");
            let got = run(ours, input.clone()).remove(0);
            want.close_enough(&got, true).unwrap();
        }
    }
}
