//! A one-pass PReLU for tract. tract-onnx expands ONNX `PRelu` into three graph nodes (x * slope,
//! x > 0, select), each a full pass over the activation with a broadcast the optimiser does not
//! vectorise: on ArcFace MobileFaceNet (34 PReLUs) they took 53% of the recogniser's time
//! (21 of 40 ms per face, `facepass bench --ops`). This op does the same in place, one
//! branch-free loop per channel. Registered in place of tract's `PRelu` by `model::optimise`.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ndarray::Zip;
use tract_onnx::tract_hir::internal::{
    check_input_arity, check_output_arity, Expansion, InferenceResult, Solver, TensorProxy,
};

/// The parser-side op: same inference rules as tract's own, wired as one `PRelu` node.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct PreluExpansion;

impl Expansion for PreluExpansion {
    fn name(&self) -> StaticName {
        "PRelu".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        name: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        for input in inputs {
            let dt = model.outlet_fact(*input)?.datum_type;
            ensure!(
                dt == f32::datum_type(),
                "PRelu on {dt:?}: only f32 models are supported"
            );
        }
        // The slope gets the input's rank (ONNX's [C, 1, 1] becomes [1, C, 1, 1]), so an axis
        // change applies to both alike (`change_axes`).
        let rank = model.outlet_fact(inputs[0])?.rank();
        let mut slope = inputs[1];
        for k in model.outlet_fact(slope)?.rank()..rank {
            slope = model.wire_node(format!("{name}.slope_axis_{k}"), AxisOp::Add(0), &[slope])?[0];
        }
        model.wire_node(name, Prelu, &[inputs[0], slope])
    }
}

/// `y = x` where `x >= 0`, `slope * x` elsewhere; `slope` broadcasts to `x` (ONNX rules).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct Prelu;

impl Op for Prelu {
    fn name(&self) -> StaticName {
        "PRelu".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Prelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, slope) = args_2!(inputs);
        let mut x = x.into_tensor();
        prelu_in_place(&mut x, &slope)?;
        Ok(tvec!(x.into_tvalue()))
    }
}

impl TypedOp for Prelu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].datum_type.fact(inputs[0].shape.clone())))
    }

    /// Element-wise: an axis change of the input, the slope (same rank, see `wire`) or the
    /// output is the same change of all three, so tract can run the convolutions around it
    /// channel-last without a transposition on either side. Removing an axis needs it to be 1
    /// in the slope too.
    fn change_axes(
        &self,
        model: &TypedModel,
        node: &TypedNode,
        _io: InOut,
        change: &AxisOp,
    ) -> TractResult<Option<AxisChangeConsequence>> {
        let (inputs, _) = model.node_facts(node.id)?;
        if inputs[0].rank() != inputs[1].rank() {
            return Ok(None);
        }
        if let AxisOp::Rm(axis) = change {
            if !inputs.iter().all(|f| f.shape[*axis].is_one()) {
                return Ok(None);
            }
        }
        Ok(Some(AxisChangeConsequence::new(model, node, None, change)))
    }

    as_op!();
}

#[inline]
fn prelu(v: f32, a: f32) -> f32 {
    // Branch-free, so the loops below vectorise.
    v.max(0.0) + a * v.min(0.0)
}

pub(crate) fn prelu_in_place(x: &mut Tensor, slope: &Tensor) -> TractResult<()> {
    let shape = x.shape().to_vec();
    let rank = shape.len();
    ensure!(
        slope.rank() <= rank,
        "PRelu slope {:?} has more axes than its input {shape:?}",
        slope.shape()
    );
    let slope_dims: Vec<usize> = std::iter::repeat_n(1, rank - slope.rank())
        .chain(slope.shape().iter().copied())
        .collect();
    let slope = slope.to_plain_array_view::<f32>()?;
    let s: Vec<f32> = slope.iter().copied().collect();
    let mut view = x.to_plain_array_view_mut::<f32>()?;
    // The slope varies along one axis only: channels first (NCHW) or last (NHWC).
    let only_along = |channel_axis: usize| {
        slope_dims[channel_axis] == shape[channel_axis]
            && slope_dims
                .iter()
                .enumerate()
                .all(|(axis, &d)| axis == channel_axis || d == 1)
    };
    let channel_wise = rank >= 2 && only_along(1);
    let channel_last = rank >= 2 && only_along(rank - 1);
    if s.len() == 1 {
        let a = s[0];
        view.iter_mut().for_each(|v| *v = prelu(*v, a));
    } else if channel_last {
        let data = view
            .as_slice_mut()
            .ok_or_else(|| format_err!("PRelu input is not contiguous"))?;
        for pixel in data.chunks_exact_mut(s.len()) {
            pixel
                .iter_mut()
                .zip(&s)
                .for_each(|(v, &a)| *v = prelu(*v, a));
        }
    } else if channel_wise {
        let channels = shape[1];
        let plane: usize = shape[2..].iter().product();
        let data = view
            .as_slice_mut()
            .ok_or_else(|| format_err!("PRelu input is not contiguous"))?;
        if plane > 0 {
            for (i, chunk) in data.chunks_mut(plane).enumerate() {
                let a = s[i % channels];
                chunk.iter_mut().for_each(|v| *v = prelu(*v, a));
            }
        }
    } else {
        let slope = slope.broadcast(view.shape()).ok_or_else(|| {
            format_err!(
                "PRelu slope {:?} does not broadcast to {shape:?}",
                slope.shape()
            )
        })?;
        Zip::from(&mut view)
            .and(&slope)
            .for_each(|v, &a| *v = prelu(*v, a));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], a: impl Fn(usize) -> f32) -> Vec<f32> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| if v >= 0.0 { v } else { a(i) * v })
            .collect()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37) % 23) as f32 - 11.5).collect()
    }

    #[test]
    fn per_channel_scalar_and_general_slopes_match_the_definition() {
        let x = values(2 * 3 * 4 * 5);
        // [C, 1, 1], the layout ONNX exporters write for conv activations.
        let mut t = Tensor::from_shape(&[2, 3, 4, 5], &x).unwrap();
        let slope = Tensor::from_shape(&[3, 1, 1], &[0.1f32, 0.2, 0.3]).unwrap();
        prelu_in_place(&mut t, &slope).unwrap();
        let want = reference(&x, |i| [0.1, 0.2, 0.3][(i / 20) % 3]);
        assert_eq!(flat(&t), want);

        let mut t = Tensor::from_shape(&[2, 3, 4, 5], &x).unwrap();
        prelu_in_place(&mut t, &tensor0(0.25f32)).unwrap();
        assert_eq!(flat(&t), reference(&x, |_| 0.25));

        // A slope along the last axis: channels last.
        let slope_w: Vec<f32> = (0..5).map(|i| i as f32 / 10.0).collect();
        let mut t = Tensor::from_shape(&[2, 3, 4, 5], &x).unwrap();
        prelu_in_place(&mut t, &Tensor::from_shape(&[5], &slope_w).unwrap()).unwrap();
        assert_eq!(flat(&t), reference(&x, |i| slope_w[i % 5]));

        // A slope along a middle axis: the general broadcasting path.
        let slope_h = Tensor::from_shape(&[4, 1], &[0.1f32, 0.2, 0.3, 0.4]).unwrap();
        let mut t = Tensor::from_shape(&[2, 3, 4, 5], &x).unwrap();
        prelu_in_place(&mut t, &slope_h).unwrap();
        assert_eq!(
            flat(&t),
            reference(&x, |i| [0.1, 0.2, 0.3, 0.4][(i / 5) % 4])
        );

        let bad = Tensor::from_shape(&[7], &[1f32; 7]).unwrap();
        let mut t = Tensor::from_shape(&[2, 3, 4, 5], &x).unwrap();
        assert!(prelu_in_place(&mut t, &bad).is_err());
    }
}
