//! The executor.
//!
//! A [`Session`] owns a graph and its variable store. [`Session::run`]
//! executes only the nodes the fetches need, level by level in topological
//! order (the nodes of one level run in parallel on rayon's pool, and heavy
//! kernels split their own work on the same pool), and drops each
//! intermediate value as soon as its last consumer has run.
//!
//! Variables are read at the start of a run (a `Variable` node outputs the
//! stored value); `Assign`, `AssignAdd` and `AssignSub` output the updated
//! value and write it back to the store once their level has finished, in
//! node order, so results do not depend on thread timing. The quantization
//! step counter is an ordinary int64 variable (`fake_quantization_step`)
//! that the rewrite increments with an `AssignAdd` once per run;
//! [`Session::set_step`] sets it.

mod error;
mod ops;

pub use error::ExecError;
pub use ops::{Kernel, KernelCtx, KernelRegistry, Value};

use quant_core::serialize::checkpoint::{self, Checkpoint};
use quant_core::{AttrValue, Graph, NodeId, OpRegistry, OutletId, Tensor};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// The name of the quantization step variable (reference semantics §3.7).
pub const STEP_VARIABLE: &str = "fake_quantization_step";

/// Runs a graph; see the module docs.
pub struct Session {
    graph: Graph,
    kernels: KernelRegistry,
    variables: BTreeMap<String, Value>,
    plans: HashMap<(Vec<OutletId>, Vec<OutletId>), Arc<Plan>>,
}

/// One executed node: its id, its outputs, and the variable writes it asks for.
type Executed = (NodeId, Vec<Value>, Vec<(String, Value)>);

/// What one `run` with a given set of feeds and fetches executes.
struct Plan {
    /// Nodes to execute, grouped into levels whose nodes are independent.
    levels: Vec<Vec<NodeId>>,
    /// For each output used, how many inputs (plus fetches) read it.
    uses: HashMap<OutletId, usize>,
}

fn is_variable(op: &str) -> bool {
    matches!(op, "Variable" | "VariableV2")
}

impl Session {
    /// A session over `graph` with the built-in kernels. Variables start at
    /// their `initial_value` (quant's `Variable` op); TensorFlow
    /// `VariableV2` nodes start uninitialised and must be loaded.
    pub fn new(graph: Graph) -> Result<Session, ExecError> {
        Session::with_kernels(graph, KernelRegistry::builtin())
    }

    /// A session with a custom kernel table (built-ins plus plugin kernels).
    pub fn with_kernels(graph: Graph, kernels: KernelRegistry) -> Result<Session, ExecError> {
        graph.validate(OpRegistry::builtin())?;
        let mut variables = BTreeMap::new();
        for (_, node) in graph.nodes() {
            if node.op() == "Variable" {
                match node.attr("initial_value") {
                    Some(AttrValue::Tensor(t)) => {
                        variables.insert(node.name().to_string(), Arc::new(Tensor::clone(t)));
                    }
                    _ => {
                        return Err(ExecError::Variable {
                            name: node.name().into(),
                            message: "has no initial_value tensor".into(),
                        });
                    }
                }
            }
        }
        Ok(Session {
            graph,
            kernels,
            variables,
            plans: HashMap::new(),
        })
    }

    /// The graph this session runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The current value of every variable, by name.
    pub fn variables(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.variables.iter().map(|(k, v)| (k.as_str(), &**v))
    }

    /// The current value of variable `name`.
    pub fn variable(&self, name: &str) -> Option<&Tensor> {
        self.variables.get(name).map(|v| &**v)
    }

    /// Sets variable `name`; the node must be a variable and the value must
    /// keep its dtype and (known) shape.
    pub fn set_variable(&mut self, name: &str, value: Tensor) -> Result<(), ExecError> {
        let bad = |message: String| ExecError::Variable {
            name: name.to_string(),
            message,
        };
        let node = self
            .graph
            .by_name(name)
            .ok_or_else(|| bad("no such node".into()))?;
        if !is_variable(node.op()) {
            return Err(bad(format!("is a {} node, not a variable", node.op())));
        }
        let fact = &node.outputs()[0];
        if let Some(d) = fact.dtype.filter(|d| *d != value.dtype()) {
            return Err(bad(format!("expected {d}, got {}", value.dtype())));
        }
        if let Some(shape) = fact
            .shape
            .as_ref()
            .and_then(|s| s.as_known())
            .filter(|s| s.as_slice() != value.shape())
        {
            return Err(bad(format!(
                "expected shape {shape:?}, got {:?}",
                value.shape()
            )));
        }
        self.variables.insert(name.to_string(), Arc::new(value));
        Ok(())
    }

    /// The quantization step (the value of [`STEP_VARIABLE`]), if the graph has one.
    pub fn step(&self) -> Option<i64> {
        self.variable(STEP_VARIABLE)
            .and_then(|t| t.to_i64_vec().ok())
            .and_then(|v| v.first().copied())
    }

    /// Sets the quantization step, if the graph has a step variable.
    pub fn set_step(&mut self, step: i64) -> Result<(), ExecError> {
        if self.graph.by_name(STEP_VARIABLE).is_some() {
            self.set_variable(STEP_VARIABLE, Tensor::scalar(step))?;
        }
        Ok(())
    }

    /// Every variable's current value.
    pub fn checkpoint(&self) -> Checkpoint {
        self.variables
            .iter()
            .map(|(k, v)| (k.clone(), (**v).clone()))
            .collect()
    }

    /// Loads the variables present in `checkpoint`; entries naming no
    /// variable of this graph are ignored and returned.
    pub fn restore(&mut self, checkpoint: Checkpoint) -> Result<Vec<String>, ExecError> {
        let mut ignored = Vec::new();
        for (name, value) in checkpoint {
            match self.graph.by_name(&name) {
                Some(n) if is_variable(n.op()) => self.set_variable(&name, value)?,
                _ => ignored.push(name),
            }
        }
        Ok(ignored)
    }

    /// Writes every variable to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), ExecError> {
        Ok(checkpoint::write(path, &self.checkpoint())?)
    }

    /// Restores variables from a safetensors file; returns the names it did not use.
    pub fn load(&mut self, path: &Path) -> Result<Vec<String>, ExecError> {
        let ck = checkpoint::read(path)?;
        self.restore(ck)
    }

    fn resolve(&self, reference: &str, what: &str) -> Result<OutletId, ExecError> {
        self.graph
            .outlet(reference)
            .map_err(|e| ExecError::BadName(format!("{what} '{reference}': {e}")))
    }

    fn plan(&mut self, fed: &[OutletId], fetches: &[OutletId]) -> Result<Arc<Plan>, ExecError> {
        let key = (fed.to_vec(), fetches.to_vec());
        if let Some(plan) = self.plans.get(&key) {
            return Ok(plan.clone());
        }
        let fed_nodes: Vec<NodeId> = fed.iter().map(|o| o.node).collect();
        // Nodes the fetches need, not looking past fed nodes.
        let mut needed = vec![false; self.graph.node_ids().last().map_or(0, |id| id.index() + 1)];
        let mut stack: Vec<NodeId> = fetches.iter().map(|o| o.node).collect();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut needed[id.index()], true) || fed_nodes.contains(&id) {
                continue;
            }
            let node = self.graph.node(id);
            stack.extend(node.inputs().iter().map(|o| o.node));
            stack.extend(node.control_inputs());
        }
        let order = self.graph.topological_order()?;
        let mut level = vec![0usize; needed.len()];
        let mut levels: Vec<Vec<NodeId>> = Vec::new();
        let mut uses: HashMap<OutletId, usize> = HashMap::new();
        for id in order.into_iter().filter(|id| needed[id.index()]) {
            let node = self.graph.node(id);
            let l = if fed_nodes.contains(&id) {
                0
            } else {
                for &input in node.inputs() {
                    *uses.entry(input).or_default() += 1;
                }
                node.inputs()
                    .iter()
                    .map(|o| o.node)
                    .chain(node.control_inputs().iter().copied())
                    .map(|d| level[d.index()] + 1)
                    .max()
                    .unwrap_or(0)
            };
            level[id.index()] = l;
            if levels.len() <= l {
                levels.resize(l + 1, Vec::new());
            }
            levels[l].push(id);
        }
        for &f in fetches {
            *uses.entry(f).or_default() += 1;
        }
        let plan = Arc::new(Plan { levels, uses });
        self.plans.insert(key, plan.clone());
        Ok(plan)
    }

    /// Runs the graph: `feeds` bind node outputs (`name` or `name:k`) to
    /// values, `fetches` name the outputs to return, in order.
    pub fn run(
        &mut self,
        feeds: &[(&str, Tensor)],
        fetches: &[&str],
    ) -> Result<Vec<Tensor>, ExecError> {
        let mut fed: Vec<(OutletId, Value)> = Vec::with_capacity(feeds.len());
        for (name, value) in feeds {
            let outlet = self.resolve(name, "feed")?;
            self.check_feed(outlet, value)?;
            fed.push((outlet, Arc::new(value.clone())));
        }
        fed.sort_by_key(|(o, _)| *o);
        let fetch_ids: Vec<OutletId> = fetches
            .iter()
            .map(|f| self.resolve(f, "fetch"))
            .collect::<Result<_, _>>()?;
        let fed_ids: Vec<OutletId> = fed.iter().map(|(o, _)| *o).collect();
        let plan = self.plan(&fed_ids, &fetch_ids)?;

        let mut values: HashMap<OutletId, Value> = fed.into_iter().collect();
        let mut remaining = plan.uses.clone();
        for level in &plan.levels {
            let todo: Vec<NodeId> = level
                .iter()
                .copied()
                .filter(|id| !fed_ids.iter().any(|o| o.node == *id))
                .collect();
            let results: Vec<Result<Executed, ExecError>> = if todo.len() > 1 {
                todo.par_iter()
                    .map(|&id| self.execute(id, &values))
                    .collect()
            } else {
                todo.iter().map(|&id| self.execute(id, &values)).collect()
            };
            for result in results {
                let (id, outputs, writes) = result?;
                for (slot, value) in outputs.into_iter().enumerate() {
                    let outlet = OutletId::new(id, slot);
                    if remaining.get(&outlet).copied().unwrap_or(0) > 0 {
                        values.insert(outlet, value);
                    }
                }
                for (name, value) in writes {
                    self.variables.insert(name, value);
                }
                for &input in self.graph.node(id).inputs() {
                    if let Some(n) = remaining.get_mut(&input) {
                        *n -= 1;
                        if *n == 0 {
                            values.remove(&input);
                        }
                    }
                }
            }
        }
        fetch_ids
            .iter()
            .map(|o| {
                values.get(o).map(|v| (**v).clone()).ok_or_else(|| {
                    ExecError::BadName(format!(
                        "fetch '{}' produced no value",
                        self.graph.outlet_name(*o)
                    ))
                })
            })
            .collect()
    }

    fn check_feed(&self, outlet: OutletId, value: &Tensor) -> Result<(), ExecError> {
        let node = self.graph.node(outlet.node);
        let bad = |message: String| ExecError::BadFeed {
            node: self.graph.outlet_name(outlet),
            message,
        };
        let fact = &node.outputs()[outlet.slot];
        if let Some(d) = fact.dtype.filter(|d| *d != value.dtype()) {
            return Err(bad(format!("expected {d}, got {}", value.dtype())));
        }
        if let Some(shape) = &fact.shape {
            let fits = shape.rank() == value.shape().len()
                && shape
                    .dims()
                    .iter()
                    .zip(value.shape())
                    .all(|(d, &v)| d.is_none_or(|d| d == v));
            if !fits {
                return Err(bad(format!(
                    "expected shape {shape}, got {:?}",
                    value.shape()
                )));
            }
        }
        Ok(())
    }

    fn execute(
        &self,
        id: NodeId,
        values: &HashMap<OutletId, Value>,
    ) -> Result<Executed, ExecError> {
        let node = self.graph.node(id);
        if node.op() == "Placeholder" {
            return Err(ExecError::MissingFeed(node.name().to_string()));
        }
        if is_variable(node.op()) {
            let value =
                self.variables
                    .get(node.name())
                    .cloned()
                    .ok_or_else(|| ExecError::Variable {
                        name: node.name().to_string(),
                        message: "is not initialised (load a checkpoint)".into(),
                    })?;
            return Ok((id, vec![value], Vec::new()));
        }
        let kernel = self
            .kernels
            .get(node.op())
            .ok_or_else(|| ExecError::UnknownOp {
                node: node.name().into(),
                op: node.op().into(),
            })?;
        let inputs: Vec<Value> = node
            .inputs()
            .iter()
            .map(|o| {
                values.get(o).cloned().ok_or_else(|| {
                    ExecError::BadName(format!(
                        "node '{}': input '{}' has no value",
                        node.name(),
                        self.graph.outlet_name(*o)
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let ctx = KernelCtx::new(&self.graph, node, &inputs);
        let outputs = kernel(&ctx).map_err(|message| ExecError::Kernel {
            node: node.name().into(),
            op: node.op().into(),
            message,
        })?;
        if outputs.len() != node.outputs().len() {
            return Err(ExecError::Kernel {
                node: node.name().into(),
                op: node.op().into(),
                message: format!(
                    "kernel returned {} outputs, the node has {}",
                    outputs.len(),
                    node.outputs().len()
                ),
            });
        }
        Ok((id, outputs, ctx.into_writes()))
    }
}
