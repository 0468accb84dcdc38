//! What the graph rewrites that bring in our operators (`grouped_conv`, `depthwise3x3`,
//! `pointwise_conv`) share: reading a convolution's constant kernel and bias, finding the bias
//! addition or ReLU to absorb, and the run of an operator from one contiguous f32 map to a new
//! one.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;

/// The f32 values of a convolution's constant kernel (inputs[1], of `kernel_shape`) and one bias
/// per output channel (inputs[2]: none, a scalar or one per channel); None when either is not a
/// constant of that form.
pub(crate) fn constant_kernel_and_bias(
    model: &TypedModel,
    node: &TypedNode,
    kernel_shape: &[usize],
    out_channels: usize,
) -> TractResult<Option<(Vec<f32>, Vec<f32>)>> {
    if node.inputs.len() != 3 {
        return Ok(None);
    }
    let (Some(kernel), Some(bias)) = (
        model.outlet_fact(node.inputs[1])?.konst.clone(),
        model.outlet_fact(node.inputs[2])?.konst.clone(),
    ) else {
        return Ok(None);
    };
    if kernel.shape() != kernel_shape || kernel.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let weights = kernel
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect();
    let bias = match bias.len() {
        0 => vec![0.0; out_channels],
        1 => vec![bias.cast_to_scalar::<f32>()?; out_channels],
        n if n == out_channels => bias.to_plain_array_view::<f32>()?.iter().copied().collect(),
        _ => return Ok(None),
    };
    Ok(Some((weights, bias)))
}

/// The binary op `name` that is the only reader of `id`'s output, not a model output, and whose
/// other operand is a constant of a rank no higher: that node and the constant.
pub(crate) fn only_reader_with_constant(
    model: &TypedModel,
    id: usize,
    name: &str,
) -> TractResult<Option<(usize, Arc<Tensor>)>> {
    if model.output_outlets()?.contains(&id.into()) {
        return Ok(None);
    }
    let &[reader] = model.outlet_successors(id.into()) else {
        return Ok(None);
    };
    let next = model.node(reader.node);
    let is_op = next
        .op_as::<TypedBinOp>()
        .is_some_and(|bin| bin.0.name() == name);
    if !is_op || next.inputs.len() != 2 {
        return Ok(None);
    }
    let other = model.outlet_fact(next.inputs[1 - reader.slot])?;
    let ours = model.outlet_fact(id.into())?;
    let Some(konst) = other.konst.clone() else {
        return Ok(None);
    };
    if konst.rank() > ours.rank() || model.outlet_fact(next.id.into())?.shape != ours.shape {
        return Ok(None);
    }
    Ok(Some((next.id, konst)))
}

/// The ReLU (`max(x, 0)`) that is the only reader of `id`'s output.
pub(crate) fn relu_after(model: &TypedModel, id: usize) -> TractResult<Option<usize>> {
    let relu = only_reader_with_constant(model, id, "Max")?.filter(|(_, other)| {
        other.len() == 1 && other.cast_to_scalar::<f32>().is_ok_and(|v| v == 0.0)
    });
    Ok(relu.map(|(max, _)| max))
}

/// A new f32 tensor of `shape` filled by `fill` from `input`'s values; `fill` must write every
/// value (the tensor starts uninitialised).
pub(crate) fn map_f32(
    input: &TValue,
    shape: &[usize],
    fill: impl FnOnce(&[f32], &mut [f32]) -> TractResult<()>,
) -> TractResult<TValue> {
    let view = input.to_plain_array_view::<f32>()?;
    let src = view
        .as_slice()
        .ok_or_else(|| format_err!("operator input is not contiguous"))?;
    // Safety: `fill` writes every value, as its contract says, before anyone reads them.
    let mut output = unsafe { Tensor::uninitialized::<f32>(shape)? };
    {
        let mut out_view = output.to_plain_array_view_mut::<f32>()?;
        let dst = out_view
            .as_slice_mut()
            .ok_or_else(|| format_err!("fresh tensor is not contiguous"))?;
        fill(src, dst)?;
    }
    Ok(output.into_tvalue())
}
