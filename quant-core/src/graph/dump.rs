//! The stable textual form of a graph, used by the CLI, tests and errors.

use super::Graph;
use std::fmt::Write;

/// One line per node in creation order:
/// `name = Op(input, input:1, ^ctrl) {attr=value, ...} -> f32[?,28,28,8]`.
/// Tensor-valued attributes are summarised by dtype and shape.
pub fn dump(graph: &Graph) -> String {
    let mut out = String::new();
    for (_, node) in graph.nodes() {
        let _ = write!(out, "{} = {}(", node.name(), node.op());
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !std::mem::take(&mut first) {
                out.push_str(", ");
            }
        };
        for &input in node.inputs() {
            sep(&mut out);
            out.push_str(&graph.outlet_name(input));
        }
        for &dep in node.control_inputs() {
            sep(&mut out);
            let _ = write!(out, "^{}", graph.node(dep).name());
        }
        out.push(')');
        if !node.attrs().is_empty() {
            out.push_str(" {");
            for (i, (k, v)) in node.attrs().iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{k}={v}");
            }
            out.push('}');
        }
        out.push_str(" ->");
        for fact in node.outputs() {
            let _ = write!(out, " {fact}");
        }
        out.push('\n');
    }
    out
}

impl std::fmt::Display for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&dump(self))
    }
}
