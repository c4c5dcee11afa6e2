//! Lowering an eval graph to integer ops for a hardware target.
//!
//! [`lower_to_integer`] reads the fake quants of an eval graph (the output
//! of `create_eval_graph`) and builds an [`IntModel`]: TFLite-shaped integer
//! ops whose tensors carry the scales and zero points the fake quants
//! simulated. [`check_lowering`] reports every problem at once without
//! evaluating anything.
//!
//! # What maps to what
//!
//! | eval graph | integer op |
//! |---|---|
//! | `Conv2D` / `DepthwiseConv2dNative` / `MatMul` reading fake-quantized weights, + optional constant bias (`Add`/`AddV2`/`BiasAdd`, e.g. the folded batch norm's `add_fold`), + optional `Relu`/`Relu6`, ended by a fake quant | `CONV_2D` / `DEPTHWISE_CONV_2D` / `FULLY_CONNECTED` with a fused activation; output parameters from that fake quant |
//! | `Add`/`AddV2` or `Mul` of two computed tensors of the same shape [+ `Relu`/`Relu6`] ended by a fake quant | `ADD` or `MUL` |
//! | `MaxPool`, `AvgPool`, `Reshape`, `Pad` | `MAX_POOL_2D`, `AVERAGE_POOL_2D`, `RESHAPE`, `PAD`: output parameters copied from the input |
//! | `Mean` | `MEAN`: output parameters from a following fake quant, else the input's |
//! | `ConcatV2` | `CONCATENATION`: output parameters from a following fake quant, else the input's when they all agree, else their union range; int8 inputs with other parameters are requantized first |
//! | `Softmax`, `Sigmoid` | `SOFTMAX`, `LOGISTIC` with the fixed output `(1/256, 0)` (uint8) or `(1/256, −128)` (int8) |
//! | a fake quant after an op whose output parameters are fixed or copied, and that disagrees with them | `QUANTIZE` (requantize) |
//! | an op type the target lists in [`Target::ops`] and that has no builtin lowering (a plugin's, e.g. `HardSwish`), ended by a fake quant | `CUSTOM` ([`IntOpKind::Custom`](quant_core::integer::IntOpKind::Custom), named after the op type): inputs quantized with their own parameters, output parameters from that fake quant; the integer kernel comes from the plugin |
//!
//! `Identity` ops are looked through, and so are the `delayed_quant`
//! selects of a `quant_delay` (the deployed model is the quantized branch).
//!
//! # Numbers
//!
//! * Scales and zero points: the float32 nudging of the fake-quant kernel
//!   ([`params`], decision 1). int8 values and zero points are the uint8
//!   levels minus 128.
//! * Weights: the level the fake-quant forward computes for each element,
//!   so the dequantized integer weights equal the fake-quantized float
//!   weights bit for bit. Layouts are TFLite's: conv HWIO → OHWI, depthwise
//!   `[kh,kw,in,mult]` → `[1,kh,kw,in·mult]`, matmul `[in,units]` →
//!   `[units,in]` (a `transpose_b` matmul is already `[units,in]`).
//!   Per-channel axes are 0, 3 and 0.
//! * Biases: int32, zero point 0, scale `S_in · S_w[c]` (a float32
//!   product), value `round_half_away(b / scale)` in double.
//! * Inputs: a fake quant right after a graph input gives its parameters;
//!   otherwise [`LowerOptions::input_ranges`] must give a range.
//!
//! # Names
//!
//! Tensors are named after the graph nodes whose values they carry: a
//! layer's or add's output after the fake quant that ends it (e.g.
//! `conv1/act_quant/FakeQuantWithMinMaxVars`), weights after their fake
//! quant, biases after their bias node (`<layer>/zero_bias` when the graph
//! has none), data-movement ops after themselves, constant operands
//! `<op>/shape`, `<op>/axes`, `<op>/paddings`. With float I/O the model's
//! float input takes the placeholder's name (its quantized twin
//! `<input>/quantize`) and each float output the name given in
//! [`LowerOptions::outputs`] (`<name>/dequantize` if a tensor already has
//! that name).
//!
//! # Target rules
//!
//! Ops and fused activations must be in [`Target::ops`] (TFLite builtin
//! names, and for custom ops the op type itself,
//! [`Target::supports_custom_op`]) and
//! [`Target::fused_activations`]; per-channel weights only where
//! [`Target::per_channel_weights`]. int8 weights must have zero point 0: a
//! weight range that nudges elsewhere is refused with
//! [`LowerError::AsymmetricWeights`] (train with
//! [`Target::training_options`], which sets symmetric weights), unless
//! [`LowerOptions::requantize_weights`] is set. Then every channel of such a
//! weight tensor is requantized on the symmetric narrow range `[−m, m]`,
//! `m = max(|min|, |max|)` of its trained range, from the float weights the
//! fake quant reads; the integer model then no longer computes exactly what
//! training simulated for that layer.

mod emit;
pub mod params;
mod patterns;

use crate::target::Target;
use quant_core::integer::IntModel;
use quant_core::{Graph, OutletId, Tensor};
use thiserror::Error;

/// Options of [`lower_to_integer`] and [`check_lowering`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LowerOptions {
    /// The graph inputs (`Placeholder` names), in the order the model takes
    /// them. Empty: every `Placeholder`, in graph order.
    pub inputs: Vec<String>,
    /// The nodes whose values the model returns, in order (required). A
    /// name may be a fake quant or the float op whose value a fake quant
    /// quantizes (e.g. `logits/BiasAdd`).
    pub outputs: Vec<String>,
    /// `(input, min, max)`: the range of an input that no fake quant
    /// follows (e.g. `("input", 0.0, 1.0)` for MNIST pixels), nudged as an
    /// 8-bit activation range.
    pub input_ranges: Vec<(String, f32, f32)>,
    /// Integer inputs and outputs. `false`: float I/O, with a `QUANTIZE`
    /// after each input and a `DEQUANTIZE` before each output.
    pub integer_io: bool,
    /// Requantize int8 weights whose trained range is not symmetric instead
    /// of refusing them (see the module docs).
    pub requantize_weights: bool,
}

/// Why a graph cannot be lowered. Every variant names the node at fault.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum LowerError {
    /// [`LowerOptions::outputs`] is empty.
    #[error("no outputs given: name the nodes the model returns in LowerOptions::outputs")]
    NoOutputs,
    /// An input, output or input range names no suitable node.
    #[error("{what} `{name}`: {reason}")]
    BadName {
        /// Which option (`input`, `output`, `input range`).
        what: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor the integer model needs has no quantization range.
    #[error("`{node}` has no quantization range: {hint}")]
    MissingRange {
        /// The node whose value is not quantized.
        node: String,
        /// How to give it one.
        hint: String,
    },
    /// An op, or a form of it, that lowering does not handle.
    #[error("`{node}` ({op}) cannot be lowered: {reason}")]
    UnsupportedOp {
        /// The node.
        node: String,
        /// Its op type.
        op: String,
        /// Why.
        reason: String,
    },
    /// The target does not run the integer op this node needs.
    #[error("`{node}` needs the integer op {op}, which target `{target}` does not run")]
    IllegalOp {
        /// The node.
        node: String,
        /// The TFLite op name.
        op: String,
        /// The target.
        target: String,
    },
    /// The target does not fuse this activation.
    #[error(
        "`{node}` needs the fused activation {activation:?}, which target `{target}` does not support"
    )]
    IllegalActivation {
        /// The activation node.
        node: String,
        /// The activation.
        activation: quant_core::integer::Activation,
        /// The target.
        target: String,
    },
    /// Per-channel weights on a target without them.
    #[error(
        "`{node}` quantizes weights per channel, which target `{target}` does not support: rewrite with the target's eval options"
    )]
    PerChannelNotSupported {
        /// The weight fake quant.
        node: String,
        /// The target.
        target: String,
    },
    /// int8 weights whose range does not nudge to zero point 0.
    #[error(
        "`{node}`: the weight range of channel {channel} nudges to int8 zero point {zero_point}, but int8 weights must be symmetric (zero point 0); train with symmetric weights (Target::training_options / eval_options) or set LowerOptions::requantize_weights"
    )]
    AsymmetricWeights {
        /// The weight fake quant.
        node: String,
        /// The first offending channel (0 for per-tensor weights).
        channel: usize,
        /// Its int8 zero point.
        zero_point: i64,
    },
    /// A fake quant with a bit width the 8-bit storage cannot hold as is.
    #[error("`{node}` quantizes to {bits} bits; integer models store 8-bit values")]
    UnsupportedBits {
        /// The fake quant.
        node: String,
        /// Its `num_bits`.
        bits: i64,
    },
    /// The values closure failed.
    #[error("evaluating `{node}`: {message}")]
    Values {
        /// The node being evaluated.
        node: String,
        /// The closure's message.
        message: String,
    },
    /// A value, range, shape or attribute is unusable.
    #[error("`{node}`: {message}")]
    BadValue {
        /// The node.
        node: String,
        /// What is wrong.
        message: String,
    },
}

/// The closure that evaluates constant subgraphs: folded weights, biases,
/// range variables. It gets outlets of the graph and returns their values
/// in order; callers pass one over a `quant_kernels::session::Session`
/// with the checkpoint restored.
pub type Values<'a> = dyn FnMut(&[OutletId]) -> Result<Vec<Tensor>, String> + 'a;

/// Lowers the eval graph `graph` to an integer model for `target`.
///
/// `values` evaluates constant subgraphs (weights, biases, ranges); see the
/// module docs for what maps to what. Returns the first problem found; use
/// [`check_lowering`] to list them all.
pub fn lower_to_integer(
    graph: &Graph,
    target: &Target,
    options: &LowerOptions,
    values: &mut Values<'_>,
) -> Result<IntModel, LowerError> {
    let mut lowerer = emit::Lowerer::new(graph, target, options, Some(values));
    lowerer.run();
    lowerer.finish()
}

/// Every problem [`lower_to_integer`] would meet on `graph` that can be seen
/// without evaluating values (unsupported or illegal ops and activations,
/// missing ranges, per-channel weights on a per-tensor target, bad names).
/// Value-dependent problems (asymmetric int8 weights, degenerate ranges,
/// bias overflow) are only found by lowering.
pub fn check_lowering(graph: &Graph, target: &Target, options: &LowerOptions) -> Vec<LowerError> {
    let mut lowerer = emit::Lowerer::new(graph, target, options, None);
    lowerer.run();
    lowerer.into_errors()
}
