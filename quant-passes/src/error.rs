//! Typed errors of the passes and of their configuration.

use quant_core::GraphError;

/// A [`QuantizeConfig`](crate::QuantizeConfig) that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A bit width outside `2..=16` (the fake-quant kernel's range).
    #[error("{which} = {bits} is out of range: bit widths must be in 2..=16")]
    Bits {
        /// `weight_bits` or `activation_bits`.
        which: &'static str,
        /// The value given.
        bits: u32,
    },
    /// `freeze_bn_delay` only applies to the training rewrite.
    #[error(
        "freeze_bn_delay = {0} is set but is_training is false: batch norms are only frozen in training graphs"
    )]
    FreezeWithoutTraining(i64),
    /// A negative delay.
    #[error("{which} = {value} is negative")]
    NegativeDelay {
        /// `quant_delay` or `freeze_bn_delay`.
        which: &'static str,
        /// The value given.
        value: i64,
    },
}

/// A pass that could not rewrite the graph. Every variant names the node at fault.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The configuration was refused before any pass ran.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A graph edit or a shape inference failed while rewriting `node`.
    #[error("pass {pass}: while rewriting '{node}': {source}")]
    Graph {
        /// The pass.
        pass: &'static str,
        /// The node being rewritten.
        node: String,
        /// The underlying error.
        source: GraphError,
    },
    /// The graph needs a form of the rewrite that is not built yet.
    #[error("pass {pass}: '{node}': {message}")]
    Unsupported {
        /// The pass.
        pass: &'static str,
        /// The node at fault.
        node: String,
        /// What is not supported.
        message: String,
    },
    /// An op on the path between the requested tensors has no gradient rule.
    #[error("pass {pass}: '{node}': no gradient is defined for op {op}")]
    NoGradient {
        /// The pass.
        pass: &'static str,
        /// The node at fault.
        node: String,
        /// Its op type.
        op: String,
    },
    /// A rewrite needs a static shape the graph does not know.
    #[error("pass {pass}: '{node}': a static shape is needed: {what}")]
    UnknownShape {
        /// The pass.
        pass: &'static str,
        /// The node being rewritten.
        node: String,
        /// Which shape is unknown.
        what: String,
    },
    /// A layer pattern's code matcher failed.
    #[error("pass {pass}: layer pattern `{pattern}` failed: {message}")]
    Matcher {
        /// The pass.
        pass: &'static str,
        /// The pattern's registry name.
        pattern: String,
        /// What the matcher reported.
        message: String,
    },
    /// A quantizer was inserted after `producer`, but fewer inputs of the
    /// listed consumers read it than there are consumers (the original's
    /// `ValueError: No inputs quantized for ops`).
    #[error("pass {pass}: no inputs quantized for ops: [{}] (quantizing '{producer}')", consumers.join(", "))]
    NoInputsQuantized {
        /// The pass.
        pass: &'static str,
        /// The op whose output was being quantized.
        producer: String,
        /// The consumers that were to read the quantizer.
        consumers: Vec<String>,
    },
}
