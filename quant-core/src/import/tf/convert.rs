//! GraphDef messages to quant's IR.

use super::protos::{
    self, AttrValue as TfAttr, DataType, TensorProto, TensorShapeProto, attr_value,
};
use crate::attr::AttrValue;
use crate::dtype::DType;
use crate::error::{GraphError, TensorError};
use crate::graph::{Graph, NewNode, OutputFact};
use crate::ops::OpRegistry;
use crate::serialize::ParseError;
use crate::serialize::json::{InputRef, connect_inputs, parse_input_ref};
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::collections::HashMap;

fn attr_error(node: &str, attr: &str, message: String) -> GraphError {
    GraphError::Attr {
        node: node.to_string(),
        attr: attr.to_string(),
        message,
    }
}

fn dtype(code: i32) -> Result<DType, String> {
    DType::from_tf_code(code).ok_or_else(|| {
        let name = DataType::try_from(code)
            .map_or_else(|_| format!("#{code}"), |d| d.as_str_name().to_string());
        format!("unsupported dtype {name}")
    })
}

fn shape(proto: &TensorShapeProto) -> Option<Shape> {
    (!proto.unknown_rank).then(|| {
        Shape(
            proto
                .dim
                .iter()
                .map(|d| usize::try_from(d.size).ok())
                .collect(),
        )
    })
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "string value is not UTF-8".to_string())
}

/// Decodes a `TensorProto`, following TensorFlow's rules for the repeated
/// value fields: no values means zeros, fewer values than elements repeat
/// the last one, more values than elements is an error.
pub fn tensor(proto: &TensorProto) -> Result<Tensor, TensorError> {
    let dt = dtype(proto.dtype).map_err(TensorError::Invalid)?;
    let shape_proto = proto.tensor_shape.clone().unwrap_or_default();
    let dims: Vec<usize> = match shape(&shape_proto).and_then(|s| s.as_known()) {
        Some(dims) => dims,
        None => {
            return Err(TensorError::Invalid(
                "tensor shape must be fully known".into(),
            ));
        }
    };
    if !proto.tensor_content.is_empty() {
        return Tensor::from_le_bytes(dt, &dims, &proto.tensor_content);
    }
    let n = crate::tensor::checked_len(&dims, dt.size_of().unwrap_or(1))?;
    fn fill<T: crate::Element>(
        dims: &[usize],
        n: usize,
        values: Vec<T>,
        zero: T,
    ) -> Result<Tensor, TensorError> {
        if values.len() > n {
            return Err(TensorError::LengthMismatch {
                shape: dims.to_vec(),
                expected: n,
                found: values.len(),
            });
        }
        let last = values.last().copied().unwrap_or(zero);
        let mut v = values;
        v.resize(n, last);
        Tensor::from_vec(dims, v)
    }
    fn narrow<T: crate::Element + TryFrom<i32>>(values: &[i32]) -> Result<Vec<T>, TensorError> {
        values
            .iter()
            .map(|&x| {
                T::try_from(x).map_err(|_| {
                    TensorError::Invalid(format!("value {x} does not fit {}", T::DTYPE))
                })
            })
            .collect()
    }
    match dt {
        DType::F32 => fill(&dims, n, proto.float_val.clone(), 0.0),
        DType::F64 => fill(&dims, n, proto.double_val.clone(), 0.0),
        DType::I32 => fill(&dims, n, proto.int_val.clone(), 0),
        DType::I64 => fill(&dims, n, proto.int64_val.clone(), 0),
        DType::U8 => fill(&dims, n, narrow::<u8>(&proto.int_val)?, 0),
        DType::I8 => fill(&dims, n, narrow::<i8>(&proto.int_val)?, 0),
        DType::Bool => fill(&dims, n, proto.bool_val.clone(), false),
        DType::String | DType::Resource => Err(TensorError::UnsupportedDType(dt)),
    }
}

fn list(node: &str, key: &str, l: &attr_value::ListValue) -> Result<AttrValue, GraphError> {
    let err = |m: String| attr_error(node, key, m);
    let kinds = [
        !l.s.is_empty(),
        !l.i.is_empty(),
        !l.f.is_empty(),
        !l.b.is_empty(),
        !l.r#type.is_empty(),
        !l.shape.is_empty(),
        !l.tensor.is_empty(),
        !l.func.is_empty(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(err("a list attribute holds values of several kinds".into()));
    }
    Ok(if !l.s.is_empty() {
        AttrValue::Strs(
            l.s.iter()
                .map(|s| text(s))
                .collect::<Result<_, _>>()
                .map_err(err)?,
        )
    } else if !l.f.is_empty() {
        AttrValue::Floats(l.f.clone())
    } else if !l.b.is_empty() {
        AttrValue::Bools(l.b.clone())
    } else if !l.r#type.is_empty() {
        AttrValue::Types(
            l.r#type
                .iter()
                .map(|&t| dtype(t))
                .collect::<Result<_, _>>()
                .map_err(err)?,
        )
    } else if !l.shape.is_empty() {
        AttrValue::Shapes(l.shape.iter().map(shape).collect())
    } else if !l.tensor.is_empty() || !l.func.is_empty() {
        return Err(err("lists of tensors or functions are not supported".into()));
    } else {
        AttrValue::Ints(l.i.clone())
    })
}

fn attr(node: &str, key: &str, value: &TfAttr) -> Result<AttrValue, GraphError> {
    use attr_value::Value;
    let err = |m: String| attr_error(node, key, m);
    let Some(value) = &value.value else {
        return Err(err("attribute has no value".into()));
    };
    Ok(match value {
        Value::S(s) => AttrValue::Str(text(s).map_err(err)?),
        Value::I(i) => AttrValue::Int(*i),
        Value::F(f) => AttrValue::Float(*f),
        Value::B(b) => AttrValue::Bool(*b),
        Value::Type(t) => AttrValue::Type(dtype(*t).map_err(err)?),
        Value::Shape(s) => AttrValue::Shape(shape(s)),
        Value::Tensor(t) => AttrValue::from(tensor(t).map_err(|source| GraphError::Tensor {
            node: node.to_string(),
            source,
        })?),
        Value::List(l) => list(node, key, l)?,
        Value::Func(f) => AttrValue::Func(f.name.clone()),
        Value::Placeholder(p) => {
            return Err(err(format!(
                "function placeholders ('{p}') are not supported"
            )));
        }
    })
}

/// Output facts for an op the registry does not know: as many outputs as
/// the graph references (at least one), typed by `T`/`dtype` and shaped by
/// `_output_shapes` where the GraphDef records them.
fn unknown_op_outputs(node: &NewNode, referenced: usize) -> Vec<OutputFact> {
    let dtype = match node.attrs.get("T").or_else(|| node.attrs.get("dtype")) {
        Some(AttrValue::Type(t)) => Some(*t),
        _ => None,
    };
    let shapes = match node.attrs.get("_output_shapes") {
        Some(AttrValue::Shapes(s)) => s.clone(),
        _ => Vec::new(),
    };
    let count = referenced.max(shapes.len()).max(1);
    (0..count)
        .map(|i| OutputFact {
            dtype,
            shape: shapes.get(i).cloned().flatten(),
        })
        .collect()
}

/// Builds a graph from a decoded GraphDef, validates it and infers facts.
pub fn graph_from_def(def: protos::GraphDef, registry: &OpRegistry) -> Result<Graph, ParseError> {
    // Highest output slot referenced per producer name, for unknown ops.
    let mut referenced: HashMap<&str, usize> = HashMap::new();
    for node in &def.node {
        for input in &node.input {
            if let InputRef::Data(name, slot) = parse_input_ref(&node.name, input)? {
                let n = referenced.entry(name).or_default();
                *n = (*n).max(slot + 1);
            }
        }
    }
    let mut graph = Graph::new();
    let mut pending = Vec::with_capacity(def.node.len());
    for node in &def.node {
        let mut new = NewNode::new(node.name.clone(), node.op.clone());
        for (key, value) in &node.attr {
            new.attrs
                .insert(key.clone().into(), attr(&node.name, key, value)?);
        }
        new.outputs = match registry.get(&node.op) {
            Some(spec) => vec![OutputFact::default(); spec.outputs],
            None => unknown_op_outputs(
                &new,
                referenced.get(node.name.as_str()).copied().unwrap_or(0),
            ),
        };
        pending.push((graph.add_node(new)?, &node.input));
    }
    for (id, refs) in pending {
        connect_inputs(&mut graph, id, refs)?;
    }
    graph.validate(registry)?;
    graph.infer_facts(registry)?;
    Ok(graph)
}
