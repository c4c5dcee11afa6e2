//! `cargo xtask inspect` on `.tflite` files (docs/cli.md): the table, the
//! JSON contract, and exit 1 after printing when the model has lint errors.

mod common;

use common::xtask;

use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../quant-tflite/tests/fixtures")
        .join(name)
}

#[test]
fn a_converter_model_inspects_clean() {
    let path = fixture("converter_int8.tflite");
    let o = xtask(&["inspect", path.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["nodes"], 5);
    assert_eq!(json["ops"]["CONV_2D"], 1);
    assert_eq!(json["operators"][0]["op"], "CONV_2D");
    assert_eq!(json["operators"][0]["version"], 3);
    assert_eq!(json["fully_integer"], true);
    let conv_filter = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["shape"] == serde_json::json!([4, 3, 3, 1]))
        .unwrap();
    assert_eq!(conv_filter["dtype"], "i8");
    assert_eq!(conv_filter["scale"].as_array().unwrap().len(), 4);
    assert_eq!(conv_filter["quantized_dimension"], 0);

    let o = xtask(&["inspect", path.to_str().unwrap()]);
    assert!(o.status.success());
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("CONV_2D") && table.contains("lints: none"),
        "{table}"
    );
}

#[test]
fn lint_errors_print_then_exit_1_and_garbage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The tanh fixture with its schema version patched to 2.
    let mut bytes = std::fs::read(fixture("converter_tanh_int8.tflite")).unwrap();
    let root = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let vtable = root - i32::from_le_bytes(bytes[root..root + 4].try_into().unwrap()) as usize;
    let version =
        root + u16::from_le_bytes(bytes[vtable + 4..vtable + 6].try_into().unwrap()) as usize;
    bytes[version..version + 4].copy_from_slice(&2u32.to_le_bytes());
    let path = dir.path().join("v2.tflite");
    std::fs::write(&path, &bytes).unwrap();
    let o = xtask(&["inspect", path.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["schema_version"], 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: {}: 1 lint error(s); first: [schema-version]",
            path.display()
        )),
        "{err}"
    );

    let garbage = dir.path().join("garbage.tflite");
    std::fs::write(&garbage, b"not a flatbuffer at all").unwrap();
    let o = xtask(&["inspect", garbage.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(&format!("error: {}: not a TFLite file", garbage.display())),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}
