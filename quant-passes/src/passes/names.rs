//! Name helpers shared by the passes (TensorFlow's scope conventions).

use quant_core::Graph;

/// The scope of `name`: everything before the last `/` (`""` at top level).
pub(crate) fn ctx(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(scope, _)| scope)
}

/// The last component of `name`.
pub(crate) fn last(name: &str) -> &str {
    name.rsplit_once('/').map_or(name, |(_, last)| last)
}

/// `scope/name`, or `name` at top level.
pub(crate) fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        return name.to_string();
    }
    // Names are built by the thousand in large rewrites: one exact
    // allocation, where `format!` grows its buffer as it writes.
    let mut joined = String::with_capacity(scope.len() + 1 + name.len());
    joined.push_str(scope);
    joined.push('/');
    joined.push_str(name);
    joined
}

/// The first free scope among `base`, `base_1`, `base_2`, ...: a scope is
/// taken if a node is named after it or lives under it.
pub(crate) fn unique_scope(graph: &mut Graph, base: &str) -> String {
    graph.unique_scope(base)
}
