//! # quant-core
//!
//! The foundation of quant: the graph IR every other crate reads and
//! rewrites.
//!
//! - [`Graph`]: named nodes in creation order, wires between output slots
//!   ([`OutletId`]) and input slots, cached consumers, topological order,
//!   validation and editing (insert between a producer and chosen
//!   consumers, reroute, remove dead nodes, unique names).
//! - [`Tensor`]: ndarray-backed values (f32, f64, i32, i64, u8, i8, bool)
//!   with optional quantization parameters.
//! - [`ops`]: the op vocabulary with TensorFlow's names and layouts; each op
//!   declares its attributes and infers output dtypes and shapes.
//! - [`matcher`]: the pattern matcher the rewrite passes use.
//! - [`serialize`]: quant's graph JSON and safetensors checkpoints.
//! - [`import`]: TensorFlow GraphDef (`.pb`, `.pbtxt`) import.
//! - [`data`]: IDX files and the MNIST data set, shuffled and batched.
//! - [`builder`] and [`models`]: building graphs in Rust, and the built-in
//!   example models.
//!
//! quant-core knows nothing of passes, kernels or TFLite.
//!
//! ```
//! use quant_core::{builder::GraphBuilder, DType, Shape};
//! let mut b = GraphBuilder::new();
//! let x = b.placeholder("x", DType::F32, Shape(vec![None, Some(4)])).unwrap();
//! let y = b.relu6("act", x).unwrap();
//! let graph = b.finish();
//! assert_eq!(graph.fact(y).shape, Some(Shape(vec![None, Some(4)])));
//! ```
#![warn(missing_docs)]

pub mod attr;
pub mod builder;
pub mod data;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod import;
pub mod integer;
pub mod matcher;
pub mod models;
pub mod ops;
pub mod serialize;
pub mod shape;
pub mod tensor;

pub use attr::{AttrKind, AttrName, AttrValue, Attrs, attrs};
pub use dtype::DType;
pub use error::{GraphError, IoError, TensorError};
pub use graph::{Graph, InletId, NewNode, Node, NodeId, NodeMap, NodeSet, OutletId, OutputFact};
pub use ops::{OpRegistry, OpSpec};
pub use shape::{Dim, Shape};
pub use tensor::{Element, QuantParams, Tensor, TensorData};
