//! The tract operators and SIMD kernels that make both models fast, and the graph rewrites
//! that bring them in. The pipeline sees only [`model`]: it reads and checks an ONNX file and
//! optimises it, swapping layers for ours where the CPU runs AVX-512 or AVX2 ([`simd`]), and
//! leaving everything else to tract.
//!
//! Which layer each operator takes (in the order `model::optimise` applies them):
//!
//! | module | takes | models |
//! |---|---|---|
//! | [`transpose`] | every kernel transposed, for portrait photos | detector |
//! | [`narrow_conv3x3`] | 3x3 over few input channels per group: first layers, grouped, narrow | both |
//! | [`grouped_conv`] | grouped (not depthwise) 3x3, and strided depthwise without SIMD | recogniser, fallback |
//! | [`sibling_convs`] | convolutions reading one map with one geometry, merged (SCRFD's heads) | detector |
//! | [`nearest_upsample`] | nearest `Resize` by an integer factor, to tract's fast upsample | detector |
//! | [`channel_last::pointwise`] | 1x1 layers on channel-last maps, packing-free | both |
//! | [`channel_last::conv3x3`] | the heads' 3x3 layers, channel-last | detector |
//! | [`pointwise_conv`] | 1x1 layers with few inputs or few outputs, from planes | detector |
//! | [`channel_last::depthwise`] | the widest depthwise layers moved channel-last (tract's loop) | detector |
//! | [`depthwise3x3`] | 3x3 depthwise, stride 1 or 2, with its ReLU | detector |
//! | [`prelu`] | ONNX `PRelu` in one pass instead of three nodes | recogniser |
//!
//! Shared pieces: [`rewrite`] (reading constant kernels and biases, finding the bias add or
//! ReLU to absorb), [`window3x3`] (the geometry and column loads of 3x3 windows), [`simd`]
//! (vectors written once, compiled per instruction set).
//!
//! Every operator is tested twice, in its own `mod tests`: its kernel against the definition
//! (a plain loop over the convolution's formula) on every instruction set the CPU has, at the
//! edges and with partial vectors; and a small graph run by tract with and without the
//! substitution ([`graph_testing`]), which also checks which layers are taken and which are
//! not. The engine's reference tests (`crate::tests`) then compare whole models with
//! onnxruntime's outputs.
//!
//! To add an operator: a module here with the op (tract's `Op`, `EvalOp`, `TypedOp`), its
//! kernel over [`simd::Simd`], a `substitute(model, isa)` that patches the layers it takes, the
//! two kinds of test above, and one line in `model::optimise`; then `facepass bench --ops`
//! before and after, alternated, with the numbers in docs/PERFORMANCE.md.

pub(crate) mod channel_last;
pub(crate) mod depthwise3x3;
#[cfg(test)]
pub(crate) mod graph_testing;
pub(crate) mod grouped_conv;
pub(crate) mod model;
pub(crate) mod narrow_conv3x3;
pub(crate) mod nearest_upsample;
pub(crate) mod pointwise_conv;
pub(crate) mod prelu;
pub(crate) mod rewrite;
pub(crate) mod sibling_convs;
pub(crate) mod simd;
pub(crate) mod transpose;
pub(crate) mod window3x3;
