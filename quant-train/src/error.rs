//! The error type of the training loop.

use quant_core::GraphError;
use quant_core::data::DataError;
use quant_kernels::integer::IntError;
use quant_kernels::session::ExecError;
use quant_passes::PassError;
use quant_passes::lower::LowerError;
use quant_passes::passes::optimizer::OptimizerError;

/// Why building a training graph, training or evaluating failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A named tensor or node is not in the graph.
    #[error("{what} '{name}' is not in the graph")]
    Missing {
        /// What was looked for (`logits`, `input`, ...).
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// The loss has no gradient with respect to any variable.
    #[error("the loss '{loss}' does not depend on any trainable variable")]
    NothingToTrain {
        /// The loss tensor.
        loss: String,
    },
    /// The loss became NaN or infinite.
    #[error("the loss is {loss} at step {step}: training diverged (try a lower learning rate)")]
    NonFiniteLoss {
        /// The global step of the failing update.
        step: u64,
        /// The value.
        loss: f32,
    },
    /// A fetched tensor had an unexpected dtype or shape.
    #[error("'{name}': {message}")]
    BadOutput {
        /// The tensor.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Editing the graph failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The gradients pass failed.
    #[error(transparent)]
    Pass(#[from] PassError),
    /// The optimizer could not be added.
    #[error(transparent)]
    Optimizer(#[from] OptimizerError),
    /// The executor failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The data could not be read or batched.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The eval graph could not be lowered to integer ops.
    #[error(transparent)]
    Lower(#[from] LowerError),
    /// The integer executor failed.
    #[error(transparent)]
    Integer(#[from] IntError),
}
