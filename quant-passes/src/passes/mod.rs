//! The rewrite passes, one per file.

pub mod fold_batch_norms;

pub use fold_batch_norms::FoldBatchNorms;
