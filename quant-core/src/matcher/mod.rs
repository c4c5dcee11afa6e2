//! The graph pattern matcher.
//!
//! A [`Pattern`] is a small tree (a DAG, when sub-patterns are shared) of
//! op-type patterns and one-of alternatives, built with a
//! [`PatternBuilder`]. Matching follows TensorFlow's `graph_matcher`
//! semantics:
//!
//! - an op pattern names one or more op types separated by `|`, or `*` for
//!   any type;
//! - without an input list any inputs are accepted; with one, the node's
//!   data-input count must equal the list's length exactly (control inputs
//!   do not count), and each input's producer must match the corresponding
//!   sub-pattern, bound to the exact output (`node:slot`) that feeds the node;
//! - unordered inputs try every permutation of the sub-patterns in
//!   lexicographic order, first success wins;
//! - one-of tries its alternatives in order, first success wins;
//! - a match maps each bound pattern to a node and the tensor that node
//!   produced for its consumer (`None` for the root); lookups go by
//!   [`PatternId`] or by name, and when several patterns share a name the
//!   one bound last wins.
//!
//! Two deliberate departures from the original (decision 5 of the reference
//! semantics): bindings made by a failed permutation or alternative are
//! rolled back, and a one-of pattern is itself bound to whatever its winning
//! alternative matched, so it can be looked up like any other pattern.
//!
//! Matching one root costs a bounded amount of work for a given pattern, so
//! matching every node of a graph is linear in the graph's size.

use crate::graph::{Graph, NodeId, OutletId};

/// The most inputs an op pattern may list (as in the original).
pub const MAX_PATTERN_INPUTS: usize = 8;

/// The index of a sub-pattern within its [`Pattern`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PatternId(usize);

/// Which op types an op pattern accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpTypes {
    /// `*`: any op type.
    Any,
    /// One of these op types.
    OneOf(Vec<String>),
}

impl OpTypes {
    /// Parses `*` or `A|B|C`.
    pub fn parse(text: &str) -> OpTypes {
        if text == "*" {
            OpTypes::Any
        } else {
            OpTypes::OneOf(text.split('|').map(str::to_string).collect())
        }
    }

    /// Whether `op` is accepted.
    pub fn accepts(&self, op: &str) -> bool {
        match self {
            OpTypes::Any => true,
            OpTypes::OneOf(types) => types.iter().any(|t| t == op),
        }
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Op {
        types: OpTypes,
        inputs: Option<Vec<PatternId>>,
        ordered: bool,
    },
    OneOf(Vec<PatternId>),
}

#[derive(Clone, Debug)]
struct PatternNode {
    kind: Kind,
    name: Option<String>,
}

/// An error in a pattern's construction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// An op pattern lists more than [`MAX_PATTERN_INPUTS`] inputs.
    #[error("pattern {0} lists {1} inputs; at most {MAX_PATTERN_INPUTS} are allowed")]
    TooManyInputs(String, usize),
    /// An op pattern has an empty type alternative.
    #[error("pattern {0} has an empty op type in '{1}'")]
    EmptyType(String, String),
    /// A one-of pattern has no alternatives.
    #[error("one-of pattern {0} has no alternatives")]
    EmptyOneOf(String),
    /// A pattern id from another builder.
    #[error("pattern {0} refers to a sub-pattern that is not part of this pattern")]
    ForeignId(String),
}

/// Builds a [`Pattern`] bottom-up: create sub-patterns first, then the
/// patterns that take them as inputs.
#[derive(Debug, Default)]
pub struct PatternBuilder {
    nodes: Vec<PatternNode>,
}

/// An op pattern being configured; finish with [`OpPattern::id`].
pub struct OpPattern<'b> {
    builder: &'b mut PatternBuilder,
    id: PatternId,
}

impl OpPattern<'_> {
    fn kind(&mut self) -> &mut Kind {
        &mut self.builder.nodes[self.id.0].kind
    }

    /// Requires exactly these inputs, matched in order.
    pub fn inputs(mut self, inputs: impl IntoIterator<Item = PatternId>) -> Self {
        if let Kind::Op { inputs: slot, .. } = self.kind() {
            *slot = Some(inputs.into_iter().collect());
        }
        self
    }

    /// Matches the inputs in any order (every permutation is tried).
    pub fn unordered(mut self) -> Self {
        if let Kind::Op { ordered, .. } = self.kind() {
            *ordered = false;
        }
        self
    }

    /// Names the pattern so matches can be looked up by name.
    pub fn name(self, name: &str) -> Self {
        self.builder.nodes[self.id.0].name = Some(name.to_string());
        self
    }

    /// The id of the configured pattern.
    pub fn id(self) -> PatternId {
        self.id
    }
}

impl PatternBuilder {
    /// An empty builder.
    pub fn new() -> PatternBuilder {
        PatternBuilder::default()
    }

    /// An op pattern accepting `types` (`*`, or `A|B|C`), with no input
    /// constraint until [`OpPattern::inputs`] is called.
    pub fn op(&mut self, types: &str) -> OpPattern<'_> {
        let id = PatternId(self.nodes.len());
        self.nodes.push(PatternNode {
            kind: Kind::Op {
                types: OpTypes::parse(types),
                inputs: None,
                ordered: true,
            },
            name: None,
        });
        OpPattern { builder: self, id }
    }

    /// A pattern matching any op (`*` with no input constraint).
    pub fn any(&mut self) -> PatternId {
        self.op("*").id()
    }

    /// A pattern matching the first of `alternatives` that matches.
    pub fn one_of(&mut self, alternatives: impl IntoIterator<Item = PatternId>) -> PatternId {
        let id = PatternId(self.nodes.len());
        self.nodes.push(PatternNode {
            kind: Kind::OneOf(alternatives.into_iter().collect()),
            name: None,
        });
        id
    }

    /// Names a pattern (also usable on one-of patterns).
    pub fn set_name(&mut self, id: PatternId, name: &str) {
        self.nodes[id.0].name = Some(name.to_string());
    }

    /// Finishes the pattern with `root` as the pattern tried on each node.
    pub fn build(self, root: PatternId) -> Result<Pattern, PatternError> {
        let label = |i: usize, nodes: &[PatternNode]| {
            nodes[i].name.clone().unwrap_or_else(|| format!("#{i}"))
        };
        if root.0 >= self.nodes.len() {
            return Err(PatternError::ForeignId(format!("#{}", root.0)));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let children: &[PatternId] = match &node.kind {
                Kind::Op { types, inputs, .. } => {
                    if let OpTypes::OneOf(ts) = types
                        && ts.iter().any(String::is_empty)
                    {
                        return Err(PatternError::EmptyType(label(i, &self.nodes), ts.join("|")));
                    }
                    let inputs = inputs.as_deref().unwrap_or(&[]);
                    if inputs.len() > MAX_PATTERN_INPUTS {
                        return Err(PatternError::TooManyInputs(
                            label(i, &self.nodes),
                            inputs.len(),
                        ));
                    }
                    inputs
                }
                Kind::OneOf(alts) if alts.is_empty() => {
                    return Err(PatternError::EmptyOneOf(label(i, &self.nodes)));
                }
                Kind::OneOf(alts) => alts,
            };
            // Children are created before their parents, which also rules out cycles.
            if children.iter().any(|c| c.0 >= i) {
                return Err(PatternError::ForeignId(label(i, &self.nodes)));
            }
        }
        Ok(Pattern {
            nodes: self.nodes,
            root,
        })
    }
}

/// A finished pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    nodes: Vec<PatternNode>,
    root: PatternId,
}

/// What one pattern was bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The matched node.
    pub node: NodeId,
    /// The output of that node its consumer read (`None` for the root).
    pub tensor: Option<OutletId>,
    order: u32,
}

/// The bindings of one successful match.
#[derive(Clone, Debug)]
pub struct Match<'p> {
    pattern: &'p Pattern,
    bindings: Vec<Option<Binding>>,
}

impl Match<'_> {
    /// The node the root pattern matched.
    pub fn root(&self) -> NodeId {
        self.node(self.pattern.root)
            .unwrap_or_else(|| unreachable!("a match always binds its root"))
    }

    /// The binding of pattern `id`, if it took part in the match.
    pub fn get(&self, id: PatternId) -> Option<Binding> {
        self.bindings.get(id.0).copied().flatten()
    }

    /// The node bound to pattern `id`.
    pub fn node(&self, id: PatternId) -> Option<NodeId> {
        self.get(id).map(|b| b.node)
    }

    /// The tensor bound to pattern `id` (never set for the root).
    pub fn tensor(&self, id: PatternId) -> Option<OutletId> {
        self.get(id).and_then(|b| b.tensor)
    }

    /// The binding of the pattern called `name`; if several are, the one bound last.
    pub fn get_named(&self, name: &str) -> Option<Binding> {
        self.pattern
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.name.as_deref() == Some(name))
            .filter_map(|(i, _)| self.bindings[i])
            .max_by_key(|b| b.order)
    }

    /// The node bound to the pattern called `name`.
    pub fn node_named(&self, name: &str) -> Option<NodeId> {
        self.get_named(name).map(|b| b.node)
    }

    /// The tensor bound to the pattern called `name`.
    pub fn tensor_named(&self, name: &str) -> Option<OutletId> {
        self.get_named(name).and_then(|b| b.tensor)
    }
}

/// Mutable matching state with an undo trail, reused across roots.
struct State {
    bindings: Vec<Option<Binding>>,
    trail: Vec<(PatternId, Option<Binding>)>,
    order: u32,
}

impl State {
    fn bind(&mut self, id: PatternId, node: NodeId, tensor: Option<OutletId>) {
        self.order += 1;
        let old = self.bindings[id.0].replace(Binding {
            node,
            tensor,
            order: self.order,
        });
        self.trail.push((id, old));
    }

    fn rollback(&mut self, mark: usize) {
        while self.trail.len() > mark {
            if let Some((id, old)) = self.trail.pop() {
                self.bindings[id.0] = old;
            }
        }
    }
}

/// Advances `perm` to the next permutation in lexicographic order; false after the last.
fn next_permutation(perm: &mut [usize]) -> bool {
    let Some(i) = (1..perm.len()).rev().find(|&i| perm[i - 1] < perm[i]) else {
        return false;
    };
    let j = (i..perm.len())
        .rev()
        .find(|&j| perm[j] > perm[i - 1])
        .unwrap_or(i);
    perm.swap(i - 1, j);
    perm[i..].reverse();
    true
}

impl Pattern {
    /// The root pattern.
    pub fn root(&self) -> PatternId {
        self.root
    }

    /// The pattern called `name` (the first with that name).
    pub fn find(&self, name: &str) -> Option<PatternId> {
        self.nodes
            .iter()
            .position(|n| n.name.as_deref() == Some(name))
            .map(PatternId)
    }

    fn state(&self) -> State {
        State {
            bindings: vec![None; self.nodes.len()],
            // Room for one binding per pattern: most matches need no more.
            trail: Vec::with_capacity(self.nodes.len()),
            order: 0,
        }
    }

    /// Matches the root pattern against `node`.
    pub fn match_node(&self, graph: &Graph, node: NodeId) -> Option<Match<'_>> {
        let mut state = self.state();
        let matched = self.matches(self.root, graph, node, None, &mut state);
        matched.then_some(Match {
            pattern: self,
            bindings: state.bindings,
        })
    }

    fn try_root(&self, graph: &Graph, node: NodeId, state: &mut State) -> Option<Match<'_>> {
        state.rollback(0);
        state.order = 0;
        if self.matches(self.root, graph, node, None, state) {
            Some(Match {
                pattern: self,
                bindings: state.bindings.clone(),
            })
        } else {
            None
        }
    }

    /// Tries the root pattern on every node in creation order, yielding each match.
    pub fn match_graph<'a>(&'a self, graph: &'a Graph) -> impl Iterator<Item = Match<'a>> + 'a {
        let mut state = self.state();
        graph
            .node_ids()
            .filter_map(move |id| self.try_root(graph, id, &mut state))
    }

    fn matches(
        &self,
        id: PatternId,
        graph: &Graph,
        node: NodeId,
        tensor: Option<OutletId>,
        state: &mut State,
    ) -> bool {
        match &self.nodes[id.0].kind {
            Kind::OneOf(alternatives) => {
                for &alt in alternatives {
                    let mark = state.trail.len();
                    if self.matches(alt, graph, node, tensor, state) {
                        state.bind(id, node, tensor);
                        return true;
                    }
                    state.rollback(mark);
                }
                false
            }
            Kind::Op {
                types,
                inputs,
                ordered,
            } => {
                let n = graph.node(node);
                if !types.accepts(n.op()) {
                    return false;
                }
                let mark = state.trail.len();
                state.bind(id, node, tensor);
                let Some(subs) = inputs else { return true };
                if n.inputs().len() != subs.len() {
                    state.rollback(mark);
                    return false;
                }
                // Patterns list at most MAX_PATTERN_INPUTS inputs (checked
                // by `build`), so the permutation lives on the stack.
                let mut storage = [0usize; MAX_PATTERN_INPUTS];
                let perm = &mut storage[..subs.len()];
                for (i, p) in perm.iter_mut().enumerate() {
                    *p = i;
                }
                loop {
                    let inner = state.trail.len();
                    let all = perm.iter().zip(n.inputs()).all(|(&p, &input)| {
                        self.matches(subs[p], graph, input.node, Some(input), state)
                    });
                    if all {
                        return true;
                    }
                    state.rollback(inner);
                    if *ordered || !next_permutation(perm) {
                        break;
                    }
                }
                state.rollback(mark);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_permutation;

    #[test]
    fn permutations_are_lexicographic() {
        let mut p = vec![0, 1, 2];
        let mut seen = vec![p.clone()];
        while next_permutation(&mut p) {
            seen.push(p.clone());
        }
        assert_eq!(
            seen,
            [
                [0, 1, 2],
                [0, 2, 1],
                [1, 0, 2],
                [1, 2, 0],
                [2, 0, 1],
                [2, 1, 0]
            ]
        );
    }
}
