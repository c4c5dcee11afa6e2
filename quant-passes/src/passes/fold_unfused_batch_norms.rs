//! Folding unfused batch norms (the `Rsqrt`/`Mul`/`Sub`/`Add` arithmetic of
//! `tf.nn.batch_normalization`) into the preceding layer.

use super::folding::{
    BatchStats, FoldedLayer, Layer, MovingUpdate, TrainingStats, corrections, fold_layer,
    nchw_reason,
};
use super::names::{ctx, join};
use crate::config::QuantizeConfig;
use crate::error::PassError;
use crate::pass::{Pass, PassReport};
use quant_core::builder::GraphBuilder;
use quant_core::matcher::{Match, Pattern, PatternBuilder, PatternId};
use quant_core::{Graph, GraphError, InletId, NodeId, NodeSet, OpRegistry, OutletId};

const PASS: &str = "fold_unfused_batch_norms";
/// The rule folding one unfused batch norm (reference semantics §2.5,
/// decision 4).
pub const FOLD_UNFUSED: &str = "fold_unfused_batch_norm";

const LAYER_OPS: [&str; 3] = ["Conv2D", "DepthwiseConv2dNative", "MatMul"];

/// Folds each unfused batch norm that follows a layer into that layer.
///
/// # What it does
///
/// Recognises the arithmetic `tf.nn.batch_normalization` (and contrib's
/// `layers.batch_norm(fused=False)`) builds, by structure rather than by
/// name (decision 4):
///
/// ```text
/// inv   = Rsqrt(Add(σ², ε))            or  Mul(Rsqrt(Add(σ², ε)), γ)
/// mul   = Mul(x, inv)                                  (the scaling)
/// bias  = Sub(β, Mul(μ, inv))          or  Mul(Neg(μ), inv)    (the same inv)
/// add_1 = Add|AddV2(mul, bias)
/// ```
///
/// where `x` is the output of a `Conv2D`, `DepthwiseConv2dNative` or
/// `MatMul`, directly or through one `BatchToSpaceND` (atrous
/// convolution); `Mul` and `Add` inputs are matched in either order, and
/// without β the bias is `Mul(−μ, inv)` (any `Mul` reading the same `inv`). For
/// each such batch norm, in graph order, it scales the weights by `inv`,
/// clones the layer (and the `BatchToSpaceND`) on the scaled weights, adds
/// the same bias, and makes every consumer of `add_1` read the sum instead.
/// The original nodes stay in the graph, `add_1` dangling.
///
/// The form is chosen by what the batch norm normalizes with, whatever
/// [`QuantizeConfig::is_training`] says (as the fused fold follows the
/// batch norm's `is_training`):
///
/// - **Eval form** (§2.5): μ and σ² are given tensors (moving statistics,
///   constants): they are folded as they are.
/// - **Training form** (§2.4, §2.5 item 6): μ and σ² are the batch moments
///   of `x` (`tf.nn.moments`: `Mean(x)` and `Mean(SquaredDifference(x, ·))`,
///   through `Squeeze`s), already without Bessel's correction. The moving
///   statistics are found through the updates `Mul(Sub(moving, μ), decay)`
///   and `Mul(Sub(moving, σ²), decay)`. The corrections are those of the
///   fused fold, under `<p>batch_norm_correction` (`c` = σ_B/σ_mv scales the
///   weights as `<p>correction_mult`, `1/c` and the offset follow the layer
///   as `<p>post_conv_mul` and `<p>correction_add`), γ = 1 without γ, and
///   with a `freeze_bn_delay` the step counter switches to the moving
///   statistics and freezes both updates from that step on.
///
/// # Preconditions
///
/// - `add_1` has consumers. An already-folded batch norm has none, which
///   makes the pass idempotent.
/// - `inv` is a vector of one value per output channel of the layer (the
///   layer output's last axis, which must be known); the layer is NHWC (an
///   NCHW layer is declined, naming it), has not been folded by an earlier
///   batch norm, and its weights are input 1; a `MatMul` must not
///   transpose its weights; a depthwise filter must have a known
///   `[kh, kw, in, mult]` shape.
/// - Training form: σ² is the batch variance when μ is the batch mean, and
///   both have a moving-average update.
///
/// A recognised batch norm that fails a precondition (including one that
/// does not follow a layer) is listed in [`PassReport::skipped`] with the
/// reason, under [`FOLD_UNFUSED`], and left as it is.
///
/// # Before → After
///
/// With `p` the layer's scope (`test/Conv2D` → `test/`):
///
/// ```text
/// x, W ─► test/Conv2D ─► mul = Mul(·, inv) ─► add_1 = Add(mul, bias) ─► consumers
///
/// test/scale_reshape  = Reshape(inv, test/scale_reshape/shape)  (depthwise only: [in, mult])
/// test/batch_norm_correction/...                    (training form, as the fused fold's)
/// test/correction_reshape = Reshape(c, [in, mult])  (training form, depthwise only)
/// test/correction_mult = Mul(W, c)                  (training form)
/// test/mul_fold       = Mul(W | correction_mult, inv)   (a clone of mul, on the weights)
/// test/Conv2D_Fold    = Conv2D(x, test/mul_fold)    (same attributes)
/// test/BatchToSpaceND_Fold = BatchToSpaceND(test/Conv2D_Fold, ·, ·)   (atrous only,
///                       named after the original: `<b2s name>_Fold`)
/// test/post_conv_mul  = Mul(·, correction_recip)    (training form)
/// test/correction_add = Add(·, correction_offset)   (training form)
/// test/add_fold       = Add(·, bias)                (a clone of add_1) ─► consumers
/// ```
///
/// The layer clone is `<layer name>_Fold` (`test/Conv2D_Fold`,
/// `test/depthwise_Fold`, `test/MatMul_Fold`). Names already taken get
/// `_1`, `_2`, ... suffixes.
///
/// Deviations from the original, which finds unfused batch norms by their
/// `BatchNorm/batchnorm` names: a batch norm built under a custom scope
/// name is folded when it follows a layer (the original ignores it), every
/// consumer of `add_1` is switched to `add_fold` (the original switches one
/// consumer found by name: `<p>Relu6`, `<p>Relu`, `<p>Identity` or the
/// bypass `AddV2`), the clone keeps a `Conv2D`'s `dilations`, and the form
/// follows the statistics rather than the rewrite mode (the original looks
/// up batch moments by name in a training rewrite and fails without them).
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldUnfusedBatchNorms;

/// An unfused batch norm that will be folded: the pieces of the matched
/// arithmetic the rewrite needs, found without editing the graph.
#[derive(Clone, Debug)]
struct UnfusedMatch {
    /// `add_1 = mul + bias`: its consumers move to `add_fold`.
    add: NodeId,
    /// `mul = x · inv`, cloned as `mul_fold`.
    mul: NodeId,
    /// `inv`, as `mul` reads it.
    scale: OutletId,
    /// `bias`, as `add_1` reads it.
    bias: OutletId,
    layer: NodeId,
    kind: Layer,
    /// The `BatchToSpaceND` between the layer and `mul` (atrous convolution).
    batch_to_space: Option<NodeId>,
    /// Training form: the batch statistics the arithmetic reads and the
    /// moving-average updates fed by them.
    training: Option<(BatchStats, TrainingStats)>,
}

enum Candidate {
    Fold(Box<UnfusedMatch>),
    Skip(String),
}

/// The patterns of the batch-norm arithmetic a match is read through.
struct Arithmetic {
    pattern: Pattern,
    x: PatternId,
    variance: PatternId,
    epsilon: PatternId,
    rsqrt: PatternId,
    gamma: PatternId,
    inv: PatternId,
    mul: PatternId,
    mean_inv: PatternId,
    bias: PatternId,
}

impl Arithmetic {
    /// With `after_layer`, `x` must be a layer's output (directly or through
    /// a `BatchToSpaceND`); without, any tensor (to report batch norms that
    /// do not follow a layer).
    fn new(after_layer: bool) -> Arithmetic {
        let mut p = PatternBuilder::new();
        let x = if after_layer {
            let layer = p.op(&LAYER_OPS.join("|")).id();
            let (block, crops) = (p.any(), p.any());
            let b2s = p.op("BatchToSpaceND").inputs([layer, block, crops]).id();
            p.one_of([b2s, layer])
        } else {
            p.any()
        };
        let (variance, epsilon) = (p.any(), p.any());
        let var_eps = p.op("Add|AddV2").inputs([variance, epsilon]).id();
        let rsqrt = p.op("Rsqrt").inputs([var_eps]).id();
        let gamma = p.any();
        let scaled = p.op("Mul").inputs([rsqrt, gamma]).unordered().id();
        let inv = p.one_of([scaled, rsqrt]);
        let mul = p.op("Mul").inputs([x, inv]).unordered().id();
        // μ·inv (`(−μ)·inv` without β): which input is inv is checked
        // against `inv`'s binding.
        let (mean_inv_a, mean_inv_b) = (p.any(), p.any());
        let mean_inv = p.op("Mul").inputs([mean_inv_a, mean_inv_b]).id();
        let beta = p.any();
        let sub = p.op("Sub").inputs([beta, mean_inv]).id();
        let bias = p.one_of([sub, mean_inv]);
        let add = p.op("Add|AddV2").inputs([mul, bias]).unordered().id();
        let pattern = p
            .build(add)
            .unwrap_or_else(|e| unreachable!("the batch-norm pattern is well formed: {e}"));
        Arithmetic {
            pattern,
            x,
            variance,
            epsilon,
            rsqrt,
            gamma,
            inv,
            mul,
            mean_inv,
            bias,
        }
    }

    /// Whether the match is a batch norm: `Mul(μ, inv)` reads the same `inv`
    /// tensor as the scaling `mul`.
    fn shares_inv(&self, graph: &Graph, m: &Match<'_>) -> bool {
        let (Some(inv), Some(mean_inv)) = (m.tensor(self.inv), m.node(self.mean_inv)) else {
            return false;
        };
        graph.node(mean_inv).inputs().contains(&inv)
    }

    /// μ as the arithmetic reads it: the other input of `Mul(μ, inv)`, or
    /// the input of the `Neg` there without β.
    fn mean(&self, graph: &Graph, m: &Match<'_>) -> Option<OutletId> {
        let inv = m.tensor(self.inv)?;
        let mean_inv = graph.node(m.node(self.mean_inv)?);
        let other = *mean_inv.inputs().iter().find(|&&i| i != inv)?;
        if m.tensor(self.bias) == Some(OutletId::new(m.node(self.mean_inv)?, 0)) {
            // No β: the bias is (−μ)·inv.
            let neg = graph.node(other.node);
            return (neg.op() == "Neg").then(|| neg.inputs()[0]);
        }
        Some(other)
    }
}

/// Whether `stat` is a moment of `x` over the batch (`tf.nn.moments`):
/// `Mean(x, axes)` for the mean, `Mean(SquaredDifference(x, ·), axes)` for
/// the variance, optionally through `Squeeze`s and `Identity`s.
fn is_moment_of(graph: &Graph, stat: OutletId, x: OutletId, variance: bool) -> bool {
    let mut t = stat;
    while matches!(graph.node(t.node).op(), "Squeeze" | "Identity") {
        t = graph.node(t.node).inputs()[0];
    }
    let mean = graph.node(t.node);
    if mean.op() != "Mean" {
        return false;
    }
    let averaged = mean.inputs()[0];
    if !variance {
        return averaged == x;
    }
    let sq = graph.node(averaged.node);
    sq.op() == "SquaredDifference" && sq.inputs().contains(&x)
}

impl FoldUnfusedBatchNorms {
    /// Classifies one batch norm: folded, or a skip reason if a
    /// precondition fails.
    fn candidate(
        graph: &Graph,
        arithmetic: &Arithmetic,
        m: &Match<'_>,
        folded: &NodeSet,
    ) -> Result<Candidate, PassError> {
        let skip = |reason: String| Ok(Candidate::Skip(reason));
        let (Some(x), Some(scale), Some(mul), Some(bias)) = (
            m.tensor(arithmetic.x),
            m.tensor(arithmetic.inv),
            m.node(arithmetic.mul),
            m.tensor(arithmetic.bias),
        ) else {
            unreachable!("a match binds every pattern on its path")
        };
        let add = m.root();
        if !graph.has_consumers(add) {
            return skip(format!(
                "already folded: '{}' has no consumers",
                graph.node(add).name()
            ));
        }

        // The layer, directly or through one BatchToSpaceND.
        let mut layer = x.node;
        let mut batch_to_space = None;
        if graph.node(layer).op() == "BatchToSpaceND" {
            batch_to_space = Some(layer);
            match graph.node(layer).inputs().first() {
                Some(input) => layer = input.node,
                None => return skip("the BatchToSpaceND has no input".into()),
            }
        }
        let layer_node = graph.node(layer);
        if !LAYER_OPS.contains(&layer_node.op()) {
            return skip(format!(
                "the scaled tensor is produced by {}, not by Conv2D, DepthwiseConv2dNative \
                 or MatMul",
                layer_node.op()
            ));
        }
        if folded.contains(&layer) {
            return skip(format!(
                "layer '{}' is already folded by an earlier batch norm",
                layer_node.name()
            ));
        }
        if layer_node.inputs().len() != 2 {
            return skip(format!(
                "layer '{}' has {} inputs, not input and weights",
                layer_node.name(),
                layer_node.inputs().len()
            ));
        }
        if let Some(reason) = nchw_reason(graph, layer) {
            return skip(reason);
        }
        let graph_err = |source| PassError::Graph {
            pass: PASS,
            node: layer_node.name().to_string(),
            source,
        };
        let kind = match layer_node.op() {
            "Conv2D" => Layer::Conv2D,
            "MatMul" => {
                let transposed = match layer_node.attr("transpose_b") {
                    None => false,
                    Some(_) => layer_node.attr_bool("transpose_b").map_err(graph_err)?,
                };
                if transposed {
                    return skip("MatMul with transpose_b is not folded".into());
                }
                Layer::MatMul
            }
            _ => match Layer::depthwise(graph, layer) {
                Some(kind) => kind,
                None => return skip("the depthwise filter's shape is not known".into()),
            },
        };

        // inv must scale the layer's output channels: a [C] vector.
        let channels = graph
            .fact(OutletId::new(layer, 0))
            .shape
            .as_ref()
            .and_then(|s| s.dims().last().copied().flatten());
        let Some(channels) = channels else {
            return skip("the layer's output channel count is not known".into());
        };
        let scale_dims = graph.fact(scale).shape.as_ref().map(|s| s.dims().to_vec());
        if scale_dims.as_deref() != Some(&[Some(channels)]) {
            return skip(format!(
                "the scale is not a vector of the layer's {channels} output channels"
            ));
        }
        let training = match Self::training(graph, arithmetic, m, x) {
            Ok(training) => training,
            Err(reason) => return skip(reason),
        };
        Ok(Candidate::Fold(Box::new(UnfusedMatch {
            add,
            mul,
            scale,
            bias,
            layer,
            kind,
            batch_to_space,
            training,
        })))
    }

    /// The training form's inputs if the batch norm normalizes with batch
    /// statistics (its μ is the batch mean of the scaled tensor `x`), `None`
    /// if it normalizes with given statistics (eval form), a reason if it
    /// uses batch statistics but cannot be folded in training form.
    fn training(
        graph: &Graph,
        arithmetic: &Arithmetic,
        m: &Match<'_>,
        x: OutletId,
    ) -> Result<Option<(BatchStats, TrainingStats)>, String> {
        let (Some(variance), Some(epsilon), Some(rsqrt)) = (
            m.tensor(arithmetic.variance),
            m.tensor(arithmetic.epsilon),
            m.tensor(arithmetic.rsqrt),
        ) else {
            unreachable!("a match binds every pattern on its path")
        };
        let Some(mean) = arithmetic.mean(graph, m) else {
            return Ok(None);
        };
        if !is_moment_of(graph, mean, x, false) {
            return Ok(None);
        }
        if !is_moment_of(graph, variance, x, true) {
            return Err(
                "the mean is the batch mean but the variance is not the batch variance \
                 (Mean of SquaredDifference) of the layer output"
                    .into(),
            );
        }
        let update = |stat: OutletId, what: &str| {
            MovingUpdate::find(graph, stat).ok_or_else(|| {
                format!(
                    "batch statistics without a moving-average update of the {what} \
                     (Mul(Sub(moving_{what}, '{}'), decay)): the training form of folding \
                     needs the moving statistics",
                    graph.outlet_name(stat)
                )
            })
        };
        let stats = TrainingStats {
            mean: update(mean, "mean")?,
            variance: update(variance, "variance")?,
        };
        let batch = BatchStats {
            mean,
            rsqrt,
            gamma: m.tensor(arithmetic.gamma),
            epsilon,
        };
        Ok(Some((batch, stats)))
    }

    /// Adds the folded nodes for `m` and returns `add_fold`; input edits
    /// that must wait until the builder is finished go to `edits`.
    fn build(
        b: &mut GraphBuilder<'_>,
        m: &UnfusedMatch,
        freeze_bn_delay: Option<i64>,
        edits: &mut Vec<(InletId, OutletId)>,
    ) -> Result<OutletId, GraphError> {
        let g = b.graph();
        let s = ctx(g.node(m.layer).name()).to_string();
        let mul_attrs = g.node(m.mul).attrs().clone();
        let add = g.node(m.add);
        let (add_op, add_attrs) = (add.op().to_string(), add.attrs().clone());
        let b2s = m
            .batch_to_space
            .map(|id| (id, format!("{}_Fold", g.node(id).name())));

        let scale = m.kind.per_filter(b, m.scale, &join(&s, "scale_reshape"))?;
        let corrections = match m.training {
            None => None,
            Some((batch, stats)) => {
                let cs = join(&s, "batch_norm_correction");
                let c = corrections(b, &cs, &batch, &stats, freeze_bn_delay, edits)?;
                Some((c, join(&s, "correction_reshape")))
            }
        };
        fold_layer(
            b,
            FoldedLayer {
                layer: m.layer,
                kind: m.kind,
                scope: &s,
                scale,
                corrections,
                mul_attrs,
                batch_to_space: b2s,
                add: (&add_op, add_attrs),
                bias: m.bias,
            },
        )
    }

    fn apply(
        graph: &mut Graph,
        m: &UnfusedMatch,
        freeze_bn_delay: Option<i64>,
    ) -> Result<(), GraphError> {
        let mut b = GraphBuilder::extend(std::mem::take(graph), OpRegistry::builtin());
        let mut edits = Vec::new();
        let built = Self::build(&mut b, m, freeze_bn_delay, &mut edits);
        *graph = b.finish();
        let add_fold = built?;
        for (inlet, outlet) in edits {
            graph.set_input(inlet, outlet)?;
        }
        graph.reroute(OutletId::new(m.add, 0), add_fold, None)?;
        Ok(())
    }
}

impl Pass for FoldUnfusedBatchNorms {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, graph: &mut Graph, config: &QuantizeConfig) -> Result<PassReport, PassError> {
        let mut report = PassReport::new();
        let after_layer = Arithmetic::new(true);
        let anywhere = Arithmetic::new(false);
        // Match everything first, so that a refused graph is left untouched.
        let mut matches = Vec::new();
        let mut folded = NodeSet::default();
        for add in graph.node_ids() {
            if !matches!(graph.node(add).op(), "Add" | "AddV2") {
                continue;
            }
            // A batch norm after a layer, else any batch norm (to say why it
            // is not folded).
            let found = [&after_layer, &anywhere].into_iter().find_map(|a| {
                let m = a.pattern.match_node(graph, add)?;
                a.shares_inv(graph, &m).then_some((a, m))
            });
            let Some((arithmetic, m)) = found else {
                continue;
            };
            match Self::candidate(graph, arithmetic, &m, &folded)? {
                Candidate::Skip(reason) => {
                    report.skipped(PASS, FOLD_UNFUSED, graph.node(add).name(), reason);
                }
                Candidate::Fold(um) => {
                    folded.insert(um.layer);
                    matches.push(*um);
                }
            }
        }
        for m in &matches {
            let name = graph.node(m.add).name().to_string();
            Self::apply(graph, m, config.freeze_bn_delay).map_err(|source| PassError::Graph {
                pass: PASS,
                node: name.clone(),
                source,
            })?;
            report.applied(PASS, FOLD_UNFUSED, name);
        }
        Ok(report)
    }
}
