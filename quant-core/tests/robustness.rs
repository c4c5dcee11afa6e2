//! The readers never panic: arbitrary and mutated GraphDef (binary and
//! text) and graph JSON input either imports or returns an error. The
//! coverage-guided fuzz targets in `fuzz/` run the same entry points for
//! longer; these proptests keep a quick version in the suite.

use proptest::prelude::*;
use quant_core::OpRegistry;
use quant_core::import::tf::{import_graph_def, import_graph_def_text};
use quant_core::serialize::json::{from_json, to_json};
use std::path::Path;

fn fixture(name: &str, file: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/tf")
            .join(name)
            .join(file),
    )
    .unwrap()
}

/// Applies byte-level edits: overwrite, insert, delete, truncate.
fn mutate(mut bytes: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(kind, pos, value) in edits {
        if bytes.is_empty() {
            bytes.push(value);
            continue;
        }
        let pos = pos % bytes.len();
        match kind % 4 {
            0 => bytes[pos] = value,
            1 => bytes.insert(pos, value),
            2 => {
                bytes.remove(pos);
            }
            _ => bytes.truncate(pos),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_bytes_never_panic_the_graphdef_reader(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = import_graph_def(&bytes, OpRegistry::builtin());
    }

    #[test]
    fn mutated_graphdefs_never_panic(edits in edits(), which in 0usize..4) {
        let name = ["cnn", "resnet", "fake_quant", "unfused_bn"][which];
        let bytes = mutate(fixture(name, "graph.pb"), &edits);
        let _ = import_graph_def(&bytes, OpRegistry::builtin());
    }

    #[test]
    fn mutated_text_graphdefs_never_panic(edits in edits(), which in 0usize..3) {
        let name = ["conv_bn_relu6", "matmul", "fake_quant"][which];
        let bytes = mutate(fixture(name, "graph.pbtxt"), &edits);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = import_graph_def_text(text, OpRegistry::builtin());
        }
    }

    #[test]
    fn mutated_graph_json_never_panics(edits in edits()) {
        let graph = import_graph_def(&fixture("residual_block", "graph.pb"), OpRegistry::builtin()).unwrap();
        let bytes = mutate(to_json(&graph).into_bytes(), &edits);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = from_json(text, OpRegistry::builtin());
        }
    }
}

#[test]
fn huge_shapes_are_refused_not_allocated() {
    let text = r#"node { name: "c" op: "Const" attr { key: "value" value { tensor {
        dtype: DT_FLOAT tensor_shape { dim { size: 4000000000 } dim { size: 4000000000 } } float_val: 1.0 } } } }"#;
    let err = import_graph_def_text(text, OpRegistry::builtin())
        .unwrap_err()
        .to_string();
    assert!(err.contains("too large"), "{err}");
    let text = r#"node { name: "c" op: "Const" attr { key: "value" value { tensor {
        dtype: DT_FLOAT tensor_shape { dim { size: 2000000000 } } float_val: 1.0 } } } }"#;
    let err = import_graph_def_text(text, OpRegistry::builtin())
        .unwrap_err()
        .to_string();
    assert!(err.contains("too large"), "{err}");
}

#[test]
fn splat_constants_repeat_the_last_value() {
    let text = r#"node { name: "c" op: "Const" attr { key: "value" value { tensor {
        dtype: DT_INT32 tensor_shape { dim { size: 4 } } int_val: 7 int_val: 9 } } } }"#;
    let g = import_graph_def_text(text, OpRegistry::builtin()).unwrap();
    let t = g.by_name("c").unwrap().attr_tensor("value").unwrap();
    assert_eq!(t.to_i64_vec().unwrap(), [7, 9, 9, 9]);
    let text = r#"node { name: "c" op: "Const" attr { key: "value" value { tensor {
        dtype: DT_INT32 tensor_shape { dim { size: 1 } } int_val: 7 int_val: 9 } } } }"#;
    let err = import_graph_def_text(text, OpRegistry::builtin())
        .unwrap_err()
        .to_string();
    assert_eq!(err, "node 'c': shape [1] expects 1 values, found 2");
    let text = r#"node { name: "c" op: "Const" attr { key: "value" value { tensor {
        dtype: DT_HALF tensor_shape { dim { size: 1 } } } } } }"#;
    let err = import_graph_def_text(text, OpRegistry::builtin())
        .unwrap_err()
        .to_string();
    assert_eq!(err, "node 'c': unsupported dtype DT_HALF");
}

#[test]
fn unknown_ops_are_kept_and_flagged() {
    let text = r#"
        node { name: "x" op: "Placeholder" attr { key: "dtype" value { type: DT_FLOAT } } }
        node { name: "y" op: "MyCustomOp" input: "x" attr { key: "T" value { type: DT_FLOAT } }
               attr { key: "_output_shapes" value { list { shape { dim { size: 3 } } shape { } } } } }
        node { name: "z" op: "Relu" input: "y:1" }"#;
    let g = import_graph_def_text(text, OpRegistry::builtin()).unwrap();
    let unknown: Vec<&str> = g
        .unknown_ops(OpRegistry::builtin())
        .into_iter()
        .map(|id| g.node(id).name())
        .collect();
    assert_eq!(unknown, ["y"]);
    let y = g.by_name("y").unwrap();
    assert_eq!(y.outputs().len(), 2);
    assert_eq!(y.outputs()[0].shape, Some(quant_core::Shape::known(&[3])));
    let back = from_json(&to_json(&g), OpRegistry::builtin()).unwrap();
    assert_eq!(back, g);
}
