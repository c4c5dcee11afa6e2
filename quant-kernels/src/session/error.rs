//! Errors of the executor, each naming the node at fault.

use quant_core::{GraphError, IoError};

/// A failure to run a graph.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No kernel is registered for the node's op type.
    #[error("node '{node}': no kernel for op type {op}")]
    UnknownOp {
        /// The node.
        node: String,
        /// Its op type.
        op: String,
    },
    /// A placeholder the fetches need was not fed.
    #[error("node '{0}': placeholder needs a feed")]
    MissingFeed(String),
    /// A feed does not fit its placeholder.
    #[error("feed '{node}': {message}")]
    BadFeed {
        /// The fed node.
        node: String,
        /// What does not fit.
        message: String,
    },
    /// A feed or fetch names no node or output.
    #[error("{0}")]
    BadName(String),
    /// A kernel refused its inputs.
    #[error("node '{node}' ({op}): {message}")]
    Kernel {
        /// The node.
        node: String,
        /// Its op type.
        op: String,
        /// What went wrong.
        message: String,
    },
    /// A variable assignment or checkpoint does not fit the variable.
    #[error("variable '{name}': {message}")]
    Variable {
        /// The variable.
        name: String,
        /// What does not fit.
        message: String,
    },
    /// The graph itself is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Io(#[from] IoError),
}
