//! What the graph rewrites that bring in our operators (`grouped_conv`, `depthwise3x3`,
//! `pointwise_conv`) share: reading a convolution's constant kernel and bias, finding the bias
//! addition or ReLU to absorb, and the run of an operator from one contiguous f32 map to a new
//! one.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;

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
    let weights = f32_values(&kernel)?;
    let bias = match bias.len() {
        0 => vec![0.0; out_channels],
        1 => vec![bias.cast_to_scalar::<f32>()?; out_channels],
        n if n == out_channels => f32_values(&bias)?,
        _ => return Ok(None),
    };
    Ok(Some((weights, bias)))
}

/// An f32 tensor's values in order.
fn f32_values(tensor: &Tensor) -> TractResult<Vec<f32>> {
    Ok(tensor
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect())
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

/// A 1x1 convolution as decluttered tract writes it: an f32 `EinSum` `IHW,OI->OHW` of a
/// concrete map and a constant `[out, in]` kernel, with or without a batch axis of 1 on its
/// input and on its output, and with its output channel-first or channel-last (`HWO`, where a
/// channel-last layer reads it, as SCRFD's heads).
pub(crate) struct Einsum1x1 {
    /// Whether the input and the output have the batch axis.
    pub batch_axis: [bool; 2],
    /// The output is `[H, W, O]` (with or without the batch axis) rather than `[O, H, W]`.
    pub channels_last_out: bool,
    pub in_channels: usize,
    pub out_channels: usize,
    /// `[out_channels, in_channels]`.
    pub weights: Vec<f32>,
}

/// The 1x1 convolution at node `id`, if it is one.
pub(crate) fn einsum_1x1(model: &TypedModel, id: usize) -> TractResult<Option<Einsum1x1>> {
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    let axes = einsum.axes.to_string();
    let Some((input_axes, output_axes)) = axes.split_once(",OI->") else {
        return Ok(None);
    };
    let batch_in = match input_axes {
        "NIHW" => true,
        "IHW" => false,
        _ => return Ok(None),
    };
    let (batch_out, channels_last_out) = match output_axes {
        "OHW" => (false, false),
        "NOHW" => (true, false),
        "HWO" => (false, true),
        "NHWO" => (true, true),
        _ => return Ok(None),
    };
    let batch_axis = [batch_in, batch_out];
    if einsum.q_params.is_some() || node.inputs.len() != 2 {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let concrete = matches!(
        (batch_axis[0], input.shape.as_concrete()),
        (true, Some(&[1, _, _, _])) | (false, Some(&[_, _, _]))
    );
    let Some(kernel) = model.outlet_fact(node.inputs[1])?.konst.clone() else {
        return Ok(None);
    };
    let &[cout, cin] = kernel.shape() else {
        return Ok(None);
    };
    if !concrete
        || input.datum_type != f32::datum_type()
        || kernel.datum_type() != f32::datum_type()
    {
        return Ok(None);
    }
    let weights = f32_values(&kernel)?;
    Ok(Some(Einsum1x1 {
        batch_axis,
        channels_last_out,
        in_channels: cin,
        out_channels: cout,
        weights,
    }))
}

/// The bias of a 1x1 convolution's output: the f32 `Add` that alone reads node `id` with a
/// constant of one value per output channel on the channel axis (third from the end, as in
/// `[out, 1, 1]` or `[1, out, 1, 1]`, or last if `channels_last`, as in `[1, 1, 1, out]`) or
/// one value for all; its values per channel and its id.
fn channel_bias_after(
    model: &TypedModel,
    id: usize,
    out_channels: usize,
    channels_last: bool,
) -> TractResult<Option<(Vec<f32>, usize)>> {
    let Some((add, other)) = only_reader_with_constant(model, id, "Add")? else {
        return Ok(None);
    };
    let shape = other.shape();
    let from_end = if channels_last { 1 } else { 3 };
    let per_channel = other.len() == out_channels
        && shape.len() >= from_end
        && shape[shape.len() - from_end] == out_channels;
    if other.datum_type() != f32::datum_type() || !(per_channel || other.len() == 1) {
        return Ok(None);
    }
    let values = f32_values(&other)?;
    let bias = if per_channel {
        values
    } else {
        vec![values[0]; out_channels]
    };
    Ok(Some((bias, add)))
}

/// What follows a 1x1 convolution at node `id` and goes into its operator: its bias (zeros
/// without one, see [`channel_bias_after`]), whether a ReLU follows ([`relu_after`]), and the
/// last node taken (the convolution's, its bias `Add`'s or the ReLU's id).
pub(crate) fn bias_and_relu_after(
    model: &TypedModel,
    id: usize,
    out_channels: usize,
    channels_last: bool,
) -> TractResult<(Vec<f32>, bool, usize)> {
    let (bias, last) = channel_bias_after(model, id, out_channels, channels_last)?
        .unwrap_or((vec![0.0; out_channels], id));
    Ok(match relu_after(model, last)? {
        Some(max) => (bias, true, max),
        None => (bias, false, last),
    })
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
