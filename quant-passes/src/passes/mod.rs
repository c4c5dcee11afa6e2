//! The rewrite passes, one per file.

pub mod fold_batch_norms;
mod names;
pub mod quantize;

pub use fold_batch_norms::FoldBatchNorms;
pub use quantize::Quantize;
