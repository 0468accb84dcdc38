//! Depthwise convolutions over many channels run channel-last in an otherwise NCHW plan.
//! tract's NCHW depthwise loop runs along rows; on SCRFD's deepest layers (288 channels on
//! 20x20 maps at 640) rows are short and the loop's set-up dominates: 0.155 ms each, five of
//! them (onnxruntime 0.02). Channel-last the loop runs along the channels: 0.067 ms, and the
//! moves fold away between them (minimum of 30 runs). With fewer channels on larger maps it
//! lost: 72 channels at 80x80 took 0.39 ms instead of 0.28, plus 0.16 ms per move; hence
//! [`MIN_CHANNELS`].
//!
//! [`substitute`] wraps each such convolution in moves to and from channel-last and lowers it
//! to tract's `DepthWise` at once (as tract's own `conv_nhwc` transform does); tract's
//! optimiser then folds the moves that meet between two of them, through the 1x1 convolutions,
//! bias additions and ReLUs in between.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Fewest channels of a depthwise convolution that runs channel-last (see the module's text).
pub(crate) const MIN_CHANNELS: usize = 256;

/// Replaces every f32 depthwise convolution with at least [`MIN_CHANNELS`] channels; returns how
/// many.
pub(crate) fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let channels = conv.input_channels();
        let format = conv.pool_spec.data_format;
        let input = model.outlet_fact(node.inputs[0])?;
        let wanted = conv.group == channels
            && conv.output_channels() == channels
            && channels >= MIN_CHANNELS
            && conv.q_params.is_none()
            && node.inputs.len() == 3
            && input.datum_type == f32::datum_type()
            && input.shape.as_concrete().is_some();
        let channel_last = match format {
            DataFormat::NCHW => DataFormat::NHWC,
            DataFormat::CHW => DataFormat::HWC,
            _ => continue,
        };
        if !wanted {
            continue;
        }
        let rank = input.rank();
        let c_axis = format.shape(&input.shape)?.c_axis();
        let mut patch = TypedModelPatch::new("channel-last-depthwise");
        let inputs = patch.taps(model, &node.inputs)?;
        let name = &node.name;
        let x = patch.wire_node(
            format!("{name}.nhwc_in"),
            AxisOp::Move(c_axis, rank - 1),
            &[inputs[0]],
        )?[0];
        let op = Conv {
            pool_spec: PoolSpec {
                data_format: channel_last,
                ..conv.pool_spec.clone()
            },
            ..conv.clone()
        };
        let y = op.wire_as_depth_wise(&mut patch, name, &[x, inputs[1], inputs[2]])?;
        let y = patch.wire_node(
            format!("{name}.nhwc_out"),
            AxisOp::Move(rank - 1, c_axis),
            &[y],
        )?[0];
        patch.shunt_outside(model, node.id.into(), y)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::graph_testing::{conv, konst, run, run_counting_moves, tensor};

    /// depthwise 3x3 -> 1x1 -> depthwise 3x3 / 2, CHW as tract declutters SCRFD's layers.
    fn chain(channels: usize) -> TypedModel {
        let mut model = TypedModel::default();
        let mut wire = model.add_source("x", f32::fact([channels, 6, 5])).unwrap();
        let layers = [
            (channels, [3, 3], 1, 1),
            (1, [1, 1], 1, 0),
            (channels, [3, 3], 2, 1),
        ];
        for (i, (group, kernel, stride, pad)) in layers.into_iter().enumerate() {
            let shape = [channels, channels / group, kernel[0], kernel[1]];
            let k = konst(&mut model, &format!("k{i}"), &shape, 4 + i);
            let b = konst(&mut model, &format!("b{i}"), &[channels], 10 + i);
            let op = conv(
                channels,
                channels,
                group,
                kernel,
                stride,
                pad,
                DataFormat::CHW,
            );
            wire = model
                .wire_node(format!("conv{i}"), op, &[wire, k, b])
                .unwrap()[0];
        }
        model.select_output_outlets(&[wire]).unwrap();
        model.into_decluttered().unwrap()
    }

    #[test]
    fn wide_depthwise_convolutions_run_channel_last_with_moves_only_at_the_ends() {
        let narrow = chain(MIN_CHANNELS / 2);
        assert_eq!(substitute(&mut narrow.clone()).unwrap(), 0);

        let model = chain(MIN_CHANNELS);
        let input = tvec!(tensor(&[MIN_CHANNELS, 6, 5], 8).into_tvalue());
        let want = run(model.clone(), input.clone()).remove(0);
        let mut ours = model;
        assert_eq!(substitute(&mut ours).unwrap(), 2);
        let (mut got, moves) = run_counting_moves(ours, input);
        assert!(moves <= 2, "{moves} moves left");
        want.close_enough(&got.remove(0), true).unwrap();
    }
}
