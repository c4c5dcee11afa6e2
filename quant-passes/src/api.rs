//! The public API of reference semantics §1: `create_training_graph`,
//! `create_eval_graph` and their experimental variants.
//!
//! Every entry point, in this order:
//!
//! 1. runs the training-op check (§1.3, decision 2): a graph holding any op
//!    type of [`OPTIMIZER_OP_TYPES`] is refused with
//!    [`ApiError::TrainingOps`];
//! 2. validates the options ([`QuantizeConfig::validate`]: bit widths in
//!    `2..=16`, no negative delays, no `freeze_bn_delay` in eval), refuses a
//!    `scope` that matches no node name
//!    ([`ApiError::ScopeMatchesNothing`]);
//! 3. runs [`FoldBatchNorms`], [`FoldUnfusedBatchNorms`] (§2.5, decision 4;
//!    its training form is not built yet) then [`Quantize`](crate::passes::Quantize) through a
//!    [`PassManager`].
//!
//! Unlike the original, which returns nothing, each returns the
//! [`PassReport`] of the pipeline. The graph is rewritten on a copy that
//! replaces it only on success: on any error the graph is left as it was
//! (an error of the quantize pass does not leave a folded graph behind).
//!
//! Limits of the passes surface as [`ApiError::Pass`] with
//! [`PassError::Unsupported`] (e.g. a training-mode batch norm without its
//! moving-average updates). The folding form comes from each batch norm's
//! own `is_training` attribute: inference-mode batch norms fold in eval
//! form, training-mode ones in training form (§2.4), in both rewrites.
//!
//! ```
//! use quant_core::models::{mnist_cnn, ModelOptions};
//! let mut graph = mnist_cnn(ModelOptions::default()).unwrap();
//! let report = quant_passes::api::create_eval_graph(&mut graph).unwrap();
//! assert_eq!(report.quantizers.len(), 6);
//! ```

use crate::config::QuantizeConfig;
use crate::error::{ConfigError, PassError};
use crate::pass::{PassManager, PassReport};
use crate::passes::{FoldBatchNorms, FoldUnfusedBatchNorms, QuantizeWithPatterns};
use crate::patterns::PatternRegistry;
use quant_core::Graph;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The optimizer update op types the training-op check refuses (§1.3,
/// decision 2).
///
/// The first 47 are the original's list, in its four groups (dense,
/// resource dense, resource sparse, sparse). Decision 2 adds the update ops
/// the original misses: dense `ApplyAdadelta`, the AdaMax ops,
/// `ResourceApplyKerasMomentum` (and its sparse form),
/// `ResourceApplyAdamWithAmsgrad`, and the `AdagradV2` family. quant's own
/// optimizer pass creates `ApplyGradientDescent`, `ApplyMomentum` and
/// `ApplyAdam`, all on this list.
pub const OPTIMIZER_OP_TYPES: [&str; 57] = [
    // dense (13)
    "ApplyAdagrad",
    "ApplyAdagradDA",
    "ApplyAdam",
    "ApplyAddSign",
    "ApplyCenteredRMSProp",
    "ApplyFtrl",
    "ApplyFtrlV2",
    "ApplyGradientDescent",
    "ApplyMomentum",
    "ApplyPowerSign",
    "ApplyProximalAdagrad",
    "ApplyProximalGradientDescent",
    "ApplyRMSProp",
    // resource dense (14)
    "ResourceApplyAdadelta",
    "ResourceApplyAdagrad",
    "ResourceApplyAdagradDA",
    "ResourceApplyAdam",
    "ResourceApplyAddSign",
    "ResourceApplyCenteredRMSProp",
    "ResourceApplyFtrl",
    "ResourceApplyFtrlV2",
    "ResourceApplyGradientDescent",
    "ResourceApplyMomentum",
    "ResourceApplyPowerSign",
    "ResourceApplyProximalAdagrad",
    "ResourceApplyProximalGradientDescent",
    "ResourceApplyRMSProp",
    // resource sparse (10)
    "ResourceSparseApplyAdadelta",
    "ResourceSparseApplyAdagrad",
    "ResourceSparseApplyAdagradDA",
    "ResourceSparseApplyCenteredRMSProp",
    "ResourceSparseApplyFtrl",
    "ResourceSparseApplyFtrlV2",
    "ResourceSparseApplyMomentum",
    "ResourceSparseApplyProximalAdagrad",
    "ResourceSparseApplyProximalGradientDescent",
    "ResourceSparseApplyRMSProp",
    // sparse (10)
    "SparseApplyAdadelta",
    "SparseApplyAdagrad",
    "SparseApplyAdagradDA",
    "SparseApplyCenteredRMSProp",
    "SparseApplyFtrl",
    "SparseApplyFtrlV2",
    "SparseApplyMomentum",
    "SparseApplyProximalAdagrad",
    "SparseApplyProximalGradientDescent",
    "SparseApplyRMSProp",
    // decision 2: gaps of the original list (10)
    "ApplyAdadelta",
    "ApplyAdaMax",
    "ResourceApplyAdaMax",
    "ResourceApplyKerasMomentum",
    "ResourceSparseApplyKerasMomentum",
    "ResourceApplyAdamWithAmsgrad",
    "ApplyAdagradV2",
    "ResourceApplyAdagradV2",
    "SparseApplyAdagradV2",
    "ResourceSparseApplyAdagradV2",
];

/// Why an API call refused to rewrite the graph. The graph is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The graph already holds optimizer update ops (§1.3): the rewrite
    /// must run on the forward graph, before the optimizer is added.
    #[error("Training op found in graph, exiting: {{{}}}", op_types.join(", "))]
    TrainingOps {
        /// The offending op types, sorted and deduplicated.
        op_types: Vec<String>,
    },
    /// The options were refused.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A `scope` that is a prefix of no node name (after appending `/`).
    #[error("scope '{scope}' matches no node in the graph")]
    ScopeMatchesNothing {
        /// The scope as normalised (with its trailing `/`).
        scope: String,
    },
    /// A pass failed or met a form of the rewrite that is not built yet.
    #[error(transparent)]
    Pass(#[from] PassError),
}

/// Options of [`experimental_create_training_graph`] (§1.1, plus
/// `per_channel`). The defaults are the original's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainingOptions {
    /// Bits of the weight quantizers (`2..=16`, default 8).
    pub weight_bits: u32,
    /// Bits of the activation quantizers (`2..=16`, default 8).
    pub activation_bits: u32,
    /// Symmetric training-time ranges (default false).
    pub symmetric: bool,
    /// Symmetric ranges for the weights only (default false; implied by
    /// `symmetric`).
    pub symmetric_weights: bool,
    /// Steps before quantization turns on (default 0: always on); a positive
    /// value inserts the `delayed_quant` selects of decision 7.
    pub quant_delay: i64,
    /// Step from which batch norms use their moving statistics (default
    /// `None`: batch statistics throughout). Only training-form folding reads it.
    pub freeze_bn_delay: Option<i64>,
    /// Only quantize ops under this name scope (`/` is appended if missing).
    pub scope: Option<String>,
    /// Per-channel weight quantization (decision 3).
    pub per_channel: bool,
}

impl Default for TrainingOptions {
    fn default() -> TrainingOptions {
        TrainingOptions {
            weight_bits: 8,
            activation_bits: 8,
            symmetric: false,
            symmetric_weights: false,
            quant_delay: 0,
            freeze_bn_delay: None,
            scope: None,
            per_channel: false,
        }
    }
}

/// Options of [`experimental_create_eval_graph`] (§1.1, plus `per_channel`).
/// The defaults are the original's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvalOptions {
    /// Bits of the weight quantizers (`2..=16`, default 8).
    pub weight_bits: u32,
    /// Bits of the activation quantizers (`2..=16`, default 8).
    pub activation_bits: u32,
    /// Symmetric ranges; the eval graph is the same either way (§1.1).
    pub symmetric: bool,
    /// Symmetric weight ranges only; the eval graph is the same either way.
    pub symmetric_weights: bool,
    /// Steps before quantization turns on (default `None`: always on); a
    /// positive value inserts the `delayed_quant` selects (§1.1).
    pub quant_delay: Option<i64>,
    /// Not accepted by the eval rewrite: any value is refused with
    /// [`ConfigError::FreezeWithoutTraining`]. It exists so that a caller
    /// forwarding training options gets an error instead of a silent drop.
    pub freeze_bn_delay: Option<i64>,
    /// Only quantize ops under this name scope (`/` is appended if missing).
    pub scope: Option<String>,
    /// Per-channel weight quantization (decision 3).
    pub per_channel: bool,
}

impl EvalOptions {
    /// The defaults of `create_eval_graph`.
    pub fn new() -> EvalOptions {
        EvalOptions {
            weight_bits: 8,
            activation_bits: 8,
            ..EvalOptions::default()
        }
    }
}

/// `create_training_graph(graph, quant_delay)`: the training rewrite with
/// 8-bit asymmetric quantizers.
pub fn create_training_graph(graph: &mut Graph, quant_delay: i64) -> Result<PassReport, ApiError> {
    experimental_create_training_graph(
        graph,
        &TrainingOptions {
            quant_delay,
            ..TrainingOptions::default()
        },
    )
}

/// `create_eval_graph(graph)`: the eval rewrite with 8-bit quantizers.
pub fn create_eval_graph(graph: &mut Graph) -> Result<PassReport, ApiError> {
    experimental_create_eval_graph(graph, &EvalOptions::new())
}

/// `experimental_create_training_graph`: the training rewrite with `options`.
pub fn experimental_create_training_graph(
    graph: &mut Graph,
    options: &TrainingOptions,
) -> Result<PassReport, ApiError> {
    rewrite(graph, training_config(options))
}

fn training_config(options: &TrainingOptions) -> QuantizeConfig {
    QuantizeConfig {
        is_training: true,
        weight_bits: options.weight_bits,
        activation_bits: options.activation_bits,
        symmetric: options.symmetric,
        symmetric_weights: options.symmetric_weights,
        quant_delay: Some(options.quant_delay),
        freeze_bn_delay: options.freeze_bn_delay,
        scope: options.scope.clone(),
        per_channel: options.per_channel,
    }
}

/// `experimental_create_eval_graph`: the eval rewrite with `options`.
pub fn experimental_create_eval_graph(
    graph: &mut Graph,
    options: &EvalOptions,
) -> Result<PassReport, ApiError> {
    rewrite(graph, eval_config(options))
}

fn eval_config(options: &EvalOptions) -> QuantizeConfig {
    QuantizeConfig {
        is_training: false,
        weight_bits: options.weight_bits,
        activation_bits: options.activation_bits,
        symmetric: options.symmetric,
        symmetric_weights: options.symmetric_weights,
        quant_delay: options.quant_delay,
        freeze_bn_delay: options.freeze_bn_delay,
        scope: options.scope.clone(),
        per_channel: options.per_channel,
    }
}

/// [`experimental_create_training_graph`] over the layer patterns of
/// `patterns` (plugins' patterns, then the built-in stages; see
/// [`QuantizeWithPatterns`]).
pub fn experimental_create_training_graph_with_patterns(
    graph: &mut Graph,
    options: &TrainingOptions,
    patterns: Arc<PatternRegistry>,
) -> Result<PassReport, ApiError> {
    rewrite_with(graph, training_config(options), patterns)
}

/// [`experimental_create_eval_graph`] over the layer patterns of
/// `patterns` (plugins' patterns, then the built-in stages; see
/// [`QuantizeWithPatterns`]).
pub fn experimental_create_eval_graph_with_patterns(
    graph: &mut Graph,
    options: &EvalOptions,
    patterns: Arc<PatternRegistry>,
) -> Result<PassReport, ApiError> {
    rewrite_with(graph, eval_config(options), patterns)
}

/// The op types of `graph` that are optimizer update ops, sorted.
pub fn training_op_types(graph: &Graph) -> Vec<String> {
    let found: BTreeSet<&str> = graph
        .nodes()
        .map(|(_, n)| n.op())
        .filter(|op| OPTIMIZER_OP_TYPES.contains(op))
        .collect();
    found.into_iter().map(String::from).collect()
}

/// The §1.1 scope normalisation: a `/` is appended if missing.
fn normalise_scope(scope: &str) -> String {
    if scope.ends_with('/') {
        scope.to_string()
    } else {
        format!("{scope}/")
    }
}

fn rewrite(graph: &mut Graph, config: QuantizeConfig) -> Result<PassReport, ApiError> {
    rewrite_with(graph, config, Arc::default())
}

fn rewrite_with(
    graph: &mut Graph,
    mut config: QuantizeConfig,
    patterns: Arc<PatternRegistry>,
) -> Result<PassReport, ApiError> {
    let op_types = training_op_types(graph);
    if !op_types.is_empty() {
        return Err(ApiError::TrainingOps { op_types });
    }
    config.validate()?;
    if let Some(scope) = config.scope.take() {
        let scope = normalise_scope(&scope);
        if !graph.nodes().any(|(_, n)| n.name().starts_with(&scope)) {
            return Err(ApiError::ScopeMatchesNothing { scope });
        }
        config.scope = Some(scope);
    }
    let mut work = graph.clone();
    let report = PassManager::new()
        .with(FoldBatchNorms)
        .with(FoldUnfusedBatchNorms)
        .with(QuantizeWithPatterns { patterns })
        .run(&mut work, &config)?;
    *graph = work;
    Ok(report)
}
