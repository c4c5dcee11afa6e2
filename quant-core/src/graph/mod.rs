//! The dataflow graph: named nodes in an arena, wires between output slots
//! and input slots, and cached consumer lists.
//!
//! Nodes are kept in creation order (the order pattern matching and the
//! rewrite passes visit them in). Removed nodes leave a tombstone so that
//! [`NodeId`]s stay valid for the life of the graph.

mod chunked;
mod consumers;
mod dump;
mod edit;
pub(crate) mod hash;
mod name_index;
mod scopes;
mod topo;

pub use dump::dump;

use crate::attr::{AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::GraphError;
use crate::shape::Shape;
use chunked::Chunked;
use consumers::ConsumerSlots;
use hash::NameMap;
pub use hash::{NameHasher, NodeMap, NodeSet};
use name_index::NameIndex;
use scopes::Scopes;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

/// The index of a node in its graph's arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The arena index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A node output: the producing node and the output slot (`name:slot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutletId {
    /// The producer.
    pub node: NodeId,
    /// The output slot.
    pub slot: usize,
}

impl OutletId {
    /// Output `slot` of `node`.
    pub fn new(node: NodeId, slot: usize) -> OutletId {
        OutletId { node, slot }
    }
}

impl From<NodeId> for OutletId {
    fn from(node: NodeId) -> OutletId {
        OutletId { node, slot: 0 }
    }
}

/// A node input: the consuming node and the input position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InletId {
    /// The consumer.
    pub node: NodeId,
    /// The input position.
    pub slot: usize,
}

/// What is known about one node output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFact {
    /// The element type, if known.
    #[serde(default)]
    pub dtype: Option<DType>,
    /// The shape, if its rank is known.
    #[serde(default)]
    pub shape: Option<Shape>,
}

impl OutputFact {
    /// A fact with known dtype and shape.
    pub fn new(dtype: DType, shape: Shape) -> OutputFact {
        OutputFact {
            dtype: Some(dtype),
            shape: Some(shape),
        }
    }

    /// A fact with known dtype and unknown shape.
    pub fn dtype(dtype: DType) -> OutputFact {
        OutputFact {
            dtype: Some(dtype),
            shape: None,
        }
    }
}

impl fmt::Display for OutputFact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(d) => write!(f, "{d}")?,
            None => f.write_str("?")?,
        }
        match &self.shape {
            Some(s) => write!(f, "{s}"),
            None => f.write_str("[..]"),
        }
    }
}

/// One operation in the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    name: Box<str>,
    /// Interned by the graph: the nodes of one op type share one string, so
    /// comparing op types (the matcher's first test) reads memory that
    /// stays in cache even in graphs of a million nodes.
    op: Arc<str>,
    inputs: Vec<OutletId>,
    control_inputs: Box<[NodeId]>,
    attrs: Attrs,
    outputs: Box<[OutputFact]>,
}

impl Node {
    /// The unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The op type (TensorFlow's name, e.g. `Conv2D`).
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The data inputs, in order.
    pub fn inputs(&self) -> &[OutletId] {
        &self.inputs
    }

    /// The control dependencies.
    pub fn control_inputs(&self) -> &[NodeId] {
        &self.control_inputs
    }

    /// The attributes.
    pub fn attrs(&self) -> &Attrs {
        &self.attrs
    }

    /// The facts of each output slot; its length is the number of outputs.
    pub fn outputs(&self) -> &[OutputFact] {
        &self.outputs
    }

    /// Attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&AttrValue> {
        self.attrs.get(name)
    }

    fn attr_error(&self, attr: &str, message: String) -> GraphError {
        GraphError::Attr {
            node: self.name.to_string(),
            attr: attr.to_string(),
            message,
        }
    }

    fn typed_attr<'a, T>(
        &'a self,
        name: &str,
        kind: &str,
        get: impl Fn(&'a AttrValue) -> Option<T>,
    ) -> Result<T, GraphError> {
        let value = self
            .attrs
            .get(name)
            .ok_or_else(|| self.attr_error(name, "missing".into()))?;
        get(value).ok_or_else(|| {
            self.attr_error(
                name,
                format!("expected {kind}, found {}", value.kind().name()),
            )
        })
    }

    /// Integer attribute `name`, or an error naming the node and attribute.
    pub fn attr_int(&self, name: &str) -> Result<i64, GraphError> {
        self.typed_attr(name, "int", |v| match v {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        })
    }

    /// Float attribute `name`.
    pub fn attr_float(&self, name: &str) -> Result<f32, GraphError> {
        self.typed_attr(name, "float", |v| match v {
            AttrValue::Float(x) => Some(*x),
            _ => None,
        })
    }

    /// Boolean attribute `name`.
    pub fn attr_bool(&self, name: &str) -> Result<bool, GraphError> {
        self.typed_attr(name, "bool", |v| match v {
            AttrValue::Bool(b) => Some(*b),
            _ => None,
        })
    }

    /// String attribute `name`.
    pub fn attr_str(&self, name: &str) -> Result<&str, GraphError> {
        self.typed_attr(name, "str", |v| match v {
            AttrValue::Str(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// Integer-list attribute `name`.
    pub fn attr_ints(&self, name: &str) -> Result<&[i64], GraphError> {
        self.typed_attr(name, "ints", |v| match v {
            AttrValue::Ints(l) => Some(l.as_slice()),
            _ => None,
        })
    }

    /// Dtype attribute `name`.
    pub fn attr_type(&self, name: &str) -> Result<DType, GraphError> {
        self.typed_attr(name, "type", |v| match v {
            AttrValue::Type(t) => Some(*t),
            _ => None,
        })
    }

    /// Tensor attribute `name`.
    pub fn attr_tensor(&self, name: &str) -> Result<&crate::Tensor, GraphError> {
        self.typed_attr(name, "tensor", |v| match v {
            AttrValue::Tensor(t) => Some(&**t),
            _ => None,
        })
    }
}

/// A node to add to a graph.
#[derive(Clone, Debug, Default)]
pub struct NewNode {
    /// Unique name.
    pub name: String,
    /// Op type.
    pub op: String,
    /// Data inputs (must exist in the graph).
    pub inputs: Vec<OutletId>,
    /// Attributes.
    pub attrs: Attrs,
    /// One fact per output slot.
    pub outputs: Vec<OutputFact>,
}

impl NewNode {
    /// A node with the given name and op type, no inputs, attributes or outputs yet.
    pub fn new(name: impl Into<String>, op: impl Into<String>) -> NewNode {
        NewNode {
            name: name.into(),
            op: op.into(),
            ..NewNode::default()
        }
    }

    /// Sets the data inputs.
    pub fn inputs(mut self, inputs: impl IntoIterator<Item = OutletId>) -> NewNode {
        self.inputs = inputs.into_iter().collect();
        self
    }

    /// Adds an attribute.
    pub fn attr(mut self, name: &str, value: impl Into<AttrValue>) -> NewNode {
        self.attrs.insert(name.to_string().into(), value.into());
        self
    }

    /// Sets the output facts.
    pub fn outputs(mut self, outputs: Vec<OutputFact>) -> NewNode {
        self.outputs = outputs;
        self
    }
}

/// A dataflow graph of named nodes.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    nodes: Chunked<Option<Node>>,
    names: NameIndex,
    consumers: Chunked<ConsumerSlots>,
    live: usize,
    name_counters: NameMap<usize>,
    scopes: Scopes,
    scope_counters: NameMap<usize>,
    /// The op types of the nodes ever added (see [`Node`]'s `op`).
    op_types: HashSet<Arc<str>, BuildHasherDefault<NameHasher>>,
}

/// Checks that `name` can be written as an input reference (`name`, `name:k`, `^name`).
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("node names must not be empty".into());
    }
    // Most names are plain ASCII: check those byte by byte, and only
    // decode the others to look for Unicode whitespace. The fold has no
    // early exit, so the compiler can check many bytes at once.
    let plain = name
        .bytes()
        .fold(true, |ok, b| ok & b.is_ascii_graphic() & (b != b':'));
    if plain && !name.starts_with('^') {
        return Ok(());
    }
    if name.contains(':') || name.starts_with('^') || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "invalid node name '{name}': names cannot contain ':' or whitespace, or start with '^'"
        ));
    }
    Ok(())
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// The number of live nodes.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Ids of the live nodes in creation order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_some())
            .map(|(i, _)| NodeId(i as u32))
    }

    /// The live nodes in creation order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (NodeId(i as u32), n)))
    }

    /// The node `id`, or `None` if it was removed or never existed.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index()).and_then(Option::as_ref)
    }

    /// The node `id`.
    ///
    /// # Panics
    /// If `id` was not produced by this graph or the node was removed: ids are
    /// only ever obtained from the graph itself, so this is a logic error.
    pub fn node(&self, id: NodeId) -> &Node {
        match self.get(id) {
            Some(n) => n,
            None => panic!("node id {} is not live in this graph", id.0),
        }
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        match self.nodes.get_mut(id.index()).and_then(Option::as_mut) {
            Some(n) => n,
            None => panic!("node id {} is not live in this graph", id.0),
        }
    }

    /// The id of the node called `name`.
    pub fn id(&self, name: &str) -> Option<NodeId> {
        self.names.get(name, |id| self.node(id).name())
    }

    /// The id of the node called `name`, or [`GraphError::UnknownNode`].
    pub fn require(&self, name: &str) -> Result<NodeId, GraphError> {
        self.id(name)
            .ok_or_else(|| GraphError::UnknownNode(name.to_string()))
    }

    /// The node called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Node> {
        self.id(name).map(|id| self.node(id))
    }

    /// The facts of an output.
    pub fn fact(&self, outlet: OutletId) -> &OutputFact {
        &self.node(outlet.node).outputs[outlet.slot]
    }

    /// The inputs fed by an output, in the order they were connected.
    pub fn consumers(&self, outlet: OutletId) -> &[InletId] {
        self.consumers
            .get(outlet.node.index())
            .and_then(|slots| slots.get(outlet.slot))
            .map_or(&[], Vec::as_slice)
    }

    /// Every distinct node consuming any output of `id`, in first-connection order.
    pub fn consumer_nodes(&self, id: NodeId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        for slot in self.consumers[id.index()].iter() {
            for inlet in slot {
                if !out.contains(&inlet.node) {
                    out.push(inlet.node);
                }
            }
        }
        out
    }

    /// Whether any output of `id` feeds a data input.
    pub fn has_consumers(&self, id: NodeId) -> bool {
        self.consumers[id.index()].iter().any(|s| !s.is_empty())
    }

    /// The `name:slot` form of an output (`name` alone for slot 0).
    pub fn outlet_name(&self, outlet: OutletId) -> String {
        let name = self.node(outlet.node).name();
        if outlet.slot == 0 {
            name.to_string()
        } else {
            format!("{name}:{}", outlet.slot)
        }
    }

    /// Resolves `name`, `name:k` to an output of this graph.
    pub fn outlet(&self, reference: &str) -> Result<OutletId, GraphError> {
        let (name, slot) = match reference.rsplit_once(':') {
            Some((n, k)) => match k.parse::<usize>() {
                Ok(k) => (n, k),
                Err(_) => (reference, 0),
            },
            None => (reference, 0),
        };
        let node = self.require(name)?;
        let outputs = self.node(node).outputs.len();
        if slot >= outputs {
            return Err(GraphError::BadOutputSlot {
                node: reference.to_string(),
                index: 0,
                producer: name.to_string(),
                slot,
                outputs,
            });
        }
        Ok(OutletId::new(node, slot))
    }

    fn check_outlet(
        &self,
        consumer: &str,
        index: usize,
        outlet: OutletId,
    ) -> Result<(), GraphError> {
        let producer = self
            .get(outlet.node)
            .ok_or_else(|| GraphError::DanglingInput {
                node: consumer.to_string(),
                index,
                input: format!("#{}", outlet.node.0),
            })?;
        if outlet.slot >= producer.outputs.len() {
            return Err(GraphError::BadOutputSlot {
                node: consumer.to_string(),
                index,
                producer: producer.name.to_string(),
                slot: outlet.slot,
                outputs: producer.outputs.len(),
            });
        }
        Ok(())
    }

    /// Adds a node after every existing one. Its name must be unused and its
    /// inputs must refer to existing outputs.
    pub fn add_node(&mut self, new: NewNode) -> Result<NodeId, GraphError> {
        self.add_node_with(new, |_, node| {
            Ok(std::mem::take(&mut node.outputs).into_vec())
        })
    }

    /// [`Graph::add_node`], with the output facts computed by `facts` from
    /// the checked node before it joins the graph (its inputs are in the
    /// graph, it is not). On error nothing is added.
    pub(crate) fn add_node_with(
        &mut self,
        new: NewNode,
        facts: impl FnOnce(&Graph, &mut Node) -> Result<Vec<OutputFact>, GraphError>,
    ) -> Result<NodeId, GraphError> {
        check_node_name(&new.name).map_err(|message| GraphError::Attr {
            node: new.name.clone(),
            attr: "name".into(),
            message,
        })?;
        if self.id(&new.name).is_some() {
            return Err(GraphError::DuplicateName(new.name));
        }
        for (i, &input) in new.inputs.iter().enumerate() {
            self.check_outlet(&new.name, i, input)?;
        }
        let op = self.intern_op(&new.op);
        let mut node = Node {
            name: new.name.into_boxed_str(),
            op,
            inputs: new.inputs,
            control_inputs: Box::default(),
            attrs: new.attrs,
            outputs: new.outputs.into_boxed_slice(),
        };
        node.outputs = facts(self, &mut node)?.into_boxed_slice();
        let id = NodeId(self.nodes.len() as u32);
        for (slot, &input) in node.inputs.iter().enumerate() {
            self.consumers[input.node.index()][input.slot].push(InletId { node: id, slot });
        }
        self.names.insert(&node.name, id);
        self.scopes.added(&node.name);
        self.consumers.push(ConsumerSlots::new(node.outputs.len()));
        self.nodes.push(Some(node));
        self.live += 1;
        Ok(id)
    }

    /// Replaces the data inputs of `id`.
    pub fn set_inputs(&mut self, id: NodeId, inputs: Vec<OutletId>) -> Result<(), GraphError> {
        let name = &self.node(id).name;
        for (i, &input) in inputs.iter().enumerate() {
            self.check_outlet(name, i, input)?;
        }
        let old = std::mem::take(&mut self.node_mut(id).inputs);
        for (slot, input) in old.into_iter().enumerate() {
            self.consumers[input.node.index()][input.slot]
                .retain(|c| *c != InletId { node: id, slot });
        }
        for (slot, &input) in inputs.iter().enumerate() {
            self.consumers[input.node.index()][input.slot].push(InletId { node: id, slot });
        }
        self.node_mut(id).inputs = inputs;
        Ok(())
    }

    /// Connects input `inlet` to `outlet`.
    pub fn set_input(&mut self, inlet: InletId, outlet: OutletId) -> Result<(), GraphError> {
        let node = self.node(inlet.node);
        self.check_outlet(&node.name, inlet.slot, outlet)?;
        let old = *node
            .inputs
            .get(inlet.slot)
            .ok_or_else(|| GraphError::Arity {
                node: node.name.to_string(),
                op: node.op.to_string(),
                expected: format!("an input at position {}", inlet.slot),
                found: node.inputs.len(),
            })?;
        self.consumers[old.node.index()][old.slot].retain(|c| *c != inlet);
        self.consumers[outlet.node.index()][outlet.slot].push(inlet);
        self.node_mut(inlet.node).inputs[inlet.slot] = outlet;
        Ok(())
    }

    /// Replaces the control dependencies of `id`.
    pub fn set_control_inputs(&mut self, id: NodeId, deps: Vec<NodeId>) -> Result<(), GraphError> {
        if let Some(bad) = deps.iter().find(|d| self.get(**d).is_none()) {
            return Err(GraphError::DanglingInput {
                node: self.node(id).name.to_string(),
                index: 0,
                input: format!("^#{}", bad.0),
            });
        }
        self.node_mut(id).control_inputs = deps.into_boxed_slice();
        Ok(())
    }

    /// The attributes of `id`, mutably.
    pub fn attrs_mut(&mut self, id: NodeId) -> &mut Attrs {
        &mut self.node_mut(id).attrs
    }

    /// Sets attribute `name` of node `id`.
    pub fn set_attr(&mut self, id: NodeId, name: &str, value: impl Into<AttrValue>) {
        self.node_mut(id)
            .attrs
            .insert(name.to_string().into(), value.into());
    }

    /// Replaces the output facts of `id`. Removing output slots that still
    /// have consumers is an error.
    pub fn set_outputs(&mut self, id: NodeId, outputs: Vec<OutputFact>) -> Result<(), GraphError> {
        let used = self.consumers[id.index()]
            .iter()
            .skip(outputs.len())
            .position(|s| !s.is_empty());
        if let Some(used) = used {
            let node = self.node(id).name.to_string();
            let consumer = self.consumers[id.index()][outputs.len() + used][0].node;
            return Err(GraphError::BadOutputSlot {
                node: self.node(consumer).name.to_string(),
                index: 0,
                producer: node,
                slot: outputs.len() + used,
                outputs: outputs.len(),
            });
        }
        self.consumers[id.index()].resize(outputs.len());
        self.node_mut(id).outputs = outputs.into_boxed_slice();
        Ok(())
    }

    /// The graph's shared copy of the op type `op`.
    fn intern_op(&mut self, op: &str) -> Arc<str> {
        if let Some(known) = self.op_types.get(op) {
            return Arc::clone(known);
        }
        let new: Arc<str> = Arc::from(op);
        self.op_types.insert(Arc::clone(&new));
        new
    }

    /// Removes a node that has no consumers. Returns the removed node.
    pub fn remove_node(&mut self, id: NodeId) -> Result<Node, GraphError> {
        if let Some(consumer) = self.consumer_nodes(id).first() {
            return Err(GraphError::Inference {
                node: self.node(id).name.to_string(),
                op: self.node(id).op.to_string(),
                message: format!(
                    "cannot remove it while '{}' consumes it",
                    self.node(*consumer).name
                ),
            });
        }
        let node = self.nodes[id.index()]
            .take()
            .unwrap_or_else(|| panic!("node id {} is not live", id.0));
        for (slot, input) in node.inputs.iter().enumerate() {
            self.consumers[input.node.index()][input.slot]
                .retain(|c| *c != InletId { node: id, slot });
        }
        self.consumers[id.index()].clear();
        self.names.remove(&node.name, id);
        self.scopes.removed(&node.name);
        self.live -= 1;
        Ok(node)
    }
}

/// Structural equality: the same nodes in the same creation order, with the
/// same names, ops, inputs (by name), attributes and output facts.
impl PartialEq for Graph {
    fn eq(&self, other: &Graph) -> bool {
        if self.len() != other.len() {
            return false;
        }
        let outlet_eq = |a: &OutletId, b: &OutletId| {
            a.slot == b.slot && self.node(a.node).name == other.node(b.node).name
        };
        self.nodes().zip(other.nodes()).all(|((_, a), (_, b))| {
            a.name == b.name
                && a.op == b.op
                && a.attrs == b.attrs
                && a.outputs == b.outputs
                && a.inputs.len() == b.inputs.len()
                && a.inputs.iter().zip(&b.inputs).all(|(x, y)| outlet_eq(x, y))
                && a.control_inputs.len() == b.control_inputs.len()
                && a.control_inputs
                    .iter()
                    .zip(&b.control_inputs)
                    .all(|(x, y)| self.node(*x).name == other.node(*y).name)
        })
    }
}
