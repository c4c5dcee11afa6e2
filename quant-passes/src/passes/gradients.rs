//! Reverse-mode differentiation as a graph rewrite: the executor knows
//! nothing of autodiff, it just runs the backward ops this pass appends.
//!
//! # What it does
//!
//! [`gradients`] seeds every `y` with ones (or a given upstream gradient,
//! [`gradients_with_seeds`]), visits the nodes lying on a differentiable
//! path from some `x` to some `y` in reverse topological order, and for
//! each one that received a gradient appends the backward ops of its rule
//! under `gradients/<node>_grad/` (TensorFlow's naming, e.g.
//! `gradients/conv1/Conv2D_grad/Conv2DBackpropInput`; the scope becomes
//! `gradients_1`, ... on later calls). A tensor read by several consumers
//! gets the `AddV2` sum of their contributions. The result holds, per `x`,
//! the wire carrying `dL/dx`, or `None` when no gradient reaches it.
//!
//! A gradient stops at `StopGradient`, at integer and boolean wires, at
//! ops whose output does not depend on their input's values (`ZerosLike`,
//! `OnesLike`, `Shape`, `Size`), at the condition of a select, and at
//! `Assign`, `AssignAdd` and `AssignSub`: the value an assignment writes is
//! not differentiated. Quantizer ranges in a training graph reach their
//! fake quant through such an assignment, so their gradients (TensorFlow's
//! `dmin`/`dmax`) are dropped — unless
//! [`GradientOptions::learnable_ranges`] is set, in which case the gradient
//! arriving at an assignment to a range variable (`…_quant/min|max`) is
//! credited to that variable (a straight-through estimate of the update).
//!
//! The rules (TensorFlow's registered gradients): `Conv2D`,
//! `DepthwiseConv2dNative` (the two backprop ops), `MatMul` (all transpose
//! flags), `BiasAdd` (`BiasAddGrad`), `Add`/`AddV2`/`Sub`/`Mul`/`RealDiv`/
//! `Maximum`/`Minimum`/`SquaredDifference`/`Pow` with broadcasting (summed
//! over the broadcast axes; `Maximum` sends `g` to `a` where `a ≥ b`,
//! `Minimum` where `a ≤ b`; `Pow`'s exponent gets `g·y·log a` where
//! `a > 0`), `Neg`, `Square`, `Exp`, `Log`, `Reciprocal`, `Relu`, `Relu6`,
//! `Rsqrt`, `Sqrt`, `Sigmoid`, `Tanh` (their `*Grad` ops), `MaxPool`,
//! `AvgPool`, `Reshape`, `Squeeze`, `ExpandDims`, `BroadcastTo`,
//! `Identity`, `Cast` (float to float), `Select`/`SelectV2`, `Mean`, `Sum`,
//! `ConcatV2`, `Pad` (`Slice`s of the gradient), `SpaceToBatchND` and
//! `BatchToSpaceND` (each other), `Softmax`, both softmax
//! cross-entropies (output 0 through the backprop output 1; the dense
//! labels get `−g·log_softmax`), `FusedBatchNormV3` in training mode
//! (output 0 through `FusedBatchNormGradV3` with the reserve spaces, plus
//! the exact gradient of the batch mean and Bessel-corrected batch
//! variance outputs, `g_mean/n + 2·g_var·(x − mean)/(n − 1)`, reference
//! semantics §2.6) and in inference mode (where, as in TensorFlow, the mean
//! and variance inputs get no gradient from output 0), and the three fake
//! quants (straight-through for `x`, `dmin`/`dmax` as TensorFlow defines
//! them).
//!
//! Shapes are taken from the graph's facts where they are static (as
//! constants) and computed at run time otherwise (`Shape`, `Size`,
//! `BroadcastTo`, `OnesLike` for the seed), so an unknown batch dimension
//! is fine.
//!
//! # Preconditions
//!
//! Every op on a path from an `x` to a `y` has a rule, else
//! [`PassError::NoGradient`] names it. Where a rule needs what the graph
//! does not know (the rank of a broadcast or reduced tensor, the size of a
//! concatenated input along the axis), [`PassError::UnknownShape`] names
//! the node. Unknown dimensions are assumed not to be broadcast. Axes,
//! paddings and other shape operands must be constants. On error the graph
//! is left as it was.
//!
//! # Before → After
//!
//! ```text
//! x ─ Relu ─ Mean ─ loss         x ─ Relu ─ Mean ─ loss
//!                          ⇒           │
//!   grad_ys_0 ─ loss_grad/{Reshape, RealDiv, BroadcastTo} ─ y_grad/ReluGrad ─ dx
//! ```

use crate::error::PassError;
use quant_core::{
    AttrValue, Attrs, DType, Graph, GraphError, NewNode, Node, NodeId, OpRegistry, OutletId,
    OutputFact, Shape, Tensor, attrs,
};
use std::collections::{BTreeSet, HashMap};

const PASS: &str = "gradients";

/// Options of [`gradients`] and [`trainable_variables`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GradientOptions {
    /// Train the quantizer ranges (`…_quant/min`, `…_quant/max`) by
    /// gradient: their `dmin`/`dmax` flow through the range assignments to
    /// the range variables, and [`trainable_variables`] lists them.
    pub learnable_ranges: bool,
    /// Op types without a built-in rule (plugin ops, `quant_plugin_api`)
    /// whose gradient is the op `<op>Grad(x_0, …, x_{n-1}, dy) -> (dx_0, …,
    /// dx_{n-1})`, `dy` being the gradient of output 0 and each `dx_i`
    /// taking `x_i`'s facts.
    pub gradient_ops: BTreeSet<String>,
}

/// Appends the gradients of `Σ ys` with respect to each of `xs` (every `y`
/// seeded with ones of its shape) and returns, per `x`, the wire holding
/// it, or `None` if no gradient reaches `x`. See the module docs.
pub fn gradients(
    graph: &mut Graph,
    ys: &[OutletId],
    xs: &[OutletId],
    options: &GradientOptions,
) -> Result<Vec<Option<OutletId>>, PassError> {
    atomically(graph, |graph, added, scope| {
        let mut seeds = Vec::with_capacity(ys.len());
        for (i, &y) in ys.iter().enumerate() {
            check_outlet(graph, y)?;
            let mut e = Emitter {
                graph: &mut *graph,
                added: &mut *added,
                node: y.node,
                prefix: scope.to_string(),
            };
            let seed = e.ones_like(y, &format!("grad_ys_{i}"))?;
            seeds.push((y, seed));
        }
        differentiate(graph, added, scope, &seeds, xs, options)
    })
}

/// Like [`gradients`], with an explicit upstream gradient for each `y`:
/// `seeds` pairs each `y` with the wire holding `dL/dy` (same shape).
pub fn gradients_with_seeds(
    graph: &mut Graph,
    seeds: &[(OutletId, OutletId)],
    xs: &[OutletId],
    options: &GradientOptions,
) -> Result<Vec<Option<OutletId>>, PassError> {
    atomically(graph, |graph, added, scope| {
        differentiate(graph, added, scope, seeds, xs, options)
    })
}

/// Runs `f` with a fresh `gradients` scope and the list of nodes it adds;
/// if `f` fails, those nodes are removed again.
fn atomically<T>(
    graph: &mut Graph,
    f: impl FnOnce(&mut Graph, &mut Vec<NodeId>, &str) -> Result<T, PassError>,
) -> Result<T, PassError> {
    let mut added = Vec::new();
    let scope = graph.unique_scope(PASS);
    let result = f(graph, &mut added, &scope);
    if result.is_err() {
        // Added nodes are only read by nodes added after them.
        for &id in added.iter().rev() {
            let _ = graph.remove_node(id);
        }
    }
    result
}

/// The float `Variable`/`VariableV2` nodes from which `loss` is
/// differentiable (through the same edges [`gradients`] follows), in
/// creation order, without the state that is not trained by gradient:
/// quantizer ranges (`…_quant/min|max`, unless
/// [`GradientOptions::learnable_ranges`]), their EMA shadows (`…/biased`,
/// `…/local_step`), the step counter `fake_quantization_step`, batch-norm
/// moving statistics (`…/moving_mean`, `…/moving_variance`, or whatever
/// feeds a fused batch norm's mean and variance inputs), and variables
/// marked `trainable = false` otherwise.
pub fn trainable_variables(
    graph: &Graph,
    loss: OutletId,
    options: &GradientOptions,
) -> Vec<NodeId> {
    if graph.get(loss.node).is_none() {
        return Vec::new();
    }
    let reaches = backward_reach(graph, &[loss], options);
    let bn_stats = batch_norm_statistics(graph);
    graph
        .nodes()
        .filter(|(id, node)| {
            reaches[id.index()]
                && matches!(node.op(), "Variable" | "VariableV2")
                && is_float(node.outputs()[0].dtype)
                && !bn_stats.contains(id)
                && trainable_by_name(node, options)
        })
        .map(|(id, _)| id)
        .collect()
}

fn trainable_by_name(node: &Node, options: &GradientOptions) -> bool {
    let name = node.name();
    let last = name.rsplit('/').next().unwrap_or(name);
    if name == "fake_quantization_step"
        || matches!(
            last,
            "biased" | "local_step" | "moving_mean" | "moving_variance"
        )
    {
        return false;
    }
    if is_range_variable(name) {
        return options.learnable_ranges;
    }
    !matches!(node.attr("trainable"), Some(AttrValue::Bool(false)))
}

/// `…/<something>_quant/min` or `…/<something>_quant/max`.
fn is_range_variable(name: &str) -> bool {
    let mut parts = name.rsplit('/');
    matches!(parts.next(), Some("min" | "max"))
        && parts.next().is_some_and(|p| p.ends_with("_quant"))
}

/// Variables feeding (directly or through `Identity`) the mean or variance
/// input of a fused batch norm.
fn batch_norm_statistics(graph: &Graph) -> Vec<NodeId> {
    let mut out = Vec::new();
    for (_, node) in graph.nodes() {
        if !node.op().starts_with("FusedBatchNorm") || node.op().contains("Grad") {
            continue;
        }
        for input in node.inputs().iter().skip(3).take(2) {
            let mut id = input.node;
            while let ("Identity", Some(read)) =
                (graph.node(id).op(), graph.node(id).inputs().first())
            {
                id = read.node;
            }
            out.push(id);
        }
    }
    out
}

fn is_float(dtype: Option<DType>) -> bool {
    matches!(dtype, None | Some(DType::F32 | DType::F64))
}

/// Whether a gradient can flow from `node`'s outputs into its input `i`.
fn passes(graph: &Graph, node: &Node, i: usize, options: &GradientOptions) -> bool {
    if !is_float(graph.fact(node.inputs()[i]).dtype) {
        return false;
    }
    match node.op() {
        // The outputs of these do not depend on the input's values.
        "StopGradient" | "PreventGradient" | "ZerosLike" | "OnesLike" | "Shape" | "Size" => false,
        // The condition of a select.
        "Select" | "SelectV2" => i > 0,
        "Assign" | "AssignAdd" | "AssignSub" => {
            i == 0
                && options.learnable_ranges
                && is_range_variable(graph.node(node.inputs()[0].node).name())
        }
        _ => true,
    }
}

/// Nodes from which some outlet of `roots` is reachable along edges a
/// gradient can flow through (indexed by node index).
fn backward_reach(graph: &Graph, roots: &[OutletId], options: &GradientOptions) -> Vec<bool> {
    let mut seen = vec![false; arena_len(graph)];
    let mut stack: Vec<NodeId> = roots.iter().map(|o| o.node).collect();
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut seen[id.index()], true) {
            continue;
        }
        let node = graph.node(id);
        for (i, input) in node.inputs().iter().enumerate() {
            if passes(graph, node, i, options) {
                stack.push(input.node);
            }
        }
    }
    seen
}

/// Nodes reachable from `roots` along edges a gradient can flow through.
fn forward_reach(graph: &Graph, roots: &[OutletId], options: &GradientOptions) -> Vec<bool> {
    let mut seen = vec![false; arena_len(graph)];
    let mut stack: Vec<NodeId> = roots.iter().map(|o| o.node).collect();
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut seen[id.index()], true) {
            continue;
        }
        for slot in 0..graph.node(id).outputs().len() {
            for inlet in graph.consumers(OutletId::new(id, slot)) {
                let consumer = graph.node(inlet.node);
                if passes(graph, consumer, inlet.slot, options) {
                    stack.push(inlet.node);
                }
            }
        }
    }
    seen
}

fn arena_len(graph: &Graph) -> usize {
    graph.node_ids().last().map_or(0, |id| id.index() + 1)
}

fn check_outlet(graph: &Graph, outlet: OutletId) -> Result<(), PassError> {
    match graph.get(outlet.node) {
        Some(node) if outlet.slot < node.outputs().len() => Ok(()),
        Some(node) => Err(PassError::Graph {
            pass: PASS,
            node: node.name().to_string(),
            source: GraphError::BadOutputSlot {
                node: node.name().to_string(),
                index: 0,
                producer: node.name().to_string(),
                slot: outlet.slot,
                outputs: node.outputs().len(),
            },
        }),
        None => Err(PassError::Graph {
            pass: PASS,
            node: format!("#{}", outlet.node.0),
            source: GraphError::UnknownNode(format!("#{}", outlet.node.0)),
        }),
    }
}

fn differentiate(
    graph: &mut Graph,
    added: &mut Vec<NodeId>,
    scope: &str,
    seeds: &[(OutletId, OutletId)],
    xs: &[OutletId],
    options: &GradientOptions,
) -> Result<Vec<Option<OutletId>>, PassError> {
    for &(y, g) in seeds {
        check_outlet(graph, y)?;
        check_outlet(graph, g)?;
    }
    for &x in xs {
        check_outlet(graph, x)?;
    }
    let ys: Vec<OutletId> = seeds.iter().map(|s| s.0).collect();
    let from_xs = forward_reach(graph, xs, options);
    let to_ys = backward_reach(graph, &ys, options);
    let between = |id: NodeId| from_xs[id.index()] && to_ys[id.index()];
    let order: Vec<NodeId> = graph
        .topological_order()
        .map_err(|source| PassError::Graph {
            pass: PASS,
            node: match &source {
                GraphError::Cycle(node) => node.clone(),
                other => other.to_string(),
            },
            source,
        })?
        .into_iter()
        .filter(|&id| between(id))
        .collect();

    let mut pending: HashMap<OutletId, Vec<OutletId>> = HashMap::new();
    for &(y, g) in seeds {
        if between(y.node) {
            pending.entry(y).or_default().push(g);
        }
    }
    let mut totals: HashMap<OutletId, OutletId> = HashMap::new();
    for &id in order.iter().rev() {
        let (outputs, inputs) = (
            graph.node(id).outputs().len(),
            graph.node(id).inputs().len(),
        );
        let prefix = format!("{scope}/{}_grad", graph.node(id).name());
        let mut e = Emitter {
            graph: &mut *graph,
            added: &mut *added,
            node: id,
            prefix,
        };
        let mut dys = Vec::with_capacity(outputs);
        for slot in 0..outputs {
            let outlet = OutletId::new(id, slot);
            let total = match pending.remove(&outlet) {
                Some(parts) => Some(e.sum(&parts)?),
                None => None,
            };
            if let Some(t) = total {
                totals.insert(outlet, t);
            }
            dys.push(total);
        }
        let need: Vec<bool> = (0..inputs)
            .map(|i| {
                let node = e.graph.node(id);
                passes(e.graph, node, i, options) && between(node.inputs()[i].node)
            })
            .collect();
        if dys.iter().all(Option::is_none) || !need.contains(&true) {
            continue;
        }
        let node = e.graph.node(id).clone();
        let dxs = rule(&mut e, &node, &dys, &need, options)?;
        for (i, dx) in dxs.into_iter().enumerate() {
            if let Some(dx) = dx
                && need.get(i).copied().unwrap_or(false)
            {
                pending.entry(node.inputs()[i]).or_default().push(dx);
            }
        }
    }
    Ok(xs.iter().map(|x| totals.get(x).copied()).collect())
}

/// Appends backward nodes for one forward node, naming them under `prefix`
/// and blaming that node for any failure.
struct Emitter<'a> {
    graph: &'a mut Graph,
    added: &'a mut Vec<NodeId>,
    node: NodeId,
    prefix: String,
}

type Grads = Vec<Option<OutletId>>;

impl Emitter<'_> {
    fn name(&self) -> String {
        self.graph.node(self.node).name().to_string()
    }

    fn graph_err(&self, source: GraphError) -> PassError {
        PassError::Graph {
            pass: PASS,
            node: self.name(),
            source,
        }
    }

    fn unknown_shape(&self, what: impl Into<String>) -> PassError {
        PassError::UnknownShape {
            pass: PASS,
            node: self.name(),
            what: what.into(),
        }
    }

    fn add(
        &mut self,
        op: &str,
        base: &str,
        inputs: &[OutletId],
        attrs: Attrs,
    ) -> Result<NodeId, PassError> {
        let registry = OpRegistry::builtin();
        let outputs = registry.get(op).map_or(1, |s| s.outputs);
        let name = self.graph.unique_name(&format!("{}/{base}", self.prefix));
        let mut new = NewNode::new(name, op).inputs(inputs.iter().copied());
        new.attrs = attrs;
        new.outputs = vec![OutputFact::default(); outputs];
        let id = self.graph.add_node(new).map_err(|e| self.graph_err(e))?;
        self.added.push(id);
        let facts = registry
            .check_node(self.graph, id)
            .and_then(|()| registry.infer_node(self.graph, id))
            .map_err(|e| self.graph_err(e))?;
        self.graph
            .set_outputs(id, facts)
            .map_err(|e| self.graph_err(e))?;
        Ok(id)
    }

    fn op(&mut self, op: &str, inputs: &[OutletId], attrs: Attrs) -> Result<OutletId, PassError> {
        self.add(op, op, inputs, attrs).map(OutletId::from)
    }

    fn unary(&mut self, op: &str, x: OutletId) -> Result<OutletId, PassError> {
        self.op(op, &[x], Attrs::new())
    }

    fn binary(&mut self, op: &str, a: OutletId, b: OutletId) -> Result<OutletId, PassError> {
        self.op(op, &[a, b], Attrs::new())
    }

    fn constant(&mut self, base: &str, value: Tensor) -> Result<OutletId, PassError> {
        let a = attrs([("dtype", value.dtype().into()), ("value", value.into())]);
        self.add("Const", base, &[], a).map(OutletId::from)
    }

    fn scalar(&mut self, value: f32) -> Result<OutletId, PassError> {
        self.constant("Const", Tensor::scalar(value))
    }

    fn ints(&mut self, base: &str, values: &[i64]) -> Result<OutletId, PassError> {
        let v: Vec<i32> = values
            .iter()
            .map(|&d| {
                i32::try_from(d).map_err(|_| PassError::Unsupported {
                    pass: PASS,
                    node: self.name(),
                    message: format!("dimension or index {d} does not fit in int32"),
                })
            })
            .collect::<Result<_, _>>()?;
        let t = Tensor::from_vec(&[v.len()], v).map_err(|source| {
            self.graph_err(GraphError::Tensor {
                node: self.name(),
                source,
            })
        })?;
        self.constant(base, t)
    }

    fn shape(&self, x: OutletId) -> Result<Shape, PassError> {
        self.graph.fact(x).shape.clone().ok_or_else(|| {
            self.unknown_shape(format!("'{}' has unknown rank", self.graph.outlet_name(x)))
        })
    }

    /// The shape of `x` for `Reshape`: a constant when at most one
    /// dimension is unknown (it becomes `-1`), else `Shape(x)`.
    fn reshape_target(&mut self, x: OutletId) -> Result<OutletId, PassError> {
        let s = self.shape(x)?;
        if s.dims().iter().filter(|d| d.is_none()).count() > 1 {
            return self.unary("Shape", x);
        }
        let dims: Vec<i64> = s
            .dims()
            .iter()
            .map(|d| d.map_or(-1, |d| d as i64))
            .collect();
        self.ints("Shape", &dims)
    }

    /// The shape of `x` as `int32`: a constant when static, else `Shape(x)`.
    fn shape_of(&mut self, x: OutletId) -> Result<OutletId, PassError> {
        match self.graph.fact(x).shape.as_ref().and_then(Shape::as_known) {
            Some(dims) => {
                let dims: Vec<i64> = dims.into_iter().map(|d| d as i64).collect();
                self.ints("Shape", &dims)
            }
            None => self.unary("Shape", x),
        }
    }

    /// `Cast(x)` to `dtype`.
    fn cast(&mut self, x: OutletId, dtype: DType) -> Result<OutletId, PassError> {
        self.op("Cast", &[x], attrs([("DstT", dtype.into())]))
    }

    /// The element count of `x` as an f32 scalar over that of `per`
    /// (`Size(x) / Size(per)`): a constant when both are static.
    fn count_ratio(&mut self, x: OutletId, per: OutletId) -> Result<OutletId, PassError> {
        let known = |o: OutletId| {
            self.graph
                .fact(o)
                .shape
                .as_ref()
                .and_then(Shape::num_elements)
        };
        if let (Some(a), Some(b)) = (known(x), known(per)) {
            return self.scalar((a / b.max(1)) as f32);
        }
        let mut size = |o: OutletId| -> Result<OutletId, PassError> {
            let n = self.unary("Size", o)?;
            self.cast(n, DType::F32)
        };
        let (a, b) = (size(x)?, size(per)?);
        self.binary("RealDiv", a, b)
    }

    fn reshape(&mut self, g: OutletId, like: OutletId) -> Result<OutletId, PassError> {
        let target = self.reshape_target(like)?;
        self.binary("Reshape", g, target)
    }

    fn reduce_sum(
        &mut self,
        g: OutletId,
        axes: &[usize],
        keep_dims: bool,
    ) -> Result<OutletId, PassError> {
        let a: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
        let a = self.ints("Sum/reduction_indices", &a)?;
        self.op("Sum", &[g, a], attrs([("keep_dims", keep_dims.into())]))
    }

    /// Ones shaped like `y`: a constant when the shape is static, else `OnesLike(y)`.
    fn ones_like(&mut self, y: OutletId, base: &str) -> Result<OutletId, PassError> {
        let dtype = self.graph.fact(y).dtype;
        if !is_float(dtype) {
            return Err(PassError::Unsupported {
                pass: PASS,
                node: self.name(),
                message: format!(
                    "cannot differentiate '{}', a {} tensor",
                    self.graph.outlet_name(y),
                    dtype.map_or("?", DType::name)
                ),
            });
        }
        let Some(shape) = self.graph.fact(y).shape.as_ref().and_then(Shape::as_known) else {
            return self
                .add("OnesLike", base, &[y], Attrs::new())
                .map(OutletId::from);
        };
        let n = shape.iter().product();
        let t = if dtype == Some(DType::F64) {
            Tensor::from_vec(&shape, vec![1.0f64; n])
        } else {
            Tensor::from_vec(&shape, vec![1.0f32; n])
        }
        .map_err(|source| {
            self.graph_err(GraphError::Tensor {
                node: self.name(),
                source,
            })
        })?;
        self.constant(base, t)
    }

    /// The `AddV2` sum of several contributions.
    fn sum(&mut self, parts: &[OutletId]) -> Result<OutletId, PassError> {
        let mut total = parts[0];
        for &p in &parts[1..] {
            total = self.binary("AddV2", total, p)?;
        }
        Ok(total)
    }

    /// Sums `g` (shaped like the broadcast output) down to the shape of `x`.
    fn unbroadcast(&mut self, g: OutletId, x: OutletId) -> Result<OutletId, PassError> {
        let (sg, sx) = (self.shape(g)?, self.shape(x)?);
        if sx.rank() > sg.rank() {
            return Err(self.unknown_shape(format!(
                "'{}' {sx} has a higher rank than its gradient {sg}",
                self.graph.outlet_name(x)
            )));
        }
        let lead = sg.rank() - sx.rank();
        let inner: Vec<usize> = (lead..sg.rank())
            .filter(|&i| sx.dim(i - lead) == Some(1) && sg.dims()[i] != Some(1))
            .collect();
        let mut out = g;
        if !inner.is_empty() {
            out = self.reduce_sum(out, &inner, true)?;
        }
        if lead > 0 {
            out = self.reduce_sum(out, &(0..lead).collect::<Vec<_>>(), false)?;
        }
        Ok(out)
    }

    fn copy_attrs(&self, node: &Node, names: &[&str]) -> Attrs {
        names
            .iter()
            .filter_map(|&n| node.attr(n).map(|v| (n.to_string().into(), v.clone())))
            .collect()
    }
}

fn no_rule(node: &Node) -> PassError {
    PassError::NoGradient {
        pass: PASS,
        node: node.name().to_string(),
        op: node.op().to_string(),
    }
}

fn unsupported(node: &Node, message: impl Into<String>) -> PassError {
    PassError::Unsupported {
        pass: PASS,
        node: node.name().to_string(),
        message: message.into(),
    }
}

/// The gradient with respect to each input of `node`, given the gradients
/// of its outputs.
fn rule(
    e: &mut Emitter<'_>,
    node: &Node,
    dys: &[Option<OutletId>],
    need: &[bool],
    options: &GradientOptions,
) -> Result<Grads, PassError> {
    let ins = node.inputs();
    let y = OutletId::new(e.node, 0);
    // Most ops have one output; its gradient.
    let g = || dys[0].ok_or_else(|| unsupported(node, "no gradient for output 0"));
    let n = ins.len();
    Ok(match node.op() {
        "Identity" => vec![Some(g()?)],
        "Assign" | "AssignAdd" | "AssignSub" => {
            // Only reached for range variables with learnable ranges.
            debug_assert!(options.learnable_ranges);
            vec![Some(g()?), None]
        }
        "Add" | "AddV2" | "Sub" => {
            let g = g()?;
            let a = if need[0] {
                Some(e.unbroadcast(g, ins[0])?)
            } else {
                None
            };
            let b = if need[1] {
                let gb = if node.op() == "Sub" {
                    e.unary("Neg", g)?
                } else {
                    g
                };
                Some(e.unbroadcast(gb, ins[1])?)
            } else {
                None
            };
            vec![a, b]
        }
        "Mul" => {
            let g = g()?;
            let mut out = vec![None, None];
            if need[0] {
                let t = e.binary("Mul", g, ins[1])?;
                out[0] = Some(e.unbroadcast(t, ins[0])?);
            }
            if need[1] {
                let t = e.binary("Mul", ins[0], g)?;
                out[1] = Some(e.unbroadcast(t, ins[1])?);
            }
            out
        }
        "RealDiv" => {
            let g = g()?;
            let mut out = vec![None, None];
            if need[0] {
                let t = e.binary("RealDiv", g, ins[1])?;
                out[0] = Some(e.unbroadcast(t, ins[0])?);
            }
            if need[1] {
                // d(a/b)/db = −a / b².
                let na = e.unary("Neg", ins[0])?;
                let q = e.binary("RealDiv", na, ins[1])?;
                let q = e.binary("RealDiv", q, ins[1])?;
                let t = e.binary("Mul", g, q)?;
                out[1] = Some(e.unbroadcast(t, ins[1])?);
            }
            out
        }
        "Maximum" | "Minimum" => {
            // Maximum: a gets g where a ≥ b, b where a < b (Minimum: a where
            // a ≤ b). `ReluGrad(g, f)` passes g exactly where f > 0.
            let g = g()?;
            let (first, second) = if node.op() == "Maximum" {
                (ins[1], ins[0])
            } else {
                (ins[0], ins[1])
            };
            let diff = e.binary("Sub", first, second)?;
            let to_b = e.binary("ReluGrad", g, diff)?;
            let mut out = vec![None, None];
            if need[0] {
                let to_a = e.binary("Sub", g, to_b)?;
                out[0] = Some(e.unbroadcast(to_a, ins[0])?);
            }
            if need[1] {
                out[1] = Some(e.unbroadcast(to_b, ins[1])?);
            }
            out
        }
        "SquaredDifference" => {
            let g = g()?;
            let two = e.scalar(2.0)?;
            let d = e.binary("Sub", ins[0], ins[1])?;
            let t = e.binary("Mul", two, g)?;
            let t = e.binary("Mul", t, d)?;
            let mut out = vec![None, None];
            if need[0] {
                out[0] = Some(e.unbroadcast(t, ins[0])?);
            }
            if need[1] {
                let nt = e.unary("Neg", t)?;
                out[1] = Some(e.unbroadcast(nt, ins[1])?);
            }
            out
        }
        "Pow" => {
            let g = g()?;
            let mut out = vec![None, None];
            if need[0] {
                // d(a^b)/da = b · a^(b−1).
                let one = e.scalar(1.0)?;
                let bm1 = e.binary("Sub", ins[1], one)?;
                let p = e.binary("Pow", ins[0], bm1)?;
                let t = e.binary("Mul", ins[1], p)?;
                let t = e.binary("Mul", g, t)?;
                out[0] = Some(e.unbroadcast(t, ins[0])?);
            }
            if need[1] {
                // d(a^b)/db = a^b · log a where a > 0, else 0 (TensorFlow's choice).
                let zero = e.unary("ZerosLike", ins[0])?;
                let positive = e.binary("Greater", ins[0], zero)?;
                let log = e.unary("Log", ins[0])?;
                let log = e.op("SelectV2", &[positive, log, zero], Attrs::new())?;
                let t = e.binary("Mul", y, log)?;
                let t = e.binary("Mul", g, t)?;
                out[1] = Some(e.unbroadcast(t, ins[1])?);
            }
            out
        }
        "Exp" => vec![Some(e.binary("Mul", g()?, y)?)],
        "Log" => vec![Some(e.binary("RealDiv", g()?, ins[0])?)],
        "Reciprocal" => {
            // d(1/x) = −y² · g.
            let yy = e.binary("Mul", y, y)?;
            let t = e.binary("Mul", g()?, yy)?;
            vec![Some(e.unary("Neg", t)?)]
        }
        "Cast" => {
            let src = e.graph.fact(ins[0]).dtype;
            let g = g()?;
            match src {
                Some(d) if e.graph.fact(g).dtype != Some(d) => vec![Some(e.cast(g, d)?)],
                _ => vec![Some(g)],
            }
        }
        "BroadcastTo" => vec![Some(e.unbroadcast(g()?, ins[0])?), None],
        "Select" | "SelectV2" => {
            let g = g()?;
            let zero = e.unary("ZerosLike", g)?;
            let mut out = vec![None, None, None];
            for (k, branches) in [(1, [g, zero]), (2, [zero, g])] {
                if need[k] {
                    let picked =
                        e.op(node.op(), &[ins[0], branches[0], branches[1]], Attrs::new())?;
                    out[k] = Some(if node.op() == "SelectV2" {
                        e.unbroadcast(picked, ins[k])?
                    } else {
                        picked
                    });
                }
            }
            out
        }
        "Neg" => vec![Some(e.unary("Neg", g()?)?)],
        "Square" => {
            let two = e.scalar(2.0)?;
            let t = e.binary("Mul", ins[0], two)?;
            vec![Some(e.binary("Mul", g()?, t)?)]
        }
        "Relu" => vec![Some(e.binary("ReluGrad", g()?, y)?)],
        "Relu6" => vec![Some(e.binary("Relu6Grad", g()?, ins[0])?)],
        "Rsqrt" | "Sqrt" | "Sigmoid" | "Tanh" => {
            let op = format!("{}Grad", node.op());
            vec![Some(e.binary(&op, y, g()?)?)]
        }
        "BiasAdd" => {
            let g = g()?;
            let db = if need[1] {
                let a = e.copy_attrs(node, &["data_format"]);
                Some(e.op("BiasAddGrad", &[g], a)?)
            } else {
                None
            };
            vec![Some(g), db]
        }
        "MatMul" => matmul(e, node, g()?, need)?,
        "Conv2D" | "DepthwiseConv2dNative" => {
            let g = g()?;
            let a = e.copy_attrs(
                node,
                &[
                    "strides",
                    "padding",
                    "dilations",
                    "data_format",
                    "explicit_paddings",
                ],
            );
            let mut out = vec![None, None];
            if need[0] {
                let s = e.shape_of(ins[0])?;
                out[0] = Some(e.op(
                    &format!("{}BackpropInput", node.op()),
                    &[s, ins[1], g],
                    a.clone(),
                )?);
            }
            if need[1] {
                let s = e.shape_of(ins[1])?;
                out[1] = Some(e.op(&format!("{}BackpropFilter", node.op()), &[ins[0], s, g], a)?);
            }
            out
        }
        "MaxPool" => {
            let a = e.copy_attrs(node, &["ksize", "strides", "padding", "data_format"]);
            vec![Some(e.op("MaxPoolGrad", &[ins[0], y, g()?], a)?)]
        }
        "AvgPool" => {
            let a = e.copy_attrs(node, &["ksize", "strides", "padding", "data_format"]);
            let s = e.shape_of(ins[0])?;
            vec![Some(e.op("AvgPoolGrad", &[s, g()?], a)?)]
        }
        "Reshape" | "Squeeze" | "ExpandDims" => {
            let r = e.reshape(g()?, ins[0])?;
            let mut out = vec![None; n];
            out[0] = Some(r);
            out
        }
        "Mean" | "Sum" => vec![Some(reduction(e, node, g()?)?), None],
        "ConcatV2" => concat(e, node, g()?, need)?,
        "Pad" => pad(e, node, g()?)?,
        // Each reshuffle is undone by the other with the same block shape
        // and margins (paddings become crops and back).
        "SpaceToBatchND" | "BatchToSpaceND" => {
            let inverse = if node.op() == "SpaceToBatchND" {
                "BatchToSpaceND"
            } else {
                "SpaceToBatchND"
            };
            let dx = e.op(inverse, &[g()?, ins[1], ins[2]], Attrs::new())?;
            vec![Some(dx), None, None]
        }
        "Softmax" => {
            // dx = (g − Σ_last g·y) · y.
            let g = g()?;
            let gy = e.binary("Mul", g, y)?;
            let s = e.reduce_sum_last(gy)?;
            let d = e.binary("Sub", g, s)?;
            vec![Some(e.binary("Mul", d, y)?)]
        }
        "SparseSoftmaxCrossEntropyWithLogits" | "SoftmaxCrossEntropyWithLogits" => {
            if dys[1].is_some() {
                return Err(unsupported(
                    node,
                    "gradients through output 1 (the backprop) are not defined",
                ));
            }
            let g = g()?;
            let col = e.ints("Shape", &[-1, 1])?;
            let g = e.binary("Reshape", g, col)?;
            let bp = OutletId::new(e.node, 1);
            let mut out = vec![None, None];
            if need[0] {
                out[0] = Some(e.binary("Mul", g, bp)?);
            }
            if need[1] {
                // Dense labels: −g · log_softmax(logits).
                let last = e.shape(ins[0])?.rank().saturating_sub(1);
                let a = e.ints("reduction_indices", &[last as i64])?;
                let keep = attrs([("keep_dims", true.into())]);
                let m = e.op("Max", &[ins[0], a], keep)?;
                let z = e.binary("Sub", ins[0], m)?;
                let ez = e.unary("Exp", z)?;
                let se = e.reduce_sum(ez, &[last], true)?;
                let lse = e.unary("Log", se)?;
                let ls = e.binary("Sub", z, lse)?;
                let t = e.binary("Mul", g, ls)?;
                out[1] = Some(e.unary("Neg", t)?);
            }
            out
        }
        "FusedBatchNormV3" => batch_norm(e, node, dys, need)?,
        "FakeQuantWithMinMaxVars" | "FakeQuantWithMinMaxVarsPerChannel" => {
            let a = e.copy_attrs(node, &["num_bits", "narrow_range"]);
            let op = format!("{}Gradient", node.op());
            let id = e.add(&op, &op, &[g()?, ins[0], ins[1], ins[2]], a)?;
            (0..3).map(|k| Some(OutletId::new(id, k))).collect()
        }
        "FakeQuantWithMinMaxArgs" => {
            let a = e.copy_attrs(node, &["num_bits", "narrow_range", "min", "max"]);
            vec![Some(e.op(
                "FakeQuantWithMinMaxArgsGradient",
                &[g()?, ins[0]],
                a,
            )?)]
        }
        op if options.gradient_ops.contains(op) => {
            let mut inputs = ins.to_vec();
            inputs.push(g()?);
            let grad = format!("{op}Grad");
            let id = e.add(&grad, &grad, &inputs, Attrs::new())?;
            let facts = ins.iter().map(|&i| e.graph.fact(i).clone()).collect();
            e.graph
                .set_outputs(id, facts)
                .map_err(|err| e.graph_err(err))?;
            (0..n).map(|k| Some(OutletId::new(id, k))).collect()
        }
        _ => return Err(no_rule(node)),
    })
}

impl Emitter<'_> {
    fn reduce_sum_last(&mut self, x: OutletId) -> Result<OutletId, PassError> {
        let rank = self.shape(x)?.rank();
        let last = rank
            .checked_sub(1)
            .ok_or_else(|| self.unknown_shape("a scalar softmax"))?;
        self.reduce_sum(x, &[last], true)
    }
}

fn matmul(
    e: &mut Emitter<'_>,
    node: &Node,
    g: OutletId,
    need: &[bool],
) -> Result<Grads, PassError> {
    let (a, b) = (node.inputs()[0], node.inputs()[1]);
    let flag = |name: &str| matches!(node.attr(name), Some(AttrValue::Bool(true)));
    let (ta, tb) = (flag("transpose_a"), flag("transpose_b"));
    let mm = |e: &mut Emitter<'_>, x: OutletId, y: OutletId, tx: bool, ty: bool| {
        e.op(
            "MatMul",
            &[x, y],
            attrs([("transpose_a", tx.into()), ("transpose_b", ty.into())]),
        )
    };
    let mut out = vec![None, None];
    if need[0] {
        out[0] = Some(match (ta, tb) {
            (false, false) => mm(e, g, b, false, true)?,
            (false, true) => mm(e, g, b, false, false)?,
            (true, false) => mm(e, b, g, false, true)?,
            (true, true) => mm(e, b, g, true, true)?,
        });
    }
    if need[1] {
        out[1] = Some(match (ta, tb) {
            (false, false) => mm(e, a, g, true, false)?,
            (false, true) => mm(e, g, a, true, false)?,
            (true, false) => mm(e, a, g, false, false)?,
            (true, true) => mm(e, g, a, true, true)?,
        });
    }
    Ok(out)
}

/// The constant integer values of input `i` of `node`.
fn const_ints(e: &Emitter<'_>, node: &Node, i: usize) -> Result<Vec<i64>, PassError> {
    let producer = e.graph.node(node.inputs()[i].node);
    let value = match (producer.op(), producer.attr("value")) {
        ("Const", Some(AttrValue::Tensor(t))) => t.to_i64_vec().ok(),
        _ => None,
    };
    value.ok_or_else(|| {
        unsupported(
            node,
            format!("input {i} ('{}') must be a constant", producer.name()),
        )
    })
}

fn reduction(e: &mut Emitter<'_>, node: &Node, g: OutletId) -> Result<OutletId, PassError> {
    let x = node.inputs()[0];
    let sx = e.shape(x)?;
    let rank = sx.rank() as i64;
    let mut axes: Vec<usize> = const_ints(e, node, 1)?
        .into_iter()
        .map(|a| if a < 0 { a + rank } else { a })
        .filter_map(|a| usize::try_from(a).ok())
        .collect();
    axes.sort_unstable();
    axes.dedup();
    let keep = matches!(node.attr("keep_dims"), Some(AttrValue::Bool(true)));
    let mut g = g;
    if !keep && !axes.is_empty() {
        // Back to rank(x), reduced axes of size 1.
        let kept = Shape(
            sx.dims()
                .iter()
                .enumerate()
                .map(|(i, &d)| if axes.contains(&i) { Some(1) } else { d })
                .collect(),
        );
        if kept.dims().iter().filter(|d| d.is_none()).count() > 1 {
            return Err(e.unknown_shape(format!(
                "'{}' has shape {sx}; only one unknown dimension is supported",
                e.graph.outlet_name(x)
            )));
        }
        let dims: Vec<i64> = kept
            .dims()
            .iter()
            .map(|d| d.map_or(-1, |d| d as i64))
            .collect();
        let target = e.ints("Shape", &dims)?;
        g = e.binary("Reshape", g, target)?;
    }
    if node.op() == "Mean" {
        let count = e.count_ratio(x, OutletId::new(e.node, 0))?;
        g = e.binary("RealDiv", g, count)?;
    }
    let shape = e.shape_of(x)?;
    e.binary("BroadcastTo", g, shape)
}

fn concat(
    e: &mut Emitter<'_>,
    node: &Node,
    g: OutletId,
    need: &[bool],
) -> Result<Grads, PassError> {
    let n = node.inputs().len() - 1;
    let rank = e.shape(g)?.rank() as i64;
    let axis = *const_ints(e, node, n)?
        .first()
        .ok_or_else(|| unsupported(node, "the axis input is empty"))?;
    let axis = if axis < 0 { axis + rank } else { axis } as usize;
    let mut out = vec![None; n + 1];
    let mut offset = 0usize;
    for i in 0..n {
        let x = node.inputs()[i];
        let along = e.shape(x)?.dim(axis).ok_or_else(|| {
            e.unknown_shape(format!(
                "'{}' has an unknown size along the concatenation axis",
                e.graph.outlet_name(x)
            ))
        })?;
        if need[i] {
            // Everything along the other axes (-1), this input's part along `axis`.
            let mut begin = vec![0i64; rank as usize];
            let mut size = vec![-1i64; rank as usize];
            begin[axis] = offset as i64;
            size[axis] = along as i64;
            let b = e.ints("begin", &begin)?;
            let s = e.ints("size", &size)?;
            out[i] = Some(e.op("Slice", &[g, b, s], Attrs::new())?);
        }
        offset += along;
    }
    Ok(out)
}

fn pad(e: &mut Emitter<'_>, node: &Node, g: OutletId) -> Result<Grads, PassError> {
    let x = node.inputs()[0];
    let p = const_ints(e, node, 1)?;
    let rank = e.shape(x)?.rank();
    if p.len() != 2 * rank {
        return Err(unsupported(
            node,
            format!("paddings {p:?} do not fit rank {rank}"),
        ));
    }
    let begin: Vec<i64> = (0..rank).map(|i| p[2 * i]).collect();
    let b = e.ints("begin", &begin)?;
    let size = e.shape_of(x)?;
    Ok(vec![
        Some(e.op("Slice", &[g, b, size], Attrs::new())?),
        None,
    ])
}

fn batch_norm(
    e: &mut Emitter<'_>,
    node: &Node,
    dys: &[Option<OutletId>],
    need: &[bool],
) -> Result<Grads, PassError> {
    let ins = node.inputs();
    let me = e.node;
    if dys[3..].iter().any(Option::is_some) {
        return Err(unsupported(
            node,
            "gradients through the reserve-space outputs 3 to 5 are not defined",
        ));
    }
    let training = !matches!(node.attr("is_training"), Some(AttrValue::Bool(false)));
    let factor = match node.attr("exponential_avg_factor") {
        Some(AttrValue::Float(f)) => *f,
        _ => 1.0,
    };
    let mut out: Grads = vec![None; 5];
    if let Some(g) = dys[0] {
        let mut a = e.copy_attrs(node, &["epsilon", "data_format"]);
        a.insert("is_training".into(), training.into());
        let (mean, var) = if training {
            (OutletId::new(me, 3), OutletId::new(me, 4))
        } else {
            (ins[3], ins[4])
        };
        let op = "FusedBatchNormGradV3";
        let id = e.add(
            op,
            op,
            &[g, ins[0], ins[1], mean, var, OutletId::new(me, 5)],
            a,
        )?;
        out[0] = Some(OutletId::new(id, 0));
        out[1] = Some(OutletId::new(id, 1));
        out[2] = Some(OutletId::new(id, 2));
    }
    let (g_mean, g_var) = (dys[1], dys[2]);
    if !training {
        // Outputs 1 and 2 are the mean and variance inputs.
        out[3] = g_mean;
        out[4] = g_var;
        return Ok(out);
    }
    if g_mean.is_none() && g_var.is_none() {
        return Ok(out);
    }
    // n = elements per channel; the variance output is divided by n − 1 (≥ 1).
    let n = e.count_ratio(ins[0], OutletId::new(me, 3))?;
    let mut terms = Vec::new();
    if let Some(gm) = g_mean {
        let t = e.binary("RealDiv", gm, n)?;
        terms.push(scaled(e, t, factor)?);
        if need[3] && factor != 1.0 {
            out[3] = Some(scaled(e, gm, 1.0 - factor)?);
        }
    }
    if let Some(gv) = g_var {
        let one = e.scalar(1.0)?;
        let nm1 = e.binary("Sub", n, one)?;
        let nm1 = e.binary("Maximum", nm1, one)?;
        let centred = e.binary("Sub", ins[0], OutletId::new(me, 3))?;
        let t = scaled(e, gv, 2.0 * factor)?;
        let t = e.binary("RealDiv", t, nm1)?;
        terms.push(e.binary("Mul", t, centred)?);
        if need[4] && factor != 1.0 {
            out[4] = Some(scaled(e, gv, 1.0 - factor)?);
        }
    }
    let mut dx = e.sum(&terms)?;
    if g_var.is_none() {
        // Only the mean term: a per-channel vector, broadcast over x.
        let shape = e.shape_of(ins[0])?;
        dx = e.binary("BroadcastTo", dx, shape)?;
    }
    out[0] = Some(match out[0] {
        Some(d0) => e.binary("AddV2", d0, dx)?,
        None => dx,
    });
    Ok(out)
}

/// `x · k`, or `x` itself when `k` is 1.
fn scaled(e: &mut Emitter<'_>, x: OutletId, k: f32) -> Result<OutletId, PassError> {
    if k == 1.0 {
        return Ok(x);
    }
    let c = e.scalar(k)?;
    e.binary("Mul", x, c)
}
