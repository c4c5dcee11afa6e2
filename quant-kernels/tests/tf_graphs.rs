//! Frozen TensorFlow graphs (`fixtures/tf/*`) run through the executor
//! reproduce TensorFlow's own outputs: fake-quant graphs bit for bit, float
//! graphs within 1e-5 relative error.

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use quant_core::serialize::read_graph;
use quant_core::{OpRegistry, Tensor};
use quant_kernels::session::Session;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(serde::Deserialize)]
struct Meta {
    feeds: BTreeMap<String, String>,
    fetches: BTreeMap<String, String>,
}

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tf")
        .join(name)
}

/// Runs fixture `name` and returns (fetch, ours, TensorFlow's) per fetch.
fn run(name: &str) -> Vec<(String, ArrayD<f32>, ArrayD<f32>)> {
    let d = dir(name);
    let meta: Meta =
        serde_json::from_str(&std::fs::read_to_string(d.join("meta.json")).unwrap()).unwrap();
    let graph = read_graph(&d.join("graph.pb"), OpRegistry::builtin()).unwrap();
    let mut session = Session::new(graph).unwrap();
    let feeds: Vec<(&str, Tensor)> = meta
        .feeds
        .iter()
        .map(|(n, f)| {
            (
                n.as_str(),
                Tensor::from_array(read_npy::<_, ArrayD<f32>>(d.join(f)).unwrap()),
            )
        })
        .collect();
    let fetches: Vec<&str> = meta.fetches.keys().map(String::as_str).collect();
    let outputs = session
        .run(&feeds, &fetches)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    meta.fetches
        .iter()
        .zip(outputs)
        .map(|((fetch, file), got)| {
            (
                fetch.clone(),
                got.array::<f32>().unwrap().clone(),
                read_npy(d.join(file)).unwrap(),
            )
        })
        .collect()
}

fn max_rel_error(got: &ArrayD<f32>, want: &ArrayD<f32>) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let scale = want
        .iter()
        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
        .max(1e-6);
    got.iter().zip(want).fold(0f64, |m, (&a, &b)| {
        m.max((f64::from(a) - f64::from(b)).abs())
    }) / scale
}

#[test]
fn float_graphs_match_tensorflow_within_1e_5() {
    for name in [
        "conv_bn_relu6",
        "depthwise_bias_relu6",
        "matmul",
        "residual_block",
        "unfused_bn",
        "cnn",
        "resnet",
    ] {
        for (fetch, got, want) in run(name) {
            let err = max_rel_error(&got, &want);
            assert!(err <= 1e-5, "{name}/{fetch}: relative error {err:e}");
        }
    }
}

#[test]
fn fake_quant_graph_matches_tensorflow_bit_for_bit() {
    for (fetch, got, want) in run("fake_quant") {
        let mismatch = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(
            mismatch.is_none(),
            "fake_quant/{fetch}: first mismatch at {mismatch:?}"
        );
    }
}
