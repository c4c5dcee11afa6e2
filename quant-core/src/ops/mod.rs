//! The op vocabulary: one [`OpSpec`] per op type, held in an [`OpRegistry`].
//!
//! Op types use TensorFlow's names and layouts (NHWC activations, HWIO
//! filters, HW·C·multiplier depthwise filters), so TensorFlow graphs map one
//! to one. Each spec declares the op's input arity, output count and typed
//! attributes (with defaults), and infers output dtypes and shapes. Ops not in
//! the registry are kept as they are and reported as unknown.

mod array;
mod grad;
mod infer;
mod math;
mod nn;
mod optim;
mod quant;

pub use infer::InferCtx;

use crate::attr::{AttrKind, AttrValue};
use crate::error::GraphError;
use crate::graph::hash::NameMap;
use crate::graph::{Graph, Node, NodeId, OutputFact};
use std::sync::{Arc, LazyLock};

/// How many data inputs an op takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exact(usize),
    /// Between `min` and `max`, inclusive.
    Range(usize, usize),
    /// The value of an integer attribute (e.g. `N` of `ConcatV2`) plus `extra`.
    AttrPlus(&'static str, usize),
}

impl Arity {
    fn describe(&self) -> String {
        match self {
            Arity::Exact(n) => n.to_string(),
            Arity::Range(a, b) => format!("{a} to {b}"),
            Arity::AttrPlus(attr, extra) => format!("{attr} + {extra}"),
        }
    }
}

/// One declared attribute of an op.
#[derive(Clone, Debug)]
pub struct AttrSpec {
    /// Attribute name.
    pub name: &'static str,
    /// Its type.
    pub kind: AttrKind,
    /// The value assumed when the attribute is absent; `None` makes it required.
    pub default: Option<AttrValue>,
}

/// Output fact inference for one op.
pub type InferFn = Arc<dyn Fn(&InferCtx<'_>) -> Result<Vec<OutputFact>, String> + Send + Sync>;

/// The declaration of one op type.
#[derive(Clone)]
pub struct OpSpec {
    /// Op type name.
    pub name: String,
    /// Data input arity.
    pub inputs: Arity,
    /// Number of outputs.
    pub outputs: usize,
    /// Declared attributes. Undeclared attributes are allowed and kept.
    pub attrs: Vec<AttrSpec>,
    /// Output fact inference.
    pub infer: InferFn,
}

impl std::fmt::Debug for OpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpSpec")
            .field("name", &self.name)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("attrs", &self.attrs)
            .finish_non_exhaustive()
    }
}

impl OpSpec {
    /// A spec with no attributes.
    pub fn new(
        name: &str,
        inputs: Arity,
        outputs: usize,
        infer: impl Fn(&InferCtx<'_>) -> Result<Vec<OutputFact>, String> + Send + Sync + 'static,
    ) -> OpSpec {
        OpSpec {
            name: name.to_string(),
            inputs,
            outputs,
            attrs: Vec::new(),
            infer: Arc::new(infer),
        }
    }

    /// Declares an attribute that must be present.
    pub fn required(mut self, name: &'static str, kind: AttrKind) -> OpSpec {
        self.attrs.push(AttrSpec {
            name,
            kind,
            default: None,
        });
        self
    }

    /// Declares an attribute with a default value.
    pub fn optional(mut self, name: &'static str, default: impl Into<AttrValue>) -> OpSpec {
        let default = default.into();
        self.attrs.push(AttrSpec {
            name,
            kind: default.kind(),
            default: Some(default),
        });
        self
    }

    /// The declared attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&AttrSpec> {
        self.attrs.iter().find(|a| a.name == name)
    }
}

/// A set of op specs keyed by op type.
///
/// Hashed by name: every node a builder adds looks its op up once.
#[derive(Clone, Debug, Default)]
pub struct OpRegistry {
    ops: NameMap<OpSpec>,
}

static BUILTIN: LazyLock<OpRegistry> = LazyLock::new(|| {
    let mut r = OpRegistry::default();
    for spec in array::specs()
        .into_iter()
        .chain(math::specs())
        .chain(nn::specs())
        .chain(quant::specs())
        .chain(grad::specs())
        .chain(optim::specs())
    {
        r.ops.insert(spec.name.clone(), spec);
    }
    r
});

impl OpRegistry {
    /// The registry of quant's built-in ops.
    pub fn builtin() -> &'static OpRegistry {
        &BUILTIN
    }

    /// Adds an op type. Registering a name twice is an error.
    pub fn register(&mut self, spec: OpSpec) -> Result<(), String> {
        if self.ops.contains_key(&spec.name) {
            return Err(format!("op type '{}' is already registered", spec.name));
        }
        self.ops.insert(spec.name.clone(), spec);
        Ok(())
    }

    /// The spec of `op`, if known.
    pub fn get(&self, op: &str) -> Option<&OpSpec> {
        self.ops.get(op)
    }

    /// Whether `op` is known.
    pub fn contains(&self, op: &str) -> bool {
        self.ops.contains_key(op)
    }

    /// The known op types, sorted.
    pub fn op_types(&self) -> impl Iterator<Item = &str> {
        let mut types: Vec<&str> = self.ops.keys().map(String::as_str).collect();
        types.sort_unstable();
        types.into_iter()
    }

    /// Checks a known op's input count, output count and attribute types.
    /// Unknown ops pass unchecked.
    pub fn check_node(&self, graph: &Graph, id: NodeId) -> Result<(), GraphError> {
        let node = graph.node(id);
        let Some(spec) = self.get(node.op()) else {
            return Ok(());
        };
        check_inputs_and_attrs(node, spec)?;
        check_output_count(node, spec)
    }

    /// Infers the output facts of a known op from its inputs' facts.
    /// Unknown ops keep their declared facts.
    pub fn infer_node(&self, graph: &Graph, id: NodeId) -> Result<Vec<OutputFact>, GraphError> {
        let node = graph.node(id);
        let Some(spec) = self.get(node.op()) else {
            return Ok(node.outputs().to_vec());
        };
        infer_with(graph, node, spec)
    }
}

/// The attribute and input-arity checks of [`OpRegistry::check_node`], for a
/// node that need not be in `graph` yet (its inputs are).
pub(crate) fn check_inputs_and_attrs(node: &Node, spec: &OpSpec) -> Result<(), GraphError> {
    for attr in &spec.attrs {
        match node.attr(attr.name) {
            Some(value) if !value.fits(attr.kind) => {
                return Err(GraphError::Attr {
                    node: node.name().to_string(),
                    attr: attr.name.to_string(),
                    message: format!(
                        "expected {}, found {}",
                        attr.kind.name(),
                        value.kind().name()
                    ),
                });
            }
            None if attr.default.is_none() => {
                return Err(GraphError::Attr {
                    node: node.name().to_string(),
                    attr: attr.name.to_string(),
                    message: format!("required {} attribute is missing", attr.kind.name()),
                });
            }
            _ => {}
        }
    }
    let found = node.inputs().len();
    let ok = match spec.inputs {
        Arity::Exact(n) => found == n,
        Arity::Range(a, b) => (a..=b).contains(&found),
        Arity::AttrPlus(attr, extra) => {
            let n = node.attr_int(attr)?;
            usize::try_from(n).is_ok_and(|n| n + extra == found)
        }
    };
    if !ok {
        return Err(GraphError::Arity {
            node: node.name().to_string(),
            op: node.op().to_string(),
            expected: spec.inputs.describe(),
            found,
        });
    }
    Ok(())
}

fn check_output_count(node: &Node, spec: &OpSpec) -> Result<(), GraphError> {
    if node.outputs().len() != spec.outputs {
        return Err(GraphError::Inference {
            node: node.name().to_string(),
            op: node.op().to_string(),
            message: format!(
                "the op has {} outputs, the node declares {}",
                spec.outputs,
                node.outputs().len()
            ),
        });
    }
    Ok(())
}

/// Output fact inference with `spec` for `node`, whose inputs are in
/// `graph` (the node itself need not be).
pub(crate) fn infer_with(
    graph: &Graph,
    node: &Node,
    spec: &OpSpec,
) -> Result<Vec<OutputFact>, GraphError> {
    let ctx = InferCtx::new(graph, node, spec);
    let facts = (spec.infer)(&ctx).map_err(|message| GraphError::Inference {
        node: node.name().to_string(),
        op: node.op().to_string(),
        message,
    })?;
    debug_assert_eq!(
        facts.len(),
        spec.outputs,
        "inference of {} returned the wrong output count",
        spec.name
    );
    Ok(facts)
}

impl Graph {
    /// Checks the graph: every known op's arity and attributes, and the
    /// absence of cycles. Errors name the node at fault.
    pub fn validate(&self, registry: &OpRegistry) -> Result<(), GraphError> {
        for id in self.node_ids() {
            registry.check_node(self, id)?;
        }
        self.topological_order().map(|_| ())
    }

    /// Recomputes the output facts of every known op in topological order,
    /// reporting inconsistent shapes or dtypes with the node at fault.
    pub fn infer_facts(&mut self, registry: &OpRegistry) -> Result<(), GraphError> {
        for id in self.topological_order()? {
            let facts = registry.infer_node(self, id)?;
            self.set_outputs(id, facts)?;
        }
        Ok(())
    }

    /// Ids of nodes whose op type the registry does not know, in creation order.
    pub fn unknown_ops(&self, registry: &OpRegistry) -> Vec<NodeId> {
        self.nodes()
            .filter(|(_, n)| !registry.contains(n.op()))
            .map(|(id, _)| id)
            .collect()
    }
}
