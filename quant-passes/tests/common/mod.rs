//! Helpers shared by the pass tests: snapshots, built-in models, dump lines.

use quant_core::Graph;
use quant_core::graph::dump;
use quant_core::models::{self, ModelOptions};
use std::path::Path;

/// Compares `actual` with `tests/snapshots/NAME.txt` (rewritten when
/// `UPDATE_SNAPSHOTS` is set), reporting the first differing line.
pub fn check_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "snapshot {name} differs at line {}:\n  expected: {:?}\n  actual:   {:?}",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

/// The built-in model `name` with default options.
pub fn model(name: &str) -> Graph {
    models::builtin(name, ModelOptions::default())
        .unwrap()
        .unwrap()
}

/// The `name = Op(inputs)` part of one dump line.
pub fn line(graph: &Graph, name: &str) -> String {
    let prefix = format!("{name} = ");
    let text = dump(graph);
    let l = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no node {name}"));
    l[..=l.find(')').unwrap()].to_string()
}
