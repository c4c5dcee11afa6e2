//! The rewrite passes, one per file.

pub mod fold_batch_norms;
pub mod fold_unfused_batch_norms;
mod folding;
pub mod gradients;
pub(crate) mod layer_patterns;
mod names;
pub mod optimizer;
pub mod quantize;
pub mod step;

pub use fold_batch_norms::FoldBatchNorms;
pub use fold_unfused_batch_norms::FoldUnfusedBatchNorms;
pub use quantize::{Quantize, QuantizeWithPatterns, quantized_value};
