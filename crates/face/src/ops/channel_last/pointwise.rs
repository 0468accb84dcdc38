//! 1x1 convolutions of a channel-last plan (the recogniser) as one product without packing, in
//! AVX-512 or AVX2 (`simd.rs`). After `model::channels_last` the recogniser's 1x1 convolutions
//! are tract `EinSum`s that pack their input on every run and alternate between channel-first
//! and channel-last outputs. Here each one takes and gives a channel-last map (`[H, W, C]`):
//! a block of pixels by two vectors of output channels in registers, each input value
//! broadcast once per block and multiplied by two vectors of a weight panel packed at load
//! (`[out / panel][in][panel]`), the bias added. [`substitute`] wraps each op in moves to and
//! from channel-last, which tract's optimiser folds away between convolutions as it does for
//! the depthwise ones. A ReLU after the bias is fused.
//!
//! Where a layer's output is channel-last but its input channel-first (SCRFD's layers before
//! its heads, which run channel-last), the op reads the input planes instead
//! ([`ChannelLastPointwise::planes_in`]): the same blocks, each input value broadcast from its
//! plane, and no packing. So does the recogniser's first 1x1 layer, whose input comes
//! channel-first from `narrow_conv3x3` ([`read_planes_after_moves`]), which saves the move
//! before it. In the detector's channel-first plan the wide layers (152 -> 288 and 288 -> 288
//! at 20x20, whose depthwise neighbours run channel-last) are ours too. What each of these
//! gained, per layer and CPU, is in docs/PERFORMANCE.md (ninth session).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::ops::rewrite::{bias_and_relu_after, einsum_1x1, map_f32};
use crate::ops::simd::{Isa, Kernel, Simd};
use crate::ops::window3x3::lanes;

/// `out[p, o] = bias[o] + sum over i of weights[o, i] * input[p, i]` over the pixels `p` of a
/// channel-last map.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChannelLastPointwise {
    pub in_channels: usize,
    pub out_channels: usize,
    /// `[out_channels / panel, in_channels, panel]` with `panel` two vectors of the
    /// instruction set: the weights of one block's output channels, input channel by channel.
    pub panels: Arc<Vec<f32>>,
    pub bias: Arc<Vec<f32>>,
    /// The input is channel-first (`[C, H, W]`) rather than channel-last; the output is
    /// channel-last either way.
    pub planes_in: bool,
    /// `max(0, .)` after the bias.
    pub relu: bool,
    /// What the kernel is compiled for; the CPU supports it.
    pub isa: Isa,
}

impl Eq for ChannelLastPointwise {}

impl ChannelLastPointwise {
    /// `weights` `[out_channels, in_channels]`; None unless the output channels are whole
    /// panels of `isa`.
    pub fn new(
        weights: &[f32],
        bias: Vec<f32>,
        [cin, cout]: [usize; 2],
        planes_in: bool,
        isa: Isa,
    ) -> Option<Self> {
        let panel = panel_width(isa);
        if cout == 0 || cin == 0 || !cout.is_multiple_of(panel) || weights.len() != cin * cout {
            return None;
        }
        let mut panels = Vec::with_capacity(cin * cout);
        for o0 in (0..cout).step_by(panel) {
            for i in 0..cin {
                panels.extend((o0..o0 + panel).map(|o| weights[o * cin + i]));
            }
        }
        Some(ChannelLastPointwise {
            in_channels: cin,
            out_channels: cout,
            panels: Arc::new(panels),
            bias: Arc::new(bias),
            planes_in,
            relu: false,
            isa,
        })
    }

    /// `input` `[pixels, in_channels]` (`[in_channels, pixels]` if `planes_in`), `out`
    /// `[pixels, out_channels]`.
    fn run(&self, input: &[f32], out: &mut [f32], pixels: usize) -> TractResult<()> {
        ensure!(
            input.len() == pixels * self.in_channels
                && out.len() == pixels * self.out_channels
                && self.bias.len() == self.out_channels
                && self.panels.len() == self.in_channels * self.out_channels
                && self.out_channels.is_multiple_of(panel_width(self.isa))
        );
        ensure!(self.isa.supported(), "{:?} is not supported here", self.isa);
        let blocks = Blocks {
            op: self,
            input,
            out,
            pixels,
        };
        // Safety: the CPU supports the instruction set and the lengths fit (checked above).
        unsafe { self.isa.run(blocks) };
        Ok(())
    }

    fn output_shape(&self, input: &[usize]) -> TractResult<TVec<usize>> {
        let split = if self.planes_in {
            input.split_first()
        } else {
            input.split_last()
        };
        let Some((&c, rest)) = split else {
            bail!("1x1 convolution on a scalar");
        };
        ensure!(
            c == self.in_channels,
            "1x1 convolution expects {} channels {}, got {input:?}",
            self.in_channels,
            if self.planes_in { "first" } else { "last" }
        );
        let mut shape: TVec<usize> = rest.into();
        shape.push(self.out_channels);
        Ok(shape)
    }
}

/// Output channels per block: two vectors.
pub(crate) fn panel_width(isa: Isa) -> usize {
    2 * isa.lanes()
}

/// Pixels per block: accumulators for as many as the registers hold beside the two weight
/// vectors and a broadcast input (AVX-512: 12 x 2 of 32 registers; AVX2: 6 x 2 of 16).
pub(crate) const AVX512_PIXELS: usize = 12;
pub(crate) const AVX2_PIXELS: usize = 6;

/// A block's accumulators, `P` pixels by two vectors of output channels, starting from the
/// bias of output channel `o` (`bias` padded to whole panels).
///
/// # Safety
/// Runs only where `S` does; `o + 2 * S::LANES <= bias.len()`.
#[inline(always)]
pub(crate) unsafe fn bias_block<S: Simd, const P: usize>(bias: &[f32], o: usize) -> [[S::F; 2]; P] {
    let bias = bias.as_ptr().wrapping_add(o);
    [[S::load(bias), S::load(bias.wrapping_add(S::LANES))]; P]
}

/// Adds to the accumulators of `P` pixels, starting at `p0` of channel-first `input` (`planes`
/// of `pixels` values), their input values times a panel's weights (one row of two vectors
/// from `panel` per plane).
///
/// # Safety
/// Runs only where `S` does; `panel` points at `planes * 2 * S::LANES` values, `input` holds
/// `planes` whole planes and `p0 + P <= pixels`.
#[inline(always)]
unsafe fn multiply_planes<S: Simd, const P: usize>(
    acc: &mut [[S::F; 2]; P],
    input: &[f32],
    pixels: usize,
    p0: usize,
    panel: *const f32,
) {
    let mut w = panel;
    for plane in input.chunks_exact(pixels) {
        let xs = &plane[p0..][..P];
        let w0 = S::load(w);
        let w1 = S::load(w.wrapping_add(S::LANES));
        w = w.wrapping_add(2 * S::LANES);
        for (a, x) in acc.iter_mut().zip(xs) {
            let x = S::splat(*x);
            a[0] = S::fmadd(x, w0, a[0]);
            a[1] = S::fmadd(x, w1, a[1]);
        }
    }
}

/// Adds to each pixel's accumulators its input values (`rows[k]`, one per input channel) times
/// a panel's weights (`rows[k].len()` rows of two vectors from `panel`).
///
/// # Safety
/// Runs only where `S` does; `panel` points at `rows[0].len() * 2 * S::LANES` values and every
/// row has the same length.
#[inline(always)]
pub(crate) unsafe fn multiply_panel<S: Simd, const P: usize>(
    acc: &mut [[S::F; 2]; P],
    rows: &[&[f32]; P],
    panel: *const f32,
) {
    // Slices of exactly the input channels, so `row[i]` needs no bounds check, and no
    // raw-pointer dereference (the dev profile checks each).
    let mut w = panel;
    for i in 0..rows[0].len() {
        let w0 = S::load(w);
        let w1 = S::load(w.wrapping_add(S::LANES));
        w = w.wrapping_add(2 * S::LANES);
        for (a, row) in acc.iter_mut().zip(rows) {
            let x = S::splat(row[i]);
            a[0] = S::fmadd(x, w0, a[0]);
            a[1] = S::fmadd(x, w1, a[1]);
        }
    }
}

/// Stores pixel `k`'s accumulators at `dst + k * stride`: the first `left` channels of the
/// panel (all of it when `left` is two vectors or more).
///
/// # Safety
/// Runs only where `S` does; every pixel's first `min(left, 2 * S::LANES)` values lie in the
/// output.
#[inline(always)]
pub(crate) unsafe fn store_block<S: Simd, const P: usize>(
    acc: &[[S::F; 2]; P],
    dst: *mut f32,
    stride: usize,
    left: usize,
) {
    for (k, a) in acc.iter().enumerate() {
        let dst = dst.wrapping_add(k * stride);
        if left >= 2 * S::LANES {
            S::store(dst, a[0]);
            S::store(dst.wrapping_add(S::LANES), a[1]);
        } else {
            let lanes_of = |lo: usize| lanes(lo as isize, left.min(lo + S::LANES) as isize) >> lo;
            S::store_masked(dst, S::mask(lanes_of(0)), a[0]);
            if left > S::LANES {
                let hi = dst.wrapping_add(S::LANES);
                S::store_masked(hi, S::mask(lanes_of(S::LANES)), a[1]);
            }
        }
    }
}

struct Blocks<'a> {
    op: &'a ChannelLastPointwise,
    input: &'a [f32],
    out: &'a mut [f32],
    pixels: usize,
}

impl Kernel for Blocks<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        if S::LANES >= 16 {
            self.panels::<S, AVX512_PIXELS>();
        } else {
            self.panels::<S, AVX2_PIXELS>();
        }
    }
}

impl Blocks<'_> {
    /// Panel by panel (its weights stay in cache), every pixel: blocks of `P`, then one at a
    /// time.
    ///
    /// # Safety
    /// Runs only where `S` does; the lengths are those `ChannelLastPointwise::run` checks.
    #[inline(always)]
    unsafe fn panels<S: Simd, const P: usize>(self) {
        let op = self.op;
        let width = 2 * S::LANES;
        let whole = self.pixels / P * P;
        for (b, panel) in op.panels.chunks_exact(op.in_channels * width).enumerate() {
            let o = b * width;
            for p0 in (0..whole).step_by(P) {
                block::<S, P>(op, panel, self.input, self.out, p0, o);
            }
            for p0 in whole..self.pixels {
                block::<S, 1>(op, panel, self.input, self.out, p0, o);
            }
        }
    }
}

/// Pixels `p0..p0 + P`, output channels `o..o + 2 * S::LANES`.
///
/// # Safety
/// Runs only where `S` does; `panel` is the panel of output channel `o` (`in_channels x 2 *
/// S::LANES`), the block lies inside the map and the lengths are those
/// `ChannelLastPointwise::run` checks.
#[inline(always)]
unsafe fn block<S: Simd, const P: usize>(
    op: &ChannelLastPointwise,
    panel: &[f32],
    input: &[f32],
    out: &mut [f32],
    p0: usize,
    o: usize,
) {
    let cin = op.in_channels;
    let mut acc = bias_block::<S, P>(&op.bias, o);
    if op.planes_in {
        multiply_planes::<S, P>(&mut acc, input, input.len() / cin, p0, panel.as_ptr());
    } else {
        let mut rows = [&input[..0]; P];
        for (k, row) in rows.iter_mut().enumerate() {
            *row = &input[(p0 + k) * cin..][..cin];
        }
        multiply_panel::<S, P>(&mut acc, &rows, panel.as_ptr());
    }
    if op.relu {
        let zero = S::zero();
        for a in acc.iter_mut() {
            *a = [S::max(a[0], zero), S::max(a[1], zero)];
        }
    }
    let cout = op.out_channels;
    let dst = out.as_mut_ptr().wrapping_add(p0 * cout + o);
    store_block::<S, P>(&acc, dst, cout, cout - o);
}

impl Op for ChannelLastPointwise {
    fn name(&self) -> StaticName {
        "ChannelLastPointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "in {} out {} planes in {} relu {} {:?}",
            self.in_channels, self.out_channels, self.planes_in, self.relu, self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for ChannelLastPointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = self.output_shape(input.shape())?;
        let pixels = input.len() / self.in_channels;
        // `run` writes every value.
        let output = map_f32(&input, &shape, |src, dst| self.run(src, dst, pixels))?;
        Ok(tvec!(output))
    }
}

impl TypedOp for ChannelLastPointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = inputs[0]
            .shape
            .as_concrete()
            .ok_or_else(|| format_err!("1x1 convolution needs a concrete input shape"))?;
        Ok(tvec!(f32::fact(self.output_shape(shape)?)))
    }

    as_op!();
}

/// Replaces 1x1 convolution `EinSum`s (`IHW,OI->OHW` or `->HWO`, with or without a batch axis
/// of 1 on either side) with a constant f32 kernel whose output channels are whole panels, with
/// the bias `Add` and the ReLU after it, by a [`ChannelLastPointwise`]: those with a
/// channel-first output between moves to and from channel-last (which tract folds away between
/// channel-last layers), those with a channel-last output reading the input planes; returns
/// how many.
pub(crate) fn substitute(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some((op, batch_axis, last)) = op_at(model, id, isa)? else {
            continue;
        };
        let node = &model.nodes[id];
        let name = node.name.clone();
        let mut patch = TypedModelPatch::new("channel-last-pointwise");
        let mut wire = patch.tap_model(model, node.inputs[0])?;
        if batch_axis[0] {
            wire = patch.wire_node(format!("{name}.no_batch"), AxisOp::Rm(0), &[wire])?[0];
        }
        if op.planes_in {
            wire = patch.wire_node(&name, op, &[wire])?[0];
        } else {
            wire = patch.wire_node(format!("{name}.hwc_in"), AxisOp::Move(0, 2), &[wire])?[0];
            wire = patch.wire_node(&name, op, &[wire])?[0];
            wire = patch.wire_node(format!("{name}.hwc_out"), AxisOp::Move(2, 0), &[wire])?[0];
        }
        if batch_axis[1] {
            wire = patch.wire_node(format!("{name}.batch"), AxisOp::Add(0), &[wire])?[0];
        }
        patch.shunt_outside(model, last.into(), wire)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The op for the `EinSum` at `id` (reading planes if its output is channel-last), whether its
/// input and its output have a batch axis, and the last node it replaces (the `EinSum`, its
/// bias `Add` or the ReLU after).
fn op_at(
    model: &TypedModel,
    id: usize,
    isa: Isa,
) -> TractResult<Option<(ChannelLastPointwise, [bool; 2], usize)>> {
    let Some(einsum) = einsum_1x1(model, id)? else {
        return Ok(None);
    };
    let (cin, cout) = (einsum.in_channels, einsum.out_channels);
    let planes_in = einsum.channels_last_out;
    let (bias, relu, last) = bias_and_relu_after(model, id, cout, planes_in)?;
    Ok(
        ChannelLastPointwise::new(&einsum.weights, bias, [cin, cout], planes_in, isa)
            .map(|op| (ChannelLastPointwise { relu, ..op }, einsum.batch_axis, last)),
    )
}

/// In an optimised plan, each move to channel-last that tract could not fold away (its input
/// comes from a channel-first layer, as the recogniser's first 1x1 layer's does) and that only
/// a [`ChannelLastPointwise`] reads: that op now reads the planes itself; returns how many.
pub(crate) fn read_planes_after_moves(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(op) = node.op_as::<ChannelLastPointwise>() else {
            continue;
        };
        let mover = model.node(node.inputs[0].node);
        let moves_to_channel_last = mover.op_as::<AxisOp>() == Some(&AxisOp::Move(0, 2))
            && model.outlet_fact(mover.inputs[0])?.rank() == 3
            && model.outlet_successors(node.inputs[0]).len() == 1;
        if op.planes_in || !moves_to_channel_last {
            continue;
        }
        let op = ChannelLastPointwise {
            planes_in: true,
            ..op.clone()
        };
        let mut patch = TypedModelPatch::new("channel-last-pointwise-planes");
        let input = patch.tap_model(model, mover.inputs[0])?;
        let wire = patch.wire_node(&node.name, op, &[input])?[0];
        patch.shunt_outside(model, id.into(), wire)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::graph_testing::{
        conv, konst, relu_of, run, run_counting_moves, tensor, values,
    };
    use crate::ops::model::channels_last;
    use crate::ops::prelu::Prelu;
    use tract_onnx::tract_core::ops::nn::DataFormat;

    #[test]
    fn matches_the_definition_in_whole_blocks_and_single_pixels() {
        // Pixels: whole blocks of 6 and 12 and single ones after them; output channels: one and
        // several panels of 16 and 32; input channel-last and channel-first.
        let cases = [(3, 32, 1), (16, 64, 49), (128, 32, 15), (7, 96, 13)];
        let all = Isa::supported_all().flat_map(|isa| {
            [false, true]
                .into_iter()
                .flat_map(move |planes| cases.into_iter().map(move |case| (isa, planes, case)))
        });
        for (isa, planes_in, (cin, cout, pixels)) in all {
            let weights = values(cout * cin, 1);
            let op =
                ChannelLastPointwise::new(&weights, values(cout, 2), [cin, cout], planes_in, isa)
                    .expect("whole panels");
            let relu = cin % 2 == 1;
            let op = ChannelLastPointwise { relu, ..op };
            let input = values(pixels * cin, 3);
            let at = |p: usize, i: usize| {
                if planes_in {
                    input[i * pixels + p]
                } else {
                    input[p * cin + i]
                }
            };
            let mut got = vec![f32::NAN; pixels * cout];
            op.run(&input, &mut got, pixels).unwrap();
            for p in 0..pixels {
                for o in 0..cout {
                    let mut want = op.bias[o];
                    for i in 0..cin {
                        want += weights[o * cin + i] * at(p, i);
                    }
                    if relu {
                        want = want.max(0.0);
                    }
                    let g = got[p * cout + o];
                    assert!(
                        (g - want).abs() < 1e-3,
                        "{isa:?} planes in {planes_in} ({cin}, {cout}) [{p}, {o}]: {g} vs {want}"
                    );
                }
            }
        }
        let isa = Isa::supported_all()
            .next()
            .expect("tests run on AVX2 or AVX-512");
        assert!(
            ChannelLastPointwise::new(&[0.0; 8 * 3], vec![0.0; 8], [3, 8], false, isa).is_none()
        );
    }

    /// SCRFD before a head: a channel-first 1x1 layer and its ReLU, whose output a channel-last
    /// 3x3 layer reads, and a channel-first 1x1 layer beside it.
    fn layer_before_a_head() -> TypedModel {
        let mut model = TypedModel::default();
        let source = model.add_source("x", f32::fact([1, 16, 9, 7])).unwrap();
        let k = konst(&mut model, "k0", &[32, 16, 1, 1], 1);
        let b = konst(&mut model, "b0", &[32], 2);
        let op = conv(16, 32, 1, [1, 1], 1, 0, DataFormat::NCHW);
        let x = model.wire_node("pointwise", op, &[source, k, b]).unwrap()[0];
        let x = relu_of(&mut model, "relu", x);
        let nhwc = model
            .wire_node("to_nhwc", AxisOp::Move(1, 3), &[x])
            .unwrap()[0];
        let k = konst(&mut model, "k1", &[8, 32, 3, 3], 3);
        let b = konst(&mut model, "b1", &[8], 4);
        let op = conv(32, 8, 1, [3, 3], 1, 1, DataFormat::NHWC);
        let head = model.wire_node("head", op, &[nhwc, k, b]).unwrap()[0];
        let k = konst(&mut model, "k2", &[32, 16, 1, 1], 5);
        let b = konst(&mut model, "b2", &[32], 6);
        let op = conv(16, 32, 1, [1, 1], 1, 0, DataFormat::NCHW);
        let beside = model.wire_node("beside", op, &[source, k, b]).unwrap()[0];
        model.select_output_outlets(&[head, beside]).unwrap();
        model.into_decluttered().unwrap()
    }

    #[test]
    fn reads_planes_where_the_output_is_channel_last_and_fuses_the_relu() {
        let input = tvec!(tensor(&[1, 16, 9, 7], 8).into_tvalue());
        let want = run(layer_before_a_head(), input.clone());
        for isa in Isa::supported_all() {
            let mut model = layer_before_a_head();
            assert_eq!(substitute(&mut model, isa).unwrap(), 2, "both 1x1 layers");
            let mut taken: Vec<(String, bool, bool)> = model
                .nodes
                .iter()
                .filter_map(|n| {
                    let op = n.op_as::<ChannelLastPointwise>()?;
                    Some((n.name.clone(), op.planes_in, op.relu))
                })
                .collect();
            taken.sort();
            assert_eq!(
                taken,
                [
                    ("beside.einsum".to_string(), false, false),
                    ("pointwise.einsum".to_string(), true, true)
                ],
                "{isa:?}"
            );
            let got = run(model, input.clone());
            for (w, g) in want.iter().zip(&got) {
                w.close_enough(g, true).unwrap();
            }
        }
    }

    /// A MobileFaceNet residual block after a 1x1 layer: 1x1 expand -> PRelu -> depthwise 3x3
    /// -> PRelu -> 1x1 project, added to the block's input, then another 1x1.
    fn residual_block() -> TypedModel {
        let mut model = TypedModel::default();
        let source = model.add_source("x", f32::fact([1, 32, 9, 11])).unwrap();
        let k = konst(&mut model, "ka", &[32, 32, 1, 1], 30);
        let b = konst(&mut model, "ba", &[32], 31);
        let op = conv(32, 32, 1, [1, 1], 1, 0, DataFormat::NCHW);
        let x = model.wire_node("conva", op, &[source, k, b]).unwrap()[0];
        let mut wire = x;
        let layers = [
            (
                conv(32, 64, 1, [1, 1], 1, 0, DataFormat::NCHW),
                [64, 32, 1, 1],
                true,
            ),
            (
                conv(64, 64, 64, [3, 3], 1, 1, DataFormat::NCHW),
                [64, 1, 3, 3],
                true,
            ),
            (
                conv(64, 32, 1, [1, 1], 1, 0, DataFormat::NCHW),
                [32, 64, 1, 1],
                false,
            ),
        ];
        for (i, (op, kernel, prelu)) in layers.into_iter().enumerate() {
            let k = konst(&mut model, &format!("k{i}"), &kernel, i);
            let b = konst(&mut model, &format!("b{i}"), &[kernel[0]], 10 + i);
            wire = model
                .wire_node(format!("conv{i}"), op, &[wire, k, b])
                .unwrap()[0];
            if prelu {
                let slope = konst(&mut model, &format!("s{i}"), &[1, kernel[0], 1, 1], 20 + i);
                wire = model
                    .wire_node(format!("prelu{i}"), Prelu, &[wire, slope])
                    .unwrap()[0];
            }
        }
        let sum = model
            .wire_node("add", tract_onnx::tract_core::ops::math::add(), &[x, wire])
            .unwrap()[0];
        let k = konst(&mut model, "k3", &[64, 32, 1, 1], 3);
        let b = konst(&mut model, "b3", &[64], 13);
        let op = conv(32, 64, 1, [1, 1], 1, 0, DataFormat::NCHW);
        let out = model.wire_node("conv3", op, &[sum, k, b]).unwrap()[0];
        model.select_output_outlets(&[out]).unwrap();
        model.into_decluttered().unwrap()
    }

    #[test]
    fn runs_the_1x1_layers_channel_last_with_moves_only_at_the_ends() {
        let input = tvec!(tensor(&[1, 32, 9, 11], 7).into_tvalue());
        let want = run(residual_block(), input.clone()).remove(0);
        for isa in Isa::supported_all() {
            let mut model = residual_block();
            channels_last(&mut model).unwrap();
            assert_eq!(
                substitute(&mut model, isa).unwrap(),
                4,
                "the four 1x1 layers"
            );
            let (got, moves) = run_counting_moves(model.clone(), input.clone());
            assert!(moves <= 2, "{isa:?}: {moves} axis moves left");
            want.close_enough(&got[0], true).unwrap();

            // The move into the first layer, from the channel-first input, goes into it.
            let mut optimised = model.into_optimized().unwrap();
            assert_eq!(read_planes_after_moves(&mut optimised).unwrap(), 1);
            let (got, moves) = run_counting_moves(optimised, input.clone());
            assert!(moves <= 1, "{isa:?}: {moves} axis moves left");
            want.close_enough(&got[0], true).unwrap();
        }
    }
}
