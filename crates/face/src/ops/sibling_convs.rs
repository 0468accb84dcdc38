//! Convolutions that read the same tensor with the same geometry, merged into one.
//!
//! SCRFD ends each of its three strides with three 3x3 convolutions over the same 64-channel map:
//! scores (2 channels), boxes (8) and landmarks (20). tract runs each as its own im2col and matrix
//! product, and the cost hardly depends on the output channels: at stride 8 (80x80) the three
//! took 2.1, 2.2 and 3.8 ms (`facepass bench --ops`). [`merge`] stacks their kernels and biases
//! into one convolution and slices its output back into the three tensors, so the patches are
//! gathered once and the matrix product runs with 30 rows instead of 2, 8 and 20.

use std::collections::HashMap;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::Slice;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};

/// Merges every set of two or more mergeable convolutions reading the same outlet; returns how
/// many convolutions were folded into others.
pub(crate) fn merge(model: &mut TypedModel) -> TractResult<usize> {
    let mut by_input: HashMap<OutletId, Vec<usize>> = HashMap::new();
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        if let Some(conv) = node.op_as::<Conv>() {
            if mergeable(model, node, conv)? {
                by_input.entry(node.inputs[0]).or_default().push(id);
            }
        }
    }
    let mut folded = 0;
    let mut sets: Vec<Vec<usize>> = Vec::new();
    for ids in by_input.into_values() {
        // Same input; split further by geometry (everything but the output channels).
        let mut same: Vec<Vec<usize>> = Vec::new();
        for id in ids {
            let key = geometry(model.nodes[id].op_as::<Conv>());
            match same
                .iter_mut()
                .find(|s| geometry(model.nodes[s[0]].op_as::<Conv>()) == key)
            {
                Some(set) => set.push(id),
                None => same.push(vec![id]),
            }
        }
        sets.extend(same.into_iter().filter(|s| s.len() > 1));
    }
    sets.sort(); // deterministic node names and order
    for set in sets {
        merge_set(model, &set)?;
        folded += set.len() - 1;
    }
    Ok(folded)
}

/// A convolution with everything but its output channels, for comparing geometries.
fn geometry(conv: Option<&Conv>) -> Option<Conv> {
    conv.map(|c| {
        let mut c = c.clone();
        c.pool_spec.output_channels = 0;
        c
    })
}

fn mergeable(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<bool> {
    if conv.q_params.is_some()
        || conv.group != 1
        || conv.kernel_fmt != KernelFormat::OIHW
        || node.inputs.len() != 3
        || node.outputs.len() != 1
    {
        return Ok(false);
    }
    let kernel = model.outlet_fact(node.inputs[1])?;
    let bias = model.outlet_fact(node.inputs[2])?;
    Ok(kernel.konst.is_some()
        && bias.konst.is_some()
        && kernel.datum_type == f32::datum_type()
        && bias.datum_type == f32::datum_type()
        && model.outlet_fact(node.inputs[0])?.datum_type == f32::datum_type())
}

fn merge_set(model: &mut TypedModel, ids: &[usize]) -> TractResult<()> {
    let first = &model.nodes[ids[0]];
    let mut conv = first
        .op_as::<Conv>()
        .ok_or_else(|| format_err!("{} is not a convolution", first.name))?
        .clone();
    let input = first.inputs[0];
    let input_shape = model.outlet_fact(input)?.shape.clone();
    let c_axis = conv
        .pool_spec
        .data_format
        .shape(input_shape.to_tvec())?
        .c_axis();

    let mut kernels = Vec::new();
    let mut biases = Vec::new();
    let mut ranges = Vec::new();
    let mut total = 0;
    for &id in ids {
        let node = &model.nodes[id];
        let this = node
            .op_as::<Conv>()
            .ok_or_else(|| format_err!("{} is not a convolution", node.name))?;
        let out = this.output_channels();
        let kernel = model
            .outlet_fact(node.inputs[1])?
            .konst
            .clone()
            .ok_or_else(|| format_err!("{}: kernel is not constant", node.name))?;
        let bias = model
            .outlet_fact(node.inputs[2])?
            .konst
            .clone()
            .ok_or_else(|| format_err!("{}: bias is not constant", node.name))?;
        let bias = if bias.rank() == 0 {
            bias.broadcast_scalar_to_shape(&[out])?
        } else {
            bias.into_tensor()
        };
        kernels.push(kernel.into_tensor());
        biases.push(bias);
        ranges.push((total, total + out));
        total += out;
    }
    conv.pool_spec.output_channels = total;
    let names: Vec<&str> = ids
        .iter()
        .map(|&id| model.nodes[id].name.as_str())
        .collect();
    let name = format!("{}.merged", names.join("+"));

    let mut patch = TypedModelPatch::new("merge-sibling-convs");
    let x = patch.tap_model(model, input)?;
    let kernel = patch.add_const(
        format!("{name}.kernel"),
        Tensor::stack_tensors(0, &kernels)?,
    )?;
    let bias = patch.add_const(format!("{name}.bias"), Tensor::stack_tensors(0, &biases)?)?;
    let merged = patch.wire_node(&name, conv, &[x, kernel, bias])?[0];
    for (&id, (start, end)) in ids.iter().zip(ranges) {
        let node_name = model.nodes[id].name.clone();
        let sliced = patch.wire_node(
            format!("{node_name}.slice"),
            Slice::new(c_axis, start, end),
            &[merged],
        )?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), sliced)?;
    }
    patch.apply(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::graph_testing::{conv, konst, run, tensor};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// Three heads on one input (one with a scalar bias), a fourth of another kernel size and
    /// a fifth on another input: the three merge, the others stay, and every output is unchanged.
    fn heads(format: DataFormat, shape: [usize; 4]) {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape)).unwrap();
        let y = model.add_source("y", f32::fact(shape)).unwrap();
        let mut outputs = Vec::new();
        for (i, (out, k, input)) in [(2, 3, x), (8, 3, x), (5, 3, x), (4, 1, x), (3, 3, y)]
            .into_iter()
            .enumerate()
        {
            let kernel = konst(&mut model, &format!("k{i}"), &[out, 6, k, k], i);
            let bias = if i == 1 {
                model.add_const(format!("b{i}"), tensor0(0.25f32)).unwrap()
            } else {
                konst(&mut model, &format!("b{i}"), &[out], i + 10)
            };
            let op = conv(6, out, 1, [k, k], 1, k / 2, format);
            outputs.push(
                model
                    .wire_node(format!("conv{i}"), op, &[input, kernel, bias])
                    .unwrap()[0],
            );
        }
        model.select_output_outlets(&outputs).unwrap();

        let inputs = tvec!(
            tensor(&shape, 20).into_tvalue(),
            tensor(&shape, 21).into_tvalue()
        );
        let want = run(model.clone(), inputs.clone());
        let mut merged = model;
        assert_eq!(merge(&mut merged).unwrap(), 2, "three heads become one");
        let convs = merged.nodes.iter().filter(|n| n.op_is::<Conv>()).count();
        assert_eq!(convs, 3, "the merged one, the 1x1 and the one on y");
        let got = run(merged, inputs);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.shape(), w.shape());
            w.close_enough(g, true).unwrap();
        }
    }

    #[test]
    fn heads_on_one_input_merge_and_keep_their_outputs_nchw() {
        heads(DataFormat::NCHW, [1, 6, 9, 7]);
    }

    #[test]
    fn heads_on_one_input_merge_and_keep_their_outputs_nhwc() {
        heads(DataFormat::NHWC, [1, 9, 7, 6]);
    }
}
