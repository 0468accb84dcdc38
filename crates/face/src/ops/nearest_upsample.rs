//! Integer nearest-neighbour resizes handed to tract's fast upsample.
//!
//! SCRFD's feature pyramid doubles two maps with ONNX `Resize` (nearest), its target size given
//! as `sizes` computed from the input's shape. tract lowers a nearest `Resize` to its fast
//! `NearestUpsample` only when the resize is given by constant `scales`, so here it ran the
//! generic resampler: 0.97 ms per detection for two small maps (onnxruntime: 0.03 ms). Once the
//! model's shapes are concrete, [`substitute`] checks each nearest `Resize` whose output is an
//! integer multiple of its input by running it on a probe whose every value is its own index;
//! where that equals pixel replication, it wires `NearestUpsample` instead.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::{Interpolator, NearestUpsample, Resize};

/// Largest probe, in values, run at load time.
const MAX_PROBE: usize = 1 << 22;

/// Replaces every nearest `Resize` of `model` that is an integer pixel replication; returns how
/// many.
pub(crate) fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        let Some(resize) = node.op_as::<Resize>() else {
            continue;
        };
        let Some(scales) = replication_scales(model, node, resize)? else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(
            model,
            node,
            &node.inputs[..1],
            NearestUpsample { scales },
        )?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The integer scale per axis if this resize copies each input value into a block of
/// `scales` output values, checked on an index-valued probe.
fn replication_scales(
    model: &TypedModel,
    node: &TypedNode,
    resize: &Resize,
) -> TractResult<Option<TVec<usize>>> {
    if !matches!(resize.interpolator, Interpolator::Nearest) {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let output = model.outlet_fact(OutletId::new(node.id, 0))?;
    let (Some(shape_in), Some(shape_out)) = (input.shape.as_concrete(), output.shape.as_concrete())
    else {
        return Ok(None);
    };
    let len: usize = shape_in.iter().product();
    if input.datum_type != f32::datum_type()
        || shape_in.len() != shape_out.len()
        || len == 0
        || len > MAX_PROBE
        || shape_in
            .iter()
            .zip(shape_out)
            .any(|(&i, &o)| o < i || !o.is_multiple_of(i))
    {
        return Ok(None);
    }
    // Every other input (scales, sizes, roi) must be known now for the probe to be the op.
    let mut inputs: TVec<TValue> = tvec!();
    let probe: Vec<f32> = (0..len).map(|i| i as f32).collect();
    inputs.push(Tensor::from_shape(shape_in, &probe)?.into_tvalue());
    for outlet in &node.inputs[1..] {
        let Some(k) = model.outlet_fact(*outlet)?.konst.clone() else {
            return Ok(None);
        };
        inputs.push(k.into_tvalue());
    }
    let scales: TVec<usize> = shape_in
        .iter()
        .zip(shape_out)
        .map(|(&i, &o)| o / i)
        .collect();
    if scales.iter().all(|&s| s == 1) {
        return Ok(None);
    }
    let resized = resize.eval(&EvalContext::out_of_plan(), inputs.clone())?;
    let upsampled = NearestUpsample {
        scales: scales.clone(),
    }
    .eval(&EvalContext::out_of_plan(), tvec!(inputs[0].clone()))?;
    Ok((resized[0].close_enough(&upsampled[0], false).is_ok()).then_some(scales))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::nn::{CoordTransformer, Nearest};

    fn model_with(resize: Resize, sizes: &[i64]) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 2, 3, 4])).unwrap();
        let roi = model.add_const("roi", tensor1(&[0f32; 0])).unwrap();
        let scales = model.add_const("scales", tensor1(&[0f32; 0])).unwrap();
        let sizes = model.add_const("sizes", tensor1(sizes)).unwrap();
        let y = model
            .wire_node("resize", resize, &[x, roi, scales, sizes])
            .unwrap()[0];
        model.select_output_outlets(&[y]).unwrap();
        model
    }

    fn resize(coord: CoordTransformer, nearest: Nearest) -> Resize {
        Resize {
            coord_transformer: coord,
            interpolator: Interpolator::Nearest,
            nearest,
            optional_scales_input: Some(2),
            optional_sizes_input: Some(3),
        }
    }

    fn outputs(model: TypedModel) -> Tensor {
        let input: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let input = Tensor::from_shape(&[1, 2, 3, 4], &input).unwrap();
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        plan.run(tvec!(input.into_tvalue()))
            .unwrap()
            .remove(0)
            .into_tensor()
    }

    #[test]
    fn a_doubling_given_by_sizes_becomes_an_upsample_with_the_same_output() {
        // SCRFD's form: asymmetric coordinates, floor.
        let model = model_with(
            resize(CoordTransformer::Asymmetric, Nearest::Floor),
            &[1, 2, 6, 8],
        );
        let want = outputs(model.clone());
        let mut ours = model;
        assert_eq!(substitute(&mut ours).unwrap(), 1);
        assert!(ours.nodes.iter().any(|n| n.op_is::<NearestUpsample>()));
        want.close_enough(&outputs(ours), false).unwrap();
    }

    #[test]
    fn resizes_that_are_not_pixel_replication_are_left_alone() {
        // Not an integer multiple, and a mode whose doubling shifts pixels.
        for (op, sizes) in [
            (
                resize(CoordTransformer::Asymmetric, Nearest::Floor),
                [1, 2, 5, 8],
            ),
            (
                resize(CoordTransformer::HalfPixel, Nearest::Floor),
                [1, 2, 6, 8],
            ),
        ] {
            let mut model = model_with(op, &sizes);
            assert_eq!(substitute(&mut model).unwrap(), 0, "{sizes:?}");
        }
    }
}
