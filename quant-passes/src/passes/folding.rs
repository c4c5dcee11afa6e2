//! What the fused and unfused batch-norm folds share: the kind of layer a
//! batch norm folds into, how a per-channel factor reaches its filter, the
//! training-form corrections of reference semantics §2.4 with their
//! `freeze_bn_delay` switch, and the folded layer itself (§2.3, §2.5 item 7).

use super::names::{join, last};
use super::step::quantization_step;
use quant_core::builder::GraphBuilder;
use quant_core::{Attrs, Graph, GraphError, InletId, NodeId, OutletId, Tensor};

/// The layer a batch norm folds into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layer {
    /// `Conv2D`: filter `[kh, kw, in, out]`, channels on the last axis.
    Conv2D,
    /// `DepthwiseConv2dNative`: filter `[kh, kw, in, mult]`, output
    /// channel `i·mult + j`.
    Depthwise {
        /// `in` of the filter.
        in_channels: usize,
        /// `mult` of the filter.
        multiplier: usize,
    },
    /// `MatMul`: weights `[in, out]`, channels on the last axis.
    MatMul,
}

impl Layer {
    /// A per-output-channel factor `[C]` shaped to multiply the filter:
    /// unchanged for `Conv2D` and `MatMul` (it broadcasts over the last
    /// axis), reshaped to `[in, mult]` as node `name` for depthwise filters.
    pub(crate) fn per_filter(
        self,
        b: &mut GraphBuilder<'_>,
        factor: OutletId,
        name: &str,
    ) -> Result<OutletId, GraphError> {
        match self {
            Layer::Depthwise {
                in_channels,
                multiplier,
            } => {
                let shape = [in_channels, multiplier].map(|d| {
                    i32::try_from(d).unwrap_or_else(|_| unreachable!("filter dims fit in i32"))
                });
                b.reshape(name, factor, &shape)
            }
            Layer::Conv2D | Layer::MatMul => Ok(factor),
        }
    }

    /// The layer kind of `DepthwiseConv2dNative` node `id`, if its filter's
    /// `[kh, kw, in, mult]` shape is known.
    pub(crate) fn depthwise(graph: &Graph, id: NodeId) -> Option<Layer> {
        let filter = *graph.node(id).inputs().get(1)?;
        let shape = graph
            .fact(filter)
            .shape
            .as_ref()
            .filter(|s| s.rank() == 4)?;
        Some(Layer::Depthwise {
            in_channels: shape.dim(2)?,
            multiplier: shape.dim(3)?,
        })
    }
}

/// Why node `id` cannot be folded because of its data layout, if it works
/// on NCHW data: quant's kernels and folds are NHWC (the NCHW fold of
/// NVIDIA's fork, §2.3, is not reproduced).
pub(crate) fn nchw_reason(graph: &Graph, id: NodeId) -> Option<String> {
    let node = graph.node(id);
    let nchw = node.attr_str("data_format").is_ok_and(|f| f == "NCHW");
    nchw.then(|| {
        format!(
            "'{}' has data_format NCHW: batch norms are folded into NHWC layers only",
            node.name()
        )
    })
}

/// A moving-average update of a batch statistic:
/// `Mul(Sub(moving, stat), decay)`, the shape of
/// `moving -= (moving − stat)·decay` (§2.2).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MovingUpdate {
    /// The moving statistic (`Sub` input 0).
    pub(crate) moving: OutletId,
    /// The `Mul` scaling the difference by the decay (input 1).
    pub(crate) mul: NodeId,
    /// The decay tensor (`1 − momentum`).
    pub(crate) decay: OutletId,
}

impl MovingUpdate {
    /// The first update of `stat` in consumer order, if there is one.
    pub(crate) fn find(graph: &Graph, stat: OutletId) -> Option<MovingUpdate> {
        graph.consumers(stat).iter().find_map(|sub| {
            let sub_node = graph.node(sub.node);
            if sub_node.op() != "Sub" || sub.slot != 1 {
                return None;
            }
            graph
                .consumers(OutletId::new(sub.node, 0))
                .iter()
                .find(|mul| mul.slot == 0 && graph.node(mul.node).op() == "Mul")
                .map(|mul| MovingUpdate {
                    moving: sub_node.inputs()[0],
                    mul: mul.node,
                    decay: graph.node(mul.node).inputs()[1],
                })
        })
    }
}

/// Where a training-mode batch norm keeps its long-term statistics.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrainingStats {
    /// The update of the moving mean.
    pub(crate) mean: MovingUpdate,
    /// The update of the moving variance.
    pub(crate) variance: MovingUpdate,
}

/// The batch side of the §2.4 corrections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchStats {
    /// μ_B.
    pub(crate) mean: OutletId,
    /// `rsqrt(σ²_B + ε)`.
    pub(crate) rsqrt: OutletId,
    /// γ; `None` for a batch norm without scale (γ = 1).
    pub(crate) gamma: Option<OutletId>,
    /// ε, as a scalar tensor.
    pub(crate) epsilon: OutletId,
}

/// The three correction tensors of the training form (§2.4).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Corrections {
    /// `c = σ_B / σ_mv`, scaling the weights.
    pub(crate) scale: OutletId,
    /// `1/c` before freezing, ones after.
    pub(crate) recip: OutletId,
    /// Zeros before freezing, `γ(μ_B/σ_B − μ_mv/σ_mv)` after.
    pub(crate) offset: OutletId,
}

/// Builds the correction factors of §2.4 under scope `cs`
/// (`…/batch_norm_correction`) and, with a `freeze_bn_delay`, the
/// `use_moving_average` switch on the quantization step: it selects the
/// corrections and, through the input edits pushed to `edits` (applied
/// once the builder is finished), a zero decay for both moving-average
/// updates.
pub(crate) fn corrections(
    b: &mut GraphBuilder<'_>,
    cs: &str,
    batch: &BatchStats,
    stats: &TrainingStats,
    freeze_bn_delay: Option<i64>,
    edits: &mut Vec<(InletId, OutletId)>,
) -> Result<Corrections, GraphError> {
    let n = |name: &str| join(cs, name);
    let channels = b
        .graph()
        .fact(stats.mean.moving)
        .shape
        .as_ref()
        .and_then(|s| s.dim(0))
        .ok_or_else(|| GraphError::Inference {
            node: n("correction_recip"),
            op: "Const".into(),
            message: "the moving mean's channel count is not known".into(),
        })?;
    let filled = |b: &mut GraphBuilder<'_>, name: &str, v: f32| {
        let t = Tensor::from_vec(&[channels], vec![v; channels])
            .unwrap_or_else(|e| unreachable!("[{channels}] values: {e}"));
        b.constant(&n(name), t)
    };
    let mv_add = b.binary("Add", &n("add"), stats.variance.moving, batch.epsilon)?;
    let mv_rsqrt = b.unary("Rsqrt", &n("Rsqrt"), mv_add)?;
    let scale = b.binary("RealDiv", &n("scale_compute"), mv_rsqrt, batch.rsqrt)?;
    let scale = b.identity(&n("correction_scale"), scale)?;
    let one = b.constant(&n("reciprocal_compute/x"), Tensor::scalar(1.0f32))?;
    let recip = b.binary("RealDiv", &n("reciprocal_compute"), one, scale)?;
    let batch_term = b.binary("Mul", &n("mul"), batch.mean, batch.rsqrt)?;
    let moving_term = b.binary("Mul", &n("mul_1"), stats.mean.moving, mv_rsqrt)?;
    let diff = b.binary("Sub", &n("sub"), batch_term, moving_term)?;
    let offset = match batch.gamma {
        Some(gamma) => b.binary("Mul", &n("offset_compute"), gamma, diff)?,
        None => b.identity(&n("offset_compute"), diff)?,
    };
    let Some(delay) = freeze_bn_delay else {
        let recip = b.identity(&n("correction_recip"), recip)?;
        let zeros = filled(b, "correction_offset", 0.0)?;
        return Ok(Corrections {
            scale,
            recip,
            offset: zeros,
        });
    };
    let step = quantization_step(b)?;
    let delay = b.constant(&n("use_moving_average/y"), Tensor::scalar(delay))?;
    let frozen = b.binary("GreaterEqual", &n("use_moving_average"), step, delay)?;
    let select = |b: &mut GraphBuilder<'_>, name: &str, t: OutletId, e: OutletId| {
        b.add("SelectV2", &n(name), &[frozen, t, e], Attrs::new())
            .map(OutletId::from)
    };
    let ones = filled(b, "ones", 1.0)?;
    let zeros = filled(b, "zeros", 0.0)?;
    let recip = select(b, "correction_recip", ones, recip)?;
    let offset = select(b, "correction_offset", offset, zeros)?;
    for (update, name) in [
        (stats.mean, "freeze_moving_mean"),
        (stats.variance, "freeze_moving_var"),
    ] {
        let zero = b.constant(&n(&join(name, "zero")), Tensor::scalar(0.0f32))?;
        let decay = select(b, name, zero, update.decay)?;
        edits.push((
            InletId {
                node: update.mul,
                slot: 1,
            },
            decay,
        ));
    }
    Ok(Corrections {
        scale,
        recip,
        offset,
    })
}

/// Everything [`fold_layer`] needs besides the graph.
pub(crate) struct FoldedLayer<'a> {
    /// The layer whose weights are scaled; its inputs are read when the
    /// fold is built (an earlier fold may have rerouted them).
    pub(crate) layer: NodeId,
    pub(crate) kind: Layer,
    /// `S`, the layer's scope.
    pub(crate) scope: &'a str,
    /// The multiplier, already shaped for the filter ([`Layer::per_filter`]).
    pub(crate) scale: OutletId,
    /// Training form: the corrections, and the name of the reshape that
    /// brings the correction scale to a depthwise filter.
    pub(crate) corrections: Option<(Corrections, String)>,
    /// The attributes of `mul_fold` (the unfused fold clones its `Mul`).
    pub(crate) mul_attrs: Attrs,
    /// Atrous layers: the `BatchToSpaceND` after the layer and the name of
    /// its clone.
    pub(crate) batch_to_space: Option<(NodeId, String)>,
    /// The op and attributes of `add_fold`.
    pub(crate) add: (&'a str, Attrs),
    /// The folded bias, the second input of `add_fold`.
    pub(crate) bias: OutletId,
}

/// Builds the folded layer and returns `add_fold`:
///
/// ```text
/// S/correction_mult = Mul(W, c)                  (training form; c reshaped for depthwise)
/// S/mul_fold        = Mul(W | correction_mult, scale)
/// S/<L>_Fold        = clone of layer S/<L> on (its input, mul_fold)
/// <b2s clone>       = BatchToSpaceND(<layer>_Fold, block_shape, crops)   (atrous only)
/// S/post_conv_mul   = Mul(·, correction_recip)   (training form)
/// S/correction_add  = Add(·, correction_offset)  (training form)
/// S/add_fold        = <add op>(·, bias)
/// ```
pub(crate) fn fold_layer(
    b: &mut GraphBuilder<'_>,
    f: FoldedLayer<'_>,
) -> Result<OutletId, GraphError> {
    let g = b.graph();
    let layer = g.node(f.layer);
    let (input, weights) = (layer.inputs()[0], layer.inputs()[1]);
    let (layer_op, layer_name) = (layer.op().to_string(), layer.name().to_string());
    let layer_attrs = layer.attrs().clone();
    let b2s = f.batch_to_space.map(|(id, name)| {
        let n = g.node(id);
        (name, n.inputs()[1..].to_vec(), n.attrs().clone())
    });
    let s = f.scope;

    let weights = match &f.corrections {
        None => weights,
        Some((c, reshape)) => {
            let scale = f.kind.per_filter(b, c.scale, reshape)?;
            b.binary("Mul", &join(s, "correction_mult"), weights, scale)?
        }
    };
    let mul_fold = b.add(
        "Mul",
        &join(s, "mul_fold"),
        &[weights, f.scale],
        f.mul_attrs,
    )?;
    let clone = b.add(
        &layer_op,
        &join(s, &format!("{}_Fold", last(&layer_name))),
        &[input, mul_fold.into()],
        layer_attrs,
    )?;
    let mut out = OutletId::from(clone);
    if let Some((name, rest, attrs)) = b2s {
        let mut inputs = vec![out];
        inputs.extend(rest);
        out = b.add("BatchToSpaceND", &name, &inputs, attrs)?.into();
    }
    if let Some((c, _)) = &f.corrections {
        let post = b.binary("Mul", &join(s, "post_conv_mul"), out, c.recip)?;
        out = b.binary("Add", &join(s, "correction_add"), post, c.offset)?;
    }
    let (add_op, add_attrs) = f.add;
    b.add(add_op, &join(s, "add_fold"), &[out, f.bias], add_attrs)
        .map(OutletId::from)
}
