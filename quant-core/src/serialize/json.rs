//! quant's graph JSON.
//!
//! ```json
//! {
//!   "format_version": 1,
//!   "nodes": [
//!     {"name": "x", "op": "Placeholder", "inputs": [],
//!      "attrs": {"dtype": {"type": "f32"}, "shape": {"shape": [null, 4]}},
//!      "outputs": [{"dtype": "f32", "shape": [null, 4]}]},
//!     {"name": "y", "op": "Relu", "inputs": ["x"], "attrs": {}, "outputs": [...]}
//!   ]
//! }
//! ```
//!
//! Nodes are listed in creation order. Inputs are written `name` (output 0),
//! `name:k`, or `^name` for a control dependency. Each attribute is an
//! object with one key naming its kind (`int`, `float`, `bool`, `str`,
//! `type`, `shape`, `tensor`, `func`, `ints`, `floats`, `bools`, `strs`,
//! `types`, `shapes`). A tensor is `{"dtype", "shape", "data": [...]}` with
//! row-major values, plus `"quant"` when it carries quantization
//! parameters. Floats are written in their shortest round-trip form;
//! non-finite floats as the strings `"nan"`, `"inf"`, `"-inf"`.

use super::ParseError;
use crate::attr::AttrValue;
use crate::dtype::DType;
use crate::error::{GraphError, TensorError};
use crate::graph::{Graph, NewNode, NodeId, OutletId, OutputFact};
use crate::ops::OpRegistry;
use crate::shape::Shape;
use crate::tensor::{QuantParams, Tensor, TensorData};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// The version of the format written by [`to_json`]; [`from_json`] reads only this one.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "D: Deserialize<'de>"))]
struct GraphJson<D> {
    format_version: u32,
    nodes: Vec<NodeJson<D>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "D: Deserialize<'de>"))]
struct NodeJson<D> {
    name: String,
    op: String,
    #[serde(default)]
    inputs: Vec<String>,
    #[serde(default)]
    attrs: BTreeMap<String, AttrJson<D>>,
    #[serde(default)]
    outputs: Vec<OutputFact>,
}

/// A float that survives JSON: finite values as numbers, others as strings.
#[derive(Clone, Copy, Debug, PartialEq)]
struct JsonF32(f32);

impl Serialize for JsonF32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_finite() {
            s.serialize_f32(v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }
}

/// Parses a JSON number or one of the non-finite strings straight from its
/// text, so the value is rounded once, directly to the target type.
fn parse_float<T: std::str::FromStr>(raw: &str, nan: T, inf: T, neg_inf: T) -> Result<T, String> {
    match raw.trim() {
        "\"nan\"" => Ok(nan),
        "\"inf\"" => Ok(inf),
        "\"-inf\"" => Ok(neg_inf),
        text if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) => text
            .parse()
            .map_err(|_| format!("'{text}' is not a valid number")),
        text => Err(format!("expected a number, found {text}")),
    }
}

impl<'de> Deserialize<'de> for JsonF32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        parse_float(raw.get(), f32::NAN, f32::INFINITY, f32::NEG_INFINITY)
            .map(JsonF32)
            .map_err(serde::de::Error::custom)
    }
}

/// The `f64` counterpart of [`JsonF32`].
#[derive(Clone, Copy, Debug, PartialEq)]
struct JsonF64(f64);

impl Serialize for JsonF64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_finite() {
            s.serialize_f64(v)
        } else {
            JsonF32(v as f32).serialize(s)
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum AttrJson<D> {
    Int(i64),
    Float(JsonF32),
    Bool(bool),
    Str(String),
    Type(DType),
    Shape(Option<Shape>),
    Tensor(TensorJson<D>),
    Func(String),
    Ints(Vec<i64>),
    Floats(Vec<JsonF32>),
    Bools(Vec<bool>),
    Strs(Vec<String>),
    Types(Vec<DType>),
    Shapes(Vec<Option<Shape>>),
}

/// A tensor as written (`D` = [`TensorValues`]) and as read (`D` = the raw
/// JSON of the value list, parsed once the dtype is known).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorJson<D> {
    dtype: DType,
    shape: Vec<usize>,
    data: D,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quant: Option<QuantParams>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum TensorValues {
    Bools(Vec<bool>),
    Ints(Vec<i64>),
    Floats(Vec<JsonF32>),
    Doubles(Vec<JsonF64>),
}

fn tensor_to_json(t: &Tensor) -> TensorJson<TensorValues> {
    let data = match t.data() {
        TensorData::F32(a) => TensorValues::Floats(a.iter().map(|&v| JsonF32(v)).collect()),
        TensorData::F64(a) => TensorValues::Doubles(a.iter().map(|&v| JsonF64(v)).collect()),
        TensorData::Bool(a) => TensorValues::Bools(a.iter().copied().collect()),
        _ => TensorValues::Ints(t.to_i64_vec().unwrap_or_default()),
    };
    TensorJson {
        dtype: t.dtype(),
        shape: t.shape().to_vec(),
        data,
        quant: t.quant().cloned(),
    }
}

fn tensor_from_json(j: TensorJson<Box<RawValue>>) -> Result<Tensor, TensorError> {
    fn list<T: for<'de> Deserialize<'de>>(
        raw: &RawValue,
        what: &str,
    ) -> Result<Vec<T>, TensorError> {
        serde_json::from_str(raw.get())
            .map_err(|e| TensorError::Invalid(format!("data must be a list of {what}: {e}")))
    }
    fn ints<T: crate::Element + TryFrom<i64>>(
        shape: &[usize],
        raw: &RawValue,
    ) -> Result<Tensor, TensorError> {
        let values = list::<i64>(raw, "integers")?
            .into_iter()
            .map(|x| {
                T::try_from(x).map_err(|_| {
                    TensorError::Invalid(format!("value {x} does not fit {}", T::DTYPE))
                })
            })
            .collect::<Result<Vec<T>, _>>()?;
        Tensor::from_vec(shape, values)
    }
    fn floats<T: std::str::FromStr + crate::Element>(
        shape: &[usize],
        raw: &RawValue,
        nan: T,
        inf: T,
        neg_inf: T,
    ) -> Result<Tensor, TensorError> {
        let values = list::<Box<RawValue>>(raw, "numbers")?
            .iter()
            .map(|v| parse_float(v.get(), nan, inf, neg_inf).map_err(TensorError::Invalid))
            .collect::<Result<Vec<T>, _>>()?;
        Tensor::from_vec(shape, values)
    }
    let shape = &j.shape;
    let raw = &*j.data;
    let mut tensor = match j.dtype {
        DType::F32 => floats(shape, raw, f32::NAN, f32::INFINITY, f32::NEG_INFINITY)?,
        DType::F64 => floats(shape, raw, f64::NAN, f64::INFINITY, f64::NEG_INFINITY)?,
        DType::I32 => ints::<i32>(shape, raw)?,
        DType::I64 => ints::<i64>(shape, raw)?,
        DType::U8 => ints::<u8>(shape, raw)?,
        DType::I8 => ints::<i8>(shape, raw)?,
        DType::Bool => Tensor::from_vec(shape, list::<bool>(raw, "booleans")?)?,
        dtype @ (DType::String | DType::Resource) => {
            return Err(TensorError::UnsupportedDType(dtype));
        }
    };
    tensor.set_quant(j.quant)?;
    Ok(tensor)
}

fn attr_to_json(v: &AttrValue) -> AttrJson<TensorValues> {
    match v {
        AttrValue::Int(x) => AttrJson::Int(*x),
        AttrValue::Float(x) => AttrJson::Float(JsonF32(*x)),
        AttrValue::Bool(x) => AttrJson::Bool(*x),
        AttrValue::Str(x) => AttrJson::Str(x.clone()),
        AttrValue::Type(x) => AttrJson::Type(*x),
        AttrValue::Shape(x) => AttrJson::Shape(x.clone()),
        AttrValue::Tensor(t) => AttrJson::Tensor(tensor_to_json(t)),
        AttrValue::Func(x) => AttrJson::Func(x.clone()),
        AttrValue::Ints(x) => AttrJson::Ints(x.clone()),
        AttrValue::Floats(x) => AttrJson::Floats(x.iter().map(|&f| JsonF32(f)).collect()),
        AttrValue::Bools(x) => AttrJson::Bools(x.clone()),
        AttrValue::Strs(x) => AttrJson::Strs(x.clone()),
        AttrValue::Types(x) => AttrJson::Types(x.clone()),
        AttrValue::Shapes(x) => AttrJson::Shapes(x.clone()),
    }
}

fn attr_from_json(v: AttrJson<Box<RawValue>>) -> Result<AttrValue, TensorError> {
    Ok(match v {
        AttrJson::Int(x) => AttrValue::Int(x),
        AttrJson::Float(x) => AttrValue::Float(x.0),
        AttrJson::Bool(x) => AttrValue::Bool(x),
        AttrJson::Str(x) => AttrValue::Str(x),
        AttrJson::Type(x) => AttrValue::Type(x),
        AttrJson::Shape(x) => AttrValue::Shape(x),
        AttrJson::Tensor(t) => AttrValue::from(tensor_from_json(t)?),
        AttrJson::Func(x) => AttrValue::Func(x),
        AttrJson::Ints(x) => AttrValue::Ints(x),
        AttrJson::Floats(x) => AttrValue::Floats(x.into_iter().map(|f| f.0).collect()),
        AttrJson::Bools(x) => AttrValue::Bools(x),
        AttrJson::Strs(x) => AttrValue::Strs(x),
        AttrJson::Types(x) => AttrValue::Types(x),
        AttrJson::Shapes(x) => AttrValue::Shapes(x),
    })
}

/// Serializes a graph as pretty-printed graph JSON.
pub fn to_json(graph: &Graph) -> String {
    let nodes = graph
        .nodes()
        .map(|(_, n)| NodeJson {
            name: n.name().to_string(),
            op: n.op().to_string(),
            inputs: n
                .inputs()
                .iter()
                .map(|&o| graph.outlet_name(o))
                .chain(
                    n.control_inputs()
                        .iter()
                        .map(|&c| format!("^{}", graph.node(c).name())),
                )
                .collect(),
            attrs: n
                .attrs()
                .iter()
                .map(|(k, v)| (k.to_string(), attr_to_json(v)))
                .collect(),
            outputs: n.outputs().to_vec(),
        })
        .collect();
    let doc = GraphJson {
        format_version: FORMAT_VERSION,
        nodes,
    };
    let mut text = serde_json::to_string_pretty(&doc)
        .unwrap_or_else(|e| unreachable!("graph JSON always serializes: {e}"));
    text.push('\n');
    text
}

/// An input reference: `name`, `name:k` or `^name`.
pub(crate) enum InputRef<'a> {
    Data(&'a str, usize),
    Control(&'a str),
}

/// Parses an input reference as written in graph JSON and GraphDef.
pub(crate) fn parse_input_ref<'a>(node: &str, text: &'a str) -> Result<InputRef<'a>, GraphError> {
    let malformed = || GraphError::MalformedInput {
        node: node.to_string(),
        input: text.to_string(),
    };
    if let Some(name) = text.strip_prefix('^') {
        return if name.is_empty() {
            Err(malformed())
        } else {
            Ok(InputRef::Control(name))
        };
    }
    match text.rsplit_once(':') {
        Some((name, slot)) if !name.is_empty() => slot
            .parse()
            .map(|k| InputRef::Data(name, k))
            .map_err(|_| malformed()),
        Some(_) => Err(malformed()),
        None if text.is_empty() => Err(malformed()),
        None => Ok(InputRef::Data(text, 0)),
    }
}

/// Connects inputs given as references, once every node exists.
pub(crate) fn connect_inputs(
    graph: &mut Graph,
    id: NodeId,
    refs: &[String],
) -> Result<(), GraphError> {
    let name = graph.node(id).name().to_string();
    let mut data = Vec::new();
    let mut control = Vec::new();
    for (index, text) in refs.iter().enumerate() {
        let dangling = |input: &str| GraphError::DanglingInput {
            node: name.clone(),
            index,
            input: input.to_string(),
        };
        match parse_input_ref(&name, text)? {
            InputRef::Data(producer, slot) => {
                let pid = graph.id(producer).ok_or_else(|| dangling(text))?;
                let outputs = graph.node(pid).outputs().len();
                if slot >= outputs {
                    return Err(GraphError::BadOutputSlot {
                        node: name.clone(),
                        index,
                        producer: producer.to_string(),
                        slot,
                        outputs,
                    });
                }
                data.push(OutletId::new(pid, slot));
            }
            InputRef::Control(producer) => {
                control.push(graph.id(producer).ok_or_else(|| dangling(text))?)
            }
        }
    }
    graph.set_inputs(id, data)?;
    graph.set_control_inputs(id, control)
}

/// Parses graph JSON and validates the graph against `registry`.
pub fn from_json(text: &str, registry: &OpRegistry) -> Result<Graph, ParseError> {
    let doc: GraphJson<Box<RawValue>> = serde_json::from_str(text)
        .map_err(|e| ParseError::Format(format!("invalid graph JSON: {e}")))?;
    if doc.format_version != FORMAT_VERSION {
        return Err(ParseError::Format(format!(
            "unsupported format_version {} (this build reads version {FORMAT_VERSION})",
            doc.format_version
        )));
    }
    let mut graph = Graph::new();
    let mut pending = Vec::with_capacity(doc.nodes.len());
    for node in doc.nodes {
        let mut new = NewNode::new(node.name, node.op).outputs(node.outputs);
        for (key, value) in node.attrs {
            let value = attr_from_json(value).map_err(|source| GraphError::Tensor {
                node: new.name.clone(),
                source,
            })?;
            new.attrs.insert(key.into(), value);
        }
        let id = graph.add_node(new)?;
        pending.push((id, node.inputs));
    }
    for (id, refs) in pending {
        connect_inputs(&mut graph, id, &refs)?;
    }
    graph.validate(registry)?;
    Ok(graph)
}
