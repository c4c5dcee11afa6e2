//! Writer and reader: round trips of every op in both schemes, byte-level
//! facts decoded from the raw bytes (not through quant-tflite's generated
//! code), op versions and runtime versions the TF 2.21 converter writes
//! (docs/tflite-export.md §6 and §13), and typed errors.

mod support;

use quant_core::DType;
use quant_core::integer::{IntModel, IntOpKind};
use quant_tflite::{ModelError, ReadError, WriteError, read, write};
use support::{Raw, every_op_model, mnist_model};

/// Model field ids (docs/tflite-export.md §3).
const MODEL_VERSION: usize = 0;
const MODEL_OPCODES: usize = 1;
const MODEL_SUBGRAPHS: usize = 2;
const MODEL_DESCRIPTION: usize = 3;
const MODEL_BUFFERS: usize = 4;
const MODEL_METADATA: usize = 6;
const MODEL_SIGNATURES: usize = 7;

fn every_kind_name(model: &IntModel) -> Vec<&'static str> {
    let mut names: Vec<_> = model.ops.iter().map(|o| o.kind.tflite_name()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[test]
fn every_op_round_trips_in_both_schemes() {
    for dtype in [DType::I8, DType::U8] {
        let model = every_op_model(dtype);
        assert_eq!(
            every_kind_name(&model).len(),
            15,
            "the model covers every IntOpKind"
        );
        let bytes = write(&model).unwrap();
        let back = read(&bytes).unwrap();
        assert_eq!(back, model, "{dtype}");
        // export → import → export is byte-identical.
        assert_eq!(write(&back).unwrap(), bytes, "{dtype}");
    }
}

#[test]
fn writing_is_deterministic() {
    let model = mnist_model(DType::I8, true);
    assert_eq!(write(&model).unwrap(), write(&model.clone()).unwrap());
}

/// (op name, version) of every operator, decoded from raw bytes.
fn raw_ops(bytes: &[u8]) -> Vec<(i32, i32, i32)> {
    let r = Raw(bytes);
    let root = r.root();
    let subgraph = r.table_at(root, MODEL_SUBGRAPHS, 0);
    let (n, _) = r.vector(subgraph, 3).unwrap();
    (0..n)
        .map(|i| {
            let op = r.table_at(subgraph, 3, i);
            let index = r.field(op, 0).map_or(0, |p| r.u32(p)) as usize;
            let code = r.table_at(root, MODEL_OPCODES, index);
            let deprecated =
                i32::from(r.0[r.field(code, 0).expect("deprecated_builtin_code written")] as i8);
            let builtin = r.i32(r.field(code, 3).expect("builtin_code written"));
            let version = r.i32(r.field(code, 2).expect("version written"));
            (deprecated, builtin, version)
        })
        .collect()
}

fn min_runtime_version(bytes: &[u8]) -> String {
    let r = Raw(bytes);
    let root = r.root();
    let meta = r.table_at(root, MODEL_METADATA, 0);
    assert_eq!(r.string(meta, 0).unwrap(), "min_runtime_version");
    let buffer = r.u32(r.field(meta, 1).unwrap()) as usize;
    let (len, start) = r
        .vector(r.table_at(root, MODEL_BUFFERS, buffer), 0)
        .unwrap();
    assert_eq!(len, 16, "a 16-byte zero-padded string");
    let text = &bytes[start..start + len];
    String::from_utf8(text.iter().take_while(|&&b| b != 0).copied().collect()).unwrap()
}

#[test]
fn the_mnist_cnn_gets_the_converters_op_versions_and_runtime_version() {
    // docs/tflite-export.md §13: int8 PTQ → CONV v3, MAX_POOL v2, RESHAPE v1,
    // FC v4, SOFTMAX v2, QUANTIZE v1, DEQUANTIZE v2; uint8 legacy → all v1.
    // Codes: CONV_2D 3, MAX_POOL_2D 17, RESHAPE 22, FULLY_CONNECTED 9,
    // SOFTMAX 25, QUANTIZE 114, DEQUANTIZE 6.
    let ops = raw_ops(&write(&mnist_model(DType::I8, true)).unwrap());
    let want = [
        (114, 1),
        (3, 3),
        (17, 2),
        (3, 3),
        (17, 2),
        (22, 1),
        (9, 4),
        (25, 2),
        (6, 2),
    ];
    assert_eq!(ops.len(), want.len());
    for ((dep, code, version), (want_code, want_version)) in ops.iter().zip(want) {
        assert_eq!((*code, *version), (want_code, want_version));
        assert_eq!(*dep, want_code, "codes below 127 go in both fields");
    }
    let ops = raw_ops(&write(&mnist_model(DType::U8, true)).unwrap());
    assert!(ops.iter().all(|&(_, _, v)| v == 1), "{ops:?}");

    // min_runtime_version: int8 models at least 1.14.0; a uint8 model of
    // v1 conv/pool/reshape/FC/softmax only is 1.5.0 (§6, §13).
    assert_eq!(
        min_runtime_version(&write(&mnist_model(DType::I8, false)).unwrap()),
        "1.14.0"
    );
    assert_eq!(
        min_runtime_version(&write(&mnist_model(DType::U8, false)).unwrap()),
        "1.5.0"
    );
    // keep_num_dims makes FULLY_CONNECTED v5, whose runtime is 2.0.0.
    assert_eq!(
        min_runtime_version(&write(&every_op_model(DType::U8)).unwrap()),
        "2.0.0"
    );
}

#[test]
fn per_channel_dequantize_is_version_5_and_mean_is_1_6_0_for_uint8() {
    use support::{activation, op, per_channel, per_tensor};
    let mut m = IntModel::default();
    let x = activation(
        &mut m,
        "w",
        DType::I8,
        &[3, 2],
        Some(per_channel(vec![0.1, 0.2, 0.3], 0)),
    );
    let y = activation(&mut m, "y", DType::F32, &[3, 2], None);
    op(&mut m, IntOpKind::Dequantize, &[Some(x)], y);
    m.inputs = vec![x];
    m.outputs = vec![y];
    let bytes = write(&m).unwrap();
    assert_eq!(raw_ops(&bytes), vec![(6, 6, 5)]);
    assert_eq!(min_runtime_version(&bytes), "2.7.0");

    let mut m = IntModel::default();
    let x = activation(
        &mut m,
        "x",
        DType::U8,
        &[1, 4, 4, 2],
        Some(per_tensor(0.1, 3)),
    );
    let axes = support::constant(&mut m, "axes", support::int32(&[2], vec![1, 2]), None);
    let y = activation(
        &mut m,
        "y",
        DType::U8,
        &[1, 1, 1, 2],
        Some(per_tensor(0.1, 3)),
    );
    op(
        &mut m,
        IntOpKind::Mean { keep_dims: true },
        &[Some(x), Some(axes)],
        y,
    );
    m.inputs = vec![x];
    m.outputs = vec![y];
    let bytes = write(&m).unwrap();
    assert_eq!(raw_ops(&bytes), vec![(40, 40, 1)]);
    assert_eq!(min_runtime_version(&bytes), "1.6.0");
}

#[test]
fn raw_bytes_follow_the_export_checklist() {
    let model = every_op_model(DType::I8);
    let bytes = write(&model).unwrap();
    let r = Raw(&bytes);
    assert_eq!(&bytes[4..8], b"TFL3");
    let root = r.root();
    assert_eq!(r.u32(r.field(root, MODEL_VERSION).unwrap()), 3);
    assert_eq!(
        r.string(root, MODEL_DESCRIPTION).unwrap(),
        model.description
    );

    // Buffer 0 is empty; every constant has its own 16-byte aligned buffer
    // of exactly prod(shape)·size little-endian bytes.
    let (n_buffers, _) = r.vector(root, MODEL_BUFFERS).unwrap();
    let buffer0 = r.table_at(root, MODEL_BUFFERS, 0);
    assert!(r.vector(buffer0, 0).is_none_or(|(len, _)| len == 0));
    let subgraph = r.table_at(root, MODEL_SUBGRAPHS, 0);
    let mut constants = 0;
    for (i, tensor) in model.tensors.iter().enumerate() {
        let t = r.table_at(subgraph, 0, i);
        let buffer = r.field(t, 2).map_or(0, |p| r.u32(p)) as usize;
        let Some(data) = &tensor.data else {
            assert_eq!(buffer, 0, "{}", tensor.name);
            continue;
        };
        constants += 1;
        let (len, start) = r
            .vector(r.table_at(root, MODEL_BUFFERS, buffer), 0)
            .unwrap();
        assert_eq!(
            &bytes[start..start + len],
            data.to_le_bytes().as_slice(),
            "{}",
            tensor.name
        );
        assert_eq!(start % 16, 0, "{} is 16-byte aligned", tensor.name);
        assert_eq!(r.string(t, 3).unwrap(), tensor.name);
    }
    assert_eq!(
        n_buffers,
        1 + constants + 1,
        "sentinel, constants, metadata"
    );

    // Operators: options per kind (union tag at field 3, table at field 4).
    for (i, op) in model.ops.iter().enumerate() {
        let o = r.table_at(subgraph, 3, i);
        let tag = r.field(o, 3).map_or(0, |p| r.0[p]);
        let inputs = r.i32_vector(o, 1);
        match op.kind {
            IntOpKind::Softmax { .. } => {
                assert_eq!(tag, 9);
                let options = r.deref(r.field(o, 4).unwrap());
                let beta = r.field(options, 0).expect("beta written explicitly");
                assert_eq!(r.f32(beta), 1.0);
            }
            IntOpKind::Conv2D { .. } => {
                assert_eq!(tag, 1);
                let options = r.deref(r.field(o, 4).unwrap());
                assert_eq!(r.i32(r.field(options, 1).unwrap()), 1, "stride_w");
                assert_eq!(r.i32(r.field(options, 2).unwrap()), 1, "stride_h");
                assert_eq!(r.0[r.field(options, 3).unwrap()], 3, "RELU6 at field 3");
            }
            IntOpKind::DepthwiseConv2D { .. } => {
                assert_eq!(tag, 2);
                let options = r.deref(r.field(o, 4).unwrap());
                assert_eq!(
                    r.i32(r.field(options, 3).unwrap()),
                    2,
                    "depth_multiplier at field 3"
                );
                assert_eq!(r.0[r.field(options, 4).unwrap()], 1, "RELU at field 4");
            }
            IntOpKind::Reshape => {
                assert_eq!(tag, 0, "no options");
                assert_eq!(inputs.len(), 2, "shape as the second input");
            }
            IntOpKind::FullyConnected { .. } if op.inputs[2].is_none() => {
                assert_eq!(tag, 8);
                assert_eq!(
                    inputs,
                    vec![
                        op.inputs[0].unwrap() as i32,
                        op.inputs[1].unwrap() as i32,
                        -1
                    ]
                );
            }
            IntOpKind::Pad => assert_eq!(tag, 22),
            IntOpKind::Logistic | IntOpKind::Quantize | IntOpKind::Dequantize => assert_eq!(tag, 0),
            _ => assert_ne!(tag, 0, "{}", op.kind.tflite_name()),
        }
    }

    // One serving_default signature naming the model's inputs and outputs.
    let (n, _) = r.vector(root, MODEL_SIGNATURES).unwrap();
    assert_eq!(n, 1);
    let sig = r.table_at(root, MODEL_SIGNATURES, 0);
    assert_eq!(r.string(sig, 2).unwrap(), "serving_default");
    let entry = r.table_at(sig, 0, 0);
    assert_eq!(r.string(entry, 0).unwrap(), "input");
    assert_eq!(
        r.field(entry, 1).map_or(0, |p| r.u32(p)) as usize,
        model.inputs[0]
    );
    assert_eq!(r.vector(sig, 1).unwrap().0, 2);

    // The file is padded to the 16-byte alignment of its buffers.
    assert_eq!(bytes.len() % 16, 0);
}

#[test]
fn invalid_models_are_refused_naming_the_op_or_tensor() {
    let base = every_op_model(DType::I8);
    let conv = base
        .ops
        .iter()
        .position(|o| matches!(o.kind, IntOpKind::Conv2D { .. }))
        .unwrap();
    let dw = base
        .ops
        .iter()
        .position(|o| matches!(o.kind, IntOpKind::DepthwiseConv2D { .. }))
        .unwrap();

    let mut m = base.clone();
    m.ops[dw].inputs[2] = None;
    let err = write(&m).map(|_| ()).unwrap_err();
    assert_eq!(
        err,
        WriteError::Model(ModelError::MissingOperand {
            op: dw,
            name: "DEPTHWISE_CONV_2D",
            slot: 2
        })
    );
    assert_eq!(
        err.to_string(),
        format!("op {dw} (DEPTHWISE_CONV_2D): input 2 is required but omitted")
    );

    let mut m = base.clone();
    m.ops[conv].inputs[1] = Some(999);
    let msg = refusal(&m).to_string();
    assert!(
        msg.contains(&format!(
            "op {conv} (CONV_2D): input 1 refers to tensor 999"
        )),
        "{msg}"
    );

    let mut m = base.clone();
    m.ops[conv].inputs.pop();
    assert!(matches!(
        write(&m),
        Err(WriteError::Model(ModelError::Arity {
            role: "inputs",
            found: 2,
            ..
        }))
    ));

    let mut m = base.clone();
    m.outputs.push(500);
    assert!(
        write(&m)
            .unwrap_err()
            .to_string()
            .starts_with("model output 2 refers to tensor 500")
    );

    let input = base.inputs[0];
    let mut m = base.clone();
    m.tensors[input].quant = None;
    assert_eq!(
        refusal(&m).to_string(),
        "tensor 0 ('input'): i8 tensor without quantization parameters"
    );

    let w = base.tensor_by_name("conv/weights").unwrap();
    let mut m = base.clone();
    m.tensors[w].quant.as_mut().unwrap().zero_points.pop();
    assert!(
        write(&m)
            .unwrap_err()
            .to_string()
            .contains("'conv/weights'): 3 scales but 2 zero points")
    );

    let mut m = base.clone();
    m.tensors[w].quant.as_mut().unwrap().axis = Some(3);
    assert!(
        write(&m)
            .unwrap_err()
            .to_string()
            .contains("3 scales, but shape [3, 3, 3, 2] with quantized dimension 3 needs 2")
    );

    let mut m = base.clone();
    m.tensors[w].shape = vec![3, 3, 3, 3];
    assert!(refusal(&m).to_string().contains(
        "'conv/weights'): the tensor has shape [3, 3, 3, 3] but its data has shape [3, 3, 3, 2]"
    ));

    let bias = base.tensor_by_name("conv/bias").unwrap();
    let mut m = base.clone();
    m.tensors[bias].quant = None;
    assert!(
        write(&m)
            .unwrap_err()
            .to_string()
            .contains("'conv/bias'): i32 tensor without quantization parameters")
    );

    let mut m = base;
    m.tensors[input].dtype = DType::String;
    assert!(matches!(
        write(&m),
        Err(WriteError::Model(ModelError::UnsupportedDType {
            tensor: 0,
            ..
        }))
    ));
}

/// The error `write` returns for `m` (without printing the bytes if it
/// succeeds).
fn refusal(m: &IntModel) -> WriteError {
    match write(m) {
        Ok(_) => panic!("the model was written"),
        Err(e) => e,
    }
}

/// Position of a field of op `i`'s operator code.
fn opcode_field(bytes: &[u8], op: usize, id: usize) -> usize {
    let r = Raw(bytes);
    let root = r.root();
    let subgraph = r.table_at(root, MODEL_SUBGRAPHS, 0);
    let o = r.table_at(subgraph, 3, op);
    let index = r.field(o, 0).map_or(0, |p| r.u32(p)) as usize;
    r.field(r.table_at(root, MODEL_OPCODES, index), id).unwrap()
}

#[test]
fn the_reader_refuses_bad_files_with_typed_errors() {
    let model = mnist_model(DType::I8, false);
    let bytes = write(&model).unwrap();

    assert_eq!(read(&bytes[..5]), Err(ReadError::TooShort { len: 5 }));
    let mut wrong = bytes.clone();
    wrong[4..8].copy_from_slice(b"TFL2");
    assert_eq!(
        read(&wrong),
        Err(ReadError::WrongIdentifier {
            found: "TFL2".into()
        })
    );

    // Every truncation is refused (never a panic).
    for len in (8..bytes.len()).step_by(97) {
        assert!(read(&bytes[..len]).is_err(), "truncated to {len}");
    }

    // Schema version 2.
    let r = Raw(&bytes);
    let version = r.field(r.root(), MODEL_VERSION).unwrap();
    let mut v2 = bytes.clone();
    v2[version..version + 4].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(read(&v2), Err(ReadError::SchemaVersion { found: 2 }));

    // An op outside quant's set: turn op 0 (CONV_2D) into TANH (28).
    let mut tanh = bytes.clone();
    let dep = opcode_field(&bytes, 0, 0);
    let full = opcode_field(&bytes, 0, 3);
    tanh[dep] = 28;
    tanh[full..full + 4].copy_from_slice(&28i32.to_le_bytes());
    let err = read(&tanh).unwrap_err();
    assert_eq!(
        err,
        ReadError::UnsupportedOp {
            op: 0,
            name: "TANH".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "op 0 (TANH): operator not supported by quant's integer model"
    );

    // CONV_2D without options.
    let r = Raw(&bytes);
    let subgraph = r.table_at(r.root(), MODEL_SUBGRAPHS, 0);
    let conv = r.table_at(subgraph, 3, 0);
    let tag = r.field(conv, 3).unwrap();
    let mut no_options = bytes.clone();
    no_options[tag] = 0;
    assert_eq!(
        read(&no_options).unwrap_err().to_string(),
        "op 0 (CONV_2D): no Conv2DOptions (LiteRT would read zeros)"
    );

    // A constant pointing past the buffer table.
    let w = model.tensor_by_name("conv0/weights").unwrap();
    let t = r.table_at(subgraph, 0, w);
    let buffer = r.field(t, 2).unwrap();
    let mut bad_buffer = bytes.clone();
    bad_buffer[buffer..buffer + 4].copy_from_slice(&999u32.to_le_bytes());
    let msg = read(&bad_buffer).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "tensor {w} ('conv0/weights'): buffer index 999 is out of range"
        )),
        "{msg}"
    );

    // An op input past the tensor table.
    let (_, inputs) = r.vector(conv, 1).unwrap();
    let mut bad_input = bytes.clone();
    bad_input[inputs + 4..inputs + 8].copy_from_slice(&77i32.to_le_bytes());
    assert!(
        read(&bad_input)
            .unwrap_err()
            .to_string()
            .starts_with("op 0 (CONV_2D) input 1: tensor index 77 is out of range")
    );

    // Garbled bytes never panic, in the reader or the inspector.
    for step in [3usize, 7, 13, 61] {
        let garbled: Vec<u8> = bytes
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if i >= 8 && i % step == 1 {
                    b ^ 0x5A
                } else {
                    *b
                }
            })
            .collect();
        let _ = read(&garbled);
        let _ = quant_tflite::inspect::inspect(&garbled);
    }
}
