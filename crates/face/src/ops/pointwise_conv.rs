//! A direct 1x1 convolution for few input channels, with the bias and ReLU that follow it.
//! tract runs a 1x1 convolution as a matrix product whose operand it first packs; with 16 to 72
//! input channels over large maps the packing costs about as much as the product. SCRFD's first
//! layers (16 -> 16 channels at 320x320: tract 1.25 ms with packing, onnxruntime 0.28) are
//! where tract lost most. Here each output value is one multiply-add per input channel, a block
//! of pixels by output channels at a time in registers (AVX-512: 32 x 8; AVX2: 24 x 4, see
//! `simd.rs`), read straight from the input planes. On SCRFD at 640x640 (minimum of 30 runs,
//! three alternated pairs, AVX-512 on Zen 5): tract's products and packing 12.4 ms -> 7.1 ms
//! plus 2.8 ms here, detector 19.2-21.2 -> 16.8-18.0 ms; AVX2 on Zen 3: products and packing
//! 22.9 ms -> 13.3 ms plus 6.9 ms here. With more input channels it lost (all of SCRFD's 1x1 layers,
//! up to 288 channels: 24 ms), hence [`MAX_IN_CHANNELS`], except for layers with few outputs.
//!
//! tract's decluttering turns a 1x1 convolution into an `EinSum` (`NIHW,OI->OHW` or
//! `IHW,OI->OHW`, either with a batch axis of 1 on its output too: input planes by a constant
//! `[O, I]` matrix), an `Add` of the bias and, for a ReLU, a `Max` with 0. [`substitute`] swaps
//! the three for one [`PointwiseConv`] where the matrix is f32 with at most [`MAX_IN_CHANNELS`]
//! input channels or at most [`NARROW_OUT_CHANNELS`] output channels.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::ops::rewrite::{bias_and_relu_after, einsum_1x1, map_f32, Einsum1x1};
use crate::ops::simd::{Isa, Kernel, Simd};

/// Beyond this tract's matrix product is faster (measured on SCRFD: 48 -> 80 gained 0.7-1.3 ms,
/// 160 lost 0.8 ms), unless the layer has at most [`NARROW_OUT_CHANNELS`].
pub(crate) const MAX_IN_CHANNELS: usize = 80;

/// Layers this narrow are ours whatever their input: tract packs the whole input for a product
/// with a few rows. SCRFD's lateral layers (72, 152 and 288 -> 16 channels at 80x80, 40x40 and
/// 20x20) took 0.75, 0.23 and 0.065 ms there, 0.12, 0.06 and 0.03 ms here (fastest of 30,
/// AVX-512 on an Intel Xeon, model 207).
const NARROW_OUT_CHANNELS: usize = 16;

/// `out[o, p] = bias[o] + sum over i of weights[o, i] * input[i, p]`, then `max(0, .)` if `relu`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PointwiseConv {
    pub in_channels: usize,
    pub out_channels: usize,
    /// `[out_channels, in_channels]`.
    pub weights: Arc<Vec<f32>>,
    pub bias: Arc<Vec<f32>>,
    pub relu: bool,
    /// Whether the input and the output have a batch axis (of 1) before the channels.
    pub batch_axis: [bool; 2],
    /// What the kernel is compiled for; the CPU supports it.
    pub isa: Isa,
}

impl Eq for PointwiseConv {}

impl PointwiseConv {
    fn spatial(&self, shape: &[usize]) -> TractResult<TVec<usize>> {
        let spatial = match (self.batch_axis[0], shape) {
            (true, &[1, c, h, w]) | (false, &[c, h, w]) if c == self.in_channels => tvec![h, w],
            _ => bail!(
                "1x1 convolution expects {}{} channels, got {shape:?}",
                if self.batch_axis[0] { "1x" } else { "" },
                self.in_channels
            ),
        };
        Ok(spatial)
    }

    fn output_shape(&self, spatial: &[usize]) -> TVec<usize> {
        let mut shape: TVec<usize> = if self.batch_axis[1] {
            tvec![1, self.out_channels]
        } else {
            tvec![self.out_channels]
        };
        shape.extend_from_slice(spatial);
        shape
    }

    /// `input` is `[in_channels, pixels]`, `out` `[out_channels, pixels]`.
    fn run(&self, input: &[f32], out: &mut [f32], pixels: usize) -> TractResult<()> {
        ensure!(
            input.len() == self.in_channels * pixels && out.len() == self.out_channels * pixels
        );
        ensure!(self.isa.supported(), "{:?} is not supported here", self.isa);
        let (rows, pixels_per_block) = block_shape(self.isa);
        let whole = pixels / pixels_per_block * pixels_per_block;
        let vectors = pixels / self.isa.lanes() * self.isa.lanes();
        let whole_rows = self.out_channels / rows * rows;
        let tiles = Tiles {
            op: self,
            input,
            out: &mut *out,
            pixels,
            whole,
            vectors,
            whole_rows,
        };
        // Safety: the CPU supports the instruction set (checked above); the slices' lengths
        // were checked above, `whole` and `whole_rows` are whole blocks of `block_shape` and
        // `vectors` whole vectors.
        unsafe { self.isa.run(tiles) };
        self.scalar(
            input,
            out,
            pixels,
            0..vectors,
            whole_rows..self.out_channels,
        );
        self.scalar(input, out, pixels, vectors..pixels, 0..self.out_channels);
        Ok(())
    }

    /// The definition, for the pixels and output channels outside whole blocks.
    fn scalar(
        &self,
        input: &[f32],
        out: &mut [f32],
        pixels: usize,
        pixel_range: std::ops::Range<usize>,
        rows: std::ops::Range<usize>,
    ) {
        for o in rows {
            let weights = &self.weights[o * self.in_channels..][..self.in_channels];
            for p in pixel_range.clone() {
                let mut acc = self.bias[o];
                for (i, w) in weights.iter().enumerate() {
                    acc = input[i * pixels + p].mul_add(*w, acc);
                }
                out[o * pixels + p] = if self.relu { acc.max(0.0) } else { acc };
            }
        }
    }
}

/// Output channels and pixels of one block: as many accumulators as registers allow beside the
/// input vectors and a weight (AVX-512: 8 x 2 vectors of 32 registers; AVX2: 4 x 3 of 16, each
/// input vector loaded used 4 times).
fn block_shape(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 => (8, 2 * isa.lanes()),
        Isa::Avx2 => (4, 3 * isa.lanes()),
    }
}

/// Blocks per tile: all output channels of a tile are done before the next, so the tile's input
/// (at most 80 channels x 256 pixels x 4 bytes with AVX-512) is read from cache by every group
/// of output channels and each output plane is written in runs of a tile. Against one block at
/// a time: 0.15-0.3 ms less over SCRFD's layers (minimum of 30 runs, alternated, AVX-512).
const TILE_BLOCKS: usize = 8;

/// Every whole block: pixels `0..whole` of output channels `0..whole_rows`, then the whole
/// vectors after them (`whole..vectors`) one at a time.
struct Tiles<'a> {
    op: &'a PointwiseConv,
    input: &'a [f32],
    out: &'a mut [f32],
    pixels: usize,
    whole: usize,
    vectors: usize,
    whole_rows: usize,
}

impl Kernel for Tiles<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        if S::LANES >= 16 {
            self.blocks::<S, 8, 2>();
        } else {
            self.blocks::<S, 4, 3>();
        }
    }
}

impl Tiles<'_> {
    /// # Safety
    /// Runs only where `S` does; `(ROWS, REGS * S::LANES)` is `block_shape` of the op's
    /// instruction set, and the lengths are those `PointwiseConv::run` checks.
    #[inline(always)]
    unsafe fn blocks<S: Simd, const ROWS: usize, const REGS: usize>(self) {
        let block = REGS * S::LANES;
        let tile = TILE_BLOCKS * block;
        for t0 in (0..self.whole).step_by(tile) {
            for o in (0..self.whole_rows).step_by(ROWS) {
                for p0 in (t0..self.whole.min(t0 + tile)).step_by(block) {
                    block_of::<S, ROWS, REGS>(self.op, self.input, self.out, self.pixels, p0, o);
                }
            }
        }
        // A map whose pixels are not whole blocks (SCRFD's 20x20 maps: 12 blocks of 32 and 16
        // pixels) would leave up to a block to the scalar loop.
        for o in (0..self.whole_rows).step_by(ROWS) {
            for p0 in (self.whole..self.vectors).step_by(S::LANES) {
                block_of::<S, ROWS, 1>(self.op, self.input, self.out, self.pixels, p0, o);
            }
        }
    }
}

/// Output channels `o..o + ROWS` for pixels `p0..p0 + REGS * S::LANES`: `ROWS x REGS`
/// accumulators in registers, each input vector loaded once and multiplied by `ROWS` weights.
///
/// # Safety
/// Runs only where `S` does; the block lies inside the map: `p0 + REGS * S::LANES <= pixels`,
/// `o + ROWS <= out_channels`, `input` holds `in_channels * pixels` values and `out`
/// `out_channels * pixels`.
#[inline(always)]
unsafe fn block_of<S: Simd, const ROWS: usize, const REGS: usize>(
    op: &PointwiseConv,
    input: &[f32],
    out: &mut [f32],
    pixels: usize,
    p0: usize,
    o: usize,
) {
    let cin = op.in_channels;
    let mut acc = [[S::zero(); REGS]; ROWS];
    for (r, row) in acc.iter_mut().enumerate() {
        *row = [S::splat(op.bias[o + r]); REGS];
    }
    // No index products, raw-pointer reads or unproven indexing in this loop: the dev profile
    // checks each (overflow, alignment, null), which cost as much as the arithmetic (AVX2
    // detector 1x1 layers 12.0 ms with them, 6.6 without). Each row's weights are a slice of
    // exactly `cin` values, so `row[i]` needs no bounds check.
    let mut weights = [&op.weights[..0]; ROWS];
    for (r, w) in weights.iter_mut().enumerate() {
        *w = &op.weights[(o + r) * cin..][..cin];
    }
    let mut x = input.as_ptr().wrapping_add(p0);
    for i in 0..cin {
        let mut xv = [S::zero(); REGS];
        for (j, v) in xv.iter_mut().enumerate() {
            *v = S::load(x.wrapping_add(j * S::LANES));
        }
        x = x.wrapping_add(pixels);
        for (row, w) in acc.iter_mut().zip(&weights) {
            let wv = S::splat(w[i]);
            for (a, v) in row.iter_mut().zip(&xv) {
                *a = S::fmadd(*v, wv, *a);
            }
        }
    }
    let zero = S::zero();
    for (r, row) in acc.iter().enumerate() {
        let dst = out.as_mut_ptr().wrapping_add((o + r) * pixels + p0);
        for (j, a) in row.iter().enumerate() {
            let v = if op.relu { S::max(*a, zero) } else { *a };
            S::store(dst.wrapping_add(j * S::LANES), v);
        }
    }
}

impl Op for PointwiseConv {
    fn name(&self) -> StaticName {
        "PointwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "in {} out {} relu {}",
            self.in_channels, self.out_channels, self.relu
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PointwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let spatial = self.spatial(input.shape())?;
        let pixels = spatial.iter().product();
        // `run` writes every value.
        let output = map_f32(&input, &self.output_shape(&spatial), |src, dst| {
            self.run(src, dst, pixels)
        })?;
        Ok(tvec!(output))
    }
}

impl TypedOp for PointwiseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = inputs[0]
            .shape
            .as_concrete()
            .ok_or_else(|| format_err!("1x1 convolution needs a concrete input shape"))?;
        let spatial = self.spatial(shape)?;
        Ok(tvec!(f32::fact(self.output_shape(&spatial))))
    }

    as_op!();
}

/// Replaces every 1x1 convolution of `model` that [`PointwiseConv`] handles, with its bias and
/// ReLU; returns how many.
pub(crate) fn substitute(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some((op, last)) = pointwise_conv_at(model, id, isa)? else {
            continue;
        };
        let node = &model.nodes[id];
        let mut patch = TypedModelPatch::new("pointwise-conv");
        let input = patch.tap_model(model, node.inputs[0])?;
        let wire = patch.wire_node(&node.name, op, &[input])?[0];
        patch.shunt_outside(model, last.into(), wire)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The op for a 1x1 convolution's `EinSum` at node `id`, and the last node it replaces (the
/// `EinSum`, its bias `Add` or the ReLU after).
fn pointwise_conv_at(
    model: &TypedModel,
    id: usize,
    isa: Isa,
) -> TractResult<Option<(PointwiseConv, usize)>> {
    let Some(einsum) = einsum_1x1(model, id)? else {
        return Ok(None);
    };
    let Einsum1x1 {
        batch_axis,
        channels_last_out: false,
        in_channels: cin,
        out_channels: cout,
        weights,
    } = einsum
    else {
        return Ok(None);
    };
    if cin > MAX_IN_CHANNELS && cout > NARROW_OUT_CHANNELS {
        return Ok(None);
    }
    let (bias, relu, last) = bias_and_relu_after(model, id, cout, false)?;
    let op = PointwiseConv {
        in_channels: cin,
        out_channels: cout,
        weights: Arc::new(weights),
        bias: Arc::new(bias),
        relu,
        batch_axis,
        isa,
    };
    Ok(Some((op, last)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::graph_testing::{conv, konst, relu_of, run, tensor, values};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    fn op(cin: usize, cout: usize, relu: bool, isa: Isa) -> PointwiseConv {
        PointwiseConv {
            in_channels: cin,
            out_channels: cout,
            weights: Arc::new(values(cout * cin, 1)),
            bias: Arc::new(values(cout, 2)),
            relu,
            batch_axis: [false; 2],
            isa,
        }
    }

    #[test]
    fn matches_the_definition_inside_and_outside_whole_blocks() {
        // Pixels: whole blocks of 24 and 32 and a tail; output channels: blocks of 4 and 8 and
        // a tail; for every instruction set this CPU runs.
        // Pixels: whole blocks, then whole vectors (48 and 61 in AVX-512, 33 and 70 in AVX2),
        // then single pixels.
        let cases = [
            (16, 16, 64, true),
            (5, 11, 70, false),
            (40, 8, 33, true),
            (7, 6, 48, false),
            (9, 16, 61, true),
        ];
        for (isa, (cin, cout, pixels, relu)) in
            Isa::supported_all().flat_map(|isa| cases.into_iter().map(move |case| (isa, case)))
        {
            let op = op(cin, cout, relu, isa);
            let input = values(cin * pixels, 3);
            let mut got = vec![f32::NAN; cout * pixels];
            op.run(&input, &mut got, pixels).unwrap();
            for o in 0..cout {
                for p in 0..pixels {
                    let mut want = op.bias[o];
                    for i in 0..cin {
                        want += op.weights[o * cin + i] * input[i * pixels + p];
                    }
                    if relu {
                        want = want.max(0.0);
                    }
                    let g = got[o * pixels + p];
                    assert!(
                        (g - want).abs() < 1e-4,
                        "({cin}, {cout}) [{o}, {p}]: {g} vs {want}"
                    );
                }
            }
        }
    }

    /// 1x1 convolutions as ONNX has them: with a ReLU, without, one too wide for us, and one
    /// with many inputs but few outputs, whose output has the batch axis.
    fn four_convs() -> TypedModel {
        let mut model = TypedModel::default();
        let mut wire = model.add_source("x", f32::fact([1, 16, 9, 7])).unwrap();
        let layers = [
            (16, 24, true),
            (24, 96, false),
            (96, 96, true),
            (96, 16, false),
        ];
        for (i, (cin, cout, relu)) in layers.into_iter().enumerate() {
            let k = konst(&mut model, &format!("k{i}"), &[cout, cin, 1, 1], 4 + i);
            let b = konst(&mut model, &format!("b{i}"), &[cout], 10 + i);
            let op = conv(cin, cout, 1, [1, 1], 1, 0, DataFormat::NCHW);
            wire = model
                .wire_node(format!("conv{i}"), op, &[wire, k, b])
                .unwrap()[0];
            if relu {
                wire = relu_of(&mut model, &format!("relu{i}"), wire);
            }
        }
        model.select_output_outlets(&[wire]).unwrap();
        model
    }

    #[test]
    fn replaces_narrow_1x1_convolutions_with_their_bias_and_relu() {
        let model = four_convs().into_decluttered().unwrap();
        let input = tvec!(tensor(&[1, 16, 9, 7], 8).into_tvalue());
        let want = run(model.clone(), input.clone()).remove(0);
        for isa in Isa::supported_all() {
            let mut ours = model.clone();
            assert_eq!(
                substitute(&mut ours, isa).unwrap(),
                3,
                "96 -> 96 channels stays with tract"
            );
            let fused: Vec<(bool, [bool; 2])> = ours
                .nodes
                .iter()
                .filter_map(|n| {
                    n.op_as::<PointwiseConv>()
                        .map(|op| (op.relu, op.batch_axis))
                })
                .collect();
            assert_eq!(
                fused.iter().map(|f| f.0).collect::<Vec<_>>(),
                [true, false, false]
            );
            assert!(fused[2].1[1], "the last layer gives the model's batch axis");
            let got = run(ours, input.clone()).remove(0);
            want.close_enough(&got, true).unwrap();
        }
    }
}
