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
        name.to_string()
    } else {
        format!("{scope}/{name}")
    }
}

/// The first free scope among `base`, `base_1`, `base_2`, ...: a scope is
/// taken if a node is named after it or lives under it.
pub(crate) fn unique_scope(graph: &mut Graph, base: &str) -> String {
    graph.unique_scope(base)
}
