//! Folding fused batch norms into the preceding layer's weights and bias.

use super::names::{ctx, join, last};
use crate::config::QuantizeConfig;
use crate::error::PassError;
use crate::pass::{Pass, PassReport};
use quant_core::builder::GraphBuilder;
use quant_core::{Graph, GraphError, NodeId, OpRegistry, OutletId, Tensor};

const PASS: &str = "fold_batch_norms";
/// The rule folding one `FusedBatchNorm`/`FusedBatchNormV3` (reference semantics §2.2, §2.3).
pub const FOLD_FUSED: &str = "fold_fused_batch_norm";

/// Folds each inference-mode fused batch norm into the layer that feeds it.
///
/// # What it does
///
/// For every `FusedBatchNorm`/`FusedBatchNormV3` in graph order whose input
/// is produced by a `Conv2D`, a `DepthwiseConv2dNative` (optionally through
/// one `Identity`) or, through `Reshape`s on both sides, a `MatMul`, it
/// scales the weights by `m = γ·rsqrt(σ²+ε)`, clones the layer on the scaled
/// weights, adds the bias `b = β − μ·m`, and makes every consumer of the
/// batch norm's output read the sum instead (reference semantics §2.3, eval
/// flavour: μ, σ² are the moving statistics, inputs 3 and 4). The batch norm
/// and the original layer stay in the graph, disconnected from the main path.
///
/// # Preconditions
///
/// - The batch norm's `is_training` attribute is false. The mode comes from
///   the op, not from [`QuantizeConfig::is_training`] (as in NVIDIA's fork),
///   so an inference-mode batch norm in a training graph folds in eval form.
///   The training form (§2.4, batch statistics and correction factors) is
///   not built yet: a connected training-mode batch norm fed by a layer is
///   refused with [`PassError::Unsupported`] before any edit is made.
/// - Output 0 has consumers. An already-folded batch norm has none, which
///   makes the pass idempotent.
/// - The layer is NHWC, has not been folded by an earlier batch norm, and is
///   not an atrous convolution (`BatchToSpaceND` between layer and batch
///   norm); a `MatMul` must not transpose its weights, and its `Reshape`s
///   must give back the `MatMul`'s shape. A depthwise filter must have a
///   known `[kh, kw, in, mult]` shape.
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
/// is taken, the scope becomes `S/BatchNorm_Fold_1`, and so on.
///
/// Deviation from the original: the clone keeps every attribute of the
/// layer, including a `Conv2D`'s `dilations`, which the original drops
/// (so that folding a dilated convolution preserves what it computes).
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldBatchNorms;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    Conv2D,
    Depthwise {
        in_channels: usize,
        multiplier: usize,
    },
    MatMul,
}

/// A batch norm that will be folded: everything the rewrite needs, found
/// without editing the graph.
#[derive(Clone, Debug)]
struct FoldMatch {
    bn: NodeId,
    layer: NodeId,
    kind: Layer,
    /// The tensor whose consumers `add_fold` takes over (BN output 0, or the
    /// `Reshape` after it for a `MatMul`).
    output: OutletId,
    epsilon: f32,
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

fn is_nchw(graph: &Graph, id: NodeId) -> bool {
    graph
        .node(id)
        .attr_str("data_format")
        .is_ok_and(|f| f == "NCHW")
}

impl FoldBatchNorms {
    /// Classifies one node: `None` if it is not a fused batch norm fed by a
    /// layer, a skip reason if a precondition fails.
    fn candidate(
        graph: &Graph,
        bn: NodeId,
        folded: &[NodeId],
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

        // The layer: Conv2D | DepthwiseConv2dNative [→ Identity], or
        // MatMul [→ Identity] → Reshape (and a Reshape after the batch norm).
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
        let layer = x.node;
        let layer_node = graph.node(layer);
        let kind = match layer_node.op() {
            "Conv2D" if !mm_reshape => Layer::Conv2D,
            "DepthwiseConv2dNative" if !mm_reshape => {
                let dims = graph
                    .fact(layer_node.inputs()[1])
                    .shape
                    .as_ref()
                    .filter(|s| s.rank() == 4)
                    .and_then(|s| Some((s.dim(2)?, s.dim(3)?)));
                let Some((in_channels, multiplier)) = dims else {
                    return skip("the depthwise filter's shape is not known".into());
                };
                Layer::Depthwise {
                    in_channels,
                    multiplier,
                }
            }
            "MatMul" if mm_reshape => Layer::MatMul,
            "MatMul" => {
                return skip("a MatMul feeds the batch norm without a Reshape between".into());
            }
            "BatchToSpaceND" => {
                return skip("atrous layers (BatchToSpaceND) are not folded yet".into());
            }
            op => {
                return skip(format!(
                    "input 0 is produced by {op}, not by Conv2D, DepthwiseConv2dNative or MatMul"
                ));
            }
        };

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
        if bool_attr(graph, bn, "is_training", true).map_err(graph_err)? {
            return Err(PassError::Unsupported {
                pass: PASS,
                node: node.name().to_string(),
                message: "batch norm in training mode (is_training = true): the training form \
                          of folding is not built yet"
                    .into(),
            });
        }
        if is_nchw(graph, layer) || is_nchw(graph, bn) {
            return skip("NCHW layers are not folded yet".into());
        }
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
            output,
            epsilon,
        })))
    }

    /// Adds the folded nodes for `m` and returns `add_fold`.
    fn build(b: &mut GraphBuilder<'_>, m: &FoldMatch) -> Result<OutletId, GraphError> {
        let g = b.graph();
        let bn = g.node(m.bn);
        let [_, gamma, beta, mean, variance] = bn.inputs() else {
            unreachable!("checked by candidate()")
        };
        let (gamma, beta, mean, variance) = (*gamma, *beta, *mean, *variance);
        let layer = g.node(m.layer);
        // Read at rewrite time: an earlier fold may have rerouted the input.
        let (input, weights) = (layer.inputs()[0], layer.inputs()[1]);
        let (layer_op, layer_name) = (layer.op().to_string(), layer.name().to_string());
        let attrs = layer.attrs().clone();
        let s = ctx(&layer_name).to_string();
        let fs = b.unique_scope(&join(&s, "BatchNorm_Fold"));

        let eps = b.constant(&format!("{fs}/add/y"), Tensor::scalar(m.epsilon))?;
        let add = b.binary("Add", &format!("{fs}/add"), variance, eps)?;
        let rsqrt = b.unary("Rsqrt", &format!("{fs}/Rsqrt"), add)?;
        let mul = b.binary("Mul", &format!("{fs}/mul"), gamma, rsqrt)?;
        let mul_1 = b.binary("Mul", &format!("{fs}/mul_1"), mean, mul)?;
        let bias = b.binary("Sub", &format!("{fs}/bias"), beta, mul_1)?;
        let scale = match m.kind {
            Layer::Depthwise {
                in_channels,
                multiplier,
            } => {
                let shape = [in_channels, multiplier].map(|d| {
                    i32::try_from(d).unwrap_or_else(|_| unreachable!("filter dims fit in i32"))
                });
                b.reshape(&format!("{fs}/scale_reshape"), mul, &shape)?
            }
            Layer::Conv2D | Layer::MatMul => mul,
        };
        let mul_fold = b.binary("Mul", &join(&s, "mul_fold"), weights, scale)?;
        let clone_name = join(&s, &format!("{}_Fold", last(&layer_name)));
        let clone = b.add(&layer_op, &clone_name, &[input, mul_fold], attrs)?;
        b.binary("Add", &join(&s, "add_fold"), clone.into(), bias)
    }

    fn apply(graph: &mut Graph, m: &FoldMatch) -> Result<(), GraphError> {
        let mut b = GraphBuilder::extend(std::mem::take(graph), OpRegistry::builtin());
        let built = Self::build(&mut b, m);
        *graph = b.finish();
        let add_fold = built?;
        graph.reroute(m.output, add_fold, None)?;
        Ok(())
    }
}

impl Pass for FoldBatchNorms {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, graph: &mut Graph, _config: &QuantizeConfig) -> Result<PassReport, PassError> {
        let mut report = PassReport::new();
        // Match everything first, so that a refused graph is left untouched.
        let mut matches = Vec::new();
        let mut folded = Vec::new();
        for id in graph.node_ids() {
            match Self::candidate(graph, id, &folded)? {
                None => {}
                Some(Candidate::Skip(reason)) => {
                    report.skipped(PASS, FOLD_FUSED, graph.node(id).name(), reason);
                }
                Some(Candidate::Fold(m)) => {
                    folded.push(m.layer);
                    matches.push(m);
                }
            }
        }
        for m in &matches {
            let name = graph.node(m.bn).name().to_string();
            Self::apply(graph, m).map_err(|source| PassError::Graph {
                pass: PASS,
                node: name.clone(),
                source,
            })?;
            report.applied(PASS, FOLD_FUSED, name);
        }
        Ok(report)
    }
}
