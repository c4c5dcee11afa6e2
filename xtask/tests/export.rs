//! `cargo xtask export` (docs/cli.md): eval graph → fully-integer TFLite.

mod common;

use common::{assert_error, assert_user_error, root, stderr, xtask};

use serde_json::{Value, json};
use std::path::Path;

/// The built-in MNIST CNN through the eval rewrite with `extra` options.
fn eval_graph(dir: &Path, extra: &[&str]) -> String {
    let path = dir.join("eval.json");
    let path = path.to_str().unwrap().to_string();
    let mut args = vec!["rewrite", "--mode", "eval", "--output", &path];
    args.extend_from_slice(extra);
    let o = xtask(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    path
}

#[test]
fn an_int8_eval_graph_exports_a_fully_integer_model() {
    let dir = tempfile::tempdir().unwrap();
    let graph = eval_graph(dir.path(), &["--target", "tflite-int8"]);
    let model = dir.path().join("model.tflite");
    let model = model.to_str().unwrap();
    let o = xtask(&[
        "export",
        "--graph",
        &graph,
        "--output",
        model,
        "--input-range",
        "0,1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        summary["ops"],
        json!([
            "QUANTIZE",
            "CONV_2D",
            "MAX_POOL_2D",
            "CONV_2D",
            "MAX_POOL_2D",
            "RESHAPE",
            "FULLY_CONNECTED",
            "DEQUANTIZE"
        ])
    );
    assert_eq!(
        summary["bytes"].as_u64().unwrap(),
        std::fs::metadata(model).unwrap().len()
    );
    let o = xtask(&["inspect", model, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let inspection: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(inspection["fully_integer"], true);
    let filter = inspection["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["shape"] == json!([32, 5, 5, 16]))
        .expect("conv2's OHWI filter");
    assert_eq!(filter["dtype"], "i8");
    assert_eq!(filter["scale"].as_array().unwrap().len(), 32);
    assert!(
        filter["zero_point"]
            .as_array()
            .unwrap()
            .iter()
            .all(|z| z == 0)
    );
}

#[test]
fn export_refuses_what_it_cannot_lower_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let graph = eval_graph(dir.path(), &["--target", "tflite-int8"]);
    let model = dir.path().join("m.tflite");
    let model = model.to_str().unwrap();
    let base = ["export", "--graph", &graph, "--output", model];
    // The MNIST input has no fake quant after it: its range must be given.
    assert_user_error(&xtask(&base), "input");
    // Per-channel weights have no uint8 encoding.
    let mut args = base.to_vec();
    args.extend(["--input-range", "0,1", "--target", "tflite-uint8"]);
    assert_user_error(&xtask(&args), "conv1");
    let mut args = base.to_vec();
    args.extend(["--input-range", "0,1", "--target", "edgetpu"]);
    assert_user_error(&xtask(&args), "edgetpu");
    let mut args = base.to_vec();
    args.extend(["--input-range", "1,0"]);
    assert_user_error(&xtask(&args), "--input-range 1,0");
    assert!(!Path::new(model).exists(), "nothing is written on error");
}

#[test]
fn check_mode_lists_every_problem_of_a_float_graph() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.tflite");
    let o = xtask(&[
        "export",
        "--graph",
        root().join("fixtures/tf/cnn/graph.pb").to_str().unwrap(),
        "--output",
        model.to_str().unwrap(),
        "--check",
    ]);
    assert_error(&o, "problem(s) prevent lowering");
    // One context line per problem, before the error line.
    assert!(stderr(&o).lines().count() > 2, "{}", stderr(&o));
}

/// Writes a little-endian f32 `.npy` file.
fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn run_executes_an_exported_model_on_the_integer_executor() {
    let dir = tempfile::tempdir().unwrap();
    let graph = eval_graph(dir.path(), &["--target", "tflite-int8"]);
    let model = dir.path().join("model.tflite");
    let model = model.to_str().unwrap();
    let o = xtask(&[
        "export",
        "--graph",
        &graph,
        "--output",
        model,
        "--input-range",
        "0,1",
        "--output-node",
        "logits/BiasAdd",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let input = dir.path().join("x.npy");
    let pixels: Vec<f32> = (0..3 * 784).map(|i| (i % 7) as f32 / 6.0).collect();
    write_npy_f32(&input, &[3, 28, 28, 1], &pixels);
    let feed = format!("input={}", input.display());
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--graph",
            model,
            "--feed",
            &feed,
            "--output-dir",
            out.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        xtask(&args)
    };
    let o = run(&["--fetch", "logits/BiasAdd"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["outputs"][0]["shape"], json!([3, 10]));
    assert_eq!(report["outputs"][0]["dtype"], "f32");
    assert!(out.join("logits__BiasAdd.npy").exists());
    assert_user_error(
        &run(&["--fetch", "conv1/Relu6"]),
        "not an output of the model",
    );
    assert_user_error(
        &run(&["--fetch", "logits/BiasAdd", "--step", "3"]),
        "--step",
    );
}
