//! Files written by TensorFlow 2.21's own converter (fixtures made by
//! `fixtures/make_converter_models.py`; the facts in
//! `fixtures/converter_models.json` were read back by TensorFlow's
//! interpreter): quant reads them, inspects them clean, re-exports them,
//! and names the op it cannot represent.

use quant_core::DType;
use quant_core::integer::IntOpKind;
use quant_tflite::inspect::{Severity, inspect};
use quant_tflite::{ReadError, read, write};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn facts() -> serde_json::Value {
    serde_json::from_slice(&fixture("converter_models.json")).unwrap()
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::I8 => "int8",
        DType::U8 => "uint8",
        DType::I32 => "int32",
        DType::F32 => "float32",
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn converter_models_read_with_tensorflows_facts() {
    let facts = facts();
    for name in ["converter_int8", "converter_int8_float_io"] {
        let f = &facts[name];
        let model = read(&fixture(&format!("{name}.tflite"))).unwrap();
        let ops: Vec<&str> = model.ops.iter().map(|o| o.kind.tflite_name()).collect();
        let want: Vec<&str> = f["ops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(ops, want, "{name}");
        assert_eq!(
            model.tensors[model.inputs[0]].name, f["inputs"][0],
            "{name}"
        );
        assert_eq!(
            model.tensors[model.outputs[0]].name, f["outputs"][0],
            "{name}"
        );
        let tensors = f["tensors"].as_object().unwrap();
        assert_eq!(model.tensors.len(), tensors.len(), "{name}");
        for t in &model.tensors {
            let want = &tensors[&t.name];
            assert_eq!(dtype_name(t.dtype), want["dtype"], "{name} {}", t.name);
            let shape: Vec<usize> = serde_json::from_value(want["shape"].clone()).unwrap();
            assert_eq!(t.shape, shape, "{name} {}", t.name);
            let scales: Vec<f32> = serde_json::from_value(want["scales"].clone()).unwrap();
            let zero_points: Vec<i64> =
                serde_json::from_value(want["zero_points"].clone()).unwrap();
            match &t.quant {
                None => assert!(scales.is_empty(), "{name} {}", t.name),
                Some(q) => {
                    assert_eq!(q.scales, scales, "{name} {}", t.name);
                    assert_eq!(q.zero_points, zero_points, "{name} {}", t.name);
                    if scales.len() > 1 {
                        assert_eq!(
                            q.axis,
                            Some(want["quantized_dimension"].as_u64().unwrap() as usize)
                        );
                    }
                }
            }
        }
        // The conv filter is per-channel OHWI; the converter's FC has no bias
        // input (-1), which reads as an omitted bias.
        let conv = model
            .ops
            .iter()
            .find(|o| matches!(o.kind, IntOpKind::Conv2D { .. }))
            .unwrap();
        let filter = &model.tensors[conv.inputs[1].unwrap()];
        assert_eq!(filter.shape, vec![4, 3, 3, 1]);
        assert!(filter.data.is_some());
        let fc = model
            .ops
            .iter()
            .find(|o| matches!(o.kind, IntOpKind::FullyConnected { .. }))
            .unwrap();
        assert_eq!(fc.inputs.len(), 3);

        // Re-exported, it reads back to the same model.
        let again = read(&write(&model).unwrap()).unwrap();
        assert_eq!(again, model, "{name}");
    }
}

#[test]
fn converter_models_inspect_without_errors() {
    for name in ["converter_int8", "converter_int8_float_io"] {
        let i = inspect(&fixture(&format!("{name}.tflite"))).unwrap();
        let errors: Vec<_> = i
            .lints
            .iter()
            .filter(|l| l.severity == Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        assert!(i.fully_integer, "{name}");
        assert_eq!(i.schema_version, 3);
        assert_eq!(i.buffer0_bytes, Some(0));
        let conv = i.operators.iter().find(|o| o.op == "CONV_2D").unwrap();
        assert_eq!(conv.version, 3, "TF 2.21 writes int8 CONV_2D v3");
        assert_eq!(i.min_runtime_version.as_deref(), Some("1.14.0"), "{name}");
    }
}

#[test]
fn an_op_outside_quants_set_is_named() {
    let bytes = fixture("converter_tanh_int8.tflite");
    assert_eq!(
        read(&bytes),
        Err(ReadError::UnsupportedOp {
            op: 1,
            name: "TANH".into()
        })
    );
    // The inspector still decodes it and checks TANH's fixed int8 output.
    let i = inspect(&bytes).unwrap();
    assert_eq!(i.ops["TANH"], 1);
    assert!(
        i.lints_with("unsupported-by-quant")
            .iter()
            .any(|l| l.op == Some(1))
    );
    assert!(
        i.lints_with("fixed-output-quantization").is_empty(),
        "{:#?}",
        i.lints
    );
}
