//! A 3x3 depthwise convolution for NCHW plans, stride 1 or 2, with the ReLU that follows it,
//! in AVX-512 or AVX2 (`simd.rs`). tract's NCHW depthwise loop is vectorised along rows for
//! stride 1 only, and its set-up per row dominates on the short rows of deep layers: SCRFD's
//! 3x3 depthwise layers took 4.0 ms at 640x640 (minimum of 30 runs, Zen 5; onnxruntime 1.3
//! ms), some 4 to 8 times onnxruntime's time per layer. Here one vector of output columns of
//! two output rows at a time takes masked loads (zeros outside the map, so no padded copy) of
//! the four input rows they share (five for stride 2, which loads twice the columns and keeps
//! the even ones) and nine multiply-adds each. On SCRFD at 640x640 (minimum of 30 runs, ReLUs
//! included, AVX-512): 1.9-2.2 ms, one row at a time 2.3.
//!
//! [`substitute`] swaps it in for every depthwise convolution of a decluttered model that is
//! 3x3, (N)CHW, f32, stride 1 or 2 on both axes, padded by 1 before (any padding after), with
//! constant kernel and bias, absorbing a ReLU (`max(x, 0)`) that is its only reader.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;

use crate::ops::rewrite::constant_kernel_and_bias;
use crate::ops::simd::{Isa, Simd};
use crate::ops::window3x3::{
    self, load_columns, store_columns, Maps, Tap, Window3x3, WindowKernel,
};

/// `out[c, y, x] = bias[c] + sum over (dy, dx) of weights[c, dy, dx] *
/// input[c, y * stride + dy - 1, x * stride + dx - 1]`, zero outside the input; then
/// `max(0, .)` if `relu`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Depthwise3x3 {
    pub channels: usize,
    pub window: Window3x3,
    /// `[channels, 3, 3]`.
    pub weights: Arc<Vec<f32>>,
    pub bias: Arc<Vec<f32>>,
    pub relu: bool,
    /// What the kernel is compiled for; the CPU supports it.
    pub isa: Isa,
}

impl Eq for Depthwise3x3 {}

impl Op for Depthwise3x3 {
    fn name(&self) -> StaticName {
        "Depthwise3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "channels {} stride {} relu {} {:?}",
            self.channels, self.window.stride, self.relu, self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let output = self
            .window
            .eval(self, self.isa, &input, [self.channels, self.channels])?;
        Ok(tvec!(output))
    }
}

impl TypedOp for Depthwise3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let fact = self
            .window
            .output_fact(inputs[0], self.channels, self.channels)?;
        Ok(tvec!(fact))
    }

    as_op!();
}

impl WindowKernel for Depthwise3x3 {
    /// Channel by channel.
    #[inline(always)]
    unsafe fn run<S: Simd>(&self, maps: Maps<'_, S>) {
        let [h, w] = maps.hw;
        let [oh, ow] = maps.out_hw;
        for (c, (plane, out)) in maps
            .input
            .chunks_exact(h * w)
            .zip(maps.out.chunks_exact_mut(oh * ow))
            .enumerate()
        {
            channel::<S>(self, c, plane, [h, w], out, [oh, ow], maps.taps);
        }
    }
}

/// One channel: `plane` is `h x w`, `out` `oh x ow`.
///
/// # Safety
/// Runs only where `S` does; `plane.len() == h * w`, `out.len() == oh * ow`, `taps` were made
/// for `w`, `ow`, the op's stride and `S::LANES`, and every output's window starts inside or one
/// before the input (padding 1 before), which `Window3x3::output_hw` ensures.
#[inline(always)]
unsafe fn channel<S: Simd>(
    op: &Depthwise3x3,
    c: usize,
    plane: &[f32],
    [h, w]: [usize; 2],
    out: &mut [f32],
    [oh, ow]: [usize; 2],
    taps: &[[Tap<S>; 3]],
) {
    let s = op.window.stride;
    let k = &op.weights[c * 9..][..9];
    let (t0, t1, t2, t3, t4, t5, t6, t7, t8) = (
        S::splat(k[0]),
        S::splat(k[1]),
        S::splat(k[2]),
        S::splat(k[3]),
        S::splat(k[4]),
        S::splat(k[5]),
        S::splat(k[6]),
        S::splat(k[7]),
        S::splat(k[8]),
    );
    let bias = S::splat(op.bias[c]);
    let zero = S::zero();
    // The three tap vectors of a block on one input row.
    macro_rules! taps3 {
        ($row:expr, $block:expr) => {{
            let [a, b, c] = $block;
            (
                load_columns::<S>($row, a, s),
                load_columns::<S>($row, b, s),
                load_columns::<S>($row, c, s),
            )
        }};
    }
    // `sum` plus one kernel row's taps times the row's tap vectors.
    macro_rules! fma3 {
        ($v:expr, $sum:expr, $k0:expr, $k1:expr, $k2:expr) => {{
            let (v0, v1, v2) = $v;
            let sum = S::fmadd(v0, $k0, $sum);
            let sum = S::fmadd(v1, $k1, sum);
            S::fmadd(v2, $k2, sum)
        }};
    }
    // Output rows in pairs: the input rows they share are loaded once (stride 1: 4 rows for
    // 2 outputs instead of 6; stride 2: 5 instead of 6).
    for y in (0..oh).step_by(2) {
        let second = y + 1 < oh;
        // Input row k of the pair is y * s + k - 1; null outside the map.
        let input_row = |k: usize| match (y * s + k).checked_sub(1).filter(|&iy| iy < h) {
            Some(iy) => plane.as_ptr().wrapping_add(iy * w),
            None => std::ptr::null(),
        };
        let rows: [*const f32; 5] = [
            input_row(0),
            input_row(1),
            input_row(2),
            input_row(3),
            input_row(4),
        ];
        // The second output's rows past the map when it does not exist.
        let rows = if second {
            rows
        } else {
            [
                rows[0],
                rows[1],
                rows[2],
                std::ptr::null(),
                std::ptr::null(),
            ]
        };
        for (b, block) in taps.iter().enumerate() {
            // Per output, one chain per kernel row: short dependency chains.
            let (mut a0, mut a1, mut a2) = (bias, zero, zero);
            let (mut b0, mut b1, mut b2) = (bias, zero, zero);
            if !rows[0].is_null() {
                a0 = fma3!(taps3!(rows[0], block), a0, t0, t1, t2);
            }
            if s == 1 {
                if !rows[1].is_null() {
                    let v = taps3!(rows[1], block);
                    a1 = fma3!(v, a1, t3, t4, t5);
                    b0 = fma3!(v, b0, t0, t1, t2);
                }
                if !rows[2].is_null() {
                    let v = taps3!(rows[2], block);
                    a2 = fma3!(v, a2, t6, t7, t8);
                    b1 = fma3!(v, b1, t3, t4, t5);
                }
                if !rows[3].is_null() {
                    b2 = fma3!(taps3!(rows[3], block), b2, t6, t7, t8);
                }
            } else {
                if !rows[1].is_null() {
                    a1 = fma3!(taps3!(rows[1], block), a1, t3, t4, t5);
                }
                if !rows[2].is_null() {
                    let v = taps3!(rows[2], block);
                    a2 = fma3!(v, a2, t6, t7, t8);
                    b0 = fma3!(v, b0, t0, t1, t2);
                }
                if !rows[3].is_null() {
                    b1 = fma3!(taps3!(rows[3], block), b1, t3, t4, t5);
                }
                if !rows[4].is_null() {
                    b2 = fma3!(taps3!(rows[4], block), b2, t6, t7, t8);
                }
            }
            let x0 = b * S::LANES;
            let mut acc = S::add(S::add(a0, a1), a2);
            if op.relu {
                acc = S::max(acc, zero);
            }
            store_columns::<S>(out.as_mut_ptr().wrapping_add(y * ow + x0), ow - x0, acc);
            if second {
                let mut acc = S::add(S::add(b0, b1), b2);
                if op.relu {
                    acc = S::max(acc, zero);
                }
                let dst = out.as_mut_ptr().wrapping_add((y + 1) * ow + x0);
                store_columns::<S>(dst, ow - x0, acc);
            }
        }
    }
}

/// Replaces every depthwise convolution [`Depthwise3x3`] handles, with its ReLU; returns how
/// many.
pub(crate) fn substitute(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    window3x3::substitute(
        model,
        "depthwise-3x3",
        |model, node, conv, window| depthwise_for(model, node, conv, window, isa),
        Some(|op: &mut Depthwise3x3| op.relu = true),
    )
}

fn depthwise_for(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    window: Window3x3,
    isa: Isa,
) -> TractResult<Option<Depthwise3x3>> {
    let channels = conv.input_channels();
    if conv.group != channels || conv.output_channels() != channels {
        return Ok(None);
    }
    let Some((weights, bias)) =
        constant_kernel_and_bias(model, node, &[channels, 1, 3, 3], channels)?
    else {
        return Ok(None);
    };
    Ok(Some(Depthwise3x3 {
        channels,
        window,
        weights: Arc::new(weights),
        bias: Arc::new(bias),
        relu: false,
        isa,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::graph_testing::{conv, konst, relu_of, run, tensor, values};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    fn op(
        channels: usize,
        stride: usize,
        pad_after: [usize; 2],
        relu: bool,
        isa: Isa,
    ) -> Depthwise3x3 {
        Depthwise3x3 {
            channels,
            window: Window3x3 {
                stride,
                pad_after,
                batch_axis: false,
            },
            weights: Arc::new(values(channels * 9, 1)),
            bias: Arc::new(values(channels, 2)),
            relu,
            isa,
        }
    }

    /// The definition, one output value at a time.
    fn naive(op: &Depthwise3x3, input: &[f32], [h, w]: [usize; 2]) -> Vec<f32> {
        let [oh, ow] = op.window.output_hw([h, w]).unwrap();
        let mut out = Vec::new();
        for c in 0..op.channels {
            for y in 0..oh {
                for x in 0..ow {
                    let mut acc = op.bias[c];
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let iy = (y * op.window.stride + dy) as i64 - 1;
                            let ix = (x * op.window.stride + dx) as i64 - 1;
                            if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                continue;
                            }
                            acc += op.weights[c * 9 + dy * 3 + dx]
                                * input[(c * h + iy as usize) * w + ix as usize];
                        }
                    }
                    out.push(if op.relu { acc.max(0.0) } else { acc });
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_at_every_edge() {
        // Widths below, at and past one and two blocks of 8 and 16 (twice the input columns at
        // stride 2), for every instruction set this CPU runs.
        let cases = |isa| {
            [
                (op(3, 1, [1, 1], true, isa), [5, 7]),
                (op(2, 1, [1, 1], false, isa), [17, 16]),
                (op(2, 1, [1, 1], true, isa), [4, 33]),
                (op(2, 1, [1, 1], true, isa), [3, 9]),
                (op(3, 2, [0, 0], false, isa), [8, 32]),
                (op(2, 2, [1, 1], true, isa), [9, 33]),
                (op(2, 2, [0, 1], false, isa), [6, 65]),
                (op(2, 2, [1, 1], false, isa), [5, 17]),
            ]
        };
        for (op, hw) in Isa::supported_all().flat_map(cases) {
            let input = values(op.channels * hw[0] * hw[1], 3);
            let tensor = Tensor::from_shape(&[op.channels, hw[0], hw[1]], &input).unwrap();
            let got = op
                .eval(&EvalContext::out_of_plan(), tvec!(tensor.into_tvalue()))
                .unwrap()
                .remove(0);
            let [oh, ow] = op.window.output_hw(hw).unwrap();
            assert_eq!(got.shape(), &[op.channels, oh, ow], "{op:?}");
            let want = naive(&op, &input, hw);
            let got = got.to_plain_array_view::<f32>().unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-4, "{op:?} {hw:?} at {i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn replaces_3x3_depthwise_convolutions_and_their_relu() {
        // depthwise 3x3 + ReLU, depthwise 3x3 / 2, and a 5x5 one that stays with tract.
        let mut model = TypedModel::default();
        let mut wire = model.add_source("x", f32::fact([1, 8, 13, 19])).unwrap();
        for (i, (kernel, stride, pad, relu)) in
            [(3, 1, 1, true), (3, 2, 1, false), (5, 1, 2, false)]
                .into_iter()
                .enumerate()
        {
            let k = konst(&mut model, &format!("k{i}"), &[8, 1, kernel, kernel], 4 + i);
            let b = konst(&mut model, &format!("b{i}"), &[8], 10 + i);
            let op = conv(8, 8, 8, [kernel, kernel], stride, pad, DataFormat::NCHW);
            wire = model
                .wire_node(format!("conv{i}"), op, &[wire, k, b])
                .unwrap()[0];
            if relu {
                wire = relu_of(&mut model, &format!("relu{i}"), wire);
            }
        }
        model.select_output_outlets(&[wire]).unwrap();
        let model = model.into_decluttered().unwrap();

        let input = tvec!(tensor(&[1, 8, 13, 19], 8).into_tvalue());
        let want = run(model.clone(), input.clone()).remove(0);
        for isa in Isa::supported_all() {
            let mut ours = model.clone();
            assert_eq!(substitute(&mut ours, isa).unwrap(), 2, "the two 3x3 ones");
            let relus: Vec<bool> = ours
                .nodes
                .iter()
                .filter_map(|n| n.op_as::<Depthwise3x3>().map(|op| op.relu))
                .collect();
            assert_eq!(relus, [true, false]);
            let got = run(ours, input.clone()).remove(0);
            want.close_enough(&got, true).unwrap();
        }
    }
}
