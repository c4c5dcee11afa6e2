//! The inspector: decoded facts of written models, and one lint per
//! condition of docs/tflite-export.md §8 on deliberately broken models
//! (built by editing `IntModel`s or the written bytes).

mod support;

use quant_core::DType;
use quant_core::integer::{IntModel, IntOpKind};
use quant_tflite::inspect::{Inspection, Severity, inspect};
use quant_tflite::write;
use support::{Raw, every_op_model, mnist_model, per_tensor};

fn inspected(model: &IntModel) -> Inspection {
    inspect(&write(model).unwrap()).unwrap()
}

fn errors(i: &Inspection) -> Vec<&'static str> {
    i.lints
        .iter()
        .filter(|l| l.severity == Severity::Error)
        .map(|l| l.code)
        .collect()
}

/// Asserts the model has exactly one error lint, with this code, at this op.
fn assert_one_error(i: &Inspection, code: &str, op: Option<usize>) {
    let errs: Vec<_> = i
        .lints
        .iter()
        .filter(|l| l.severity == Severity::Error)
        .collect();
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].code, code, "{errs:#?}");
    assert_eq!(errs[0].op, op, "{errs:#?}");
}

fn op_index(m: &IntModel, name: &str) -> usize {
    m.ops
        .iter()
        .position(|o| o.kind.tflite_name() == name)
        .unwrap()
}

#[test]
fn well_formed_models_have_no_lints_and_are_fully_integer() {
    for dtype in [DType::I8, DType::U8] {
        for float_io in [false, true] {
            let i = inspected(&mnist_model(dtype, float_io));
            assert!(
                i.lints.is_empty(),
                "{dtype} float_io={float_io}: {:#?}",
                i.lints
            );
            assert!(i.fully_integer, "{dtype} float_io={float_io}");
        }
        let i = inspected(&every_op_model(dtype));
        assert!(i.lints.is_empty(), "{dtype}: {:#?}", i.lints);
        // Its QUANTIZE is fed by a DEQUANTIZE, not by a graph input.
        assert!(!i.fully_integer);
    }
}

#[test]
fn inspection_reports_the_files_facts() {
    let model = mnist_model(DType::I8, true);
    let i = inspected(&model);
    assert_eq!(i.identifier, "TFL3");
    assert_eq!(i.schema_version, 3);
    assert_eq!(i.buffer0_bytes, Some(0));
    assert_eq!(i.min_runtime_version.as_deref(), Some("1.14.0"));
    assert_eq!(i.signatures.len(), 1);
    assert_eq!(i.signatures[0].key, "serving_default");
    assert_eq!(i.signatures[0].inputs[0].name, "image_f32");
    assert_eq!(i.nodes, 9);
    assert_eq!(i.ops["CONV_2D"], 2);
    assert_eq!(i.ops["QUANTIZE"], 1);
    let versions: Vec<(&str, i32)> = i
        .operators
        .iter()
        .map(|o| (o.op.as_str(), o.version))
        .collect();
    assert_eq!(versions[1], ("CONV_2D", 3));
    assert_eq!(versions[6], ("FULLY_CONNECTED", 4));
    assert_eq!(i.operators[7].options["beta"], "1");
    assert_eq!(i.operators[1].options["fused_activation_function"], "RELU6");
    let w = model.tensor_by_name("conv0/weights").unwrap();
    let t = &i.tensors[w];
    assert_eq!(
        (t.dtype.as_str(), t.shape.as_slice()),
        ("i8", [8, 3, 3, 1].as_slice())
    );
    assert_eq!(t.buffer_bytes, 72);
    assert_eq!(t.scale.len(), 8);
    assert_eq!(t.zero_point, vec![0; 8]);
    assert_eq!(t.quantized_dimension, 0);

    // The JSON form holds the documented keys (docs/cli.md, inspect).
    let json = serde_json::to_value(&i).unwrap();
    for key in [
        "nodes",
        "ops",
        "tensors",
        "operators",
        "lints",
        "fully_integer",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    let t = &json["tensors"][w];
    for key in [
        "name",
        "dtype",
        "shape",
        "scale",
        "zero_point",
        "quantized_dimension",
    ] {
        assert!(t.get(key).is_some(), "{key}");
    }
    assert_eq!(json["operators"][1]["op"], "CONV_2D");
    assert_eq!(json["operators"][1]["version"], 3);
}

#[test]
fn softmax_beta_missing_or_zero_is_an_error() {
    let mut m = mnist_model(DType::I8, false);
    let sm = op_index(&m, "SOFTMAX");
    m.ops[sm].kind = IntOpKind::Softmax { beta: 0.0 };
    assert_one_error(&inspected(&m), "softmax-beta", Some(sm));

    // Options table removed from the bytes: union tag NONE.
    let m = mnist_model(DType::I8, false);
    let mut bytes = write(&m).unwrap();
    let r = Raw(&bytes);
    let subgraph = r.table_at(r.root(), 2, 0);
    let tag = r.field(r.table_at(subgraph, 3, sm), 3).unwrap();
    bytes[tag] = 0;
    assert_one_error(&inspect(&bytes).unwrap(), "softmax-beta", Some(sm));
}

#[test]
fn a_fused_activation_on_concatenation_is_an_error() {
    // LiteRT 2.3 refuses it at allocate_tensors (found by the LiteRT tests).
    let mut m = every_op_model(DType::U8);
    let concat = op_index(&m, "CONCATENATION");
    let IntOpKind::Concatenation { activation, .. } = &mut m.ops[concat].kind else {
        unreachable!()
    };
    *activation = quant_core::integer::Activation::Relu;
    assert_one_error(&inspected(&m), "concat-activation", Some(concat));
}

#[test]
fn weight_and_bias_rules() {
    let base = every_op_model(DType::I8);
    let conv = op_index(&base, "CONV_2D");
    let dw = op_index(&base, "DEPTHWISE_CONV_2D");

    // int8 CONV_2D weights with a non-zero zero point are rejected.
    let mut m = base.clone();
    let w = m.tensor_by_name("conv/weights").unwrap();
    m.tensors[w].quant.as_mut().unwrap().zero_points[1] = 5;
    assert_one_error(&inspected(&m), "int8-weight-zero-point", Some(conv));

    // Bias not int32.
    let mut m = base.clone();
    let b = m.tensor_by_name("conv/bias").unwrap();
    let values: Vec<i8> = vec![1, 2, 3];
    m.tensors[b].dtype = DType::I8;
    m.tensors[b].data = Some(quant_core::Tensor::from_vec(&[3], values).unwrap());
    let i = inspected(&m);
    assert!(
        i.lints_with("bias-type").iter().any(|l| l.op == Some(conv)),
        "{:#?}",
        i.lints
    );

    // Depthwise without bias (crash): the writer refuses it, so cut it from the bytes.
    let bytes = write(&base).unwrap();
    let r = Raw(&bytes);
    let subgraph = r.table_at(r.root(), 2, 0);
    let (_, inputs) = r.vector(r.table_at(subgraph, 3, dw), 1).unwrap();
    let mut cut = bytes.clone();
    cut[inputs + 8..inputs + 12].copy_from_slice(&(-1i32).to_le_bytes());
    assert_one_error(&inspect(&cut).unwrap(), "missing-bias", Some(dw));

    // Per-channel weights on a uint8 op.
    let mut m = every_op_model(DType::U8);
    let w = m.tensor_by_name("conv/weights").unwrap();
    let b = m.tensor_by_name("conv/bias").unwrap();
    m.tensors[w].quant = Some(support::per_channel(vec![0.01, 0.02, 0.03], 0));
    m.tensors[w].quant.as_mut().unwrap().zero_points = vec![120; 3];
    let s_in = 0.05f32;
    m.tensors[b].quant = Some(support::per_channel(
        vec![s_in * 0.01, s_in * 0.02, s_in * 0.03],
        0,
    ));
    assert!(errors(&inspected(&m)).contains(&"per-channel-uint8"));

    // A wrong depth multiplier (XNNPACK rejects it).
    let mut m = base.clone();
    if let IntOpKind::DepthwiseConv2D {
        depth_multiplier, ..
    } = &mut m.ops[dw].kind
    {
        *depth_multiplier = 3;
    }
    assert_one_error(&inspected(&m), "depth-multiplier", Some(dw));

    // A bias scale that is not input × weight scale is a warning.
    let mut m = base;
    let b = m.tensor_by_name("conv/bias").unwrap();
    m.tensors[b].quant.as_mut().unwrap().scales[0] *= 2.0;
    let i = inspected(&m);
    assert!(errors(&i).is_empty(), "{:#?}", i.lints);
    assert_eq!(i.lints_with("bias-scale").len(), 1);
}

#[test]
fn fixed_and_copied_output_parameters() {
    // int8 SOFTMAX output must be (1/256, -128).
    let mut m = every_op_model(DType::I8);
    let sm = op_index(&m, "SOFTMAX");
    let out = m.ops[sm].outputs[0];
    m.tensors[out].quant = Some(per_tensor(1.0 / 255.0, -128));
    // The LOGISTIC after it reads that tensor; only the softmax is wrong.
    assert_one_error(&inspected(&m), "fixed-output-quantization", Some(sm));

    // int8 LOGISTIC output scale must be 1/256.
    let mut m = every_op_model(DType::I8);
    let lg = op_index(&m, "LOGISTIC");
    let out = m.ops[lg].outputs[0];
    m.tensors[out].quant = Some(per_tensor(1.0 / 255.0, -128));
    assert_one_error(&inspected(&m), "fixed-output-quantization", Some(lg));

    // uint8 LOGISTIC output zero point must be 0.
    let mut m = every_op_model(DType::U8);
    let out = m.ops[lg].outputs[0];
    m.tensors[out].quant = Some(per_tensor(1.0 / 256.0, 3));
    assert_one_error(&inspected(&m), "fixed-output-quantization", Some(lg));

    // Pool, reshape and pad outputs must copy their input's parameters.
    for name in ["MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "PAD"] {
        let mut m = every_op_model(DType::U8);
        let op = op_index(&m, name);
        let out = m.ops[op].outputs[0];
        m.tensors[out].quant = Some(per_tensor(0.06, 125));
        let i = inspected(&m);
        assert!(
            i.lints_with("same-quantization")
                .iter()
                .any(|l| l.op == Some(op)),
            "{name}: {:#?}",
            i.lints
        );
    }

    // int8 CONCATENATION inputs must share the output's scale.
    let mut m = every_op_model(DType::I8);
    let cat = op_index(&m, "CONCATENATION");
    let mul = op_index(&m, "MUL");
    let mul_out = m.ops[mul].outputs[0];
    m.tensors[mul_out].quant = Some(per_tensor(0.07, -3));
    assert_one_error(&inspected(&m), "concat-quantization", Some(cat));
    // uint8 CONCATENATION rescales: no lint.
    let mut m = every_op_model(DType::U8);
    let mul_out = m.ops[mul].outputs[0];
    m.tensors[mul_out].quant = Some(per_tensor(0.07, 125));
    assert!(inspected(&m).lints.is_empty());
}

#[test]
fn tensor_level_errors() {
    // int8 zero point outside [-128, 127].
    let mut m = mnist_model(DType::I8, false);
    let input = m.inputs[0];
    m.tensors[input].quant = Some(per_tensor(1.0 / 255.0, 200));
    let i = inspected(&m);
    assert!(
        i.lints_with("zero-point-range")
            .iter()
            .any(|l| l.tensor == Some(input))
    );

    // A uint8 tensor with only min/max, or nothing: not quantized for LiteRT.
    let bytes = write(&mnist_model(DType::U8, false)).unwrap();
    let r = Raw(&bytes);
    let subgraph = r.table_at(r.root(), 2, 0);
    let t = r.table_at(subgraph, 0, 0);
    let quant = r.field(t, 4).unwrap();
    let mut stripped = bytes.clone();
    // Point the tensor's quantization slot at nothing (vtable offset 0).
    let vtable = t - r.i32(t) as usize;
    stripped[vtable + 4 + 2 * 4..vtable + 4 + 2 * 4 + 2].copy_from_slice(&0u16.to_le_bytes());
    assert!(quant > 0);
    let i = inspect(&stripped).unwrap();
    assert!(
        i.lints_with("unquantized-integer")
            .iter()
            .any(|l| l.tensor == Some(0)),
        "{:#?}",
        i.lints
    );
}

#[test]
fn file_level_errors() {
    let bytes = write(&mnist_model(DType::I8, false)).unwrap();
    let r = Raw(&bytes);
    let root = r.root();

    // Buffer 0 not empty: make buffers[0] point at a constant's buffer.
    let (_, buffers) = r.vector(root, 4).unwrap();
    let target = r.deref(buffers + 4);
    let mut b0 = bytes.clone();
    b0[buffers..buffers + 4].copy_from_slice(&((target - buffers) as u32).to_le_bytes());
    let i = inspect(&b0).unwrap();
    assert!(errors(&i).contains(&"buffer0-not-empty"), "{:#?}", i.lints);

    // Op versions: 0 and above LiteRT 2.3's maximum (CONV_2D 8).
    let subgraph = r.table_at(root, 2, 0);
    let conv = r.table_at(subgraph, 3, 0);
    let code = r.table_at(root, 1, r.field(conv, 0).map_or(0, |p| r.u32(p)) as usize);
    let version = r.field(code, 2).unwrap();
    for (v, severity) in [
        (0i32, Severity::Error),
        (9, Severity::Error),
        (1, Severity::Warning),
    ] {
        let mut patched = bytes.clone();
        patched[version..version + 4].copy_from_slice(&v.to_le_bytes());
        let i = inspect(&patched).unwrap();
        let code = if v == 1 {
            "op-version-low"
        } else {
            "op-version"
        };
        let hits = i.lints_with(code);
        assert!(
            hits.iter()
                .any(|l| l.op == Some(0) && l.severity == severity),
            "v{v}: {:#?}",
            i.lints
        );
    }

    // Schema version 2.
    let mut v2 = bytes.clone();
    let pos = r.field(root, 0).unwrap();
    v2[pos..pos + 4].copy_from_slice(&2u32.to_le_bytes());
    assert!(errors(&inspect(&v2).unwrap()).contains(&"schema-version"));

    // Not a TFLite file at all.
    let mut wrong = bytes.clone();
    wrong[4..8].copy_from_slice(b"XXXX");
    assert!(inspect(&wrong).is_err());
}

#[test]
fn random_corruption_never_panics() {
    let bytes = write(&every_op_model(DType::I8)).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let pos = 8 + (next() as usize) % (b.len() - 8);
            b[pos] = next() as u8;
        }
        let _ = quant_tflite::read(&b);
        let _ = inspect(&b);
    }
}
