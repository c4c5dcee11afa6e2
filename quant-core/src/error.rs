//! Typed errors of quant-core.

use crate::dtype::DType;
use std::path::PathBuf;

/// A problem with tensor data.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TensorError {
    /// The number of values does not match the shape.
    #[error("shape {shape:?} expects {expected} values, found {found}")]
    LengthMismatch {
        /// The declared shape.
        shape: Vec<usize>,
        /// Values the shape needs.
        expected: usize,
        /// Values present.
        found: usize,
    },
    /// The number of bytes does not match the shape.
    #[error("{dtype} tensor of shape {shape:?} needs {expected} bytes, found {found}")]
    ByteLengthMismatch {
        /// Element type.
        dtype: DType,
        /// The declared shape.
        shape: Vec<usize>,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The tensor holds another element type than the one asked for.
    #[error("expected a {expected} tensor, found {found}")]
    WrongDType {
        /// The type asked for.
        expected: DType,
        /// The type held.
        found: DType,
    },
    /// The dtype cannot hold tensor data.
    #[error("dtype {0} cannot hold tensor data")]
    UnsupportedDType(DType),
    /// Any other inconsistency.
    #[error("{0}")]
    Invalid(String),
}

/// A structural problem in a graph, always naming the node at fault.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum GraphError {
    /// Two nodes share a name.
    #[error("duplicate node name '{0}'")]
    DuplicateName(String),
    /// A node name was looked up and not found.
    #[error("no node named '{0}'")]
    UnknownNode(String),
    /// An input refers to a node that does not exist.
    #[error("node '{node}': input {index} refers to '{input}', which is not in the graph")]
    DanglingInput {
        /// The consuming node.
        node: String,
        /// Position of the input.
        index: usize,
        /// The reference as written.
        input: String,
    },
    /// An input refers to an output slot the producer does not have.
    #[error(
        "node '{node}': input {index} refers to output {slot} of '{producer}', which has {outputs} outputs"
    )]
    BadOutputSlot {
        /// The consuming node.
        node: String,
        /// Position of the input.
        index: usize,
        /// The producer.
        producer: String,
        /// The slot referenced.
        slot: usize,
        /// Outputs the producer has.
        outputs: usize,
    },
    /// An input reference is not of the form `name`, `name:k` or `^name`.
    #[error("node '{node}': malformed input reference '{input}'")]
    MalformedInput {
        /// The consuming node.
        node: String,
        /// The reference as written.
        input: String,
    },
    /// The graph has a cycle through this node.
    #[error("the graph has a cycle through node '{0}'")]
    Cycle(String),
    /// A known op got the wrong number of inputs.
    #[error("node '{node}': op {op} takes {expected} inputs, found {found}")]
    Arity {
        /// The node.
        node: String,
        /// Its op type.
        op: String,
        /// What the op takes, in words.
        expected: String,
        /// Inputs present.
        found: usize,
    },
    /// An attribute is missing or has the wrong type or value.
    #[error("node '{node}': attribute '{attr}': {message}")]
    Attr {
        /// The node.
        node: String,
        /// The attribute name.
        attr: String,
        /// What is wrong.
        message: String,
    },
    /// Shape or dtype inference found an inconsistency.
    #[error("node '{node}' ({op}): {message}")]
    Inference {
        /// The node.
        node: String,
        /// Its op type.
        op: String,
        /// What is inconsistent.
        message: String,
    },
    /// A tensor held by a node is invalid.
    #[error("node '{node}': {source}")]
    Tensor {
        /// The node.
        node: String,
        /// The tensor problem.
        source: TensorError,
    },
}

/// A failure to read or write a file (graph, checkpoint, GraphDef), naming the file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file's contents are malformed.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its location where known.
        message: String,
    },
    /// The file parsed but describes an invalid graph.
    #[error("{path}: {source}")]
    Graph {
        /// The file.
        path: PathBuf,
        /// The graph problem.
        source: GraphError,
    },
}
