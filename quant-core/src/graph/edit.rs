//! Graph editing: rerouting consumers, inserting nodes on a wire, removing
//! dead nodes, and generating unique names.

use super::hash::NameMap;
use super::{Graph, InletId, NewNode, NodeId, OutletId};
use crate::error::GraphError;

impl Graph {
    /// Makes consumers of `from` read `to` instead. With `only`, just the
    /// inputs of those nodes are switched; otherwise every consumer is.
    /// Returns the number of inputs switched.
    pub fn reroute(
        &mut self,
        from: OutletId,
        to: OutletId,
        only: Option<&[NodeId]>,
    ) -> Result<usize, GraphError> {
        let inlets: Vec<InletId> = self
            .consumers(from)
            .iter()
            .copied()
            .filter(|inlet| only.is_none_or(|set| set.contains(&inlet.node)))
            .collect();
        for &inlet in &inlets {
            self.set_input(inlet, to)?;
        }
        Ok(inlets.len())
    }

    /// Adds `new` (whose inputs must already include `producer` where it
    /// wants it) and switches the listed consumers of `producer` to read
    /// output 0 of the new node. Returns the new node and the number of
    /// inputs switched.
    pub fn insert_after(
        &mut self,
        producer: OutletId,
        consumers: &[NodeId],
        new: NewNode,
    ) -> Result<(NodeId, usize), GraphError> {
        let id = self.add_node(new)?;
        let targets: Vec<NodeId> = consumers.iter().copied().filter(|&c| c != id).collect();
        let switched = self.reroute(producer, OutletId::new(id, 0), Some(&targets))?;
        Ok((id, switched))
    }

    /// Removes every node from which none of `roots` can be reached through
    /// data or control inputs. Returns the number of nodes removed.
    pub fn retain_ancestors_of(&mut self, roots: &[NodeId]) -> usize {
        let mut keep = vec![false; self.nodes.len()];
        let mut stack: Vec<NodeId> = roots.to_vec();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut keep[id.index()], true) {
                continue;
            }
            let node = self.node(id);
            stack.extend(node.inputs().iter().map(|o| o.node));
            stack.extend(node.control_inputs().iter().copied());
        }
        self.remove_where(|id| !keep[id.index()])
    }

    /// Repeatedly removes nodes whose outputs feed nothing, except those for
    /// which `keep` holds (graph outputs, variables, update ops...). Returns
    /// the number of nodes removed.
    pub fn remove_dead(&mut self, keep: impl Fn(&Graph, NodeId) -> bool) -> usize {
        let mut controlled = vec![false; self.nodes.len()];
        for (_, node) in self.nodes() {
            for dep in node.control_inputs() {
                controlled[dep.index()] = true;
            }
        }
        let mut removed = 0;
        let mut candidates: Vec<NodeId> = self.node_ids().collect();
        while let Some(id) = candidates.pop() {
            if self.get(id).is_none()
                || controlled[id.index()]
                || self.has_consumers(id)
                || keep(self, id)
            {
                continue;
            }
            let producers: Vec<NodeId> = self.node(id).inputs().iter().map(|o| o.node).collect();
            if self.remove_node(id).is_ok() {
                removed += 1;
                candidates.extend(producers);
            }
        }
        removed
    }

    fn remove_where(&mut self, doomed: impl Fn(NodeId) -> bool) -> usize {
        let ids: Vec<NodeId> = self.node_ids().filter(|&id| doomed(id)).collect();
        // Drop the wires first so removal order does not matter.
        for &id in &ids {
            let node = self.node_mut(id);
            let inputs = std::mem::take(&mut node.inputs);
            node.control_inputs = Box::default();
            for (slot, input) in inputs.into_iter().enumerate() {
                self.consumers[input.node.index()][input.slot]
                    .retain(|c| *c != InletId { node: id, slot });
            }
        }
        for &id in &ids {
            let node = self.nodes[id.index()]
                .take()
                .unwrap_or_else(|| panic!("node id {} is not live", id.0));
            self.consumers[id.index()].clear();
            self.names.remove(&node.name, id);
            self.scopes.removed(&node.name);
            self.live -= 1;
        }
        ids.len()
    }

    /// `base` if no node has that name, else `base_1`, `base_2`, ... (the
    /// first free one), as TensorFlow names ops created twice under one name.
    pub fn unique_name(&mut self, base: &str) -> String {
        if self.id(base).is_none() {
            return base.to_string();
        }
        self.next_free_name(base)
    }

    /// [`Graph::unique_name`] for a name the caller already owns (no copy
    /// when it is free).
    pub(crate) fn unique_name_owned(&mut self, base: String) -> String {
        if self.id(&base).is_none() {
            return base;
        }
        self.next_free_name(&base)
    }

    fn next_free_name(&mut self, base: &str) -> String {
        let (name, counter) = first_free(&self.name_counters, base, |c| self.id(c).is_some());
        remember(&mut self.name_counters, base, counter);
        name
    }

    /// Whether `scope` is taken: a node is called `scope` or lives under
    /// `scope/`. Constant time.
    pub fn is_scope_taken(&self, scope: &str) -> bool {
        self.id(scope).is_some() || self.scopes.exists(scope)
    }

    /// The first free scope among `base`, `base_1`, `base_2`, ... (see
    /// [`Graph::is_scope_taken`]), as TensorFlow makes variable scopes
    /// unique. Suffixes are counted per base, so asking for the same base
    /// again and again costs constant time per call.
    pub fn unique_scope(&mut self, base: &str) -> String {
        if !self.is_scope_taken(base) {
            return base.to_string();
        }
        let (scope, counter) = first_free(&self.scope_counters, base, |c| self.is_scope_taken(c));
        remember(&mut self.scope_counters, base, counter);
        scope
    }
}

/// The first `base_k` that `taken` refuses, counting `k` on from the last
/// one handed out for `base`; returns it and its `k`.
fn first_free(
    counters: &NameMap<usize>,
    base: &str,
    taken: impl Fn(&str) -> bool,
) -> (String, usize) {
    let mut counter = counters.get(base).copied().unwrap_or(0);
    loop {
        counter += 1;
        let candidate = format!("{base}_{counter}");
        if !taken(&candidate) {
            return (candidate, counter);
        }
    }
}

/// Records `counter` as the last suffix handed out for `base`.
fn remember(counters: &mut NameMap<usize>, base: &str, counter: usize) {
    match counters.get_mut(base) {
        Some(known) => *known = counter,
        None => {
            counters.insert(base.to_string(), counter);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::DType;
    use crate::graph::{Graph, NewNode, OutletId, OutputFact};

    fn chain() -> (Graph, [crate::NodeId; 4]) {
        let mut g = Graph::new();
        let out = || vec![OutputFact::dtype(DType::F32)];
        let x = g
            .add_node(NewNode::new("x", "Placeholder").outputs(out()))
            .unwrap();
        let a = g
            .add_node(NewNode::new("a", "Relu").inputs([x.into()]).outputs(out()))
            .unwrap();
        let b = g
            .add_node(NewNode::new("b", "Relu").inputs([x.into()]).outputs(out()))
            .unwrap();
        let c = g
            .add_node(
                NewNode::new("c", "AddV2")
                    .inputs([a.into(), b.into()])
                    .outputs(out()),
            )
            .unwrap();
        (g, [x, a, b, c])
    }

    #[test]
    fn insert_after_switches_only_the_chosen_consumers() {
        let (mut g, [x, a, b, _]) = chain();
        let new = NewNode::new("q", "Identity")
            .inputs([x.into()])
            .outputs(vec![OutputFact::dtype(DType::F32)]);
        let (q, switched) = g.insert_after(x.into(), &[a], new).unwrap();
        assert_eq!(switched, 1);
        assert_eq!(g.node(a).inputs(), &[OutletId::new(q, 0)]);
        assert_eq!(g.node(b).inputs(), &[OutletId::new(x, 0)]);
        assert_eq!(g.consumers(x.into()).len(), 2, "x feeds b and q");
    }

    #[test]
    fn reroute_all_and_remove_dead() {
        let (mut g, [x, a, b, c]) = chain();
        assert_eq!(g.reroute(a.into(), b.into(), None).unwrap(), 1);
        assert_eq!(g.node(c).inputs(), &[b.into(), b.into()]);
        let removed = g.remove_dead(|g, id| g.node(id).name() == "c");
        assert_eq!(removed, 1, "only a is dead");
        assert!(g.by_name("a").is_none());
        assert_eq!(g.len(), 3);
        assert!(g.has_consumers(x));
    }

    #[test]
    fn retain_ancestors_keeps_what_the_roots_need() {
        let (mut g, [_, a, _, _]) = chain();
        assert_eq!(g.retain_ancestors_of(&[a]), 2);
        assert_eq!(
            g.nodes().map(|(_, n)| n.name()).collect::<Vec<_>>(),
            ["x", "a"]
        );
    }

    #[test]
    fn unique_names_follow_tensorflow_suffixes() {
        let (mut g, _) = chain();
        assert_eq!(g.unique_name("fresh"), "fresh");
        assert_eq!(g.unique_name("a"), "a_1");
        g.add_node(NewNode::new("a_1", "NoOp")).unwrap();
        g.add_node(NewNode::new("a_2", "NoOp")).unwrap();
        assert_eq!(g.unique_name("a"), "a_3");
    }

    #[test]
    fn scopes_are_taken_by_the_nodes_under_them() {
        let (mut g, _) = chain();
        g.add_node(NewNode::new("q/min", "NoOp")).unwrap();
        assert!(g.is_scope_taken("q") && g.is_scope_taken("q/min") && !g.is_scope_taken("q/m"));
        assert_eq!(g.unique_scope("fresh"), "fresh");
        assert_eq!(g.unique_scope("q"), "q_1");
        g.add_node(NewNode::new("q_1/min", "NoOp")).unwrap();
        assert_eq!(g.unique_scope("q"), "q_2");
        let id = g.id("q/min").unwrap();
        g.remove_node(id).unwrap();
        assert!(!g.is_scope_taken("q"));
    }

    #[test]
    fn nested_scopes_live_exactly_as_long_as_a_node_under_them() {
        let (mut g, _) = chain();
        let deep = g.add_node(NewNode::new("s/t/u/deep", "NoOp")).unwrap();
        let side = g.add_node(NewNode::new("s/t/side", "NoOp")).unwrap();
        let top = g.add_node(NewNode::new("s/top", "NoOp")).unwrap();
        for scope in ["s", "s/t", "s/t/u"] {
            assert!(g.is_scope_taken(scope), "{scope}");
        }
        g.remove_node(deep).unwrap();
        assert!(!g.is_scope_taken("s/t/u"));
        assert!(g.is_scope_taken("s/t") && g.is_scope_taken("s"));
        g.remove_node(side).unwrap();
        assert!(!g.is_scope_taken("s/t") && g.is_scope_taken("s"));
        g.add_node(NewNode::new("s/t/u/again", "NoOp")).unwrap();
        g.remove_node(top).unwrap();
        assert!(g.is_scope_taken("s") && g.is_scope_taken("s/t/u"));
        let again = g.id("s/t/u/again").unwrap();
        g.remove_node(again).unwrap();
        for scope in ["s", "s/t", "s/t/u"] {
            assert!(!g.is_scope_taken(scope), "{scope}");
        }
        assert_eq!(g.unique_scope("s"), "s");
    }

    #[test]
    fn node_names_are_checked_for_separators_and_whitespace() {
        use crate::graph::check_node_name;
        for ok in ["a", "conv1/Conv2D_Fold", "a^b", "\u{e9}/\u{fc}", "x\u{1}y"] {
            assert!(check_node_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "", "a:b", "^a", "a b", "a\tb", "a\u{b}b", "a\u{a0}b", "\u{e9}:x",
        ] {
            assert!(check_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn duplicate_and_invalid_names_are_refused() {
        let (mut g, _) = chain();
        let err = g.add_node(NewNode::new("a", "NoOp")).unwrap_err();
        assert_eq!(err.to_string(), "duplicate node name 'a'");
        assert!(g.add_node(NewNode::new("bad:name", "NoOp")).is_err());
    }
}
