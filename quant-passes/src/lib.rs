//! # quant-passes
//!
//! Rewrite passes over [`quant_core::Graph`]s. This crate will own:
//!
//! - the `Pass` trait and the pass manager with per-rule reports;
//! - `fold_batch_norms` (training and eval forms) and `quantize`
//!   (fake-quant insertion), behind the public API `create_training_graph`,
//!   `create_eval_graph` and their experimental variants;
//! - `gradients` (reverse-mode differentiation as a graph rewrite) and the
//!   optimizers (SGD, momentum, Adam) as update ops;
//! - `lower_to_integer`: from an eval graph and its checkpoint to integer ops
//!   for a hardware target, and the pattern and target registries.
//!
//! Status: not built yet (issue 4 onward). It depends on quant-core only.
