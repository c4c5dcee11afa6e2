//! `cargo xtask train` (docs/cli.md) on real MNIST, cut short with
//! `--max-steps` and `--test-limit` so that it runs in seconds.

mod common;

use common::{assert_user_error, stderr, xtask};

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn quick(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--out",
        out.to_str().unwrap(),
        "--max-steps",
        "40",
        "--test-limit",
        "1000",
        "--threads",
        "2",
        "--json",
    ];
    args.extend_from_slice(extra);
    xtask(&args)
}

#[test]
fn a_short_run_trains_writes_every_file_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let o = quick(dir.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["float_steps"], 40);
    assert_eq!(report["qat_steps"], 40);
    assert_eq!(report["test_images"], 1000);
    // 40 Adam steps already beat chance (10%) by far.
    for key in ["float_accuracy", "qat_accuracy", "int_accuracy"] {
        let acc = report[key].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&acc), "{key} = {acc}");
    }
    // The integer model computes the fake-quant eval graph's grid: on 1,000
    // images the two accuracies differ by a few images at most.
    let gap =
        (report["int_accuracy"].as_f64().unwrap() - report["qat_accuracy"].as_f64().unwrap()).abs();
    assert!(gap <= 0.005, "integer vs fake-quant accuracy gap {gap}");
    for key in ["train_images_per_sec", "qat_images_per_sec", "seconds"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}");
    }
    for file in [
        "float.safetensors",
        "qat.safetensors",
        "eval.json",
        "model.tflite",
        "report.json",
    ] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    let written: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(written, report);
    // Progress goes to stderr, as plain lines when it is not a terminal.
    assert!(stderr(&o).contains("float step 40/40"), "{}", stderr(&o));
    litert_agrees(&dir.path().join("model.tflite"));
}

/// Runs the trained model on 500 test images in quant's integer executor
/// and in LiteRT (tools/litert/compare_mnist.py): the output integers of
/// LiteRT's reference kernels must equal quant's. Needs
/// `QUANT_LITERT_PYTHON` (set by `cargo xtask test`); required under CI.
fn litert_agrees(model: &Path) {
    let Some(python) = std::env::var_os("QUANT_LITERT_PYTHON").filter(|p| !p.is_empty()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "QUANT_LITERT_PYTHON is not set, and CI is: run the tests through `cargo xtask test`"
        );
        eprintln!("note: skipping the LiteRT comparison: QUANT_LITERT_PYTHON is not set");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let o = Command::new(python)
        .arg(root.join("tools/litert/compare_mnist.py"))
        .args(["--model", model.to_str().unwrap()])
        .args(["--xtask", env!("CARGO_BIN_EXE_xtask")])
        .args(["--limit", "500"])
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["outputs"], 5000);
    assert_eq!(
        report["kernel_sets"]["ref"]["differing_outputs"], 0,
        "{report}"
    );
}

#[test]
fn a_quant_delay_makes_one_quantization_aware_run() {
    let dir = tempfile::tempdir().unwrap();
    let o = quick(
        dir.path(),
        &["--quant-delay", "20", "--optimizer", "momentum"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["float_steps"], 0);
    assert_eq!(report["qat_steps"], 40);
    assert_eq!(report["quant_delay"], 20);
    assert!(!dir.path().join("float.safetensors").exists());
}

#[test]
fn the_uint8_target_trains_per_tensor_and_exports_uint8() {
    let dir = tempfile::tempdir().unwrap();
    let o = quick(dir.path(), &["--target", "tflite-uint8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["target"], "tflite-uint8");
    let gap =
        (report["int_accuracy"].as_f64().unwrap() - report["qat_accuracy"].as_f64().unwrap()).abs();
    assert!(gap <= 0.005, "integer vs fake-quant accuracy gap {gap}");
    let model = dir.path().join("model.tflite");
    let o = xtask(&["inspect", model.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let inspection: Value = serde_json::from_slice(&o.stdout).unwrap();
    let conv = inspection["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["name"].as_str().unwrap().contains("conv1")
                && t["shape"] == serde_json::json!([16, 5, 5, 1])
        })
        .expect("conv1's filter");
    assert_eq!(conv["dtype"], "u8");
    assert_eq!(conv["scale"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_options_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert_user_error(&quick(dir.path(), &["--target", "tpu"]), "--target tpu");
    assert_user_error(&quick(dir.path(), &["--model", "vgg"]), "--model vgg");
    assert_user_error(&quick(dir.path(), &["--batch", "0"]), "--batch");
    assert_user_error(&quick(dir.path(), &["--lr", "0"]), "--lr");
    let missing = dir.path().join("nowhere");
    assert_user_error(
        &quick(dir.path(), &["--data", missing.to_str().unwrap()]),
        "nowhere",
    );
}
