//! Folding fused batch norms into the preceding layer's weights and bias.

use super::folding::{
    BatchStats, FoldedLayer, Layer, MovingUpdate, TrainingStats, corrections, fold_layer,
    nchw_reason,
};
use super::names::{ctx, join};
use crate::config::QuantizeConfig;
use crate::error::PassError;
use crate::pass::{Pass, PassReport};
use quant_core::builder::GraphBuilder;
use quant_core::{
    AttrValue, Attrs, DType, Graph, GraphError, InletId, NodeId, NodeSet, OpRegistry, OutletId,
    Tensor, attrs,
};

const PASS: &str = "fold_batch_norms";
/// The rule folding one `FusedBatchNorm`/`FusedBatchNormV3` (reference semantics §2.2, §2.3).
pub const FOLD_FUSED: &str = "fold_fused_batch_norm";

/// Folds each fused batch norm into the layer that feeds it.
///
/// # What it does
///
/// For every `FusedBatchNorm`/`FusedBatchNormV3` in graph order whose input
/// is produced by a `Conv2D` or a `DepthwiseConv2dNative` (optionally
/// through one `BatchToSpaceND`, an atrous layer, and optionally through one
/// `Identity`) or, through `Reshape`s on both sides, by a `MatMul`, it
/// scales the weights by `m = γ·rsqrt(σ²+ε)`, clones the layer on the scaled
/// weights, adds the bias `b = β − μ·m`, and makes every consumer of the
/// batch norm's output read the sum instead (reference semantics §2.3, eval
/// flavour: μ, σ² are the moving statistics, inputs 3 and 4). The batch norm
/// and the original layer stay in the graph, disconnected from the main path.
///
/// A training-mode batch norm (`is_training = true`) folds in training form
/// (§2.4): μ is the batch mean (output 1) and σ² the batch variance without
/// Bessel's correction (`<bn scope>/Undo_Bessel_Correction` = output 2 ·
/// (n−1)/n); the weights are additionally scaled by `c = σ_B/σ_mv`
/// (`S/correction_mult`, so the quantized weights always use the moving
/// σ), and the layer output by `1/c` (`S/post_conv_mul`) plus an offset
/// (`S/correction_add`), computed under `S/BatchNorm_Fold/batch_norm_correction/`.
/// Before `freeze_bn_delay` (or always, without one) this is exactly batch
/// norm with batch statistics; from step `freeze_bn_delay` on
/// (`use_moving_average` on the quantization step, §3.7) it is batch norm
/// with the moving statistics, and the moving-average updates are frozen
/// (`freeze_moving_mean`/`freeze_moving_var` select a zero decay). The moving
/// statistics are found through the update subgraph
/// `Mul(Sub(moving, output k), decay)` (k = 1, 2), which must exist.
///
/// # Preconditions
///
/// - The mode comes from the batch norm's `is_training` attribute, not
///   from [`QuantizeConfig::is_training`] (as in NVIDIA's fork), so an
///   inference-mode batch norm in a training graph folds in eval form. A
///   training-mode batch norm without its moving-average updates is refused
///   with [`PassError::Unsupported`] before any edit is made.
/// - Output 0 has consumers. An already-folded batch norm has none, which
///   makes the pass idempotent.
/// - The layer and the batch norm are NHWC (quant's kernels are; the NCHW
///   fold of NVIDIA's fork is not reproduced, and an NCHW candidate is
///   declined, naming the node), the layer has not been folded by an
///   earlier batch norm and has two inputs (input, weights); a `MatMul`
///   must not transpose its weights, and its `Reshape`s must give back the
///   `MatMul`'s shape. A depthwise filter must have a known
///   `[kh, kw, in, mult]` shape.
///
/// Declined candidates are listed in [`PassReport::skipped`] with the reason.
///
/// # Before → After
///
/// With `S` the layer's scope (`conv1/Conv2D` → `conv1`):
///
/// ```text
/// x, W ─► S/Conv2D ─► FusedBatchNormV3(·, γ, β, μ, σ²) ─► consumers
///
/// S/BatchNorm_Fold/add        = Add(σ², S/BatchNorm_Fold/add/y)     (y = ε)
/// S/BatchNorm_Fold/Rsqrt      = Rsqrt(add)
/// S/BatchNorm_Fold/mul        = Mul(γ, Rsqrt)                        m
/// S/BatchNorm_Fold/mul_1      = Mul(μ, mul)
/// S/BatchNorm_Fold/bias       = Sub(β, mul_1)                        b
/// S/BatchNorm_Fold/scale_reshape = Reshape(mul, [in, mult])          (depthwise only)
/// S/mul_fold                  = Mul(W, m)
/// S/Conv2D_Fold               = Conv2D(x, mul_fold)                  (same attributes)
/// S/add_fold                  = Add(Conv2D_Fold, bias) ─► consumers
/// ```
///
/// The clone is named after the layer's last name component
/// (`Conv2D_Fold`, `depthwise_Fold`, `MatMul_Fold`). If `S/BatchNorm_Fold`
/// is taken, the scope becomes `S/BatchNorm_Fold_1`, and so on. For an
/// atrous layer (`S/depthwise/SpaceToBatchND` → `S/depthwise` →
/// `S/depthwise/BatchToSpaceND` → batch norm) the clone reads the
/// `SpaceToBatchND` output like the layer does, and
/// `S/BatchToSpaceND_Fold = BatchToSpaceND(S/depthwise_Fold, block_shape,
/// crops)` (the original's inputs 1 and 2) sits between the clone and
/// `add_fold` (training form: `post_conv_mul`), scenario 46.
///
/// Deviations from the original: the clone keeps every attribute of the
/// layer, including a `Conv2D`'s `dilations`, which the original drops
/// (so that folding a dilated convolution preserves what it computes); and
/// for an atrous layer the `n` of `Undo_Bessel_Correction` counts the
/// values the batch norm normalizes (its input, after `BatchToSpaceND`),
/// not the padded `SpaceToBatchND` layout the original counts, so the
/// training form is exact batch norm there too.
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldBatchNorms;

/// A batch norm that will be folded: everything the rewrite needs, found
/// without editing the graph.
#[derive(Clone, Debug)]
struct FoldMatch {
    bn: NodeId,
    layer: NodeId,
    kind: Layer,
    /// The `BatchToSpaceND` between the layer and the batch norm (atrous
    /// convolution).
    batch_to_space: Option<NodeId>,
    /// The tensor whose consumers `add_fold` takes over (BN output 0, or the
    /// `Reshape` after it for a `MatMul`).
    output: OutletId,
    epsilon: f32,
    /// The moving-average updates of a training-mode batch norm (§2.4).
    training: Option<TrainingStats>,
}

enum Candidate {
    Fold(FoldMatch),
    Skip(String),
}

fn bool_attr(graph: &Graph, id: NodeId, name: &str, default: bool) -> Result<bool, GraphError> {
    let node = graph.node(id);
    match node.attr(name) {
        None => Ok(default),
        Some(_) => node.attr_bool(name),
    }
}

impl FoldBatchNorms {
    /// Classifies one node: `None` if it is not a fused batch norm fed by a
    /// layer, a skip reason if a precondition fails.
    fn candidate(
        graph: &Graph,
        bn: NodeId,
        folded: &NodeSet,
    ) -> Result<Option<Candidate>, PassError> {
        let node = graph.node(bn);
        if !matches!(node.op(), "FusedBatchNorm" | "FusedBatchNormV3") || node.inputs().len() != 5 {
            return Ok(None);
        }
        let graph_err = |source| PassError::Graph {
            pass: PASS,
            node: node.name().to_string(),
            source,
        };
        let skip = |reason: String| Ok(Some(Candidate::Skip(reason)));
        let producer = |o: OutletId| graph.node(o.node);

        // The layer: Conv2D | DepthwiseConv2dNative [→ BatchToSpaceND]
        // [→ Identity], or MatMul [→ Identity] → Reshape (and a Reshape
        // after the batch norm).
        let mut x = node.inputs()[0];
        let mut mm_reshape = false;
        if producer(x).op() == "Reshape" {
            let inner = producer(x).inputs()[0];
            let through = if producer(inner).op() == "Identity" {
                producer(inner).inputs()[0]
            } else {
                inner
            };
            if producer(through).op() == "MatMul" {
                x = through;
                mm_reshape = true;
            }
        }
        if !mm_reshape && producer(x).op() == "Identity" {
            x = producer(x).inputs()[0];
        }
        let mut batch_to_space = None;
        if !mm_reshape && producer(x).op() == "BatchToSpaceND" {
            batch_to_space = Some(x.node);
            x = producer(x).inputs()[0];
        }
        let layer = x.node;
        let layer_node = graph.node(layer);
        let kind = match layer_node.op() {
            "Conv2D" if !mm_reshape => Layer::Conv2D,
            "DepthwiseConv2dNative" if !mm_reshape => match Layer::depthwise(graph, layer) {
                Some(kind) => kind,
                None => return skip("the depthwise filter's shape is not known".into()),
            },
            "MatMul" if mm_reshape => Layer::MatMul,
            "MatMul" if batch_to_space.is_some() => {
                return skip("a MatMul feeds the batch norm through a BatchToSpaceND".into());
            }
            "MatMul" => {
                return skip("a MatMul feeds the batch norm without a Reshape between".into());
            }
            op => {
                return skip(format!(
                    "input 0 is produced by {op}, not by Conv2D, DepthwiseConv2dNative or MatMul"
                ));
            }
        };
        if layer_node.inputs().len() != 2 {
            return skip(format!(
                "layer '{}' has {} inputs, not input and weights",
                layer_node.name(),
                layer_node.inputs().len()
            ));
        }

        // The tensor add_fold replaces.
        let bn_out = OutletId::new(bn, 0);
        let output = if kind == Layer::MatMul {
            let consumers = graph.consumers(bn_out);
            match consumers {
                [] => return skip("already folded: output 0 has no consumers".into()),
                [c] if graph.node(c.node).op() == "Reshape" => OutletId::new(c.node, 0),
                _ => {
                    return skip(
                        "a MatMul batch norm must feed exactly one Reshape and nothing else".into(),
                    );
                }
            }
        } else {
            bn_out
        };
        if graph.consumers(output).is_empty() {
            return skip("already folded: output 0 has no consumers".into());
        }
        if folded.contains(&layer) {
            return skip(format!(
                "layer '{}' is already folded by an earlier batch norm",
                layer_node.name()
            ));
        }
        if let Some(reason) = nchw_reason(graph, layer).or_else(|| nchw_reason(graph, bn)) {
            return skip(reason);
        }
        let training = if bool_attr(graph, bn, "is_training", true).map_err(graph_err)? {
            Some(Self::training_stats(graph, bn)?)
        } else {
            None
        };
        if kind == Layer::MatMul {
            if bool_attr(graph, layer, "transpose_b", false).map_err(graph_err)? {
                return skip("MatMul with transpose_b is not folded".into());
            }
            let (a, b) = (&graph.fact(x).shape, &graph.fact(output).shape);
            if a.is_none() || a != b {
                return skip(
                    "the Reshape after the batch norm does not give back the MatMul's shape".into(),
                );
            }
        }
        let epsilon = match node.attr("epsilon") {
            None => 1e-4,
            Some(_) => node.attr_float("epsilon").map_err(graph_err)?,
        };
        Ok(Some(Candidate::Fold(FoldMatch {
            bn,
            layer,
            kind,
            batch_to_space,
            output,
            epsilon,
            training,
        })))
    }

    /// Finds the moving-average updates of a training-mode batch norm.
    fn training_stats(graph: &Graph, bn: NodeId) -> Result<TrainingStats, PassError> {
        let find = |k: usize, what: &str| -> Result<MovingUpdate, PassError> {
            MovingUpdate::find(graph, OutletId::new(bn, k)).ok_or_else(|| PassError::Unsupported {
                pass: PASS,
                node: graph.node(bn).name().to_string(),
                message: format!(
                    "training-mode batch norm without a moving-average update of its {what} \
                     (Mul(Sub(moving_{what}, output {k}), decay)): the training form of folding \
                     needs the moving statistics; build the updates or set is_training = false"
                ),
            })
        };
        Ok(TrainingStats {
            mean: find(1, "mean")?,
            variance: find(2, "variance")?,
        })
    }

    /// The batch variance without Bessel's correction: output 2 of the
    /// batch norm times `(n − 1)/n`, `n` the number of values per channel
    /// (a constant when the layer output's shape is known, else computed at
    /// run time), as `<bn scope>/Undo_Bessel_Correction`.
    fn undo_bessel(b: &mut GraphBuilder<'_>, bn: NodeId) -> Result<OutletId, GraphError> {
        let g = b.graph();
        let bn_node = g.node(bn);
        let x = bn_node.inputs()[0];
        let name = join(ctx(bn_node.name()), "Undo_Bessel_Correction");
        let variance = OutletId::new(bn, 2);
        let channels = g
            .fact(variance)
            .shape
            .as_ref()
            .and_then(|s| s.dim(0))
            .filter(|&c| c > 0);
        let elements = g
            .fact(x)
            .shape
            .as_ref()
            .and_then(|s| s.0.iter().try_fold(1usize, |acc, d| acc.checked_mul((*d)?)));
        let factor = match (elements, channels) {
            (Some(e), Some(c)) if e > c => {
                let n = (e / c) as f64;
                b.constant(
                    &join(&name, "factor"),
                    Tensor::scalar(((n - 1.0) / n) as f32),
                )?
            }
            _ => {
                let count = |b: &mut GraphBuilder<'_>, of: OutletId, what: &str| {
                    let size = b.add(
                        "Size",
                        &join(&name, what),
                        &[of],
                        attrs([("out_type", AttrValue::Type(DType::I64))]),
                    )?;
                    b.add(
                        "Cast",
                        &format!("{name}/{what}/Cast"),
                        &[size.into()],
                        attrs([("DstT", AttrValue::Type(DType::F32))]),
                    )
                    .map(OutletId::from)
                };
                let all = count(b, x, "Size")?;
                let per = count(b, variance, "Size_1")?;
                let n = b.binary("RealDiv", &join(&name, "n"), all, per)?;
                let one = b.constant(&join(&name, "one"), Tensor::scalar(1.0f32))?;
                let n_1 = b.binary("Sub", &join(&name, "sub"), n, one)?;
                b.binary("RealDiv", &join(&name, "factor"), n_1, n)?
            }
        };
        b.binary("Mul", &name, variance, factor)
    }

    /// Adds the folded nodes for `m` and returns `add_fold`; input edits
    /// that must wait until the builder is finished go to `edits`.
    fn build(
        b: &mut GraphBuilder<'_>,
        m: &FoldMatch,
        freeze_bn_delay: Option<i64>,
        edits: &mut Vec<(InletId, OutletId)>,
    ) -> Result<OutletId, GraphError> {
        let g = b.graph();
        let bn = g.node(m.bn);
        let [_, gamma, beta, moving_mean, moving_variance] = bn.inputs() else {
            unreachable!("checked by candidate()")
        };
        let (gamma, beta) = (*gamma, *beta);
        let (moving_mean, moving_variance) = (*moving_mean, *moving_variance);
        let s = ctx(g.node(m.layer).name()).to_string();
        let fs = b.unique_scope(&join(&s, "BatchNorm_Fold"));

        // Statistics: moving ones in eval form, batch ones in training form.
        let (mean, variance) = match m.training {
            None => (moving_mean, moving_variance),
            Some(_) => (OutletId::new(m.bn, 1), Self::undo_bessel(b, m.bn)?),
        };
        let eps = b.constant(&join(&fs, "add/y"), Tensor::scalar(m.epsilon))?;
        let add = b.binary("Add", &join(&fs, "add"), variance, eps)?;
        let rsqrt = b.unary("Rsqrt", &join(&fs, "Rsqrt"), add)?;
        let mul = b.binary("Mul", &join(&fs, "mul"), gamma, rsqrt)?;
        let mul_1 = b.binary("Mul", &join(&fs, "mul_1"), mean, mul)?;
        let bias = b.binary("Sub", &join(&fs, "bias"), beta, mul_1)?;
        let scale = m.kind.per_filter(b, mul, &join(&fs, "scale_reshape"))?;
        let corrections = match m.training {
            None => None,
            Some(stats) => {
                let cs = join(&fs, "batch_norm_correction");
                let epsilon = b.constant(&join(&cs, "add/y"), Tensor::scalar(m.epsilon))?;
                let batch = BatchStats {
                    mean,
                    rsqrt,
                    gamma: Some(gamma),
                    epsilon,
                };
                let c = corrections(b, &cs, &batch, &stats, freeze_bn_delay, edits)?;
                Some((c, join(&fs, "correction_reshape")))
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
                mul_attrs: Attrs::new(),
                batch_to_space: m
                    .batch_to_space
                    .map(|id| (id, join(&s, "BatchToSpaceND_Fold"))),
                add: ("Add", Attrs::new()),
                bias,
            },
        )
    }

    fn apply(
        graph: &mut Graph,
        m: &FoldMatch,
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
        graph.reroute(m.output, add_fold, None)?;
        Ok(())
    }
}

impl Pass for FoldBatchNorms {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, graph: &mut Graph, config: &QuantizeConfig) -> Result<PassReport, PassError> {
        let mut report = PassReport::new();
        // Match everything first, so that a refused graph is left untouched.
        let mut matches = Vec::new();
        let mut folded = NodeSet::default();
        for id in graph.node_ids() {
            match Self::candidate(graph, id, &folded)? {
                None => {}
                Some(Candidate::Skip(reason)) => {
                    report.skipped(PASS, FOLD_FUSED, graph.node(id).name(), reason);
                }
                Some(Candidate::Fold(m)) => {
                    folded.insert(m.layer);
                    matches.push(m);
                }
            }
        }
        for m in &matches {
            let name = graph.node(m.bn).name().to_string();
            Self::apply(graph, m, config.freeze_bn_delay).map_err(|source| PassError::Graph {
                pass: PASS,
                node: name.clone(),
                source,
            })?;
            report.applied(PASS, FOLD_FUSED, name);
        }
        Ok(report)
    }
}
