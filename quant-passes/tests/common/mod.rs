//! Helpers shared by the pass tests: snapshots, built-in models, dump
//! lines, running graphs and comparing their outputs.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use ndarray::ArrayD;
use quant_core::graph::dump;
use quant_core::models::Rng;
use quant_core::models::{self, ModelOptions};
use quant_core::{Graph, Tensor};
use quant_kernels::session::Session;
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

/// Runs `graph` once and returns the fetched f32 tensors.
pub fn run(graph: Graph, feeds: &[(&str, Tensor)], fetches: &[&str]) -> Vec<ArrayD<f32>> {
    let mut s = Session::new(graph).unwrap();
    arrays(s.run(feeds, fetches).unwrap())
}

/// The f32 arrays of `out`.
pub fn arrays(out: Vec<Tensor>) -> Vec<ArrayD<f32>> {
    out.into_iter()
        .map(|t| t.array::<f32>().unwrap().clone())
        .collect()
}

/// The largest absolute difference relative to the largest expected magnitude.
pub fn max_rel_error(got: &ArrayD<f32>, want: &ArrayD<f32>) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let scale = want
        .iter()
        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
        .max(1e-6);
    got.iter().zip(want).fold(0f64, |m, (&a, &b)| {
        m.max((f64::from(a) - f64::from(b)).abs())
    }) / scale
}

/// Gives every batch-norm variable (`.../BatchNorm/...`) non-trivial values:
/// γ ∈ [0.5, 1.5), β ∈ ±0.3·N, μ ∈ ±0.5·N, σ² ∈ [0.2, 2.2).
pub fn randomize_batch_norms(graph: &mut Graph, rng: &mut Rng) {
    let targets: Vec<_> = graph
        .nodes()
        .filter(|(_, n)| n.op() == "Variable" && n.name().contains("/BatchNorm/"))
        .map(|(id, n)| (id, n.name().to_string(), n.outputs()[0].shape.clone()))
        .collect();
    assert!(!targets.is_empty());
    for (id, name, shape) in targets {
        let n = shape.and_then(|s| s.dim(0)).unwrap();
        let values: Vec<f32> = (0..n)
            .map(|_| match name.rsplit('/').next().unwrap() {
                "gamma" => 0.5 + rng.uniform(),
                "beta" => 0.3 * rng.normal(),
                "moving_mean" => 0.5 * rng.normal(),
                "moving_variance" => 0.2 + 2.0 * rng.uniform(),
                other => panic!("unexpected batch-norm variable {other}"),
            })
            .collect();
        graph.set_attr(id, "initial_value", Tensor::from_vec(&[n], values).unwrap());
    }
}
