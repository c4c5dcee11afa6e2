//! Recognising the layers of an eval graph around its fake quants.
//!
//! The eval rewrite (reference semantics §3.3) leaves each layer as
//! `weights ─FQ─► layer ─► bias add ─► activation ─FQ─►`, a bypass as
//! `Add(·, ·) [─► activation] ─FQ─►`, and data-movement ops (pools,
//! reshape, pad, concat) without a quantizer of their own. These helpers
//! find those shapes; `emit` turns them into integer ops.

use quant_core::integer::Activation;
use quant_core::{Graph, NodeId, OutletId};
use std::collections::HashMap;

/// The fake-quant op types.
pub const FAKE_QUANT_OPS: [&str; 3] = [
    "FakeQuantWithMinMaxVars",
    "FakeQuantWithMinMaxVarsPerChannel",
    "FakeQuantWithMinMaxArgs",
];

/// The layer op types whose second input is a weight tensor.
pub const LAYER_OPS: [&str; 3] = ["Conv2D", "DepthwiseConv2dNative", "MatMul"];

/// The fewest data inputs lowering reads from a node of type `op` (0 for
/// types it does not read inputs of).
pub fn min_inputs(op: &str) -> usize {
    match op {
        "FakeQuantWithMinMaxVars" | "FakeQuantWithMinMaxVarsPerChannel" => 3,
        "Conv2D"
        | "DepthwiseConv2dNative"
        | "MatMul"
        | "Add"
        | "AddV2"
        | "BiasAdd"
        | "Mul"
        | "Reshape"
        | "Pad"
        | "Mean"
        | "ConcatV2" => 2,
        "FakeQuantWithMinMaxArgs"
        | "MaxPool"
        | "AvgPool"
        | "Softmax"
        | "Sigmoid"
        | "Relu"
        | "Relu6"
        | "Identity" => 1,
        "SelectV2" | "Select" => 3,
        _ => 0,
    }
}

/// Whether `op` is a fake quant.
pub fn is_fake_quant(op: &str) -> bool {
    FAKE_QUANT_OPS.contains(&op)
}

/// Follows `Identity` ops and `delayed_quant` selects (decision 7: the
/// deployed model is the quantized branch, input 1) back to the producer
/// that matters.
pub fn strip(graph: &Graph, mut outlet: OutletId) -> OutletId {
    loop {
        let node = graph.node(outlet.node);
        match node.op() {
            "Identity" if !node.inputs().is_empty() => outlet = node.inputs()[0],
            "SelectV2" | "Select"
                if node.name().ends_with("delayed_quant") && node.inputs().len() == 3 =>
            {
                outlet = node.inputs()[1]
            }
            _ => return outlet,
        }
    }
}

/// The fused activation an op type stands for, if it is one.
pub fn activation_of(op: &str) -> Option<Activation> {
    match op {
        "Relu" => Some(Activation::Relu),
        "Relu6" => Some(Activation::Relu6),
        _ => None,
    }
}

/// The weight fake quant of a layer: the op and whether it is the depthwise
/// per-channel form `Reshape_1(FQ(Reshape(w)))` of the rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightQuant {
    /// The fake-quant node.
    pub fq: NodeId,
    /// The float weights it reads (the input of the inner `Reshape` for
    /// the depthwise form: same element order).
    pub input: OutletId,
}

/// The fake quant feeding a layer's weight input, if any.
pub fn weight_quant(graph: &Graph, weights: OutletId) -> Option<WeightQuant> {
    let w = strip(graph, weights);
    let node = graph.node(w.node);
    if is_fake_quant(node.op()) {
        return Some(WeightQuant {
            fq: w.node,
            input: node.inputs()[0],
        });
    }
    // Depthwise per channel: Reshape_1(FQ(Reshape(w), min, max), shape).
    if node.op() == "Reshape" {
        let inner = strip(graph, node.inputs()[0]);
        let fq = graph.node(inner.node);
        if is_fake_quant(fq.op()) {
            let reshaped = strip(graph, fq.inputs()[0]);
            let r = graph.node(reshaped.node);
            let input = if r.op() == "Reshape" {
                r.inputs()[0]
            } else {
                fq.inputs()[0]
            };
            return Some(WeightQuant {
                fq: inner.node,
                input,
            });
        }
    }
    None
}

/// What computes the value a fake quant quantizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Producer {
    /// A conv, depthwise conv or matmul, with the constant bias its bias
    /// add adds (if any).
    Layer {
        /// The layer op.
        layer: NodeId,
        /// The bias tensor.
        bias: Option<OutletId>,
    },
    /// An `Add`/`AddV2` of two computed tensors (a bypass).
    Add {
        /// The add op.
        add: NodeId,
    },
    /// A `Mul` of two computed tensors.
    Mul {
        /// The mul op.
        mul: NodeId,
    },
    /// Anything else (pools, reshape, inputs, ...), lowered on its own.
    Other,
}

/// Memoized "does this tensor depend on no graph input": constant
/// subgraphs (variables, folded batch-norm arithmetic) are evaluated, not
/// lowered to ops.
#[derive(Default)]
pub struct Constness {
    memo: HashMap<NodeId, bool>,
}

impl Constness {
    /// Whether `node` has no `Placeholder` among its ancestors.
    pub fn is_constant(&mut self, graph: &Graph, node: NodeId) -> bool {
        let mut stack = vec![(node, false)];
        while let Some((id, expanded)) = stack.pop() {
            if self.memo.contains_key(&id) {
                continue;
            }
            let n = graph.node(id);
            if n.op() == "Placeholder" {
                self.memo.insert(id, false);
                continue;
            }
            if expanded {
                let constant = n
                    .inputs()
                    .iter()
                    .all(|i| self.memo.get(&i.node).copied().unwrap_or(false));
                self.memo.insert(id, constant);
            } else {
                stack.push((id, true));
                for i in n.inputs() {
                    if !self.memo.contains_key(&i.node) {
                        stack.push((i.node, false));
                    }
                }
            }
        }
        self.memo[&node]
    }
}

/// Classifies the (stripped) producer `y` of a fake quant's input, after
/// any activation has been peeled off.
pub fn producer(graph: &Graph, consts: &mut Constness, y: OutletId) -> Producer {
    let node = graph.node(y.node);
    let op = node.op();
    if LAYER_OPS.contains(&op) {
        return Producer::Layer {
            layer: y.node,
            bias: None,
        };
    }
    if matches!(op, "Add" | "AddV2" | "BiasAdd") && node.inputs().len() == 2 {
        let (a, b) = (
            strip(graph, node.inputs()[0]),
            strip(graph, node.inputs()[1]),
        );
        let is_layer = |o: OutletId| LAYER_OPS.contains(&graph.node(o.node).op());
        let candidates: &[(OutletId, OutletId)] = if op == "BiasAdd" {
            &[(a, b)]
        } else {
            &[(a, b), (b, a)]
        };
        for &(layer, bias) in candidates {
            if is_layer(layer) && consts.is_constant(graph, bias.node) {
                return Producer::Layer {
                    layer: layer.node,
                    bias: Some(node.inputs()[if bias == b { 1 } else { 0 }]),
                };
            }
        }
        if op != "BiasAdd" {
            return Producer::Add { add: y.node };
        }
    }
    if op == "Mul" && node.inputs().len() == 2 {
        return Producer::Mul { mul: y.node };
    }
    Producer::Other
}

/// The fake quant that quantizes `outlet`, if one of its consumers is one.
pub fn quantizer_of(graph: &Graph, outlet: OutletId) -> Option<NodeId> {
    graph
        .consumers(outlet)
        .iter()
        .map(|inlet| inlet.node)
        .find(|&c| is_fake_quant(graph.node(c).op()) && graph.node(c).inputs()[0] == outlet)
}
