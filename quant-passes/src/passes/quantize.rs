//! Fake-quant insertion: where to quantize (reference semantics §3, §4.1).

use super::layer_patterns::is_weight_like;
use super::names::{ctx, join, unique_scope};
use super::step::quantization_step;
use crate::config::QuantizeConfig;
use crate::error::PassError;
use crate::pass::{InsertedQuantizer, Pass, PassReport, QuantizerRole};
use crate::patterns::{LayerCaptures, PatternRegistry};
use quant_core::builder::GraphBuilder;
use quant_core::{
    AttrValue, Attrs, Graph, GraphError, NodeId, NodeMap, NodeSet, OpRegistry, OutletId, Tensor,
    attrs,
};
use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};

const PASS: &str = "quantize";
/// Rule: a layer's weights (`C/weights_quant`, §3.3 row 1).
pub const WEIGHTS_QUANT: &str = "weights_quant";
/// Rule: a layer's activation (`A/act_quant`, row 2).
pub const ACT_QUANT: &str = "act_quant";
/// Rule: the bias add before a bypass (`C/conv_quant`, row 3).
pub const CONV_QUANT: &str = "conv_quant";
/// Rule: a bypass add not followed by an activation (`A/add_quant`, row 4).
pub const ADD_QUANT: &str = "add_quant";
/// Rule: an add after an activation (`post_activation_bypass_quant`, row 5).
pub const POST_BYPASS_QUANT: &str = "post_activation_bypass_quant";
/// Rule: an `Add`/`Mul` between quantized tensors (`activation_<Op>_quant`, §3.5).
pub const INTERMEDIATE_QUANT: &str = "intermediate_quant";
/// Rule recording layers (`Conv2D`, `MatMul`, `DepthwiseConv2dNative`)
/// that no layer pattern matched; only ever in [`PassReport::skipped`].
pub const LAYER_MATCH: &str = "match_layer";

const FAKE_QUANT_OPS: [&str; 3] = [
    "FakeQuantWithMinMaxVars",
    "FakeQuantWithMinMaxArgs",
    "FakeQuantWithMinMaxVarsPerChannel",
];
const LAYER_OPS: [&str; 3] = ["Conv2D", "MatMul", "DepthwiseConv2dNative"];

/// Inserts fake-quant ops where TensorFlow's `tf.contrib.quantize` does.
///
/// # What it does
///
/// 1. Matches every layer (`Conv2D`, `MatMul`, `DepthwiseConv2dNative` on
///    a recognised weight source) with the patterns of §3.1, in the four
///    stages of §3.2 (post-activation bypass, activation, final layer,
///    separable conv; a layer is matched at most once), before any edit.
/// 2. For each match, in order, inserts the quantizers of §3.3:
///    `C/weights_quant` (narrow range, init [−6, 6]), `A/act_quant`
///    (init [0, 6]), `C/conv_quant`, `A/add_quant` and
///    `ctx(post_bypass)/post_activation_bypass_quant` (init [−6, 6]), where
///    `C` is the layer's scope and `A` is `C`, or its parent when the layer
///    feeds a bypass.
/// 3. Quantizes every `Add`, `AddV2` or `Mul` fed (through pass-through
///    ops or other adds and muls) by a fake quant, as
///    `X/activation_<Op>_quant` (§3.5).
///
/// Each quantizer `prefix` (made unique with `_1`, `_2`, ... if taken) is,
/// in eval form: `prefix/min`, `prefix/max` (non-trainable `Variable`s
/// holding the init range) read by `prefix/FakeQuantWithMinMaxVars(x, min,
/// max)` with `num_bits` and `narrow_range`; every consumer listed for the
/// producer (from the consumer map taken before any edit) reads the fake
/// quant instead. [`PassReport::quantizers`] lists each one with its role.
///
/// With [`QuantizeConfig::per_channel`], weights use
/// `prefix/FakeQuantWithMinMaxVarsPerChannel` with `[C]` ranges on the
/// output-channel axis (decision 3): the last axis of `Conv2D` and
/// `MatMul` filters, and `in·mult` for depthwise filters, which are
/// reshaped to `[kh, kw, in·mult]` (`prefix/Reshape`), quantized, and
/// reshaped back (`prefix/Reshape_1`). A `MatMul` with `transpose_b` or a
/// filter of unknown shape falls back to per-tensor, with a
/// [`PassReport::skipped`] entry saying so.
///
/// In training form ([`QuantizeConfig::is_training`]) the fake quant reads
/// the freshly updated ranges instead (§4.1, §3.9): weights use the last
/// batch range (`prefix/BatchMin`, `prefix/BatchMax` reductions over all
/// axes, or all but the channel axis; `prefix/Minimum`/`prefix/Maximum`
/// with 0, or the symmetric form with [`QuantizeConfig::symmetric`];
/// `prefix/AssignMinLast`, `prefix/AssignMaxLast`), every other quantizer
/// a zero-debiased EMA with decay 0.999 (`prefix/AssignMinEma`,
/// `prefix/AssignMaxEma`, shadow variables `prefix/prefix/min/biased` and
/// `prefix/prefix/min/local_step`, likewise for `max`), computed exactly as
/// `quant_kernels::kernels::observers` specifies.
///
/// With a positive [`QuantizeConfig::quant_delay`] (in either form, as
/// upstream), consumers read `prefix/delayed_quant` = `SelectV2(
/// prefix/activate_quant, fake quant, x)` with `prefix/activate_quant` =
/// `GreaterEqual(fake_quantization_step/Identity, prefix/activate_quant/y)`
/// (decision 7, §3.7): the float `x` before the delay, the quantized value
/// from step `quant_delay` on. The ranges update from the first step.
///
/// # Preconditions
///
/// - Weight sources (decision 5): `Variable`, `VariableV2`, their
///   `Identity` reads (also through one `Identity` or a two-way `ConcatV2`
///   of partitions), `ReadVariableOp`, a float `Const` (frozen graphs), or
///   a `Mul` of one of these (`mul_fold` of batch-norm folding). The weights
///   must be the layer's input 1; anything else is not a layer (reported in
///   [`PassReport::skipped`] under [`LAYER_MATCH`]).
/// - With [`QuantizeConfig::scope`], only producers (and, for weights,
///   conv and add quantizers, all consumers) under that scope are
///   quantized (§3.4 steps 1–2).
/// - A tensor already followed by a fake quant, directly or through
///   `Reshape`/`Identity`, gets none: a second run changes nothing.
///
/// # Before → After
///
/// ```text
/// W ─────► C/Conv2D ─► C/BiasAdd ─► C/Relu6 ─► consumers
///
/// C/weights_quant/min, C/weights_quant/max             Variable [−6, 6]
/// C/weights_quant/FakeQuantWithMinMaxVars(W, min, max) narrow_range
/// C/Conv2D(x, C/weights_quant/FakeQuantWithMinMaxVars)
/// C/act_quant/min, C/act_quant/max                     Variable [0, 6]
/// C/act_quant/FakeQuantWithMinMaxVars(C/Relu6, min, max) ─► consumers
/// ```
///
/// Deviations from the original: the matcher quirks of §3.1 are not
/// reproduced (decision 5), float `Const` weights are recognised, and the
/// unfused-batch-norm op-name filter of the consumer map is not applied.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quantize;

/// The value that consumers of `outlet` read once the quantize pass has run:
/// the output of the activation fake quant that quantizes `outlet` (or of
/// its `<prefix>/delayed_quant` select under `quant_delay`), or `outlet`
/// itself when no fake quant reads it.
///
/// The pass reroutes the consumers that exist when it runs. A loss or a
/// fetch added afterwards, such as a training head on a model's logits,
/// must read this value instead: it is the quantized output, and it is
/// what makes the output quantizer's range updates run.
pub fn quantized_value(graph: &Graph, outlet: OutletId) -> OutletId {
    let fake_quant = graph.consumers(outlet).iter().find(|inlet| {
        inlet.slot == 0
            && graph
                .node(inlet.node)
                .op()
                .starts_with("FakeQuantWithMinMax")
    });
    let Some(fq) = fake_quant.map(|inlet| OutletId::new(inlet.node, 0)) else {
        return outlet;
    };
    graph
        .consumers(fq)
        .iter()
        .find(|inlet| graph.node(inlet.node).name().ends_with("/delayed_quant"))
        .map_or(fq, |inlet| OutletId::new(inlet.node, 0))
}

/// Where a quantizer's ranges live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Granularity {
    PerTensor,
    /// One range per channel of the last axis.
    PerChannel {
        channels: usize,
    },
    /// A depthwise filter `[kh, kw, in, mult]`, quantized per `in·mult`.
    Depthwise {
        shape: [usize; 4],
    },
}

/// How a quantizer's range follows the data in training graphs (§4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ranges {
    /// `LastValueQuantize`: the range of the last batch.
    LastValue,
    /// `MovingAvgQuantize`: a zero-debiased EMA of the batch ranges.
    MovingAverage,
}

/// The EMA decay of the moving-average quantizers (§3.6).
const EMA_DECAY: f32 = 0.999;

/// One call of the insertion primitive (§3.4).
struct Insertion {
    ranges: Ranges,
    context: String,
    name: String,
    rule: &'static str,
    role: QuantizerRole,
    producer: NodeId,
    consumers: Vec<NodeId>,
    init: (f32, f32),
    num_bits: u32,
    narrow_range: bool,
    symmetric: bool,
    granularity: Granularity,
    producer_scope: bool,
    consumer_scope: bool,
}

/// The distinct consumers of every node's output 0, in connection order,
/// as they were when the map was taken: nodes added since have none.
///
/// Stored flat (one list for the whole graph and an offset per node), so
/// taking the map costs two allocations however large the graph is.
struct ConsumerMap {
    /// The consumers of node `i` are `consumers[start[i]..start[i + 1]]`.
    start: Vec<usize>,
    consumers: Vec<NodeId>,
}

impl ConsumerMap {
    /// The consumers of `id` when the map was taken.
    fn get(&self, id: NodeId) -> &[NodeId] {
        match (self.start.get(id.index()), self.start.get(id.index() + 1)) {
            (Some(&from), Some(&to)) => &self.consumers[from..to],
            _ => &[],
        }
    }
}

fn consumer_map(graph: &Graph) -> ConsumerMap {
    let mut start = Vec::new();
    let mut consumers = Vec::new();
    // `listed_by[c]`: the last producer whose list took `c`, so that a
    // producer feeding many inputs of many nodes is deduplicated in linear time.
    let mut listed_by: Vec<Option<NodeId>> = Vec::new();
    for id in graph.node_ids() {
        // Tombstones before `id` have no consumers.
        start.resize(id.index() + 1, consumers.len());
        if graph.node(id).outputs().is_empty() {
            continue;
        }
        for inlet in graph.consumers(OutletId::new(id, 0)) {
            let c = inlet.node.index();
            if c >= listed_by.len() {
                listed_by.resize(c + 1, None);
            }
            if listed_by[c] != Some(id) {
                listed_by[c] = Some(id);
                consumers.push(inlet.node);
            }
        }
    }
    start.push(consumers.len());
    ConsumerMap { start, consumers }
}

/// Whether `x` feeds a fake quant, directly or through `Reshape`/`Identity` (§3.4 step 4).
fn already_followed(graph: &Graph, x: OutletId) -> bool {
    // Most tensors feed neither a fake quant nor a Reshape/Identity: answer
    // those from the direct consumers, without a queue.
    let mut through = false;
    for inlet in graph.consumers(x) {
        let op = graph.node(inlet.node).op();
        if FAKE_QUANT_OPS.contains(&op) {
            return true;
        }
        through |= matches!(op, "Reshape" | "Identity");
    }
    if !through {
        return false;
    }
    let mut queue = VecDeque::from([x]);
    let mut seen = NodeSet::default();
    while let Some(outlet) = queue.pop_front() {
        for inlet in graph.consumers(outlet) {
            let op = graph.node(inlet.node).op();
            if FAKE_QUANT_OPS.contains(&op) {
                return true;
            }
            if matches!(op, "Reshape" | "Identity") && seen.insert(inlet.node) {
                queue.push_back(OutletId::new(inlet.node, 0));
            }
        }
    }
    false
}

fn graph_error(node: &str) -> impl FnOnce(GraphError) -> PassError + '_ {
    move |source| PassError::Graph {
        pass: PASS,
        node: node.to_string(),
        source,
    }
}

impl Quantize {
    /// Finds the layers of every registered pattern, in registry order
    /// (a layer op is matched at most once), without editing the graph.
    fn match_layers(
        graph: &Graph,
        patterns: &PatternRegistry,
        report: &mut PassReport,
    ) -> Result<Vec<LayerCaptures>, PassError> {
        let mut matches: Vec<LayerCaptures> = Vec::new();
        let mut matched = NodeSet::default();
        for layer_pattern in patterns.iter() {
            let found = layer_pattern
                .find(graph)
                .map_err(|message| PassError::Matcher {
                    pass: PASS,
                    pattern: layer_pattern.name().to_string(),
                    message,
                })?;
            for lm in found {
                if matched.insert(lm.layer) {
                    tracing::debug!(
                        pattern = layer_pattern.name(),
                        layer = graph.node(lm.layer).name(),
                        "layer pattern matched"
                    );
                    matches.push(lm);
                }
            }
        }
        for id in graph.node_ids() {
            let node = graph.node(id);
            if !LAYER_OPS.contains(&node.op()) || matched.contains(&id) {
                continue;
            }
            let reason = match node.inputs().get(1) {
                Some(&w) if !is_weight_like(graph, w) => format!(
                    "input 1 is produced by {}, not by a recognised weight source",
                    graph.node(w.node).op()
                ),
                _ => "no layer pattern matched: no bias add, activation or second layer follows it"
                    .into(),
            };
            report.skipped(PASS, LAYER_MATCH, node.name(), reason);
        }
        Ok(matches)
    }

    /// How the weights of `layer` are quantized under `config`.
    fn weights_granularity(
        graph: &Graph,
        layer: NodeId,
        weights: OutletId,
        config: &QuantizeConfig,
        report: &mut PassReport,
    ) -> Granularity {
        if !config.per_channel {
            return Granularity::PerTensor;
        }
        let node = graph.node(layer);
        let dims = graph
            .fact(weights)
            .shape
            .as_ref()
            .and_then(|s| s.as_known());
        let fallback = |report: &mut PassReport, why: &str| {
            report.skipped(
                PASS,
                WEIGHTS_QUANT,
                node.name(),
                format!("per-channel weights: {why}; quantized per tensor"),
            );
            Granularity::PerTensor
        };
        match (node.op(), dims.as_deref()) {
            ("Conv2D", Some(&[_, _, _, out])) => Granularity::PerChannel { channels: out },
            ("MatMul", Some(&[_, out])) => {
                if node.attr_bool("transpose_b").unwrap_or(false) {
                    fallback(report, "a MatMul with transpose_b is not supported")
                } else {
                    Granularity::PerChannel { channels: out }
                }
            }
            ("DepthwiseConv2dNative", Some(&[kh, kw, i, mult])) => Granularity::Depthwise {
                shape: [kh, kw, i, mult],
            },
            _ => fallback(report, "the filter's shape is not known"),
        }
    }

    /// The insertions of §3.3 for one layer match, in order.
    fn quantize_layer(
        graph: &mut Graph,
        config: &QuantizeConfig,
        m: &LayerCaptures,
        consumers: &ConsumerMap,
        marked: &mut NodeSet,
        report: &mut PassReport,
    ) -> Result<(), PassError> {
        let c = ctx(graph.node(m.layer).name()).to_string();
        let a = if m.bypass.is_some() {
            ctx(&c).to_string()
        } else {
            c.clone()
        };
        let of = |id: NodeId| consumers.get(id).to_vec();
        let moving = |context: &str,
                      name: &str,
                      rule: &'static str,
                      role: QuantizerRole,
                      producer: NodeId,
                      init: (f32, f32),
                      consumer_scope: bool| Insertion {
            ranges: Ranges::MovingAverage,
            context: context.to_string(),
            name: name.to_string(),
            rule,
            role,
            producer,
            consumers: of(producer),
            init,
            num_bits: config.activation_bits,
            narrow_range: false,
            symmetric: config.symmetric,
            granularity: Granularity::PerTensor,
            producer_scope: true,
            consumer_scope,
        };

        // 1. Weights.
        let granularity = Self::weights_granularity(graph, m.layer, m.weights, config, report);
        let producer = m.weights.node;
        Self::insert(
            graph,
            config,
            Insertion {
                ranges: Ranges::LastValue,
                context: c.clone(),
                name: "weights_quant".into(),
                rule: WEIGHTS_QUANT,
                role: QuantizerRole::Weights,
                producer,
                consumers: of(producer),
                init: (-6.0, 6.0),
                num_bits: config.weight_bits,
                narrow_range: true,
                symmetric: config.symmetric || config.symmetric_weights,
                granularity,
                producer_scope: false,
                consumer_scope: true,
            },
            report,
        )?;
        // 2. Activation.
        let act = moving(
            &a,
            "act_quant",
            ACT_QUANT,
            QuantizerRole::Activation,
            m.activation,
            (0.0, 6.0),
            false,
        );
        Self::insert(graph, config, act, report)?;
        marked.insert(m.activation);
        // 3. The bias add before a bypass.
        if let (Some(_), Some(bias)) = (m.bypass, m.bias) {
            let conv = moving(
                &c,
                "conv_quant",
                CONV_QUANT,
                QuantizerRole::BiasAdd,
                bias,
                (-6.0, 6.0),
                true,
            );
            Self::insert(graph, config, conv, report)?;
            marked.insert(bias);
        }
        // 4. A bypass not followed by an activation.
        if let Some(bypass) = m.bypass {
            let fused = of(bypass)
                .iter()
                .any(|&n| matches!(graph.node(n).op(), "Relu" | "Relu6" | "Identity"));
            if !fused {
                let add = moving(
                    &a,
                    "add_quant",
                    ADD_QUANT,
                    QuantizerRole::Bypass,
                    bypass,
                    (-6.0, 6.0),
                    true,
                );
                Self::insert(graph, config, add, report)?;
                marked.insert(bypass);
            }
        }
        // 5. A post-activation bypass not followed by an activation.
        if let Some(post) = m.post_bypass {
            let fused = of(post)
                .iter()
                .any(|&n| matches!(graph.node(n).op(), "Relu" | "Relu6"));
            if !fused {
                let context = ctx(graph.node(post).name()).to_string();
                let ins = moving(
                    &context,
                    "post_activation_bypass_quant",
                    POST_BYPASS_QUANT,
                    QuantizerRole::PostActivationBypass,
                    post,
                    (-6.0, 6.0),
                    false,
                );
                Self::insert(graph, config, ins, report)?;
                marked.insert(post);
            }
        }
        Ok(())
    }

    /// The insertion primitive of §3.4 (eval form).
    fn insert(
        graph: &mut Graph,
        config: &QuantizeConfig,
        ins: Insertion,
        report: &mut PassReport,
    ) -> Result<(), PassError> {
        let producer_name = graph.node(ins.producer).name().to_string();
        let skip = |report: &mut PassReport, reason: String| {
            report.skipped(PASS, ins.rule, producer_name.as_str(), reason);
            Ok(())
        };
        if let Some(scope) = config.scope.as_deref() {
            if ins.producer_scope && !producer_name.starts_with(scope) {
                return skip(report, format!("the producer is outside scope '{scope}'"));
            }
            if ins.consumer_scope
                && let Some(&out) = ins
                    .consumers
                    .iter()
                    .find(|&&c| !graph.node(c).name().starts_with(scope))
            {
                return skip(
                    report,
                    format!(
                        "consumer '{}' is outside scope '{scope}'",
                        graph.node(out).name()
                    ),
                );
            }
        }
        let x = OutletId::new(ins.producer, 0);
        if already_followed(graph, x) {
            return skip(report, "already followed by a fake quant".into());
        }
        let reading: usize = ins
            .consumers
            .iter()
            .map(|&c| graph.node(c).inputs().iter().filter(|&&i| i == x).count())
            .sum();
        if reading < ins.consumers.len() {
            return Err(PassError::NoInputsQuantized {
                pass: PASS,
                producer: producer_name,
                consumers: ins
                    .consumers
                    .iter()
                    .map(|&c| graph.node(c).name().to_string())
                    .collect(),
            });
        }
        let prefix = unique_scope(graph, &join(&ins.context, &ins.name));
        let mut b = GraphBuilder::extend(std::mem::take(graph), OpRegistry::builtin());
        let delay = config.quant_delay.filter(|&d| d > 0);
        let built = Self::build(&mut b, &prefix, x, &ins, config.is_training, delay);
        *graph = b.finish();
        let (fq, output) = built.map_err(graph_error(&producer_name))?;
        graph
            .reroute(x, output, Some(&ins.consumers))
            .map_err(graph_error(&producer_name))?;
        let fq_name = graph.node(fq).name().to_string();
        report.applied(PASS, ins.rule, fq_name.as_str());
        report.quantizers.push(InsertedQuantizer {
            node: fq_name,
            role: ins.role,
            num_bits: ins.num_bits,
            narrow_range: ins.narrow_range,
            symmetric: ins.symmetric,
            per_channel: ins.granularity != Granularity::PerTensor,
        });
        Ok(())
    }

    /// Adds the quantizer under `prefix`; returns the fake quant and the
    /// output the consumers are to read: the fake quant's, or with a
    /// positive `delay` the select `prefix/delayed_quant` between it and `x`
    /// on `prefix/activate_quant` = step ≥ delay (decision 7).
    fn build(
        b: &mut GraphBuilder<'_>,
        prefix: &str,
        x: OutletId,
        ins: &Insertion,
        training: bool,
        delay: Option<i64>,
    ) -> Result<(NodeId, OutletId), GraphError> {
        let range = |value: f32, channels: Option<usize>| match channels {
            None => Tensor::scalar(value),
            Some(n) => Tensor::from_vec(&[n], vec![value; n])
                .unwrap_or_else(|e| unreachable!("a [{n}] tensor of {n} values: {e}")),
        };
        let to_i32 = |d: usize| {
            i32::try_from(d).map_err(|_| GraphError::Inference {
                node: prefix.to_string(),
                op: "Reshape".into(),
                message: format!("dimension {d} does not fit in i32"),
            })
        };
        let (input, channels) = match ins.granularity {
            Granularity::PerTensor => (x, None),
            Granularity::PerChannel { channels } => (x, Some(channels)),
            Granularity::Depthwise {
                shape: [kh, kw, i, mult],
            } => {
                let flat = [to_i32(kh)?, to_i32(kw)?, to_i32(i * mult)?];
                let r = b.reshape(&join(prefix, "Reshape"), x, &flat)?;
                (r, Some(i * mult))
            }
        };
        let min = b.variable(&join(prefix, "min"), range(ins.init.0, channels), false)?;
        let max = b.variable(&join(prefix, "max"), range(ins.init.1, channels), false)?;
        let (min, max) = if training {
            Self::build_updates(b, prefix, input, ins, channels, [min, max])?
        } else {
            (min, max)
        };
        let op = if channels.is_some() {
            "FakeQuantWithMinMaxVarsPerChannel"
        } else {
            "FakeQuantWithMinMaxVars"
        };
        let fq_attrs = attrs([
            ("num_bits", AttrValue::Int(i64::from(ins.num_bits))),
            ("narrow_range", AttrValue::Bool(ins.narrow_range)),
        ]);
        let fq = b.add(op, &join(prefix, op), &[input, min, max], fq_attrs)?;
        let output = match ins.granularity {
            Granularity::Depthwise { shape } => {
                let back: Vec<i32> = shape.into_iter().map(to_i32).collect::<Result<_, _>>()?;
                b.reshape(&join(prefix, "Reshape_1"), fq.into(), &back)?
            }
            _ => fq.into(),
        };
        let Some(delay) = delay else {
            return Ok((fq, output));
        };
        let step = quantization_step(b)?;
        let delay = b.constant(&join(prefix, "activate_quant/y"), Tensor::scalar(delay))?;
        let active = b.binary("GreaterEqual", &join(prefix, "activate_quant"), step, delay)?;
        let delayed = b.add(
            "SelectV2",
            &join(prefix, "delayed_quant"),
            &[active, output, x],
            Attrs::new(),
        )?;
        Ok((fq, delayed.into()))
    }

    /// The training-time range updates of §4.1/§4.2; returns the updated
    /// `(min, max)` the fake quant reads.
    fn build_updates(
        b: &mut GraphBuilder<'_>,
        prefix: &str,
        x: OutletId,
        ins: &Insertion,
        channels: Option<usize>,
        [min, max]: [OutletId; 2],
    ) -> Result<(OutletId, OutletId), GraphError> {
        let n = |name: &str| join(prefix, name);
        // A tensor of unknown rank (a resource read) is flattened first.
        let (x, rank) = match b.graph().fact(x).shape.as_ref().map(|s| s.rank()) {
            Some(rank) => (x, rank),
            None => (b.reshape(&n("Reshape"), x, &[-1])?, 1),
        };
        // Per tensor: every axis; per channel: every axis but the last.
        let axes: Vec<i32> = (0..rank)
            .filter(|&a| channels.is_none() || a + 1 < rank)
            .map(|a| i32::try_from(a).unwrap_or(i32::MAX))
            .collect();
        let mut reduce = |op: &str, name: &str| -> Result<OutletId, GraphError> {
            if axes.is_empty() && channels.is_some() {
                return b.identity(&n(name), x);
            }
            let t = Tensor::from_vec(&[axes.len()], axes.clone()).map_err(|source| {
                GraphError::Tensor {
                    node: n(name),
                    source,
                }
            })?;
            let a = b.constant(&n(&join(name, "reduction_indices")), t)?;
            b.add(op, &n(name), &[x, a], Attrs::new())
                .map(OutletId::from)
        };
        let bmin = reduce("Min", "BatchMin")?;
        let bmax = reduce("Max", "BatchMax")?;
        let (rmin, rmax) = if ins.symmetric {
            let rho = symmetric_ratio(ins.num_bits, ins.narrow_range);
            let rho = b.constant(&n("ratio"), Tensor::scalar(rho))?;
            let scaled_max = b.binary("RealDiv", &n("truediv"), bmax, rho)?;
            let scaled_min = b.binary("Mul", &n("mul"), bmin, rho)?;
            (
                b.binary("Minimum", &n("Minimum"), bmin, scaled_max)?,
                b.binary("Maximum", &n("Maximum"), bmax, scaled_min)?,
            )
        } else {
            let zero = b.constant(&n("zero"), Tensor::scalar(0.0f32))?;
            (
                b.binary("Minimum", &n("Minimum"), bmin, zero)?,
                b.binary("Maximum", &n("Maximum"), bmax, zero)?,
            )
        };
        let assign = |b: &mut GraphBuilder<'_>, op: &str, name: &str, v, value| {
            b.add(op, name, &[v, value], Attrs::new())
                .map(OutletId::from)
        };
        match ins.ranges {
            Ranges::LastValue => Ok((
                assign(b, "Assign", &n("AssignMinLast"), min, rmin)?,
                assign(b, "Assign", &n("AssignMaxLast"), max, rmax)?,
            )),
            Ranges::MovingAverage => {
                let mut ema = |which: &str, v: OutletId, r: OutletId| {
                    let shadow = format!("{prefix}/{prefix}/{which}");
                    let update = n(&format!("Assign{}Ema", capitalise(which)));
                    let zeros = match channels {
                        None => Tensor::scalar(0.0f32),
                        Some(c) => Tensor::from_vec(&[c], vec![0.0f32; c])
                            .unwrap_or_else(|e| unreachable!("[{c}] zeros: {e}")),
                    };
                    let biased = b.variable(&join(&shadow, "biased"), zeros, false)?;
                    let step =
                        b.variable(&join(&shadow, "local_step"), Tensor::scalar(0.0f32), false)?;
                    let u = |name: &str| join(&update, name);
                    let c = b.constant(&u("decay"), Tensor::scalar(1.0f32 - EMA_DECAY))?;
                    let one = b.constant(&u("one"), Tensor::scalar(1.0f32))?;
                    let diff = b.binary("Sub", &u("sub"), biased, r)?;
                    let delta = b.binary("Mul", &u("mul"), diff, c)?;
                    let new_biased = assign(b, "AssignSub", &u("update_biased"), biased, delta)?;
                    let new_step = assign(b, "AssignAdd", &u("update_local_step"), step, one)?;
                    let base = b.binary("Sub", &u("sub_1"), one, c)?;
                    let pow = b.binary("Pow", &u("pow"), base, new_step)?;
                    let factor = b.binary("Sub", &u("sub_2"), one, pow)?;
                    let unbiased = b.binary("RealDiv", &u("truediv"), new_biased, factor)?;
                    let gap = b.binary("Sub", &u("sub_3"), v, unbiased)?;
                    assign(b, "AssignSub", &update, v, gap)
                };
                let new_min = ema("min", min, rmin)?;
                let new_max = ema("max", max, rmax)?;
                Ok((new_min, new_max))
            }
        }
    }

    /// `quantizable(X)` of §3.5; `memo` caches answers for the current graph state.
    fn quantizable(graph: &Graph, x: NodeId, marked: &NodeSet, memo: &mut NodeMap<bool>) -> bool {
        if let Some(&known) = memo.get(&x) {
            return known;
        }
        memo.insert(x, false);
        let answer = Self::quantizable_uncached(graph, x, marked, memo);
        memo.insert(x, answer);
        answer
    }

    fn quantizable_uncached(
        graph: &Graph,
        x: NodeId,
        marked: &NodeSet,
        memo: &mut NodeMap<bool>,
    ) -> bool {
        let node = graph.node(x);
        if marked.contains(&x) || !matches!(node.op(), "Add" | "AddV2" | "Mul") {
            return false;
        }
        if let [only] = graph.consumers(OutletId::new(x, 0))
            && node.outputs().len() == 1
            && matches!(graph.node(only.node).op(), "Relu" | "Relu6")
        {
            return false;
        }
        for input in node.inputs() {
            let mut p = input.node;
            while matches!(
                graph.node(p).op(),
                "Reshape" | "Identity" | "BatchToSpaceND" | "SpaceToBatchND" | "MaxPool" | "Max"
            ) {
                match graph.node(p).inputs().first() {
                    Some(i) => p = i.node,
                    None => break,
                }
            }
            let producer = graph.node(p);
            if producer.op() == "FakeQuantWithMinMaxVars"
                || producer.name().ends_with("/delayed_quant")
            {
                return true;
            }
            if matches!(producer.op(), "Add" | "AddV2" | "Mul") {
                let upstream: Vec<NodeId> = producer.inputs().iter().map(|u| u.node).collect();
                if upstream
                    .into_iter()
                    .any(|u| Self::quantizable(graph, u, marked, memo))
                {
                    return true;
                }
            }
        }
        false
    }

    /// The intermediate Add/Mul pass of §3.5.
    fn quantize_intermediates(
        graph: &mut Graph,
        config: &QuantizeConfig,
        marked: &NodeSet,
        report: &mut PassReport,
    ) -> Result<(), PassError> {
        let existing: Vec<NodeId> = graph.node_ids().collect();
        for x in existing {
            // The cheap refusals of `quantizable_uncached` first, so that the
            // memo is only allocated for candidate Add/Mul nodes.
            let candidate = matches!(graph.node(x).op(), "Add" | "AddV2" | "Mul");
            if !candidate
                || marked.contains(&x)
                || !Self::quantizable(graph, x, marked, &mut NodeMap::default())
            {
                continue;
            }
            let node = graph.node(x);
            let ins = Insertion {
                ranges: Ranges::MovingAverage,
                context: node.name().to_string(),
                name: format!("activation_{}_quant", node.op()),
                rule: INTERMEDIATE_QUANT,
                role: QuantizerRole::Intermediate,
                producer: x,
                // Inserting a quantizer changes the consumers of its
                // producer only, so those of later candidates are as they
                // were before the loop.
                consumers: graph.consumer_nodes(x),
                init: (-6.0, 6.0),
                num_bits: config.activation_bits,
                narrow_range: false,
                symmetric: false,
                granularity: Granularity::PerTensor,
                producer_scope: true,
                consumer_scope: false,
            };
            Self::insert(graph, config, ins, report)?;
        }
        Ok(())
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|f| f.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The ratio of the negative to the positive end of a symmetric range
/// (§4.1): −1 with a narrow range, else `−(2^b − 2) / 2^b`.
fn symmetric_ratio(num_bits: u32, narrow_range: bool) -> f32 {
    if narrow_range {
        -1.0
    } else {
        let levels = (1u64 << num_bits) as f32;
        -(levels - 2.0) / levels
    }
}

impl Pass for Quantize {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, graph: &mut Graph, config: &QuantizeConfig) -> Result<PassReport, PassError> {
        static BUILTIN: LazyLock<PatternRegistry> = LazyLock::new(PatternRegistry::builtin);
        Self::run_with(graph, config, &BUILTIN)
    }
}

/// [`Quantize`] over the layer patterns of a [`PatternRegistry`]: its
/// entries are tried in order (plugin patterns, then the built-in stages of
/// §3.2; see [`crate::patterns`]), a layer is matched at most once, each
/// match is quantized as §3.3 says, and the intermediate pass of §3.5
/// follows. With [`PatternRegistry::builtin`] (the default) it is exactly
/// [`Quantize`].
#[derive(Clone, Debug, Default)]
pub struct QuantizeWithPatterns {
    /// The patterns to try, in order.
    pub patterns: Arc<PatternRegistry>,
}

impl Pass for QuantizeWithPatterns {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, graph: &mut Graph, config: &QuantizeConfig) -> Result<PassReport, PassError> {
        Quantize::run_with(graph, config, &self.patterns)
    }
}

impl Quantize {
    fn run_with(
        graph: &mut Graph,
        config: &QuantizeConfig,
        patterns: &PatternRegistry,
    ) -> Result<PassReport, PassError> {
        let mut report = PassReport::new();
        let consumers = consumer_map(graph);
        let matches = Self::match_layers(graph, patterns, &mut report)?;
        let mut marked = NodeSet::default();
        for m in &matches {
            Self::quantize_layer(graph, config, m, &consumers, &mut marked, &mut report)?;
        }
        Self::quantize_intermediates(graph, config, &marked, &mut report)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant_core::{DType, Shape};

    /// `x → a = Relu(x)`, `b = Relu(a)`.
    fn chain() -> (Graph, [NodeId; 3]) {
        let mut b = GraphBuilder::new();
        let x = b.placeholder("x", DType::F32, Shape::known(&[2])).unwrap();
        let a = b.unary("Relu", "a", x).unwrap();
        let c = b.unary("Relu", "b", a).unwrap();
        (b.finish(), [x.node, a.node, c.node])
    }

    fn insertion(producer: NodeId, consumers: Vec<NodeId>) -> Insertion {
        Insertion {
            ranges: Ranges::MovingAverage,
            context: "q".into(),
            name: "act_quant".into(),
            rule: ACT_QUANT,
            role: QuantizerRole::Activation,
            producer,
            consumers,
            init: (0.0, 6.0),
            num_bits: 8,
            narrow_range: false,
            symmetric: false,
            granularity: Granularity::PerTensor,
            producer_scope: true,
            consumer_scope: false,
        }
    }

    #[test]
    fn a_consumer_that_does_not_read_the_producer_is_a_typed_error() {
        let (mut g, [x, _, b]) = chain();
        let before = quant_core::graph::dump(&g);
        let mut report = PassReport::new();
        let err = Quantize::insert(
            &mut g,
            &QuantizeConfig::eval(),
            insertion(x, vec![b]),
            &mut report,
        )
        .unwrap_err();
        assert!(
            matches!(&err, PassError::NoInputsQuantized { producer, consumers, .. }
                if producer == "x" && consumers == &["b".to_string()]),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "pass quantize: no inputs quantized for ops: [b] (quantizing 'x')"
        );
        assert_eq!(quant_core::graph::dump(&g), before);
    }

    #[test]
    fn a_quantizer_without_consumers_is_left_dangling_and_names_are_made_unique() {
        let (mut g, [_, a, b]) = chain();
        let mut report = PassReport::new();
        let config = QuantizeConfig::eval();
        Quantize::insert(&mut g, &config, insertion(b, vec![]), &mut report).unwrap();
        Quantize::insert(&mut g, &config, insertion(a, vec![b]), &mut report).unwrap();
        let names: Vec<&str> = report.quantizers.iter().map(|q| q.node.as_str()).collect();
        assert_eq!(
            names,
            [
                "q/act_quant/FakeQuantWithMinMaxVars",
                "q/act_quant_1/FakeQuantWithMinMaxVars"
            ]
        );
        assert!(!g.has_consumers(g.id(names[0]).unwrap()));
        assert_eq!(
            g.by_name("b").unwrap().inputs()[0],
            OutletId::new(g.id(names[1]).unwrap(), 0)
        );
    }
}

/// Scenarios 10–15 of §8: the training quantizers on a rank-1 input.
#[cfg(test)]
mod training_tests {
    use super::*;
    use quant_core::{DType, Shape};
    use quant_kernels::session::Session;

    /// A dangling quantizer on placeholder `x` (shape `[2]`), init range [0, 0].
    fn quantizer(ranges: Ranges, symmetric: bool, narrow_range: bool) -> Session {
        let mut b = GraphBuilder::new();
        let x = b.placeholder("x", DType::F32, Shape::known(&[2])).unwrap();
        let mut g = b.finish();
        let ins = Insertion {
            ranges,
            context: String::new(),
            name: "q".into(),
            rule: ACT_QUANT,
            role: QuantizerRole::Activation,
            producer: x.node,
            consumers: vec![],
            init: (0.0, 0.0),
            num_bits: 8,
            narrow_range,
            symmetric,
            granularity: Granularity::PerTensor,
            producer_scope: false,
            consumer_scope: false,
        };
        let config = QuantizeConfig::training();
        let mut report = PassReport::new();
        Quantize::insert(&mut g, &config, ins, &mut report).unwrap();
        assert_eq!(report.quantizers[0].node, "q/FakeQuantWithMinMaxVars");
        Session::new(g).unwrap()
    }

    fn observe(s: &mut Session, batches: &[[f32; 2]]) -> (f32, f32) {
        for batch in batches {
            let x = Tensor::from_vec(&[2], batch.to_vec()).unwrap();
            s.run(&[("x", x)], &["q/FakeQuantWithMinMaxVars"]).unwrap();
        }
        let get = |name: &str| s.variable(name).unwrap().to_f64_vec()[0] as f32;
        (get("q/min"), get("q/max"))
    }

    #[test]
    fn scenarios_10_to_12_last_value_ranges() {
        let mut s = quantizer(Ranges::LastValue, false, false);
        assert_eq!(observe(&mut s, &[[-1.0, 1.0]]), (-1.0, 1.0));
        let mut s = quantizer(Ranges::LastValue, true, false);
        assert_eq!(
            observe(&mut s, &[[-0.9921875, 0.9921875]]),
            (-1.0, 0.9921875)
        );
        let mut s = quantizer(Ranges::LastValue, true, true);
        assert_eq!(observe(&mut s, &[[-1.0, 0.5]]), (-1.0, 1.0));
    }

    #[test]
    fn scenarios_13_to_15_zero_debiased_moving_averages() {
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-3;
        let mut s = quantizer(Ranges::MovingAverage, false, false);
        let (min, max) = observe(&mut s, &[[-1.0, 1.0], [0.0, 0.0]]);
        assert!(close(min, -0.5) && close(max, 0.5), "{min} {max}");
        assert_eq!(
            s.variable("q/q/min/local_step").unwrap(),
            &Tensor::scalar(2.0f32)
        );
        let mut s = quantizer(Ranges::MovingAverage, true, false);
        let (min, max) = observe(&mut s, &[[-1.0, 0.5], [0.0, 0.0]]);
        assert!(
            close(min, -0.5) && close(max, 0.5 * 0.9921875),
            "{min} {max}"
        );
        assert!((max + min * 0.9921875).abs() <= 1e-6, "{min} {max}");
        let mut s = quantizer(Ranges::MovingAverage, true, true);
        let (min, max) = observe(&mut s, &[[-1.0, 0.5], [0.0, 0.0]]);
        assert!(close(min, -0.5) && close(max, 0.5), "{min} {max}");
        assert!((max + min).abs() <= 1e-6, "{min} {max}");
    }
}
