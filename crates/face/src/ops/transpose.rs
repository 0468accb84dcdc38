//! A convolutional network run on the transposed image.
//!
//! A convolution of the transposed image with the transposed kernel is the transposed
//! convolution, and element-wise operations, channel concatenation and a nearest upsample by the
//! same factor on both axes commute with transposition too. So a network made of those, with
//! every kernel transposed, computes the original network's outputs on the transposed image,
//! each map transposed: same channels, cells in column-major order.
//!
//! The detector uses this for portrait photos: tract's depthwise convolution scans the longer
//! output axis innermost, which in a portrait map is the strided one, and ran a portrait input
//! slower than the whole 640x640 square (512x640: 44 ms against 36, the depthwise layers 27 ms
//! against 9). Transposed, a portrait photo runs as fast as the landscape photo of its shape.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::konst::Const;

/// Transposes the kernel of every convolution of `model` in place. Fails, changing nothing, if
/// some convolution is not symmetric in its geometry (square kernel, same stride, dilation and
/// padding on both axes), since then the transposed network would compute something else.
pub(crate) fn transpose_kernels(model: &mut TypedModel) -> TractResult<usize> {
    let mut kernels = Vec::new();
    for node in &model.nodes {
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let spec = &conv.pool_spec;
        let same = |v: &[usize]| v.windows(2).all(|w| w[0] == w[1]);
        let symmetric = spec.rank() == 2
            && conv.kernel_fmt == KernelFormat::OIHW
            && same(&spec.kernel_shape)
            && same(&spec.strides())
            && same(&spec.dilations())
            && match &spec.padding {
                PaddingSpec::Valid => true,
                PaddingSpec::Explicit(before, after) => same(before) && same(after),
                _ => false,
            };
        ensure!(
            symmetric,
            "{}: convolution geometry is not symmetric",
            node.name
        );
        let kernel_node = node.inputs[1].node;
        ensure!(
            model.nodes[kernel_node].op_is::<Const>()
                && model.nodes[kernel_node].outputs[0].successors.len() == 1,
            "{}: kernel is not a constant of its own",
            node.name
        );
        kernels.push(kernel_node);
    }
    for &id in &kernels {
        let konst = model.nodes[id]
            .op_as::<Const>()
            .ok_or_else(|| format_err!("kernel node {id} is not a constant"))?;
        let kernel = konst.val();
        ensure!(kernel.rank() == 4, "kernel of rank {}", kernel.rank());
        let transposed = kernel
            .as_ref()
            .clone()
            .permute_axes(&[0, 1, 3, 2])?
            .into_arc_tensor();
        model.nodes[id].op = Box::new(Const::new(transposed.clone())?);
        model.nodes[id].outputs[0].fact = TypedFact::try_from(transposed)?;
    }
    Ok(kernels.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::graph_testing::{conv, konst, run, tensor};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// Two 3x3 convolutions (one with stride 2) with a ReLU between, for a `h` x `w` input.
    fn network(h: usize, w: usize, second_kernel: [usize; 2]) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 2, h, w])).unwrap();
        let k1 = konst(&mut model, "k1", &[3, 2, 3, 3], 1);
        let b1 = konst(&mut model, "b1", &[3], 2);
        let c1 = conv(2, 3, 1, [3, 3], 2, 1, DataFormat::NCHW);
        let y = model.wire_node("c1", c1, &[x, k1, b1]).unwrap()[0];
        let zero = model.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
        let y = model
            .wire_node("relu", tract_onnx::tract_core::ops::math::max(), &[y, zero])
            .unwrap()[0];
        let [kh, kw] = second_kernel;
        let k2 = konst(&mut model, "k2", &[2, 3, kh, kw], 3);
        let b2 = model.add_const("b2", tensor0(0.1f32)).unwrap();
        let c2 = conv(3, 2, 1, second_kernel, 1, 1, DataFormat::NCHW);
        let z = model.wire_node("c2", c2, &[y, k2, b2]).unwrap()[0];
        model.select_output_outlets(&[z]).unwrap();
        model
    }

    /// `[n, c, h, w]` with the last two axes swapped.
    fn transposed(t: &Tensor) -> Tensor {
        t.clone().permute_axes(&[0, 1, 3, 2]).unwrap()
    }

    fn run_on(model: TypedModel, input: &Tensor) -> Tensor {
        run(model, tvec!(input.clone().into_tvalue()))
            .remove(0)
            .into_tensor()
    }

    #[test]
    fn transposed_kernels_on_the_transposed_image_give_the_transposed_maps() {
        let (h, w) = (11, 7);
        let input = tensor(&[1, 2, h, w], 4);
        let want = run_on(network(h, w, [3, 3]), &input);

        let mut flipped = network(w, h, [3, 3]);
        assert_eq!(transpose_kernels(&mut flipped).unwrap(), 2);
        let got = run_on(flipped, &transposed(&input));
        assert_eq!(got.shape(), transposed(&want).shape());
        transposed(&want).close_enough(&got, true).unwrap();
    }

    #[test]
    fn an_asymmetric_kernel_is_refused_and_nothing_changes() {
        let mut model = network(9, 9, [1, 3]);
        let before = format!("{model:?}");
        assert!(transpose_kernels(&mut model).is_err());
        assert_eq!(format!("{model:?}"), before);
    }
}
