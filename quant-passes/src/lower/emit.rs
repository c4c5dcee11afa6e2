//! Building the [`IntModel`]: a walk from the requested outputs back to the
//! inputs that emits each integer op after the ops producing its inputs (so
//! the op list is topologically sorted), memoized per graph tensor.
//!
//! Errors are collected, not returned at once: a failed branch is recorded
//! and the walk goes on with the others, which is how [`super::check_lowering`]
//! lists every problem. In check mode nothing is evaluated and tensors get
//! no data and, where the parameters depend on values, no parameters.

use super::params::{self, Nudged, Rounding};
use super::patterns::{self, Constness, Producer, WeightQuant};
use super::{LowerError, LowerOptions, Values};
use crate::target::{Storage, Target};
use quant_core::integer::{
    Activation, Hw, IntModel, IntOp, IntOpKind, IntTensor, Padding, TensorIndex,
};
use quant_core::{DType, Graph, NodeId, OutletId, QuantParams, Tensor};
use std::collections::HashMap;

/// Marker: the problem was recorded in [`Lowerer::errors`].
pub(super) struct Reported;

type R<T> = Result<T, Reported>;

/// Where a computed value goes: its tensor name, the graph tensor whose
/// shape it has, and its parameters (`None` in check mode).
struct Out {
    name: String,
    outlet: OutletId,
    params: Option<QuantParams>,
}

/// The lowering state.
pub(super) struct Lowerer<'a, 'v> {
    graph: &'a Graph,
    target: &'a Target,
    options: &'a LowerOptions,
    values: Option<&'a mut Values<'v>>,
    model: IntModel,
    memo: HashMap<OutletId, Option<TensorIndex>>,
    consts: Constness,
    inputs: Vec<NodeId>,
    errors: Vec<LowerError>,
}

impl<'a, 'v> Lowerer<'a, 'v> {
    /// A lowerer; `values: None` is check mode.
    pub(super) fn new(
        graph: &'a Graph,
        target: &'a Target,
        options: &'a LowerOptions,
        values: Option<&'a mut Values<'v>>,
    ) -> Self {
        Lowerer {
            graph,
            target,
            options,
            values,
            model: IntModel {
                description: format!("lowered by quant for target {}", target.name),
                ..IntModel::default()
            },
            memo: HashMap::new(),
            consts: Constness::default(),
            inputs: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The model, or the first problem found.
    pub(super) fn finish(self) -> Result<IntModel, LowerError> {
        match self.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(self.model),
        }
    }

    /// Every problem found.
    pub(super) fn into_errors(self) -> Vec<LowerError> {
        self.errors
    }

    fn fail<T>(&mut self, error: LowerError) -> R<T> {
        self.errors.push(error);
        Err(Reported)
    }

    fn storage_dtype(&self) -> DType {
        match self.target.storage {
            Storage::U8 => DType::U8,
            Storage::I8 => DType::I8,
        }
    }

    /// Lowers the inputs, then each output.
    pub(super) fn run(&mut self) {
        if self.options.outputs.is_empty() {
            self.errors.push(LowerError::NoOutputs);
        }
        // Malformed nodes first, so that the walk can index their inputs.
        for (_, node) in self.graph.nodes() {
            let need = patterns::min_inputs(node.op());
            if node.inputs().len() < need {
                self.errors.push(LowerError::BadValue {
                    node: node.name().to_string(),
                    message: format!(
                        "a {} needs at least {need} inputs, found {}",
                        node.op(),
                        node.inputs().len()
                    ),
                });
            }
        }
        if self
            .errors
            .iter()
            .any(|e| matches!(e, LowerError::BadValue { .. }))
        {
            return;
        }
        self.resolve_inputs();
        for (name, _, _) in &self.options.input_ranges {
            let known = self
                .inputs
                .iter()
                .any(|&id| self.graph.node(id).name() == name);
            if !known {
                self.errors.push(LowerError::BadName {
                    what: "input range",
                    name: name.clone(),
                    reason: "is not one of the model's inputs".into(),
                });
            }
        }
        for id in self.inputs.clone() {
            let _ = self.memoized(OutletId::new(id, 0), |s| s.input(id));
        }
        for name in &self.options.outputs {
            let _ = self.output(name);
        }
    }

    fn resolve_inputs(&mut self) {
        if self.options.inputs.is_empty() {
            self.inputs = self
                .graph
                .nodes()
                .filter(|(_, n)| n.op() == "Placeholder")
                .map(|(id, _)| id)
                .collect();
            return;
        }
        for name in &self.options.inputs {
            let reason = match self.graph.id(name) {
                None => "no such node".to_string(),
                Some(id) if self.graph.node(id).op() == "Placeholder" => {
                    self.inputs.push(id);
                    continue;
                }
                Some(id) => format!("is a {}, not a Placeholder", self.graph.node(id).op()),
            };
            self.errors.push(LowerError::BadName {
                what: "input",
                name: name.clone(),
                reason,
            });
        }
    }

    fn memoized(
        &mut self,
        outlet: OutletId,
        f: impl FnOnce(&mut Self) -> R<TensorIndex>,
    ) -> R<TensorIndex> {
        if let Some(done) = self.memo.get(&outlet) {
            return done.ok_or(Reported);
        }
        let result = f(self);
        self.memo.insert(outlet, result.as_ref().ok().copied());
        result
    }

    // ------------------------------------------------------------ helpers

    fn add_tensor(
        &mut self,
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        quant: Option<QuantParams>,
        data: Option<Tensor>,
    ) -> TensorIndex {
        self.model.add_tensor(IntTensor {
            name,
            dtype,
            shape,
            quant,
            data,
        })
    }

    fn emit(&mut self, kind: IntOpKind, inputs: Vec<Option<TensorIndex>>, output: TensorIndex) {
        self.model.ops.push(IntOp {
            kind,
            inputs,
            outputs: vec![output],
        });
    }

    /// Records an error unless the target runs `op`.
    fn check_op(&mut self, node: &str, op: &str) -> bool {
        if self.target.supports_op(op) {
            return true;
        }
        self.errors.push(LowerError::IllegalOp {
            node: node.to_string(),
            op: op.to_string(),
            target: self.target.name.clone(),
        });
        false
    }

    /// The fused activation, recording an error if the target lacks it.
    fn check_activation(&mut self, act: Option<(Activation, NodeId)>) -> R<Activation> {
        let (activation, node) = match act {
            None => (Activation::None, None),
            Some((a, id)) => (a, Some(id)),
        };
        if self.target.fused_activations.contains(&activation) {
            return Ok(activation);
        }
        let node = node.map_or_else(String::new, |id| self.graph.node(id).name().to_string());
        self.fail(LowerError::IllegalActivation {
            node,
            activation,
            target: self.target.name.clone(),
        })
    }

    /// The static shape of a graph tensor, with an unknown batch as 1.
    fn shape(&mut self, outlet: OutletId) -> R<Vec<usize>> {
        let name = self.graph.outlet_name(outlet);
        let Some(shape) = self.graph.fact(outlet).shape.clone() else {
            return self.fail(LowerError::BadValue {
                node: name,
                message: "the shape is unknown".into(),
            });
        };
        let mut dims = Vec::with_capacity(shape.rank());
        for (i, d) in shape.dims().iter().enumerate() {
            match d {
                Some(d) => dims.push(*d),
                None if i == 0 => dims.push(1),
                None => {
                    return self.fail(LowerError::BadValue {
                        node: name,
                        message: format!("dimension {i} of shape {shape} is unknown"),
                    });
                }
            }
        }
        Ok(dims)
    }

    fn unsupported<T>(&mut self, node: NodeId, reason: impl Into<String>) -> R<T> {
        let n = self.graph.node(node);
        self.fail(LowerError::UnsupportedOp {
            node: n.name().to_string(),
            op: n.op().to_string(),
            reason: reason.into(),
        })
    }

    fn bad_value<T>(&mut self, node: &str, message: impl Into<String>) -> R<T> {
        self.fail(LowerError::BadValue {
            node: node.to_string(),
            message: message.into(),
        })
    }

    /// Evaluates `outlets` (`None` in check mode).
    fn eval(&mut self, node: &str, outlets: &[OutletId]) -> R<Option<Vec<Tensor>>> {
        let Some(values) = self.values.as_mut() else {
            return Ok(None);
        };
        match values(outlets) {
            Ok(v) if v.len() == outlets.len() => Ok(Some(v)),
            Ok(v) => {
                let message = format!("got {} values for {} tensors", v.len(), outlets.len());
                self.fail(LowerError::Values {
                    node: node.to_string(),
                    message,
                })
            }
            Err(message) => self.fail(LowerError::Values {
                node: node.to_string(),
                message,
            }),
        }
    }

    fn floats(&mut self, node: &str, t: &Tensor) -> R<Vec<f32>> {
        match t.array::<f32>() {
            Ok(a) => Ok(a.iter().copied().collect()),
            Err(_) => self.bad_value(
                node,
                format!("expected float32 values, found {}", t.dtype()),
            ),
        }
    }

    /// Integer values of a constant operand (shapes, axes, paddings):
    /// read from a `Const` directly, evaluated otherwise (`None` in check
    /// mode).
    fn const_ints(&mut self, user: NodeId, outlet: OutletId) -> R<Option<Vec<i64>>> {
        let o = patterns::strip(self.graph, outlet);
        let n = self.graph.node(o.node);
        let name = n.name().to_string();
        if n.op() == "Const" {
            let ints = n
                .attr_tensor("value")
                .map_err(|e| e.to_string())
                .and_then(|t| t.to_i64_vec().map_err(|e| e.to_string()));
            return match ints {
                Ok(v) => Ok(Some(v)),
                Err(e) => self.bad_value(&name, e),
            };
        }
        if !self.consts.is_constant(self.graph, o.node) {
            return self.unsupported(user, format!("operand `{name}` must be constant"));
        }
        let Some(v) = self.eval(&name, &[o])? else {
            return Ok(None);
        };
        match v[0].to_i64_vec() {
            Ok(v) => Ok(Some(v)),
            Err(e) => self.bad_value(&name, e.to_string()),
        }
    }

    /// An int32 constant operand (shape, axes, paddings).
    fn int32_operand(
        &mut self,
        name: String,
        shape: Vec<usize>,
        values: Option<Vec<i64>>,
    ) -> R<TensorIndex> {
        let data = match values {
            None => None,
            Some(v) => {
                let Ok(v) = v
                    .into_iter()
                    .map(i32::try_from)
                    .collect::<Result<Vec<i32>, _>>()
                else {
                    return self.bad_value(&name, "a value does not fit in int32");
                };
                match Tensor::from_vec(&shape, v) {
                    Ok(t) => Some(t),
                    Err(e) => return self.bad_value(&name, e.to_string()),
                }
            }
        };
        Ok(self.add_tensor(name, DType::I32, shape, None, data))
    }

    /// The output tensor of a computed value.
    fn out_tensor(&mut self, out: Out) -> R<TensorIndex> {
        let shape = self.shape(out.outlet)?;
        let dtype = self.storage_dtype();
        Ok(self.add_tensor(out.name, dtype, shape, out.params, None))
    }

    fn params_of(&self, t: TensorIndex) -> Option<QuantParams> {
        self.model.tensors[t].quant.clone()
    }

    /// `t` as is if it has `out`'s parameters, else a `QUANTIZE` to them.
    fn requantize_to(&mut self, t: TensorIndex, out: Out) -> R<TensorIndex> {
        if self.model.tensors[t].quant == out.params {
            return Ok(t);
        }
        if !self.check_op(&out.name, "QUANTIZE") {
            return Err(Reported);
        }
        let shape = self.model.tensors[t].shape.clone();
        let dtype = self.storage_dtype();
        let q = self.add_tensor(out.name, dtype, shape, out.params, None);
        self.emit(IntOpKind::Quantize, vec![Some(t)], q);
        Ok(q)
    }

    // ------------------------------------------------------------- inputs

    fn input(&mut self, id: NodeId) -> R<TensorIndex> {
        let node = self.graph.node(id);
        let name = node.name().to_string();
        let outlet = OutletId::new(id, 0);
        if self.graph.fact(outlet).dtype != Some(DType::F32) {
            return self.bad_value(&name, "graph inputs must be float32");
        }
        let shape = self.shape(outlet)?;
        let params = if let Some(fq) = patterns::quantizer_of(self.graph, outlet) {
            self.fq_params(fq)?
        } else if let Some((_, min, max)) = self
            .options
            .input_ranges
            .iter()
            .find(|(n, _, _)| *n == name)
        {
            let (min, max) = (*min, *max);
            if let Err(e) = params::check_range(min, max) {
                return self.bad_value(&name, e);
            }
            Some(params::tensor_params(
                &params::nudge(min, max, 8, false),
                self.target.storage,
            ))
        } else {
            return self.fail(LowerError::MissingRange {
                node: name,
                hint:
                    "no fake quant follows this input: give its range in LowerOptions::input_ranges"
                        .into(),
            });
        };
        let dtype = self.storage_dtype();
        if self.options.integer_io {
            let t = self.add_tensor(name, dtype, shape, params, None);
            self.model.inputs.push(t);
            return Ok(t);
        }
        if !self.check_op(&name, "QUANTIZE") {
            return Err(Reported);
        }
        let f = self.add_tensor(name.clone(), DType::F32, shape.clone(), None, None);
        self.model.inputs.push(f);
        let q = self.add_tensor(format!("{name}/quantize"), dtype, shape, params, None);
        self.emit(IntOpKind::Quantize, vec![Some(f)], q);
        Ok(q)
    }

    fn output(&mut self, name: &str) -> R<()> {
        let outlet = match self.graph.outlet(name) {
            Ok(o) => o,
            Err(e) => {
                return self.fail(LowerError::BadName {
                    what: "output",
                    name: name.to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let outlet = match patterns::quantizer_of(self.graph, outlet) {
            Some(fq) if !patterns::is_fake_quant(self.graph.node(outlet.node).op()) => {
                OutletId::new(fq, 0)
            }
            _ => outlet,
        };
        let t = self.lower(outlet)?;
        if self.options.integer_io {
            self.model.outputs.push(t);
            return Ok(());
        }
        if !self.check_op(name, "DEQUANTIZE") {
            return Err(Reported);
        }
        let shape = self.model.tensors[t].shape.clone();
        let fname = if self.model.tensor_by_name(name).is_some() {
            format!("{name}/dequantize")
        } else {
            name.to_string()
        };
        let f = self.add_tensor(fname, DType::F32, shape, None, None);
        self.emit(IntOpKind::Dequantize, vec![Some(t)], f);
        self.model.outputs.push(f);
        Ok(())
    }

    // ------------------------------------------------------------ tensors

    /// The integer tensor carrying the value of `outlet`.
    fn lower(&mut self, outlet: OutletId) -> R<TensorIndex> {
        let outlet = patterns::strip(self.graph, outlet);
        self.memoized(outlet, |s| s.lower_uncached(outlet))
    }

    fn lower_uncached(&mut self, outlet: OutletId) -> R<TensorIndex> {
        let id = outlet.node;
        let op = self.graph.node(id).op().to_string();
        if outlet.slot != 0 {
            return self.unsupported(id, format!("output {} is not lowered", outlet.slot));
        }
        match op.as_str() {
            _ if patterns::is_fake_quant(&op) => self.fake_quant(id),
            "Placeholder" => {
                if self.inputs.contains(&id) {
                    self.input(id)
                } else {
                    let name = self.graph.node(id).name().to_string();
                    self.fail(LowerError::BadName {
                        what: "input",
                        name,
                        reason:
                            "the outputs depend on it but LowerOptions::inputs does not list it"
                                .into(),
                    })
                }
            }
            "MaxPool" | "AvgPool" => self.pool(id),
            "Reshape" => self.reshape(id),
            "Pad" => self.pad(id),
            "Mean" => self.mean(id, None),
            "ConcatV2" => self.concat(id, None),
            "Softmax" => self.fixed_output(id, IntOpKind::Softmax { beta: 1.0 }),
            "Sigmoid" => self.fixed_output(id, IntOpKind::Logistic),
            "Conv2D"
            | "DepthwiseConv2dNative"
            | "MatMul"
            | "Add"
            | "AddV2"
            | "BiasAdd"
            | "Relu"
            | "Relu6" => {
                let name = self.graph.node(id).name().to_string();
                self.fail(LowerError::MissingRange {
                    node: name,
                    hint: "no fake quant follows it: lower an eval graph (create_eval_graph), \
                           whose fake quants give every computed tensor a range"
                        .into(),
                })
            }
            _ if self.is_custom(&op) => {
                let name = self.graph.node(id).name().to_string();
                self.fail(LowerError::MissingRange {
                    node: name,
                    hint: "a custom op's output needs the range of a fake quant that follows it \
                           (a layer pattern or matcher whose activation it is)"
                        .into(),
                })
            }
            _ => self.unsupported(id, "there is no integer lowering for this op type"),
        }
    }

    /// Whether `op` is lowered as a CUSTOM op: an op type without a
    /// builtin lowering that the target lists.
    fn is_custom(&self, op: &str) -> bool {
        patterns::min_inputs(op) == 0
            && !matches!(op, "Placeholder" | "Identity")
            && self.target.supports_custom_op(op)
    }

    /// A CUSTOM op: every input lowered (quantized with its own
    /// parameters), the output quantized with `out`'s (the fake quant that
    /// follows it).
    fn custom(&mut self, id: NodeId, out: Out) -> R<TensorIndex> {
        let node = self.graph.node(id);
        let name = node.op().to_string();
        if node.outputs().len() != 1 {
            return self.unsupported(id, "a custom op is lowered only with exactly one output");
        }
        let inputs: Vec<R<TensorIndex>> = node
            .inputs()
            .to_vec()
            .into_iter()
            .map(|i| self.lower(i))
            .collect();
        let inputs = inputs.into_iter().collect::<R<Vec<_>>>()?;
        let output = self.out_tensor(out)?;
        self.emit(
            IntOpKind::Custom { name },
            inputs.into_iter().map(Some).collect(),
            output,
        );
        Ok(output)
    }

    /// The activation parameters a fake quant gives (`None` in check mode).
    fn fq_params(&mut self, fq: NodeId) -> R<Option<QuantParams>> {
        let node = self.graph.node(fq);
        let name = node.name().to_string();
        let bits = node.attr_int("num_bits").unwrap_or(8);
        if bits != 8 {
            return self.fail(LowerError::UnsupportedBits { node: name, bits });
        }
        let narrow = node.attr_bool("narrow_range").unwrap_or(false);
        let (min, max) = if node.op() == "FakeQuantWithMinMaxArgs" {
            (
                node.attr_float("min").unwrap_or(-6.0),
                node.attr_float("max").unwrap_or(6.0),
            )
        } else {
            let (lo, hi) = (node.inputs()[1], node.inputs()[2]);
            let Some(v) = self.eval(&name, &[lo, hi])? else {
                return Ok(None);
            };
            let (lo, hi) = (self.floats(&name, &v[0])?, self.floats(&name, &v[1])?);
            if lo.len() != 1 || hi.len() != 1 {
                return self.bad_value(&name, "an activation range must be one min and one max");
            }
            (lo[0], hi[0])
        };
        if let Err(e) = params::check_range(min, max) {
            return self.bad_value(&name, e);
        }
        let n = params::nudge(min, max, 8, narrow);
        Ok(Some(params::tensor_params(&n, self.target.storage)))
    }

    fn fake_quant(&mut self, fq: NodeId) -> R<TensorIndex> {
        let node = self.graph.node(fq);
        if node.op() == "FakeQuantWithMinMaxVarsPerChannel" {
            return self.unsupported(fq, "per-channel quantization of activations");
        }
        let params = self.fq_params(fq)?;
        let out = Out {
            name: node.name().to_string(),
            outlet: OutletId::new(fq, 0),
            params,
        };
        let x = patterns::strip(self.graph, node.inputs()[0]);
        let xnode = self.graph.node(x.node);
        let (act, y) = match patterns::activation_of(xnode.op()) {
            Some(a) => (
                Some((a, x.node)),
                patterns::strip(self.graph, xnode.inputs()[0]),
            ),
            None => (None, x),
        };
        match patterns::producer(self.graph, &mut self.consts, y) {
            Producer::Layer { layer, bias } => self.layer(layer, bias, act, out),
            Producer::Add { add } => self.binary(add, act, out),
            Producer::Mul { mul } => self.binary(mul, act, out),
            Producer::Other => {
                if let Some((_, a)) = act {
                    return self.unsupported(
                        a,
                        "an activation is only lowered fused into a conv, depthwise conv, matmul or add",
                    );
                }
                match self.graph.node(y.node).op() {
                    "Mean" => self.mean(y.node, Some(out)),
                    "ConcatV2" => self.concat(y.node, Some(out)),
                    op if y.slot == 0 && self.is_custom(op) => self.custom(y.node, out),
                    _ => {
                        let t = self.lower(y)?;
                        self.requantize_to(t, out)
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------- layers

    /// Padding, strides and dilations of a conv or pool (NHWC only).
    fn geometry(&mut self, id: NodeId, window: bool) -> R<(Padding, Hw, Hw, Hw)> {
        let node = self.graph.node(id);
        if let Ok(f) = node.attr_str("data_format")
            && f != "NHWC"
        {
            return self.unsupported(id, format!("data_format {f} (only NHWC is lowered)"));
        }
        let padding = match node.attr_str("padding") {
            Ok("SAME") => Padding::Same,
            Ok("VALID") => Padding::Valid,
            Ok(p) => return self.unsupported(id, format!("padding {p}")),
            Err(e) => return self.bad_value(node.name(), e.to_string()),
        };
        let hw = |name: &str, default: bool| -> Result<Hw, String> {
            match node.attr_ints(name) {
                Ok(&[1, h, w, 1]) if h > 0 && w > 0 => Ok(Hw::new(h as usize, w as usize)),
                Ok(v) => Err(format!(
                    "{name} {v:?} (batch and channel entries must be 1)"
                )),
                Err(_) if default => Ok(Hw::ONE),
                Err(e) => Err(e.to_string()),
            }
        };
        let result = (|| {
            Ok::<_, String>((
                hw("strides", false)?,
                hw("dilations", true)?,
                if window { hw("ksize", false)? } else { Hw::ONE },
            ))
        })();
        match result {
            Ok((s, d, k)) => Ok((padding, s, d, k)),
            Err(e) => self.unsupported(id, e),
        }
    }

    fn layer(
        &mut self,
        layer: NodeId,
        bias: Option<OutletId>,
        act: Option<(Activation, NodeId)>,
        out: Out,
    ) -> R<TensorIndex> {
        let node = self.graph.node(layer);
        let name = node.name().to_string();
        let op = node.op().to_string();
        let tflite = match op.as_str() {
            "Conv2D" => "CONV_2D",
            "DepthwiseConv2dNative" => "DEPTHWISE_CONV_2D",
            _ => "FULLY_CONNECTED",
        };
        let input = self.lower(node.inputs()[0]);
        let mut ok = self.check_op(&name, tflite);
        let activation = self.check_activation(act);
        let geometry = if op == "MatMul" {
            if node.attr_bool("transpose_a").unwrap_or(false) {
                ok &= self.unsupported::<()>(layer, "transpose_a").is_ok();
            }
            Ok((Padding::Valid, Hw::ONE, Hw::ONE, Hw::ONE))
        } else {
            self.geometry(layer, false)
        };
        let transpose_b = op == "MatMul" && node.attr_bool("transpose_b").unwrap_or(false);
        let wq = patterns::weight_quant(self.graph, node.inputs()[1]);
        let weights = match wq {
            None => self.fail(LowerError::MissingRange {
                node: name.clone(),
                hint: "its weights are not fake-quantized: lower an eval graph".into(),
            }),
            Some(wq) => self.check_weight_quant(layer, wq, transpose_b).map(|()| wq),
        };
        let tf_shape = self.shape(node.inputs()[1]);
        let (Ok(activation), Ok(geometry), Ok(input), Ok(wq), Ok(tf_shape), true) =
            (activation, geometry, input, weights, tf_shape, ok)
        else {
            return Err(Reported);
        };
        let layout = match (op.as_str(), tf_shape.as_slice()) {
            ("Conv2D", &[_, _, _, _]) => Layout::Conv,
            ("DepthwiseConv2dNative", &[_, _, _, _]) => Layout::Depthwise,
            ("MatMul", &[_, _]) if transpose_b => Layout::Same,
            ("MatMul", &[_, _]) => Layout::Transpose,
            _ => {
                return self.bad_value(&name, format!("unexpected weight shape {tf_shape:?}"));
            }
        };
        let (w_shape, axis) = layout.apply_shape(&tf_shape);
        let channels = w_shape[axis];
        let w = self.weights(wq, &tf_shape, layout, axis)?;
        let in_scale = self.params_of(input).map(|p| p.scales[0]);
        let w_scales = self.model.tensors[w]
            .quant
            .as_ref()
            .map(|p| p.scales.clone());
        let b = if bias.is_none() && op == "MatMul" {
            None
        } else {
            Some(self.bias(&name, bias, channels, in_scale, w_scales)?)
        };
        let output = self.out_tensor(out)?;
        let (padding, stride, dilation, _) = geometry;
        let kind = match layout {
            Layout::Conv => IntOpKind::Conv2D {
                padding,
                stride,
                dilation,
                activation,
            },
            Layout::Depthwise => IntOpKind::DepthwiseConv2D {
                padding,
                stride,
                dilation,
                depth_multiplier: tf_shape[3],
                activation,
            },
            Layout::Same | Layout::Transpose => IntOpKind::FullyConnected {
                activation,
                keep_num_dims: false,
            },
        };
        self.emit(kind, vec![Some(input), Some(w), b], output);
        Ok(output)
    }

    /// Target and form checks of a weight fake quant that need no values.
    fn check_weight_quant(&mut self, layer: NodeId, wq: WeightQuant, transpose_b: bool) -> R<()> {
        let fq = self.graph.node(wq.fq);
        let name = fq.name().to_string();
        let bits = fq.attr_int("num_bits").unwrap_or(8);
        if bits != 8 {
            return self.fail(LowerError::UnsupportedBits { node: name, bits });
        }
        if fq.op() == "FakeQuantWithMinMaxVarsPerChannel" {
            if !self.target.per_channel_weights {
                return self.fail(LowerError::PerChannelNotSupported {
                    node: name,
                    target: self.target.name.clone(),
                });
            }
            if transpose_b {
                return self.unsupported(layer, "per-channel weights of a transpose_b matmul");
            }
        }
        Ok(())
    }

    /// Quantizes a layer's weights into a constant in TFLite's layout.
    fn weights(
        &mut self,
        wq: WeightQuant,
        tf_shape: &[usize],
        layout: Layout,
        axis: usize,
    ) -> R<TensorIndex> {
        let fq = self.graph.node(wq.fq);
        let name = fq.name().to_string();
        let narrow = fq.attr_bool("narrow_range").unwrap_or(false);
        let (shape, _) = layout.apply_shape(tf_shape);
        let dtype = self.storage_dtype();
        let (x, mins, maxs, rounding) = if fq.op() == "FakeQuantWithMinMaxArgs" {
            let (lo, hi) = (
                fq.attr_float("min").unwrap_or(-6.0),
                fq.attr_float("max").unwrap_or(6.0),
            );
            let Some(v) = self.eval(&name, &[wq.input])? else {
                return Ok(self.add_tensor(name, dtype, shape, None, None));
            };
            (
                self.floats(&name, &v[0])?,
                vec![lo],
                vec![hi],
                Rounding::Multiply,
            )
        } else {
            let rounding = if fq.op() == "FakeQuantWithMinMaxVars" {
                Rounding::Divide
            } else {
                Rounding::Multiply
            };
            let (lo, hi) = (fq.inputs()[1], fq.inputs()[2]);
            let Some(v) = self.eval(&name, &[wq.input, lo, hi])? else {
                return Ok(self.add_tensor(name, dtype, shape, None, None));
            };
            let x = self.floats(&name, &v[0])?;
            (
                x,
                self.floats(&name, &v[1])?,
                self.floats(&name, &v[2])?,
                rounding,
            )
        };
        let numel: usize = tf_shape.iter().product();
        if x.len() != numel
            || mins.len() != maxs.len()
            || (mins.len() != 1 && mins.len() != shape[axis])
        {
            return self.bad_value(
                &name,
                format!(
                    "{} weights with {} ranges do not fit the weight shape {tf_shape:?}",
                    x.len(),
                    mins.len()
                ),
            );
        }
        let mut q = match params::quantize_weights(&x, &mins, &maxs, 8, narrow, rounding) {
            Ok(q) => q,
            Err(e) => return self.bad_value(&name, e),
        };
        if self.target.storage == Storage::I8 {
            q = self.symmetric_int8(&name, q, &x, &mins, &maxs)?;
        }
        let levels = layout.apply(&q.levels, tf_shape);
        let quant = params::channel_params(&q.grids, self.target.storage, axis);
        let data = match self.target.storage {
            Storage::U8 => Tensor::from_vec(&shape, levels.iter().map(|&l| l as u8).collect()),
            Storage::I8 => {
                Tensor::from_vec(&shape, levels.iter().map(|&l| (l - 128) as i8).collect())
            }
        };
        match data {
            Ok(t) => Ok(self.add_tensor(name, dtype, shape, Some(quant), Some(t))),
            Err(e) => self.bad_value(&name, e.to_string()),
        }
    }

    /// int8 weights need zero point 0: refuse others, or requantize them
    /// on symmetric narrow ranges when the options allow it.
    fn symmetric_int8(
        &mut self,
        name: &str,
        q: params::QuantizedWeights,
        x: &[f32],
        mins: &[f32],
        maxs: &[f32],
    ) -> R<params::QuantizedWeights> {
        let Some((channel, g)) = q
            .grids
            .iter()
            .enumerate()
            .find(|(_, g)| g.zero_point != 128)
        else {
            return Ok(q);
        };
        if !self.options.requantize_weights {
            let zero_point = g.stored_zero_point(Storage::I8);
            return self.fail(LowerError::AsymmetricWeights {
                node: name.to_string(),
                channel,
                zero_point,
            });
        }
        let m: Vec<f32> = mins
            .iter()
            .zip(maxs)
            .map(|(a, b)| a.abs().max(b.abs()))
            .collect();
        let neg: Vec<f32> = m.iter().map(|v| -v).collect();
        match params::quantize_weights(x, &neg, &m, 8, true, Rounding::Divide) {
            Ok(q) if q.grids.iter().all(|g: &Nudged| g.zero_point == 128) => Ok(q),
            Ok(_) => self.bad_value(name, "symmetric requantization did not give zero point 0"),
            Err(e) => self.bad_value(name, e),
        }
    }

    /// The int32 bias: `round(b / (S_in · S_w[c]))`, zeros without a bias.
    fn bias(
        &mut self,
        layer: &str,
        bias: Option<OutletId>,
        channels: usize,
        in_scale: Option<f32>,
        w_scales: Option<Vec<f32>>,
    ) -> R<TensorIndex> {
        let name = match bias {
            Some(b) => self
                .graph
                .node(patterns::strip(self.graph, b).node)
                .name()
                .to_string(),
            None => format!("{layer}/zero_bias"),
        };
        let values = match bias {
            None => Some(vec![0.0; channels]),
            Some(b) => match self.eval(&name, &[b])? {
                None => None,
                Some(v) => Some(self.floats(&name, &v[0])?),
            },
        };
        let (Some(values), Some(s_in), Some(s_w)) = (values, in_scale, w_scales) else {
            return Ok(self.add_tensor(name, DType::I32, vec![channels], None, None));
        };
        if values.len() != channels {
            return self.bad_value(
                &name,
                format!("{} bias values for {channels} channels", values.len()),
            );
        }
        let scales: Vec<f32> = s_w.iter().map(|&s| s_in * s).collect();
        let mut ints = Vec::with_capacity(channels);
        for (c, &b) in values.iter().enumerate() {
            let s = scales[if scales.len() == 1 { 0 } else { c }];
            match params::round_to_i32(f64::from(b) / f64::from(s)) {
                Some(q) => ints.push(q),
                None => {
                    return self.bad_value(
                        &name,
                        format!("bias {b} of channel {c} does not fit in int32 at scale {s}"),
                    );
                }
            }
        }
        let quant = QuantParams {
            zero_points: vec![0; scales.len()],
            axis: (scales.len() > 1).then_some(0),
            scales,
        };
        match Tensor::from_vec(&[channels], ints) {
            Ok(t) => Ok(self.add_tensor(name, DType::I32, vec![channels], Some(quant), Some(t))),
            Err(e) => self.bad_value(&name, e.to_string()),
        }
    }

    /// `ADD` or `MUL` of two computed tensors of the same shape.
    fn binary(
        &mut self,
        id: NodeId,
        act: Option<(Activation, NodeId)>,
        out: Out,
    ) -> R<TensorIndex> {
        let node = self.graph.node(id);
        let name = node.name().to_string();
        let mul = node.op() == "Mul";
        let (ia, ib) = (node.inputs()[0], node.inputs()[1]);
        let (a, b) = (self.lower(ia), self.lower(ib));
        let ok = self.check_op(&name, if mul { "MUL" } else { "ADD" });
        let activation = self.check_activation(act);
        let same_shape = self.graph.fact(ia).shape == self.graph.fact(ib).shape;
        if !same_shape {
            let _ = self.unsupported::<()>(id, "inputs of different shapes (broadcasting)");
        }
        let (Ok(a), Ok(b), Ok(activation), true, true) = (a, b, activation, ok, same_shape) else {
            return Err(Reported);
        };
        let output = self.out_tensor(out)?;
        let kind = if mul {
            IntOpKind::Mul { activation }
        } else {
            IntOpKind::Add { activation }
        };
        self.emit(kind, vec![Some(a), Some(b)], output);
        Ok(output)
    }

    // ------------------------------------------------- data movement etc.

    /// The output tensor of an op whose parameters are its input's.
    fn same_params_out(&mut self, id: NodeId, input: TensorIndex) -> R<TensorIndex> {
        let out = Out {
            name: self.graph.node(id).name().to_string(),
            outlet: OutletId::new(id, 0),
            params: self.params_of(input),
        };
        self.out_tensor(out)
    }

    fn pool(&mut self, id: NodeId) -> R<TensorIndex> {
        let node = self.graph.node(id);
        let (tflite, max) = if node.op() == "MaxPool" {
            ("MAX_POOL_2D", true)
        } else {
            ("AVERAGE_POOL_2D", false)
        };
        let input = self.lower(node.inputs()[0]);
        let ok = self.check_op(node.name(), tflite);
        let geometry = self.geometry(id, true);
        let (true, Ok((padding, stride, _, filter)), Ok(input)) = (ok, geometry, input) else {
            return Err(Reported);
        };
        let output = self.same_params_out(id, input)?;
        let activation = Activation::None;
        let kind = if max {
            IntOpKind::MaxPool2D {
                padding,
                stride,
                filter,
                activation,
            }
        } else {
            IntOpKind::AveragePool2D {
                padding,
                stride,
                filter,
                activation,
            }
        };
        self.emit(kind, vec![Some(input)], output);
        Ok(output)
    }

    fn reshape(&mut self, id: NodeId) -> R<TensorIndex> {
        let node = self.graph.node(id);
        let name = node.name().to_string();
        let input = self.lower(node.inputs()[0]);
        let ok = self.check_op(&name, "RESHAPE");
        let dims = self.const_ints(id, node.inputs()[1]);
        let (true, Ok(input), Ok(dims)) = (ok, input, dims) else {
            return Err(Reported);
        };
        let rank = self
            .graph
            .fact(node.inputs()[1])
            .shape
            .as_ref()
            .and_then(|s| s.num_elements());
        let rank = dims.as_ref().map(|d| d.len()).or(rank).unwrap_or(0);
        let shape = self.int32_operand(format!("{name}/shape"), vec![rank], dims)?;
        let output = self.same_params_out(id, input)?;
        self.emit(IntOpKind::Reshape, vec![Some(input), Some(shape)], output);
        Ok(output)
    }

    fn pad(&mut self, id: NodeId) -> R<TensorIndex> {
        let node = self.graph.node(id);
        let name = node.name().to_string();
        let input = self.lower(node.inputs()[0]);
        let ok = self.check_op(&name, "PAD");
        let pads = self.const_ints(id, node.inputs()[1]);
        let (true, Ok(input), Ok(pads)) = (ok, input, pads) else {
            return Err(Reported);
        };
        let rank = self.model.tensors[input].shape.len();
        let paddings = self.int32_operand(format!("{name}/paddings"), vec![rank, 2], pads)?;
        let output = self.same_params_out(id, input)?;
        self.emit(IntOpKind::Pad, vec![Some(input), Some(paddings)], output);
        Ok(output)
    }

    fn mean(&mut self, id: NodeId, out: Option<Out>) -> R<TensorIndex> {
        let node = self.graph.node(id);
        let name = node.name().to_string();
        let keep_dims = node.attr_bool("keep_dims").unwrap_or(false);
        let input = self.lower(node.inputs()[0]);
        let ok = self.check_op(&name, "MEAN");
        let axes = self.const_ints(id, node.inputs()[1]);
        let (true, Ok(input), Ok(axes)) = (ok, input, axes) else {
            return Err(Reported);
        };
        let k = axes.as_ref().map_or(0, |a| a.len());
        let axes = self.int32_operand(format!("{name}/axes"), vec![k], axes)?;
        let output = match out {
            Some(out) => self.out_tensor(out)?,
            None => self.same_params_out(id, input)?,
        };
        self.emit(
            IntOpKind::Mean { keep_dims },
            vec![Some(input), Some(axes)],
            output,
        );
        Ok(output)
    }

    /// `SOFTMAX` or `LOGISTIC`, whose outputs have the fixed parameters
    /// `(1/256, 0)` (uint8) or `(1/256, −128)` (int8).
    fn fixed_output(&mut self, id: NodeId, kind: IntOpKind) -> R<TensorIndex> {
        let node = self.graph.node(id);
        let name = node.name().to_string();
        let input = self.lower(node.inputs()[0]);
        let ok = self.check_op(&name, kind.tflite_name());
        let (true, Ok(input)) = (ok, input) else {
            return Err(Reported);
        };
        let zero_point = match self.target.storage {
            Storage::U8 => 0,
            Storage::I8 => -128,
        };
        let params = QuantParams {
            scales: vec![1.0 / 256.0],
            zero_points: vec![zero_point],
            axis: None,
        };
        let output = self.out_tensor(Out {
            name,
            outlet: OutletId::new(id, 0),
            params: Some(params),
        })?;
        self.emit(kind, vec![Some(input)], output);
        Ok(output)
    }

    fn concat(&mut self, id: NodeId, out: Option<Out>) -> R<TensorIndex> {
        let node = self.graph.node(id);
        let name = node.name().to_string();
        let n = node.inputs().len() - 1;
        let axis_outlet = node.inputs()[n];
        let lowered: Vec<R<TensorIndex>> =
            node.inputs()[..n].iter().map(|&i| self.lower(i)).collect();
        let ok = self.check_op(&name, "CONCATENATION");
        let axis = self.const_ints(id, axis_outlet);
        let (true, Ok(axis)) = (ok, axis) else {
            return Err(Reported);
        };
        let inputs: Vec<TensorIndex> = lowered.into_iter().collect::<R<_>>()?;
        let axis = match axis.as_deref() {
            None => 0,
            Some(&[a]) => match i32::try_from(a) {
                Ok(a) => a,
                Err(_) => return self.bad_value(&name, format!("axis {a}")),
            },
            Some(v) => return self.bad_value(&name, format!("axis {v:?} is not a scalar")),
        };
        let params = match out {
            Some(o) => o.params,
            None => self.union_params(&inputs),
        };
        let mut operands = Vec::with_capacity(inputs.len());
        for (k, &t) in inputs.iter().enumerate() {
            let t = if self.target.storage == Storage::I8 {
                let o = Out {
                    name: format!("{name}/input_{k}/requantize"),
                    outlet: OutletId::new(id, 0),
                    params: params.clone(),
                };
                self.requantize_to(t, o)?
            } else {
                t
            };
            operands.push(Some(t));
        }
        let output = self.out_tensor(Out {
            name,
            outlet: OutletId::new(id, 0),
            params,
        })?;
        let kind = IntOpKind::Concatenation {
            axis,
            activation: Activation::None,
        };
        self.emit(kind, operands, output);
        Ok(output)
    }

    /// The inputs' parameters if they agree, else the nudged union of their
    /// ranges (`None` in check mode).
    fn union_params(&self, inputs: &[TensorIndex]) -> Option<QuantParams> {
        let all: Vec<QuantParams> = inputs
            .iter()
            .map(|&t| self.params_of(t))
            .collect::<Option<_>>()?;
        if all.windows(2).all(|w| w[0] == w[1]) {
            return all.into_iter().next();
        }
        let offset = match self.target.storage {
            Storage::U8 => 0,
            Storage::I8 => 128,
        };
        let (mut lo, mut hi) = (0f32, 0f32);
        for p in &all {
            let zp = (p.zero_points[0] + offset) as f32;
            lo = lo.min(-zp * p.scales[0]);
            hi = hi.max((255.0 - zp) * p.scales[0]);
        }
        Some(params::tensor_params(
            &params::nudge(lo, hi, 8, false),
            self.target.storage,
        ))
    }
}

/// How TensorFlow's weight layout becomes TFLite's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// HWIO → OHWI.
    Conv,
    /// `[kh, kw, in, mult]` → `[1, kh, kw, in·mult]`.
    Depthwise,
    /// `[in, units]` → `[units, in]`.
    Transpose,
    /// Already `[units, in]` (`transpose_b`).
    Same,
}

impl Layout {
    /// The TFLite shape and the output-channel axis in it.
    fn apply_shape(self, s: &[usize]) -> (Vec<usize>, usize) {
        match self {
            Layout::Conv => (vec![s[3], s[0], s[1], s[2]], 0),
            Layout::Depthwise => (vec![1, s[0], s[1], s[2] * s[3]], 3),
            Layout::Transpose => (vec![s[1], s[0]], 0),
            Layout::Same => (s.to_vec(), 0),
        }
    }

    /// The elements in TFLite's order.
    fn apply(self, data: &[i64], s: &[usize]) -> Vec<i64> {
        match self {
            Layout::Depthwise | Layout::Same => data.to_vec(),
            Layout::Transpose => {
                let (rows, cols) = (s[0], s[1]);
                let mut out = Vec::with_capacity(data.len());
                for c in 0..cols {
                    out.extend((0..rows).map(|r| data[r * cols + c]));
                }
                out
            }
            Layout::Conv => {
                let (kh, kw, ci, co) = (s[0], s[1], s[2], s[3]);
                let mut out = Vec::with_capacity(data.len());
                for o in 0..co {
                    for h in 0..kh {
                        for w in 0..kw {
                            out.extend((0..ci).map(|i| data[((h * kw + w) * ci + i) * co + o]));
                        }
                    }
                }
                out
            }
        }
    }
}
