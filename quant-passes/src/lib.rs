//! # quant-passes
//!
//! Rewrite passes over [`quant_core::Graph`]s.
//!
//! Built so far:
//!
//! - [`Pass`], [`PassReport`] (every applied rule with the node it was
//!   rooted at, declined candidates with the reason, counts per rule) and
//!   [`PassManager`], which validates the config, runs a pipeline and emits
//!   a `tracing` debug event per applied rule;
//! - [`QuantizeConfig`], the one options struct all passes share
//!   (reference semantics §1.1), with [`QuantizeConfig::validate`];
//! - [`FoldBatchNorms`] (`passes/fold_batch_norms.rs`): folding of fused
//!   batch norms (`FusedBatchNorm`, `FusedBatchNormV3`) after `Conv2D`,
//!   `DepthwiseConv2dNative` and `Reshape`-wrapped `MatMul`, in eval form
//!   (moving statistics) and training form (§2.4: batch statistics with
//!   `Undo_Bessel_Correction`, correction factors, `freeze_bn_delay` on
//!   the shared quantization step of [`passes::step`]), idempotent;
//! - [`FoldUnfusedBatchNorms`] (`passes/fold_unfused_batch_norms.rs`):
//!   unfused batch norms recognised by their arithmetic (decision 4), eval
//!   form;
//! - [`Quantize`] (`passes/quantize.rs`): fake-quant insertion (§3), eval
//!   and training forms (last-value and zero-debiased EMA ranges, symmetric
//!   ranges, per-channel weights, `quant_delay` as `delayed_quant` selects),
//!   idempotent; every inserted fake quant is listed in
//!   [`PassReport::quantizers`] with its [`QuantizerRole`];
//! - the public API ([`api`]): [`create_training_graph`],
//!   [`create_eval_graph`] and the experimental variants with
//!   [`TrainingOptions`]/[`EvalOptions`], running the training-op check of
//!   §1.3 ([`OPTIMIZER_OP_TYPES`], decision 2), option checks, then
//!   [`FoldBatchNorms`] and [`Quantize`];
//! - the optimizers (`passes/optimizer.rs`): [`apply_gradients`] adds SGD,
//!   momentum or Adam as `Apply*` update ops with TensorFlow 1's slot
//!   variables and names, L2 weight decay and a fed `learning_rate`
//!   ([`learning_rate_placeholder`]) that an [`LrSchedule`] sets per step;
//! - [`gradients`] (`passes/gradients.rs`): reverse-mode differentiation
//!   as a graph rewrite, TensorFlow's gradient rules for the whole op
//!   vocabulary under `gradients/<node>_grad/`, with [`GradientOptions`]
//!   and [`trainable_variables`];
//! - [`lower`] (`lower/`): [`lower_to_integer`] turns an eval graph and its
//!   checkpoint into an integer [`quant_core::integer::IntModel`] for a
//!   [`Target`] (scales and zero points from the fake quants' float32
//!   nudging, TFLite layouts, int32 biases); [`check_lowering`] lists every
//!   problem without evaluating anything.
//! - [`patterns`]: the [`PatternRegistry`] of layer patterns the quantize
//!   pass tries in order: plugins' patterns (data: [`LayerPattern`] = a
//!   matcher pattern plus the roles of its captures; or code: a custom
//!   matcher), then the four built-in stages of §3.2, which are registry
//!   entries too. [`QuantizeWithPatterns`] and the `*_with_patterns` API
//!   entries take a registry; plugins fill it (`quant-plugin-api`).
//!
//! Not built: folding NCHW layers (an NVIDIA-fork extension; such layers
//! are declined with a report entry), and a pattern registry for lowering
//! (plugin op types lower to `CUSTOM` ops one op at a time).
//!
//! ```
//! use quant_core::models::{mnist_cnn, ModelOptions};
//! use quant_passes::{FoldBatchNorms, PassManager, QuantizeConfig};
//! let mut graph = mnist_cnn(ModelOptions::default()).unwrap();
//! let pipeline = PassManager::new().with(FoldBatchNorms);
//! let report = pipeline.run(&mut graph, &QuantizeConfig::eval()).unwrap();
//! assert_eq!(report.count("fold_fused_batch_norm"), 2);
//! assert!(graph.by_name("conv1/Conv2D_Fold").is_some());
//! ```
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod error;
pub mod lower;
pub mod pass;
pub mod passes;
pub mod patterns;
pub mod target;

pub use api::{
    ApiError, EvalOptions, OPTIMIZER_OP_TYPES, TrainingOptions, create_eval_graph,
    create_training_graph, experimental_create_eval_graph, experimental_create_training_graph,
};
pub use config::QuantizeConfig;
pub use error::{ConfigError, PassError};
pub use lower::{LowerError, LowerOptions, check_lowering, lower_to_integer};
pub use pass::{
    AppliedRule, InsertedQuantizer, Pass, PassManager, PassReport, QuantizerRole, SkippedRule,
};
pub use passes::gradients::{
    GradientOptions, gradients, gradients_with_seeds, trainable_variables,
};
pub use passes::optimizer::{
    LrSchedule, OptimizerConfig, OptimizerError, OptimizerKind, TrainOp, apply_gradients,
    learning_rate_placeholder,
};
pub use passes::{
    FoldBatchNorms, FoldUnfusedBatchNorms, Quantize, QuantizeWithPatterns, quantized_value,
};
pub use patterns::{LayerPattern, PatternRegistry, PatternRegistryError, RoleNames};
pub use target::{Storage, Target, TargetError, TargetRegistry};
