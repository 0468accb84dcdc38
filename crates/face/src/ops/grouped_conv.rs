//! A direct grouped convolution for tract, for the two shapes tract lowers badly:
//! - grouped but not depthwise: tract runs one matrix product per group; ArcFace
//!   MobileFaceNet's second layer (3x3 over 128 channels at 56x56 in 64 groups of 2) becomes 64
//!   products of 2 output rows each, which fill an eighth of the matrix kernel: 6.7-9 ms of the
//!   recogniser's 25-33 ms per face (`facepass bench --ops`), well under a millisecond here
//!   (0.8 ms on Zen 5; `narrow_conv3x3` takes that layer where AVX2 or AVX-512 runs: 0.4 ms);
//! - depthwise with a stride, in an NCHW plan, where `depthwise3x3` cannot run (neither AVX2
//!   nor AVX-512):
//!   tract's depthwise loop along a row is vectorised only for stride 1. SCRFD's four 3x3
//!   stride-2 depthwise layers took 2.1 ms in tract, 1.2-1.3 ms here (minimum of 30 runs, on an
//!   AVX-512 machine; `depthwise3x3` 0.8 ms, onnxruntime 0.23 ms).
//!
//! [`substitute`] swaps it in for every such convolution of a decluttered model: (N)CHW, f32,
//! two spatial axes, constant kernel and bias, no dilation, 2 to 16 input channels per group,
//! or 1 with a stride when asked. Everything else stays with tract.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use crate::ops::rewrite::{constant_kernel_and_bias, map_f32};

/// Largest input-channels-per-group handled here; beyond it the matrix product fills well.
const MAX_CHANNELS_PER_GROUP: usize = 16;

/// Output `[n, o, y, x]` = bias[o] + sum over the input channels `i` of o's group and the taps
/// `(ky, kx)` of `weights[o, i, ky, kx] * input[n, g*ci + i, y*sy + ky - pad_top, x*sx + kx - pad_left]`,
/// with zeros outside the input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupedConv {
    pub group: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub pad_before: [usize; 2],
    pub pad_after: [usize; 2],
    /// NCHW; else CHW (tract drops a batch axis of 1 where it can).
    pub batch_axis: bool,
    /// OIHW: `[out_channels, in_channels / group, kh, kw]`.
    pub weights: Arc<Vec<f32>>,
    /// One per output channel.
    pub bias: Arc<Vec<f32>>,
}

impl Eq for GroupedConv {}

impl GroupedConv {
    /// Batch, channels, height, width of an input shape.
    fn nchw(&self, shape: &[usize]) -> TractResult<[usize; 4]> {
        match (self.batch_axis, shape) {
            (true, &[n, c, h, w]) => Ok([n, c, h, w]),
            (false, &[c, h, w]) => Ok([1, c, h, w]),
            _ => bail!(
                "grouped convolution expects {}, got {shape:?}",
                if self.batch_axis { "NCHW" } else { "CHW" }
            ),
        }
    }

    fn output_shape(&self, n: usize, [oh, ow]: [usize; 2]) -> TVec<usize> {
        if self.batch_axis {
            tvec![n, self.out_channels, oh, ow]
        } else {
            tvec![self.out_channels, oh, ow]
        }
    }

    fn output_hw(&self, h: usize, w: usize) -> TractResult<[usize; 2]> {
        let mut out = [0; 2];
        for (axis, size) in [h, w].into_iter().enumerate() {
            let padded = size + self.pad_before[axis] + self.pad_after[axis];
            ensure!(
                padded >= self.kernel[axis],
                "grouped convolution: input {size} smaller than kernel {}",
                self.kernel[axis]
            );
            out[axis] = (padded - self.kernel[axis]) / self.strides[axis] + 1;
        }
        Ok(out)
    }

    /// The convolution of one image (`[c, h, w]`, contiguous) into `out` (`[o, oh, ow]`).
    fn run_image(&self, input: &[f32], h: usize, w: usize, out: &mut [f32], [oh, ow]: [usize; 2]) {
        let [kh, kw] = self.kernel;
        let [sy, sx] = self.strides;
        let [pt, pl] = self.pad_before;
        let cpg_in = self.in_channels / self.group;
        let cpg_out = self.out_channels / self.group;
        for (o, plane) in out.chunks_exact_mut(oh * ow).enumerate() {
            plane.fill(self.bias[o]);
            let first_in = (o / cpg_out) * cpg_in;
            for i in 0..cpg_in {
                let src = &input[(first_in + i) * h * w..][..h * w];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = self.weights[((o * cpg_in + i) * kh + ky) * kw + kx];
                        // Output columns whose input column x*sx + kx - pl lies in [0, w).
                        let x_lo = pl.saturating_sub(kx).div_ceil(sx);
                        let x_hi = ((w + pl).saturating_sub(kx)).div_ceil(sx).min(ow);
                        if x_lo >= x_hi {
                            continue;
                        }
                        let first_col = x_lo * sx + kx - pl;
                        for y in 0..oh {
                            let Some(iy) = (y * sy + ky).checked_sub(pt).filter(|&iy| iy < h)
                            else {
                                continue;
                            };
                            let row = &mut plane[y * ow + x_lo..y * ow + x_hi];
                            multiply_add(row, wv, &src[iy * w + first_col..], sx);
                        }
                    }
                }
            }
        }
    }
}

/// `acc[x] += weight * src[x * stride]`. Whole chunks of `stride` values for all but the last
/// output, which the compiler turns into vector loads and shuffles (a strided iterator stays
/// scalar).
#[inline]
fn multiply_add(acc: &mut [f32], weight: f32, src: &[f32], stride: usize) {
    let Some((last, rest)) = acc.split_last_mut() else {
        return;
    };
    match stride {
        1 => {
            for (a, v) in rest.iter_mut().zip(src) {
                *a += weight * v;
            }
        }
        2 => {
            for (a, pair) in rest.iter_mut().zip(src.chunks_exact(2)) {
                *a += weight * pair[0];
            }
        }
        _ => {
            for (a, v) in rest.iter_mut().zip(src.iter().step_by(stride)) {
                *a += weight * v;
            }
        }
    }
    *last += weight * src[rest.len() * stride];
}

impl Op for GroupedConv {
    fn name(&self) -> StaticName {
        "GroupedConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "group {} in {} out {} kernel {:?} strides {:?} pads {:?}/{:?}",
            self.group,
            self.in_channels,
            self.out_channels,
            self.kernel,
            self.strides,
            self.pad_before,
            self.pad_after
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for GroupedConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let [n, c, h, w] = self.nchw(input.shape())?;
        ensure!(
            c == self.in_channels,
            "grouped convolution expects {} channels, got {c}",
            self.in_channels
        );
        let [oh, ow] = self.output_hw(h, w)?;
        // `run_image` starts every output plane from its bias: every value is written.
        let output = map_f32(&input, &self.output_shape(n, [oh, ow]), |src, dst| {
            let in_image = c * h * w;
            let out_image = self.out_channels * oh * ow;
            for b in 0..n {
                self.run_image(
                    &src[b * in_image..][..in_image],
                    h,
                    w,
                    &mut dst[b * out_image..][..out_image],
                    [oh, ow],
                );
            }
            Ok(())
        })?;
        Ok(tvec!(output))
    }
}

impl TypedOp for GroupedConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = inputs[0]
            .shape
            .as_concrete()
            .ok_or_else(|| format_err!("grouped convolution needs a concrete input shape"))?;
        let [n, _, h, w] = self.nchw(shape)?;
        let [oh, ow] = self.output_hw(h, w)?;
        Ok(tvec!(f32::fact(self.output_shape(n, [oh, ow]))))
    }

    as_op!();
}

/// Replaces every convolution of `model` that [`GroupedConv`] handles; returns how many.
/// `strided_depthwise` for a plan that stays NCHW: a channel-last plan (`model::Layout`) runs
/// depthwise convolutions along the channels, strided or not.
pub(crate) fn substitute(model: &mut TypedModel, strided_depthwise: bool) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some(op) = grouped_conv_for(model, node, conv, strided_depthwise)? else {
            continue;
        };
        let mut patch = TypedModelPatch::new("grouped-conv");
        let input = patch.tap_model(model, node.inputs[0])?;
        let wire = patch.wire_node(&node.name, op, &[input])?[0];
        patch.shunt_outside(model, node.id.into(), wire)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

fn grouped_conv_for(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    strided_depthwise: bool,
) -> TractResult<Option<GroupedConv>> {
    let spec = &conv.pool_spec;
    let (cin, cout, group) = (conv.input_channels(), conv.output_channels(), conv.group);
    let grouped = group > 1 && cin.is_multiple_of(group) && cout.is_multiple_of(group);
    let grouped_not_depthwise = grouped && (2..=MAX_CHANNELS_PER_GROUP).contains(&(cin / group));
    let depthwise_with_stride =
        grouped && cin == group && cout == group && spec.strides().iter().any(|&s| s > 1);
    if !(grouped_not_depthwise || strided_depthwise && depthwise_with_stride)
        || conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        || spec.rank() != 2
        || spec
            .dilations
            .as_ref()
            .is_some_and(|d| d.iter().any(|&d| d != 1))
        || node.inputs.len() != 3
    {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let batch_axis = spec.data_format == DataFormat::NCHW;
    let (h, w) = match (batch_axis, input.shape.as_concrete()) {
        (true, Some(&[_, _, h, w])) | (false, Some(&[_, h, w])) => (h, w),
        _ => return Ok(None),
    };
    if input.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let [kh, kw] = [spec.kernel_shape[0], spec.kernel_shape[1]];
    let kernel_shape = [cout, cin / group, kh, kw];
    let Some((weights, bias)) = constant_kernel_and_bias(model, node, &kernel_shape, cout)? else {
        return Ok(None);
    };
    let padding = spec.computed_padding(&[h, w]);
    let strides = spec.strides();
    Ok(Some(GroupedConv {
        group,
        in_channels: cin,
        out_channels: cout,
        kernel: [kh, kw],
        strides: [strides[0], strides[1]],
        pad_before: [padding[0].pad_before, padding[1].pad_before],
        pad_after: [padding[0].pad_after, padding[1].pad_after],
        batch_axis,
        weights: Arc::new(weights),
        bias: Arc::new(bias),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::graph_testing::{conv, konst, run, tensor, values};

    /// The definition, one output value at a time.
    fn naive(op: &GroupedConv, input: &[f32], [n, h, w]: [usize; 3]) -> Vec<f32> {
        let [oh, ow] = op.output_hw(h, w).unwrap();
        let (cpi, cpo) = (op.in_channels / op.group, op.out_channels / op.group);
        let mut out = Vec::new();
        for b in 0..n {
            for o in 0..op.out_channels {
                for y in 0..oh {
                    for x in 0..ow {
                        let mut acc = op.bias[o];
                        for i in 0..cpi {
                            let c = (o / cpo) * cpi + i;
                            for ky in 0..op.kernel[0] {
                                for kx in 0..op.kernel[1] {
                                    let iy =
                                        (y * op.strides[0] + ky) as i64 - op.pad_before[0] as i64;
                                    let ix =
                                        (x * op.strides[1] + kx) as i64 - op.pad_before[1] as i64;
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                        continue;
                                    }
                                    let v = input[((b * op.in_channels + c) * h + iy as usize) * w
                                        + ix as usize];
                                    let k = op.weights
                                        [((o * cpi + i) * op.kernel[0] + ky) * op.kernel[1] + kx];
                                    acc += k * v;
                                }
                            }
                        }
                        out.push(acc);
                    }
                }
            }
        }
        out
    }

    fn op(
        group: usize,
        cin: usize,
        cout: usize,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    ) -> GroupedConv {
        GroupedConv {
            group,
            in_channels: cin,
            out_channels: cout,
            kernel,
            strides,
            pad_before: [pads[0], pads[1]],
            pad_after: [pads[2], pads[3]],
            batch_axis: true,
            weights: Arc::new(values(cout * cin / group * kernel[0] * kernel[1], 1)),
            bias: Arc::new(values(cout, 2)),
        }
    }

    #[test]
    fn matches_the_definition_for_strides_padding_and_group_shapes() {
        let cases = [
            // MobileFaceNet's layer: 3x3, stride 1, pad 1, 2 channels per group.
            (op(4, 8, 8, [3, 3], [1, 1], [1, 1, 1, 1]), [1, 9, 11]),
            (op(2, 6, 4, [3, 3], [2, 2], [1, 1, 1, 1]), [2, 10, 7]),
            (op(3, 6, 9, [1, 3], [1, 2], [0, 2, 0, 1]), [1, 5, 8]),
            (op(2, 4, 4, [5, 5], [1, 1], [0, 0, 0, 0]), [1, 6, 6]),
            (op(2, 4, 2, [3, 3], [3, 1], [2, 0, 0, 2]), [1, 8, 4]),
            // Depthwise with a stride (SCRFD's downsampling layers), odd and even widths.
            (op(8, 8, 8, [3, 3], [2, 2], [1, 1, 1, 1]), [1, 9, 11]),
            (op(4, 4, 4, [3, 3], [2, 2], [1, 1, 1, 1]), [2, 8, 12]),
            (op(4, 4, 4, [3, 3], [2, 3], [1, 1, 0, 2]), [1, 10, 13]),
        ];
        for (op, [n, h, w]) in cases {
            let input = values(n * op.in_channels * h * w, 3);
            let tensor = Tensor::from_shape(&[n, op.in_channels, h, w], &input).unwrap();
            let got = op
                .eval(&EvalContext::out_of_plan(), tvec!(tensor.into_tvalue()))
                .unwrap()
                .remove(0);
            let want = naive(&op, &input, [n, h, w]);
            let [oh, ow] = op.output_hw(h, w).unwrap();
            assert_eq!(got.shape(), &[n, op.out_channels, oh, ow], "{op:?}");
            let got = got.to_plain_array_view::<f32>().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{op:?}: {g} vs {w}");
            }
        }
    }

    /// Three convolutions in a row: grouped, depthwise, depthwise with stride 2.
    fn three_convs(format: DataFormat) -> (TypedModel, TVec<usize>) {
        let shape: TVec<usize> = match format {
            DataFormat::NCHW => tvec![1, 8, 12, 10],
            _ => tvec![8, 12, 10],
        };
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(&shape)).unwrap();
        let mut wire = x;
        for (i, (group, cin, stride)) in [(4, 8, 1), (8, 8, 1), (8, 8, 2)].into_iter().enumerate() {
            let k = konst(&mut model, &format!("k{i}"), &[8, cin / group, 3, 3], 4 + i);
            let b = konst(&mut model, &format!("b{i}"), &[8], 10 + i);
            let op = conv(cin, 8, group, [3, 3], stride, 1, format);
            wire = model
                .wire_node(format!("conv{i}"), op, &[wire, k, b])
                .unwrap()[0];
        }
        model.select_output_outlets(&[wire]).unwrap();
        (model, shape)
    }

    #[test]
    fn replaces_only_grouped_and_asked_for_strided_depthwise_convolutions() {
        // Through tract itself: the same ONNX-like graph with tract's convolutions and with
        // ours, with a batch axis and without (tract drops a batch axis of 1 where it can).
        for format in [DataFormat::NCHW, DataFormat::CHW] {
            let (model, shape) = three_convs(format);
            let input = tvec!(tensor(&shape, 8).into_tvalue());
            let want = run(model.clone(), input.clone()).remove(0);
            for (strided_depthwise, replaced) in [(false, 1), (true, 2)] {
                let mut ours = model.clone();
                assert_eq!(
                    substitute(&mut ours, strided_depthwise).unwrap(),
                    replaced,
                    "{format:?}: the grouped one, and the strided depthwise one if asked"
                );
                let got = run(ours, input.clone()).remove(0);
                want.close_enough(&got, true).unwrap();
            }
        }
    }
}
