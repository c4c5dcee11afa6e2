//! # quant-train
//!
//! Training loops for quant graphs, embeddable without the CLI:
//!
//! - [`training_graph`] ([`head`]): adds a sparse softmax cross-entropy loss,
//!   the global step, the gradients (`quant_passes::passes::gradients`) and
//!   an optimizer (`quant_passes::passes::optimizer`) to a forward graph,
//!   float or rewritten by `create_training_graph`;
//! - [`Trainer`] ([`trainer`]): runs steps on `quant_kernels::Session` with
//!   a learning-rate schedule, positions the data by the global step so a
//!   restored checkpoint resumes bit for bit, and reports progress;
//! - [`evaluate`]: classification accuracy of any graph (float, fake-quant
//!   eval) over a data split;
//! - [`deploy`]: [`lower_session`] lowers a trained eval graph to an
//!   integer model with the session's variables, and [`evaluate_integer`]
//!   measures that model's accuracy on the integer executor.
//!
//! This crate sits beside `quant-tflite`: it needs both the passes (to
//! build the backward graph) and the kernels (to run it), which must not
//! depend on each other.
#![warn(missing_docs)]

pub mod deploy;
pub mod error;
pub mod head;
pub mod trainer;

pub use deploy::{evaluate_integer, lower_session};
pub use error::TrainError;
pub use head::{CROSS_ENTROPY, GLOBAL_STEP, LABELS, LOSS, TrainingGraph, training_graph};
pub use trainer::{Progress, RunSummary, StepResult, Trainer, evaluate};
