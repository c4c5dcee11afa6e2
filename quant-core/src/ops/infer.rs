//! The context handed to shape inference, and shared inference helpers.

use super::OpSpec;
use crate::attr::AttrValue;
use crate::dtype::DType;
use crate::graph::{Graph, Node, OutputFact};
use crate::shape::{Dim, Shape};
use crate::tensor::Tensor;

/// What an op's inference function sees: its node, its spec and its inputs.
pub struct InferCtx<'a> {
    graph: &'a Graph,
    node: &'a Node,
    spec: &'a OpSpec,
}

impl<'a> InferCtx<'a> {
    pub(super) fn new(graph: &'a Graph, node: &'a Node, spec: &'a OpSpec) -> InferCtx<'a> {
        InferCtx { graph, node, spec }
    }

    /// The node being inferred.
    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// The fact of input `i`.
    pub fn input(&self, i: usize) -> Result<&'a OutputFact, String> {
        let outlet = self
            .node
            .inputs()
            .get(i)
            .ok_or_else(|| format!("missing input {i}"))?;
        Ok(self.graph.fact(*outlet))
    }

    /// The number of data inputs.
    pub fn num_inputs(&self) -> usize {
        self.node.inputs().len()
    }

    /// The shape of input `i`, if its rank is known.
    pub fn shape(&self, i: usize) -> Result<Option<&'a Shape>, String> {
        Ok(self.input(i)?.shape.as_ref())
    }

    /// The dtype of input `i`, if known.
    pub fn dtype(&self, i: usize) -> Result<Option<DType>, String> {
        Ok(self.input(i)?.dtype)
    }

    /// The value of input `i` when it is produced by a `Const` node.
    pub fn const_input(&self, i: usize) -> Option<&'a Tensor> {
        let outlet = self.node.inputs().get(i)?;
        let producer = self.graph.node(outlet.node);
        if producer.op() != "Const" {
            return None;
        }
        match producer.attr("value") {
            Some(AttrValue::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// The integer values of a `Const` input (axes, shapes, paddings).
    pub fn const_ints(&self, i: usize) -> Result<Option<Vec<i64>>, String> {
        match self.const_input(i) {
            Some(t) => t
                .to_i64_vec()
                .map(Some)
                .map_err(|e| format!("input {i}: {e}")),
            None => Ok(None),
        }
    }

    /// Attribute `name`, falling back to the spec's default.
    pub fn attr(&self, name: &str) -> Option<&'a AttrValue> {
        self.node
            .attr(name)
            .or_else(|| self.spec.attr(name).and_then(|a| a.default.as_ref()))
    }

    /// Integer attribute (or its default).
    pub fn int(&self, name: &str) -> Result<i64, String> {
        match self.attr(name) {
            Some(AttrValue::Int(v)) => Ok(*v),
            other => Err(attr_problem(name, "int", other)),
        }
    }

    /// Boolean attribute (or its default).
    pub fn bool(&self, name: &str) -> Result<bool, String> {
        match self.attr(name) {
            Some(AttrValue::Bool(v)) => Ok(*v),
            other => Err(attr_problem(name, "bool", other)),
        }
    }

    /// String attribute (or its default).
    pub fn str(&self, name: &str) -> Result<&'a str, String> {
        match self.attr(name) {
            Some(AttrValue::Str(v)) => Ok(v.as_str()),
            other => Err(attr_problem(name, "str", other)),
        }
    }

    /// Integer-list attribute (or its default).
    pub fn ints(&self, name: &str) -> Result<&'a [i64], String> {
        match self.attr(name) {
            Some(AttrValue::Ints(v)) => Ok(v.as_slice()),
            other => Err(attr_problem(name, "ints", other)),
        }
    }

    /// Dtype attribute, if present.
    pub fn type_attr(&self, name: &str) -> Option<DType> {
        match self.attr(name) {
            Some(AttrValue::Type(t)) => Some(*t),
            _ => None,
        }
    }

    /// The dtype of input 0, else of attribute `T`.
    pub fn dtype0(&self) -> Option<DType> {
        self.input(0)
            .ok()
            .and_then(|f| f.dtype)
            .or_else(|| self.type_attr("T"))
    }

    /// One output with input 0's fact (elementwise unary ops, Identity, ...).
    pub fn same_as_input0(&self) -> Result<Vec<OutputFact>, String> {
        Ok(vec![OutputFact {
            dtype: self.dtype0(),
            shape: self.shape(0)?.cloned(),
        }])
    }
}

fn attr_problem(name: &str, kind: &str, found: Option<&AttrValue>) -> String {
    match found {
        Some(v) => format!(
            "attribute '{name}' should be {kind}, found {}",
            v.kind().name()
        ),
        None => format!("attribute '{name}' is missing"),
    }
}

/// Numpy-style broadcast of two shapes; an error when known dims disagree.
pub fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let pick = |s: &Shape, i: usize| -> Dim {
        let offset = rank - s.rank();
        if i < offset { Some(1) } else { s.0[i - offset] }
    };
    let mut dims = Vec::with_capacity(rank);
    for i in 0..rank {
        let (x, y) = (pick(a, i), pick(b, i));
        dims.push(match (x, y) {
            (Some(1), d) | (d, Some(1)) => d,
            (Some(x), Some(y)) if x == y => Some(x),
            (Some(x), Some(y)) => {
                return Err(format!(
                    "shapes {a} and {b} cannot be broadcast (dimension {i}: {x} vs {y})"
                ));
            }
            _ => None,
        });
    }
    Ok(Shape(dims))
}

/// Output size of a windowed op along one spatial dimension.
pub fn window_out(
    input: Dim,
    kernel: Dim,
    stride: usize,
    dilation: usize,
    padding: &str,
    pad: (usize, usize),
) -> Result<Dim, String> {
    if stride == 0 || dilation == 0 {
        return Err("strides and dilations must be positive".into());
    }
    let Some(input) = input else { return Ok(None) };
    Ok(match padding {
        "SAME" => Some(input.div_ceil(stride)),
        "VALID" | "EXPLICIT" => {
            let Some(kernel) = kernel else {
                return Ok(None);
            };
            let overflow = || "window or padding is too large".to_string();
            let effective = (kernel.max(1) - 1)
                .checked_mul(dilation)
                .and_then(|e| e.checked_add(1))
                .ok_or_else(overflow)?;
            let padded = input
                .checked_add(pad.0)
                .and_then(|p| p.checked_add(pad.1))
                .ok_or_else(overflow)?;
            if padded < effective {
                return Err(format!(
                    "window of effective size {effective} does not fit an input of size {padded}"
                ));
            }
            Some((padded - effective) / stride + 1)
        }
        other => return Err(format!("unknown padding '{other}'")),
    })
}

/// Normalises a possibly negative axis against a rank.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}
