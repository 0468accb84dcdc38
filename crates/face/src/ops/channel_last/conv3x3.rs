//! 3x3 convolutions on channel-last maps (`[H, W, C]`, stride 1, padding 1) in AVX-512 or
//! AVX2 (`simd.rs`): SCRFD's merged heads (`sibling_convs`), 64 -> 30 channels at 80x80, 40x40
//! and 20x20, which tract runs channel-last as an im2col and a matrix product. As in
//! `channel_last::pointwise` (whose block helpers this uses), a block of pixels by two vectors of
//! output channels is held in registers and each input value is broadcast once per block and
//! multiplied by two vectors of a weight panel packed at load (`[out / panel][tap][in][panel]`, zeros past the last output
//! channel); the nine taps are nine shifted rows of pixels. Pixels whose window leaves the map
//! (the first and last of each row) run one at a time and skip those taps.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::nn::DataFormat;

use crate::ops::channel_last::pointwise::{
    bias_block, multiply_panel, panel_width, store_block, AVX2_PIXELS, AVX512_PIXELS,
};
use crate::ops::rewrite::{constant_kernel_and_bias, map_f32};
use crate::ops::simd::{Isa, Kernel, Simd};
use crate::ops::window3x3::stride_and_padding;

/// `out[y, x, o] = bias[o] + sum over (dy, dx, i) of weights[o, i, dy, dx] *
/// input[y + dy - 1, x + dx - 1, i]`, zero outside the input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChannelLastConv3x3 {
    pub in_channels: usize,
    pub out_channels: usize,
    /// `[panels, 9, in_channels, panel]` with `panel` two vectors of the instruction set and
    /// `panels` enough to hold every output channel; zeros past the last.
    pub panels: Arc<Vec<f32>>,
    /// One per output channel, zeros past the last up to whole panels.
    pub bias: Arc<Vec<f32>>,
    /// Whether the map has a batch axis of 1 in front.
    pub batch_axis: bool,
    /// What the kernel is compiled for; the CPU supports it.
    pub isa: Isa,
}

impl Eq for ChannelLastConv3x3 {}

impl ChannelLastConv3x3 {
    /// `weights` OIHW `[out_channels, in_channels, 3, 3]`, one bias per output channel.
    pub fn new(
        weights: &[f32],
        bias: &[f32],
        [cin, cout]: [usize; 2],
        batch_axis: bool,
        isa: Isa,
    ) -> Option<Self> {
        if cin == 0 || cout == 0 || weights.len() != cout * cin * 9 || bias.len() != cout {
            return None;
        }
        let panel = panel_width(isa);
        let padded = cout.div_ceil(panel) * panel;
        let mut panels = Vec::with_capacity(padded * cin * 9);
        for o0 in (0..padded).step_by(panel) {
            for tap in 0..9 {
                for i in 0..cin {
                    panels.extend((o0..o0 + panel).map(|o| {
                        if o < cout {
                            weights[(o * cin + i) * 9 + tap]
                        } else {
                            0.0
                        }
                    }));
                }
            }
        }
        let mut bias = bias.to_vec();
        bias.resize(padded, 0.0);
        Some(ChannelLastConv3x3 {
            in_channels: cin,
            out_channels: cout,
            panels: Arc::new(panels),
            bias: Arc::new(bias),
            batch_axis,
            isa,
        })
    }

    /// `input` `[h, w, in_channels]`, `out` `[h, w, out_channels]`.
    fn run(&self, input: &[f32], out: &mut [f32], [h, w]: [usize; 2]) -> TractResult<()> {
        let panel = panel_width(self.isa);
        ensure!(
            input.len() == h * w * self.in_channels
                && out.len() == h * w * self.out_channels
                && self.bias.len() == self.out_channels.div_ceil(panel) * panel
                && self.panels.len() == self.bias.len() * 9 * self.in_channels
        );
        ensure!(self.isa.supported(), "{:?} is not supported here", self.isa);
        let rows = Rows {
            op: self,
            input,
            out,
            hw: [h, w],
        };
        // Safety: the CPU supports the instruction set and the lengths fit (checked above).
        unsafe { self.isa.run(rows) };
        Ok(())
    }

    /// `[h, w]` of an input shape with this op's channels last.
    fn input_hw(&self, shape: &[usize]) -> TractResult<[usize; 2]> {
        match (self.batch_axis, shape) {
            (true, &[1, h, w, c]) | (false, &[h, w, c]) if c == self.in_channels => Ok([h, w]),
            _ => bail!(
                "channel-last 3x3 convolution expects {} channels last, got {shape:?}",
                self.in_channels
            ),
        }
    }

    fn output_shape(&self, [h, w]: [usize; 2]) -> TVec<usize> {
        if self.batch_axis {
            tvec![1, h, w, self.out_channels]
        } else {
            tvec![h, w, self.out_channels]
        }
    }
}

struct Rows<'a> {
    op: &'a ChannelLastConv3x3,
    input: &'a [f32],
    out: &'a mut [f32],
    hw: [usize; 2],
}

impl Kernel for Rows<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        if S::LANES >= 16 {
            self.rows::<S, AVX512_PIXELS>();
        } else {
            self.rows::<S, AVX2_PIXELS>();
        }
    }
}

impl Rows<'_> {
    /// Panel by panel (its weights stay in cache), row by row: the first and last pixel of a
    /// row one at a time (their windows leave the map), the pixels between in blocks of `P`,
    /// then one at a time.
    ///
    /// # Safety
    /// Runs only where `S` does; the lengths are those `ChannelLastConv3x3::run` checks.
    #[inline(always)]
    unsafe fn rows<S: Simd, const P: usize>(self) {
        let op = self.op;
        let [h, w] = self.hw;
        let width = 2 * S::LANES;
        for (b, panel) in op
            .panels
            .chunks_exact(9 * op.in_channels * width)
            .enumerate()
        {
            let o = b * width;
            for y in 0..h {
                let at = Pixels { y, hw: self.hw, o };
                let inner = 1..w.saturating_sub(1);
                let whole = inner.start + inner.len() / P * P;
                block::<S, 1>(op, panel, self.input, self.out, at, 0);
                for x0 in (inner.start..whole).step_by(P) {
                    block::<S, P>(op, panel, self.input, self.out, at, x0);
                }
                for x0 in whole..inner.end {
                    block::<S, 1>(op, panel, self.input, self.out, at, x0);
                }
                if w > 1 {
                    block::<S, 1>(op, panel, self.input, self.out, at, w - 1);
                }
            }
        }
    }
}

/// Where a block goes: its row, the map's size, its first output channel.
#[derive(Clone, Copy)]
struct Pixels {
    y: usize,
    hw: [usize; 2],
    o: usize,
}

/// Pixels `x0..x0 + P` of row `at.y`, output channels `at.o..at.o + 2 * S::LANES` (those below
/// `out_channels`). With `P > 1` every pixel's window lies inside the row (`x0 >= 1`,
/// `x0 + P < w`); a single pixel skips the taps outside the map.
///
/// # Safety
/// Runs only where `S` does; `panel` is the panel of output channel `at.o` (`9 x in_channels x
/// 2 * S::LANES`), the pixels lie inside the map and the lengths are those
/// `ChannelLastConv3x3::run` checks.
#[inline(always)]
unsafe fn block<S: Simd, const P: usize>(
    op: &ChannelLastConv3x3,
    panel: &[f32],
    input: &[f32],
    out: &mut [f32],
    at: Pixels,
    x0: usize,
) {
    let cin = op.in_channels;
    let [h, w] = at.hw;
    let mut acc = bias_block::<S, P>(&op.bias, at.o);
    for dy in 0..3 {
        let Some(iy) = (at.y + dy).checked_sub(1).filter(|&iy| iy < h) else {
            continue;
        };
        for dx in 0..3 {
            // The input column of the block's first pixel for this tap.
            let Some(ix) = (x0 + dx).checked_sub(1).filter(|&ix| ix + P <= w) else {
                continue;
            };
            let mut rows = [&input[..0]; P];
            for (k, row) in rows.iter_mut().enumerate() {
                *row = &input[((iy * w) + ix + k) * cin..][..cin];
            }
            let tap = panel
                .as_ptr()
                .wrapping_add((dy * 3 + dx) * cin * 2 * S::LANES);
            multiply_panel::<S, P>(&mut acc, &rows, tap);
        }
    }
    let cout = op.out_channels;
    let dst = out.as_mut_ptr().wrapping_add((at.y * w + x0) * cout + at.o);
    store_block::<S, P>(&acc, dst, cout, cout - at.o);
}

impl Op for ChannelLastConv3x3 {
    fn name(&self) -> StaticName {
        "ChannelLastConv3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "in {} out {} {:?}",
            self.in_channels, self.out_channels, self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for ChannelLastConv3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let hw = self.input_hw(input.shape())?;
        // `run` writes every value.
        let output = map_f32(&input, &self.output_shape(hw), |src, dst| {
            self.run(src, dst, hw)
        })?;
        Ok(tvec!(output))
    }
}

impl TypedOp for ChannelLastConv3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = inputs[0]
            .shape
            .as_concrete()
            .ok_or_else(|| format_err!("3x3 convolution needs a concrete input shape"))?;
        let hw = self.input_hw(shape)?;
        Ok(tvec!(f32::fact(self.output_shape(hw))))
    }

    as_op!();
}

/// Replaces every channel-last (NHWC or HWC) f32 3x3 convolution with stride 1, padding 1 on
/// every side, one group and a constant OIHW kernel and bias by a [`ChannelLastConv3x3`];
/// returns how many.
pub(crate) fn substitute(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some(op) = op_at(model, id, isa)? else {
            continue;
        };
        let node = &model.nodes[id];
        let mut patch = TypedModelPatch::new("channel-last-conv-3x3");
        let input = patch.tap_model(model, node.inputs[0])?;
        let wire = patch.wire_node(&node.name, op, &[input])?[0];
        patch.shunt_outside(model, id.into(), wire)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

fn op_at(model: &TypedModel, id: usize, isa: Isa) -> TractResult<Option<ChannelLastConv3x3>> {
    let node = model.node(id);
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let batch_axis = match conv.pool_spec.data_format {
        DataFormat::NHWC => true,
        DataFormat::HWC => false,
        _ => return Ok(None),
    };
    let input = model.outlet_fact(node.inputs[0])?;
    let hw = match (batch_axis, input.shape.as_concrete()) {
        (true, Some(&[1, h, w, _])) | (false, Some(&[h, w, _])) => [h, w],
        _ => return Ok(None),
    };
    if conv.group != 1
        || input.datum_type != f32::datum_type()
        || stride_and_padding(conv, hw) != Some((1, [1, 1]))
    {
        return Ok(None);
    }
    let (cin, cout) = (conv.input_channels(), conv.output_channels());
    let Some((weights, bias)) = constant_kernel_and_bias(model, node, &[cout, cin, 3, 3], cout)?
    else {
        return Ok(None);
    };
    Ok(ChannelLastConv3x3::new(
        &weights,
        &bias,
        [cin, cout],
        batch_axis,
        isa,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::graph_testing::{conv, konst, run, tensor, values};

    #[test]
    fn matches_the_definition_at_the_edges_in_blocks_and_single_pixels() {
        // Widths of 1, 2, a block and the pixels past it, several blocks; output channels in
        // part of one panel (30, as SCRFD's heads), in whole panels and past them.
        let cases = [
            (3, 1, 5, 30),
            (2, 2, 3, 16),
            (4, 15, 64, 30),
            (3, 29, 7, 40),
            (5, 8, 9, 64),
        ];
        for (isa, (h, w, cin, cout)) in
            Isa::supported_all().flat_map(|isa| cases.into_iter().map(move |case| (isa, case)))
        {
            let weights = values(cout * cin * 9, 1);
            let bias = values(cout, 2);
            let op = ChannelLastConv3x3::new(&weights, &bias, [cin, cout], false, isa)
                .expect("any channel counts");
            let input = values(h * w * cin, 3);
            let mut got = vec![f32::NAN; h * w * cout];
            op.run(&input, &mut got, [h, w]).unwrap();
            for y in 0..h {
                for x in 0..w {
                    for o in 0..cout {
                        let mut want = bias[o];
                        for (dy, dx) in (0..3).flat_map(|dy| (0..3).map(move |dx| (dy, dx))) {
                            let (iy, ix) = ((y + dy) as i64 - 1, (x + dx) as i64 - 1);
                            if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                continue;
                            }
                            let at = (iy as usize * w + ix as usize) * cin;
                            for i in 0..cin {
                                want += weights[((o * cin + i) * 3 + dy) * 3 + dx] * input[at + i];
                            }
                        }
                        let g = got[(y * w + x) * cout + o];
                        assert!(
                            (g - want).abs() < 1e-3,
                            "{isa:?} {h}x{w} ({cin}, {cout}) [{y}, {x}, {o}]: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn replaces_the_channel_last_3x3_convolution_only() {
        // NHWC: a 3x3 stride-1 convolution (replaced), then a stride-2 one (not).
        let mut model = TypedModel::default();
        let mut wire = model.add_source("x", f32::fact([1, 9, 13, 24])).unwrap();
        for (i, (cin, cout, stride)) in [(24, 30, 1), (30, 16, 2)].into_iter().enumerate() {
            let k = konst(&mut model, &format!("k{i}"), &[cout, cin, 3, 3], 4 + i);
            let b = konst(&mut model, &format!("b{i}"), &[cout], 10 + i);
            let op = conv(cin, cout, 1, [3, 3], stride, 1, DataFormat::NHWC);
            wire = model
                .wire_node(format!("conv{i}"), op, &[wire, k, b])
                .unwrap()[0];
        }
        model.select_output_outlets(&[wire]).unwrap();
        let model = model.into_decluttered().unwrap();

        let input = tvec!(tensor(&[1, 9, 13, 24], 8).into_tvalue());
        let want = run(model.clone(), input.clone()).remove(0);
        for isa in Isa::supported_all() {
            let mut ours = model.clone();
            assert_eq!(substitute(&mut ours, isa).unwrap(), 1, "{isa:?}");
            let got = run(ours, input.clone()).remove(0);
            want.close_enough(&got, true).unwrap();
        }
    }
}
