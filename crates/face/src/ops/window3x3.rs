//! What `depthwise3x3` and `narrow_conv3x3` share: the geometry of a 3x3 convolution padded by 1
//! before, stride 1 or 2; recognising one in a decluttered model; running an operator's kernel
//! on a map ([`Window3x3::eval`]: checks, column masks, dispatch to the instruction set); the
//! column loads and stores of their kernels (one vector of output columns at a time); and
//! swapping such convolutions, with the ReLU after them, for an
//! operator of ours.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use crate::ops::rewrite::{map_f32, relu_after};
use crate::ops::simd::{Isa, Kernel, Simd};

/// The stride and the padding after the input (rows, columns) of `conv` over an input of
/// `hw` if it is a 3x3 convolution, whatever its layout, with OIHW kernel, no dilation, the same
/// stride of 1 or 2 on both axes, padding 1 before and at most 2 after.
pub(crate) fn stride_and_padding(conv: &Conv, hw: [usize; 2]) -> Option<(usize, [usize; 2])> {
    let spec = &conv.pool_spec;
    let strides = spec.strides();
    let stride = strides[0];
    if conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.kernel_shape.as_slice() != [3, 3]
        || strides.len() != 2
        || strides[1] != stride
        || !(1..=2).contains(&stride)
        || spec
            .dilations
            .as_ref()
            .is_some_and(|d| d.iter().any(|&d| d != 1))
    {
        return None;
    }
    let padding = spec.computed_padding(&hw);
    if padding.iter().any(|p| p.pad_before != 1 || p.pad_after > 2) {
        return None;
    }
    Some((stride, [padding[0].pad_after, padding[1].pad_after]))
}

/// A 3x3 window, padded by 1 before the input on both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Window3x3 {
    /// 1 or 2, on both axes.
    pub stride: usize,
    /// Rows and columns of padding after the input (the output size follows from them).
    pub pad_after: [usize; 2],
    /// NCHW with N = 1; else CHW.
    pub batch_axis: bool,
}

impl Window3x3 {
    /// The window of `conv` at `node` if it is a 3x3 f32 convolution of a concrete (N)CHW
    /// input with OIHW kernel, no dilation, stride 1 or 2 on both axes and padding 1 before.
    pub fn of(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let batch_axis = match conv.pool_spec.data_format {
            DataFormat::NCHW => true,
            DataFormat::CHW => false,
            _ => return Ok(None),
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let hw = match (batch_axis, input.shape.as_concrete()) {
            (true, Some(&[1, _, h, w])) | (false, Some(&[_, h, w])) => [h, w],
            _ => return Ok(None),
        };
        if input.datum_type != f32::datum_type() {
            return Ok(None);
        }
        Ok(
            stride_and_padding(conv, hw).map(|(stride, pad_after)| Window3x3 {
                stride,
                pad_after,
                batch_axis,
            }),
        )
    }

    /// Height and width of an input shape with `channels` channels.
    pub fn input_hw(&self, shape: &[usize], channels: usize) -> TractResult<[usize; 2]> {
        match (self.batch_axis, shape) {
            (true, &[1, c, h, w]) | (false, &[c, h, w]) if c == channels => Ok([h, w]),
            _ => bail!(
                "3x3 convolution expects {}{channels} channels, got {shape:?}",
                if self.batch_axis { "1x" } else { "" },
            ),
        }
    }

    pub fn output_hw(&self, [h, w]: [usize; 2]) -> TractResult<[usize; 2]> {
        let out = |size: usize, after: usize| -> TractResult<usize> {
            ensure!(
                size + 1 + after >= 3,
                "3x3 convolution: input {size} too small"
            );
            Ok((size + 1 + after - 3) / self.stride + 1)
        };
        Ok([out(h, self.pad_after[0])?, out(w, self.pad_after[1])?])
    }

    pub fn output_shape(&self, channels: usize, [oh, ow]: [usize; 2]) -> TVec<usize> {
        if self.batch_axis {
            tvec![1, channels, oh, ow]
        } else {
            tvec![channels, oh, ow]
        }
    }

    /// The output fact for an input fact with `channels` channels.
    pub fn output_fact(
        &self,
        input: &TypedFact,
        in_channels: usize,
        out_channels: usize,
    ) -> TractResult<TypedFact> {
        let shape = input
            .shape
            .as_concrete()
            .ok_or_else(|| format_err!("3x3 convolution needs a concrete input shape"))?;
        let hw = self.output_hw(self.input_hw(shape, in_channels)?)?;
        Ok(f32::fact(self.output_shape(out_channels, hw)))
    }
}

/// The maps one run of a 3x3 operator reads and writes, and the column taps of its rows.
pub(crate) struct Maps<'a, S: Simd> {
    /// `in_channels x h x w`.
    pub input: &'a [f32],
    pub hw: [usize; 2],
    /// `out_channels x oh x ow`, uninitialised: the kernel writes every value.
    pub out: &'a mut [f32],
    pub out_hw: [usize; 2],
    /// Per block of `S::LANES` output columns, made for `w`, `ow` and the window's stride.
    pub taps: &'a [[Tap<S>; 3]],
}

/// A 3x3 operator's kernel over whole maps, written over [`Simd`]; `run` must be
/// `#[inline(always)]` (see `simd.rs`).
pub(crate) trait WindowKernel {
    /// Writes every value of `maps.out`.
    ///
    /// # Safety
    /// Runs only where `S` does; `maps` are as [`Maps`] says and every output's window starts
    /// inside or one before the input, which [`Window3x3::output_hw`] ensures.
    unsafe fn run<S: Simd>(&self, maps: Maps<'_, S>);
}

impl Window3x3 {
    /// `op`'s kernel, compiled for `isa`, run on `input` (`channels[0]` channels) into a new map
    /// of `channels[1]` channels.
    pub fn eval<O: WindowKernel>(
        &self,
        op: &O,
        isa: Isa,
        input: &TValue,
        [in_channels, out_channels]: [usize; 2],
    ) -> TractResult<TValue> {
        let [h, w] = self.input_hw(input.shape(), in_channels)?;
        let [oh, ow] = self.output_hw([h, w])?;
        let shape = self.output_shape(out_channels, [oh, ow]);
        map_f32(input, &shape, |input, out| {
            ensure!(input.len() == in_channels * h * w && out.len() == out_channels * oh * ow);
            ensure!(isa.supported(), "{isa:?} is not supported here");
            let columns = ColumnBlocks::new(w, ow, self.stride, isa.lanes());
            let run = Run {
                op,
                columns: &columns,
                input,
                hw: [h, w],
                out,
                out_hw: [oh, ow],
            };
            // Safety: the CPU supports the instruction set (checked above); the maps' sizes
            // were checked above and `columns` made for them with the stride and the lanes;
            // `output_hw` made the output sizes.
            unsafe { isa.run(run) };
            Ok(())
        })
    }
}

/// [`WindowKernel::run`] with the taps of `columns` built for the instruction set.
struct Run<'a, O> {
    op: &'a O,
    columns: &'a ColumnBlocks,
    input: &'a [f32],
    hw: [usize; 2],
    out: &'a mut [f32],
    out_hw: [usize; 2],
}

impl<O: WindowKernel> Kernel for Run<'_, O> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        let taps = self.columns.taps::<S>();
        self.op.run::<S>(Maps {
            input: self.input,
            hw: self.hw,
            out: self.out,
            out_hw: self.out_hw,
            taps: &taps,
        });
    }
}

/// Replaces every convolution for which `build` gives an operator (given its window), and the
/// ReLU that is its only reader when there is a `fuse_relu` to take one into the operator;
/// returns how many.
pub(crate) fn substitute<O: TypedOp>(
    model: &mut TypedModel,
    name: &str,
    build: impl Fn(&TypedModel, &TypedNode, &Conv, Window3x3) -> TractResult<Option<O>>,
    fuse_relu: Option<fn(&mut O)>,
) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some(window) = Window3x3::of(model, node, conv)? else {
            continue;
        };
        let Some(mut op) = build(model, node, conv, window)? else {
            continue;
        };
        let relu = match fuse_relu {
            Some(fuse) => relu_after(model, id)?.inspect(|_| fuse(&mut op)),
            None => None,
        };
        let mut patch = TypedModelPatch::new(name);
        let input = patch.tap_model(model, node.inputs[0])?;
        let wire = patch.wire_node(&node.name, op, &[input])?[0];
        patch.shunt_outside(model, relu.unwrap_or(id).into(), wire)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// Lanes `lo..hi` of a 32-lane mask (empty when `hi <= lo`).
pub(crate) fn lanes(lo: isize, hi: isize) -> u32 {
    let (lo, hi) = (lo.clamp(0, 32) as u32, hi.clamp(0, 32) as u32);
    if hi <= lo {
        return 0;
    }
    let upto = |n: u32| if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
    upto(hi) & !upto(lo)
}

/// Per block of `lanes` output columns (one vector), per tap column `dx`: the lanes whose input
/// columns lie in the row (bit j for the value at `first + j`, `2 * lanes` of them for stride
/// 2), and `first`, the input column of the block's first output for that tap. The same for
/// every row and channel.
struct ColumnBlocks {
    pub lanes: usize,
    pub blocks: Vec<[(u32, isize); 3]>,
}

impl ColumnBlocks {
    pub fn new(w: usize, ow: usize, stride: usize, lanes_per_block: usize) -> ColumnBlocks {
        let (w, s) = (w as isize, stride as isize);
        let blocks = (0..ow)
            .step_by(lanes_per_block)
            .map(|x0| {
                let n = (ow - x0).min(lanes_per_block) as isize;
                std::array::from_fn(|dx| {
                    let first = s * x0 as isize + dx as isize - 1;
                    (lanes(-first, (w - first).min(s * n)), first)
                })
            })
            .collect();
        ColumnBlocks {
            lanes: lanes_per_block,
            blocks,
        }
    }

    /// The blocks' taps as masks of `S` (built once per run: AVX2 masks take a few
    /// instructions each).
    ///
    /// # Safety
    /// Runs only where `S` does; `S::LANES == self.lanes`.
    #[inline(always)]
    pub unsafe fn taps<S: Simd>(&self) -> Vec<[Tap<S>; 3]> {
        debug_assert_eq!(self.lanes, S::LANES);
        let mut taps = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            taps.push([Tap::new(block[0]), Tap::new(block[1]), Tap::new(block[2])]);
        }
        taps
    }
}

/// One tap column of a column block: the lanes of the first and (stride 2) second vector that
/// lie in the row, and the input column of the block's first output.
pub(crate) struct Tap<S: Simd> {
    pub lo: S::Mask,
    pub hi: S::Mask,
    pub first: isize,
}

impl<S: Simd> Tap<S> {
    /// # Safety
    /// Runs only where `S` does.
    #[inline(always)]
    unsafe fn new((bits, first): (u32, isize)) -> Self {
        Tap {
            lo: S::mask(bits),
            hi: S::mask(bits >> S::LANES),
            first,
        }
    }
}

impl<S: Simd> Clone for Tap<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: Simd> Copy for Tap<S> {}

/// The `S::LANES` values of `row` one tap of a column block reads: contiguous for stride 1,
/// every other of `2 * S::LANES` for stride 2; zero where the tap's masks say the column lies
/// outside the row.
///
/// # Safety
/// Runs only where `S` does; the lanes set in the masks address values of `row`'s allocation.
#[inline(always)]
pub(crate) unsafe fn load_columns<S: Simd>(row: *const f32, tap: &Tap<S>, stride: usize) -> S::F {
    let at = row.wrapping_offset(tap.first);
    if stride == 1 {
        S::load_masked(at, tap.lo)
    } else {
        let lo = S::load_masked(at, tap.lo);
        let hi = S::load_masked(at.wrapping_add(S::LANES), tap.hi);
        S::even(lo, hi)
    }
}

/// Stores the first `n` lanes of `v` at `p`: a plain store for a whole vector (AVX2's masked
/// store is microcoded on AMD, about ten times slower), a masked one for a row's last block.
///
/// # Safety
/// Runs only where `S` does; `p` addresses `min(n, S::LANES)` writable values.
#[inline(always)]
pub(crate) unsafe fn store_columns<S: Simd>(p: *mut f32, n: usize, v: S::F) {
    if n >= S::LANES {
        S::store(p, v);
    } else {
        S::store_masked(p, S::mask(lanes(0, n as isize)), v);
    }
}
