//! Topological order.

use super::{Graph, NodeId};
use crate::error::GraphError;

impl Graph {
    /// The live nodes ordered so that every node comes after its data and
    /// control inputs. Among independent nodes, creation order is kept
    /// (a depth-first post-order from each node in creation order), so the
    /// result is deterministic. A cycle is reported with a node on it.
    pub fn topological_order(&self) -> Result<Vec<NodeId>, GraphError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark = vec![Mark::New; self.nodes.len()];
        let mut order = Vec::with_capacity(self.len());
        // Explicit stack of (node, next input to visit) so deep chains do not
        // overflow the call stack.
        let mut stack: Vec<(NodeId, usize)> = Vec::new();
        for root in self.node_ids() {
            if mark[root.index()] != Mark::New {
                continue;
            }
            mark[root.index()] = Mark::Open;
            stack.push((root, 0));
            while let Some((id, next)) = stack.last_mut() {
                let node = self.node(*id);
                let deps = node.inputs().len() + node.control_inputs().len();
                if *next == deps {
                    mark[id.index()] = Mark::Done;
                    order.push(*id);
                    stack.pop();
                    continue;
                }
                let dep = match node.inputs().get(*next) {
                    Some(outlet) => outlet.node,
                    None => node.control_inputs()[*next - node.inputs().len()],
                };
                *next += 1;
                match mark[dep.index()] {
                    Mark::Done => {}
                    Mark::Open => return Err(GraphError::Cycle(self.node(dep).name().to_string())),
                    Mark::New => {
                        mark[dep.index()] = Mark::Open;
                        stack.push((dep, 0));
                    }
                }
            }
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{Graph, NewNode, OutputFact};

    #[test]
    fn order_respects_inputs_and_finds_cycles() {
        let mut g = Graph::new();
        let out = || vec![OutputFact::default()];
        let b = g
            .add_node(NewNode::new("b", "Relu").outputs(out()))
            .unwrap();
        let a = g
            .add_node(NewNode::new("a", "Placeholder").outputs(out()))
            .unwrap();
        g.set_inputs(b, vec![a.into()]).unwrap();
        assert_eq!(g.topological_order().unwrap(), vec![a, b]);

        g.set_inputs(a, vec![b.into()]).unwrap();
        let err = g.topological_order().unwrap_err();
        assert!(err.to_string().contains("cycle through node"), "{err}");
    }
}
