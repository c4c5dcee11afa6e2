//! Lowering eval graphs to integer models (`quant_passes::lower`): op
//! sequences and tensor parameters against hand-computed expectations,
//! TFLite weight layouts, dequantized integer weights against the fake-quant
//! kernel's output, biases, target rules and errors, and the float32 nudging
//! against TensorFlow's fake-quant vectors.

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use quant_core::builder::GraphBuilder;
use quant_core::integer::{Activation, IntModel, IntOpKind, IntTensor};
use quant_core::models::Rng;
use quant_core::models::{self, ModelOptions};
use quant_core::{AttrValue, Attrs, DType, Graph, OutletId, QuantParams, Shape, Tensor};
use quant_kernels::integer::IntExecutor;
use quant_kernels::session::Session;
use quant_passes::lower::params::{Rounding, check_range, nudge};
use quant_passes::{
    LowerError, LowerOptions, Target, check_lowering, experimental_create_eval_graph,
    lower_to_integer,
};
use serde_json::Value;
use std::path::Path;

const FQ: &str = "FakeQuantWithMinMaxVars";
const FQ_PC: &str = "FakeQuantWithMinMaxVarsPerChannel";

fn eval_graph(model: &str, target: &Target) -> Graph {
    let mut g = models::builtin(model, ModelOptions::default())
        .unwrap()
        .unwrap();
    experimental_create_eval_graph(&mut g, &target.eval_options()).unwrap();
    g
}

/// Fetches one float tensor.
fn fetch(s: &mut Session, name: &str) -> ArrayD<f32> {
    s.run(&[], &[name]).unwrap()[0]
        .array::<f32>()
        .unwrap()
        .clone()
}

fn set_range(s: &mut Session, fq: &str, min: Vec<f32>, max: Vec<f32>) {
    let prefix = fq.rsplit_once('/').unwrap().0;
    let t = |v: Vec<f32>| {
        if v.len() == 1 {
            Tensor::scalar(v[0])
        } else {
            Tensor::from_vec(&[v.len()], v).unwrap()
        }
    };
    s.set_variable(&format!("{prefix}/min"), t(min)).unwrap();
    s.set_variable(&format!("{prefix}/max"), t(max)).unwrap();
}

/// Sets every weight range from the weights themselves, as the last-value
/// quantizer would: per channel along the last axis for per-channel fake
/// quants, symmetric (`[−m, m]`) or asymmetric (`[min(w, 0), max(w, 0)]`).
fn calibrate_weights(s: &mut Session, graph: &Graph, symmetric: bool) {
    for (_, node) in graph.nodes() {
        if !node.name().contains("weights_quant/") || !node.op().starts_with("FakeQuant") {
            continue;
        }
        let w = fetch(s, &graph.outlet_name(node.inputs()[0]));
        let channels = if node.op() == FQ_PC {
            *w.shape().last().unwrap()
        } else {
            1
        };
        let (mut lo, mut hi) = (vec![0f32; channels], vec![0f32; channels]);
        for (i, &v) in w.iter().enumerate() {
            let c = i % channels;
            lo[c] = lo[c].min(v);
            hi[c] = hi[c].max(v);
        }
        if symmetric {
            for c in 0..channels {
                let m = lo[c].abs().max(hi[c]);
                (lo[c], hi[c]) = (-m, m);
            }
        }
        set_range(s, node.name(), lo, hi);
    }
}

/// The hand-chosen activation ranges of the MNIST tests.
fn mnist_session(graph: &Graph, symmetric_weights: bool) -> Session {
    let mut s = Session::new(graph.clone()).unwrap();
    calibrate_weights(&mut s, graph, symmetric_weights);
    set_range(
        &mut s,
        &format!("conv1/act_quant/{FQ}"),
        vec![0.0],
        vec![6.0],
    );
    set_range(
        &mut s,
        &format!("conv2/act_quant/{FQ}"),
        vec![0.0],
        vec![4.0],
    );
    set_range(
        &mut s,
        &format!("logits/act_quant/{FQ}"),
        vec![-4.0],
        vec![12.0],
    );
    s
}

fn mnist_options() -> LowerOptions {
    LowerOptions {
        outputs: vec!["logits/BiasAdd".into()],
        input_ranges: vec![("input".into(), 0.0, 1.0)],
        ..LowerOptions::default()
    }
}

fn lower(
    graph: &Graph,
    target: &Target,
    options: &LowerOptions,
    s: &mut Session,
) -> Result<IntModel, LowerError> {
    let mut values = |outlets: &[OutletId]| {
        let names: Vec<String> = outlets.iter().map(|&o| graph.outlet_name(o)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        s.run(&[], &refs).map_err(|e| e.to_string())
    };
    lower_to_integer(graph, target, options, &mut values)
}

fn tensor<'m>(m: &'m IntModel, name: &str) -> &'m IntTensor {
    let i = m
        .tensor_by_name(name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    &m.tensors[i]
}

fn per_tensor(scale: f32, zero_point: i64) -> Option<QuantParams> {
    Some(QuantParams {
        scales: vec![scale],
        zero_points: vec![zero_point],
        axis: None,
    })
}

fn op_names(m: &IntModel) -> Vec<&'static str> {
    m.ops.iter().map(|o| o.kind.tflite_name()).collect()
}

fn weight_values(t: &IntTensor) -> Vec<i64> {
    t.data.as_ref().unwrap().to_i64_vec().unwrap()
}

/// Checks that `(q − Z[c])·S[c]` of the lowered weights equals, bit for bit,
/// the fake-quant output `fq` (TensorFlow layout), where `tf_index` maps an
/// element of the TFLite layout to its TensorFlow flat index and `channel`
/// gives its output channel.
fn assert_dequantized_equal(
    t: &IntTensor,
    fq: &ArrayD<f32>,
    tf_index: impl Fn(&[usize]) -> usize,
    channel: impl Fn(&[usize]) -> usize,
) {
    let q = t.quant.as_ref().unwrap();
    let values = weight_values(t);
    let fq: Vec<f32> = fq.iter().copied().collect();
    assert_eq!(values.len(), fq.len());
    let shape = &t.shape;
    let mut index = vec![0usize; shape.len()];
    for &v in &values {
        let c = if q.scales.len() == 1 {
            0
        } else {
            channel(&index)
        };
        let deq = (v - q.zero_points[c]) as f32 * q.scales[c];
        let want = fq[tf_index(&index)];
        assert_eq!(
            deq.to_bits(),
            want.to_bits(),
            "{} at {index:?}: {deq} vs {want}",
            t.name
        );
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

// ------------------------------------------------------------------ MNIST

#[test]
fn mnist_int8_ops_params_and_layouts() {
    let target = Target::tflite_int8();
    let g = eval_graph("mnist-cnn", &target);
    let mut s = mnist_session(&g, true);
    let m = lower(&g, &target, &mnist_options(), &mut s).unwrap();

    assert_eq!(
        op_names(&m),
        [
            "QUANTIZE",
            "CONV_2D",
            "MAX_POOL_2D",
            "CONV_2D",
            "MAX_POOL_2D",
            "RESHAPE",
            "FULLY_CONNECTED",
            "DEQUANTIZE"
        ]
    );
    let activations: Vec<Activation> =
        m.ops
            .iter()
            .filter_map(|o| match o.kind {
                IntOpKind::Conv2D { activation, .. }
                | IntOpKind::FullyConnected { activation, .. } => Some(activation),
                _ => None,
            })
            .collect();
    assert_eq!(
        activations,
        [Activation::Relu6, Activation::Relu6, Activation::None]
    );

    // I/O: float in and out around the integer body.
    let input = &m.tensors[m.inputs[0]];
    assert_eq!((input.name.as_str(), input.dtype), ("input", DType::F32));
    assert_eq!(input.shape, [1, 28, 28, 1]);
    let output = &m.tensors[m.outputs[0]];
    assert_eq!(
        (output.name.as_str(), output.dtype),
        ("logits/BiasAdd", DType::F32)
    );
    assert_eq!(output.shape, [1, 10]);

    // [0, 1]: scale 1/255, level 0 = int8 −128. [0, 6] → 6/255; [0, 4] → 4/255.
    // [−4, 12]: scale 16/255, zero point 4/(16/255) = 63.75 → level 64 = int8 −64.
    let q_in = tensor(&m, "input/quantize");
    assert_eq!(
        (q_in.dtype, &q_in.quant),
        (DType::I8, &per_tensor(1.0 / 255.0, -128))
    );
    let conv1 = tensor(&m, &format!("conv1/act_quant/{FQ}"));
    assert_eq!(conv1.quant, per_tensor(6.0 / 255.0, -128));
    assert_eq!(conv1.shape, [1, 28, 28, 16]);
    assert_eq!(tensor(&m, "pool1/MaxPool").quant, conv1.quant, "pools copy");
    let conv2 = tensor(&m, &format!("conv2/act_quant/{FQ}"));
    assert_eq!(conv2.quant, per_tensor(4.0 / 255.0, -128));
    assert_eq!(tensor(&m, "flatten/Reshape").quant, conv2.quant);
    let reshape_shape = tensor(&m, "flatten/Reshape/shape");
    assert_eq!(weight_values(reshape_shape), [-1, 1568]);
    let logits = tensor(&m, &format!("logits/act_quant/{FQ}"));
    assert_eq!(logits.quant, per_tensor(16.0 / 255.0, -64));

    // Weights: TFLite layouts, per-channel along the output channel, zero point 0.
    for (name, shape, channels) in [
        ("conv1", vec![16, 5, 5, 1], 16),
        ("conv2", vec![32, 5, 5, 16], 32),
        ("logits", vec![10, 1568], 10),
    ] {
        let w = tensor(&m, &format!("{name}/weights_quant/{FQ_PC}"));
        assert_eq!((w.dtype, &w.shape), (DType::I8, &shape), "{name}");
        let q = w.quant.as_ref().unwrap();
        assert_eq!(q.axis, Some(0));
        assert_eq!(q.zero_points, vec![0; channels]);
        assert!(weight_values(w).iter().all(|v| (-127..=127).contains(v)));
    }

    // Bias scale = S_in · S_w[c], per channel, zero point 0.
    for (layer, bias, input) in [
        (
            "conv1",
            "conv1/BatchNorm_Fold/bias",
            "input/quantize".to_string(),
        ),
        (
            "conv2",
            "conv2/BatchNorm_Fold/bias",
            "pool1/MaxPool".to_string(),
        ),
        ("logits", "logits/biases", "flatten/Reshape".to_string()),
    ] {
        let s_in = tensor(&m, &input).quant.as_ref().unwrap().scales[0];
        let w = tensor(&m, &format!("{layer}/weights_quant/{FQ_PC}"));
        let b = tensor(&m, bias);
        let bq = b.quant.as_ref().unwrap();
        assert_eq!(b.dtype, DType::I32);
        let want: Vec<f32> = w
            .quant
            .as_ref()
            .unwrap()
            .scales
            .iter()
            .map(|s| s_in * s)
            .collect();
        assert_eq!(bq.scales, want, "{layer}");
        assert_eq!(bq.zero_points, vec![0; want.len()]);
        assert_eq!(bq.axis, Some(0));
    }
    // Every op's inputs were produced earlier (topological order).
    let mut known: Vec<usize> = m.inputs.clone();
    known.extend(
        m.tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.data.is_some())
            .map(|(i, _)| i),
    );
    for op in &m.ops {
        for i in op.inputs.iter().flatten() {
            assert!(
                known.contains(i),
                "{} reads {} before it is computed",
                op.kind.tflite_name(),
                m.tensors[*i].name
            );
        }
        known.extend(&op.outputs);
    }
}

#[test]
fn mnist_int8_dequantized_weights_equal_the_fake_quant_output_and_biases_round() {
    let target = Target::tflite_int8();
    let g = eval_graph("mnist-cnn", &target);
    let mut s = mnist_session(&g, true);
    let m = lower(&g, &target, &mnist_options(), &mut s).unwrap();
    for (layer, cin) in [("conv1", 1), ("conv2", 16)] {
        let name = format!("{layer}/weights_quant/{FQ_PC}");
        let fq = fetch(&mut s, &name); // [5, 5, cin, cout]
        let cout = fq.shape()[3];
        assert_dequantized_equal(
            tensor(&m, &name),
            &fq,
            |i| ((i[1] * 5 + i[2]) * cin + i[3]) * cout + i[0],
            |i| i[0],
        );
    }
    let name = format!("logits/weights_quant/{FQ_PC}");
    let fq = fetch(&mut s, &name); // [1568, 10]
    assert_dequantized_equal(tensor(&m, &name), &fq, |i| i[1] * 10 + i[0], |i| i[0]);

    // Biases: within half a bias step of the float bias.
    for bias in [
        "conv1/BatchNorm_Fold/bias",
        "conv2/BatchNorm_Fold/bias",
        "logits/biases",
    ] {
        let want = fetch(&mut s, bias);
        let t = tensor(&m, bias);
        let q = t.quant.as_ref().unwrap();
        for (c, (&v, &b)) in weight_values(t).iter().zip(want.iter()).enumerate() {
            let step = f64::from(q.scales[c]);
            let err = (v as f64 * step - f64::from(b)).abs();
            assert!(
                err <= step / 2.0 + 1e-12,
                "{bias}[{c}]: {v} · {step} vs {b}"
            );
        }
    }
}

#[test]
fn mnist_uint8_is_per_tensor_with_asymmetric_weights() {
    let target = Target::tflite_uint8();
    let g = eval_graph("mnist-cnn", &target);
    let mut s = mnist_session(&g, false);
    // A hand-chosen asymmetric weight range: narrow 8 bits on [−0.5, 1]:
    // scale 1.5/254, zero point 1 + 0.5/scale = 85.67 → 86.
    set_range(
        &mut s,
        "conv1/weights_quant/FakeQuantWithMinMaxVars",
        vec![-0.5],
        vec![1.0],
    );
    let options = LowerOptions {
        integer_io: true,
        ..mnist_options()
    };
    let m = lower(&g, &target, &options, &mut s).unwrap();
    assert_eq!(
        op_names(&m),
        [
            "CONV_2D",
            "MAX_POOL_2D",
            "CONV_2D",
            "MAX_POOL_2D",
            "RESHAPE",
            "FULLY_CONNECTED"
        ]
    );
    let input = &m.tensors[m.inputs[0]];
    assert_eq!((input.name.as_str(), input.dtype), ("input", DType::U8));
    assert_eq!(input.quant, per_tensor(1.0 / 255.0, 0));
    let output = &m.tensors[m.outputs[0]];
    assert_eq!(output.dtype, DType::U8);
    assert_eq!(output.quant, per_tensor(16.0 / 255.0, 64));
    let name = "conv1/weights_quant/FakeQuantWithMinMaxVars";
    let w = tensor(&m, name);
    assert_eq!((w.dtype, &w.shape), (DType::U8, &vec![16, 5, 5, 1]));
    assert_eq!(w.quant, per_tensor(1.5 / 254.0, 86));
    let fq = fetch(&mut s, name);
    assert_dequantized_equal(w, &fq, |i| (i[1] * 5 + i[2]) * 16 + i[0], |_| 0);
    let name = "logits/weights_quant/FakeQuantWithMinMaxVars";
    let fq = fetch(&mut s, name);
    assert_dequantized_equal(tensor(&m, name), &fq, |i| i[1] * 10 + i[0], |_| 0);
    let b = tensor(&m, "logits/biases");
    let s_w = tensor(&m, name).quant.as_ref().unwrap().scales[0];
    let s_in = tensor(&m, "flatten/Reshape").quant.as_ref().unwrap().scales[0];
    assert_eq!(b.quant, per_tensor(s_in * s_w, 0));
}

#[test]
fn asymmetric_int8_weights_are_refused_unless_requantized() {
    let target = Target::tflite_int8();
    let g = eval_graph("mnist-cnn", &target);
    let mut s = mnist_session(&g, true);
    let name = format!("conv1/weights_quant/{FQ_PC}");
    set_range(&mut s, &name, vec![-0.5; 16], vec![1.0; 16]);
    let err = lower(&g, &target, &mnist_options(), &mut s).unwrap_err();
    // Level 86 (see the uint8 test) is int8 −42.
    assert_eq!(
        err,
        LowerError::AsymmetricWeights {
            node: name.clone(),
            channel: 0,
            zero_point: -42
        }
    );
    assert!(err.to_string().contains("training_options"), "{err}");

    let options = LowerOptions {
        requantize_weights: true,
        ..mnist_options()
    };
    let m = lower(&g, &target, &options, &mut s).unwrap();
    let w = tensor(&m, &name);
    let q = w.quant.as_ref().unwrap();
    // Requantized on [−1, 1], narrow: scale 2/254, zero point 0.
    assert_eq!(q.scales, vec![2.0f32 / 254.0; 16]);
    assert_eq!(q.zero_points, vec![0; 16]);
}

#[test]
fn delayed_quantization_lowers_the_quantized_branch() {
    // Decision 7: with a quant_delay the consumers read `delayed_quant`
    // selects; the deployed model is the quantized branch.
    let target = Target::tflite_int8();
    let mut g = models::mnist_cnn(ModelOptions::default()).unwrap();
    let options = quant_passes::EvalOptions {
        quant_delay: Some(100),
        ..target.eval_options()
    };
    experimental_create_eval_graph(&mut g, &options).unwrap();
    assert!(g.by_name("conv1/weights_quant/delayed_quant").is_some());
    let mut s = mnist_session(&g, true);
    let m = lower(&g, &target, &mnist_options(), &mut s).unwrap();
    assert_eq!(
        op_names(&m),
        [
            "QUANTIZE",
            "CONV_2D",
            "MAX_POOL_2D",
            "CONV_2D",
            "MAX_POOL_2D",
            "RESHAPE",
            "FULLY_CONNECTED",
            "DEQUANTIZE"
        ]
    );
    assert_eq!(
        tensor(&m, &format!("logits/act_quant/{FQ}")).quant,
        per_tensor(16.0 / 255.0, -64)
    );
}

// ----------------------------------------------------------------- errors

#[test]
fn a_missing_input_range_names_the_input() {
    let target = Target::tflite_int8();
    let g = eval_graph("mnist-cnn", &target);
    let mut s = mnist_session(&g, true);
    let options = LowerOptions {
        input_ranges: vec![],
        ..mnist_options()
    };
    let err = lower(&g, &target, &options, &mut s).unwrap_err();
    assert!(
        matches!(&err, LowerError::MissingRange { node, .. } if node == "input"),
        "{err}"
    );
    assert!(err.to_string().contains("input_ranges"));
}

#[test]
fn an_unsupported_op_is_named() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("x", DType::F32, Shape(vec![None, Some(4)]))
        .unwrap();
    let t = b.unary("Tanh", "t/Tanh", x).unwrap();
    let attrs: Attrs = [
        ("min".into(), AttrValue::Float(-1.0)),
        ("max".into(), AttrValue::Float(1.0)),
    ]
    .into_iter()
    .collect();
    b.add("FakeQuantWithMinMaxArgs", "t/fq", &[t], attrs)
        .unwrap();
    let g = b.finish();
    let options = LowerOptions {
        outputs: vec!["t/Tanh".into()],
        input_ranges: vec![("x".into(), -1.0, 1.0)],
        ..LowerOptions::default()
    };
    let mut s = Session::new(g.clone()).unwrap();
    let err = lower(&g, &Target::tflite_int8(), &options, &mut s).unwrap_err();
    assert_eq!(
        err,
        LowerError::UnsupportedOp {
            node: "t/Tanh".into(),
            op: "Tanh".into(),
            reason: "there is no integer lowering for this op type".into()
        }
    );
    assert_eq!(check_lowering(&g, &Target::tflite_int8(), &options), [err]);
}

#[test]
fn check_mode_lists_every_problem() {
    let target = Target::tflite_int8();
    let g = eval_graph("mnist-cnn", &target);
    assert_eq!(check_lowering(&g, &target, &mnist_options()), []);

    let restricted = Target {
        name: "no-pool-no-relu6".into(),
        ops: target
            .ops
            .iter()
            .filter(|o| *o != "MAX_POOL_2D")
            .cloned()
            .collect(),
        fused_activations: vec![Activation::None, Activation::Relu],
        ..target.clone()
    };
    let options = LowerOptions {
        input_ranges: vec![],
        outputs: vec!["logits/BiasAdd".into(), "nowhere".into()],
        ..mnist_options()
    };
    let errors = check_lowering(&g, &restricted, &options);
    let summary: Vec<String> = errors
        .iter()
        .map(|e| match e {
            LowerError::MissingRange { node, .. } => format!("range {node}"),
            LowerError::IllegalOp { node, op, .. } => format!("op {node} {op}"),
            LowerError::IllegalActivation {
                node, activation, ..
            } => {
                format!("act {node} {activation:?}")
            }
            LowerError::BadName { what, name, .. } => format!("name {what} {name}"),
            other => format!("other {other}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "range input",
            "act conv1/Relu6 Relu6",
            "op pool1/MaxPool MAX_POOL_2D",
            "act conv2/Relu6 Relu6",
            "op pool2/MaxPool MAX_POOL_2D",
            "name output nowhere",
        ]
    );

    // Per-channel weights on the per-tensor uint8 target: each layer named.
    let errors = check_lowering(&g, &Target::tflite_uint8(), &mnist_options());
    let nodes: Vec<&str> = errors
        .iter()
        .map(|e| match e {
            LowerError::PerChannelNotSupported { node, .. } => node.as_str(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(
        nodes,
        [
            format!("conv1/weights_quant/{FQ_PC}"),
            format!("conv2/weights_quant/{FQ_PC}"),
            format!("logits/weights_quant/{FQ_PC}")
        ]
    );
    assert!(matches!(
        check_lowering(&g, &target, &LowerOptions::default())[..],
        [LowerError::NoOutputs, LowerError::MissingRange { .. }]
    ));
}

// ----------------------------------------------------------- resnet block

#[test]
fn resnet_block_lowers_bypasses_depthwise_and_mean() {
    let target = Target::tflite_int8();
    let g = eval_graph("resnet-block", &target);
    let mut s = Session::new(g.clone()).unwrap();
    calibrate_weights(&mut s, &g, true);
    let options = LowerOptions {
        outputs: vec!["logits/BiasAdd".into()],
        input_ranges: vec![("input".into(), 0.0, 1.0)],
        ..LowerOptions::default()
    };
    let m = lower(&g, &target, &options, &mut s).unwrap();
    assert_eq!(
        op_names(&m),
        [
            "QUANTIZE",
            "CONV_2D",           // stem
            "MAX_POOL_2D",       // stem/MaxPool
            "CONV_2D",           // block1/conv_a
            "CONV_2D",           // block1/conv_b (conv_quant, no activation)
            "ADD",               // block1/add + Relu6
            "DEPTHWISE_CONV_2D", // separable/depthwise
            "CONV_2D",           // separable/pointwise
            "CONV_2D",           // block2/conv
            "ADD",               // block2/add (post-activation bypass)
            "MEAN",
            "FULLY_CONNECTED",
            "DEQUANTIZE"
        ]
    );
    let kinds: Vec<&IntOpKind> = m.ops.iter().map(|o| &o.kind).collect();
    assert!(matches!(
        kinds[4],
        IntOpKind::Conv2D {
            activation: Activation::None,
            ..
        }
    ));
    assert_eq!(
        kinds[5],
        &IntOpKind::Add {
            activation: Activation::Relu6
        }
    );
    assert!(matches!(
        kinds[6],
        IntOpKind::DepthwiseConv2D {
            depth_multiplier: 1,
            activation: Activation::Relu6,
            ..
        }
    ));
    assert_eq!(
        kinds[9],
        &IntOpKind::Add {
            activation: Activation::None
        }
    );
    assert_eq!(kinds[10], &IntOpKind::Mean { keep_dims: false });

    // The bypass adds read the conv_quant output and the pooled stem.
    let add1 = &m.ops[5];
    let names: Vec<&str> = add1
        .inputs
        .iter()
        .map(|i| m.tensors[i.unwrap()].name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            format!("block1/conv_b/conv_quant/{FQ}").as_str(),
            "stem/MaxPool"
        ]
    );
    // Default ranges of the eval rewrite: conv_quant/post-bypass [−6, 6]
    // (scale 12/255; in float32 6/scale is exactly 127.5, rounded half up
    // to level 128 = int8 0), act_quant [0, 6].
    let conv_b = tensor(&m, &format!("block1/conv_b/conv_quant/{FQ}"));
    assert_eq!(conv_b.quant, per_tensor(12.0 / 255.0, 0));
    assert_eq!(
        tensor(&m, &format!("block1/act_quant/{FQ}")).quant,
        per_tensor(6.0 / 255.0, -128)
    );
    // MEAN keeps its input's parameters.
    let mean = tensor(&m, "pool/Mean");
    let bypass = tensor(&m, &format!("block2/post_activation_bypass_quant/{FQ}"));
    assert_eq!(mean.quant, bypass.quant);
    assert_eq!(mean.shape, [1, 16]);
    assert_eq!(weight_values(tensor(&m, "pool/Mean/axes")), [1, 2]);

    // Depthwise weights: [1, kh, kw, in·mult], per channel along axis 3
    // (the rewrite quantizes the [3, 3, 8] reshape: same element order).
    let name = format!("separable/depthwise/weights_quant/{FQ_PC}");
    let w = tensor(&m, &name);
    assert_eq!(w.shape, [1, 3, 3, 8]);
    assert_eq!(w.quant.as_ref().unwrap().axis, Some(3));
    assert_eq!(w.quant.as_ref().unwrap().scales.len(), 8);
    let fq = fetch(&mut s, &name);
    assert_dequantized_equal(w, &fq, |i| (i[1] * 3 + i[2]) * 8 + i[3], |i| i[3]);
    let b = tensor(&m, "separable/depthwise/BatchNorm_Fold/bias");
    assert_eq!(b.quant.as_ref().unwrap().scales.len(), 8);
}

#[test]
fn per_tensor_weights_are_legal_for_int8() {
    let target = Target::tflite_int8();
    let mut g = models::resnet_block(ModelOptions::default()).unwrap();
    experimental_create_eval_graph(
        &mut g,
        &quant_passes::EvalOptions {
            per_channel: false,
            ..target.eval_options()
        },
    )
    .unwrap();
    let mut s = Session::new(g.clone()).unwrap();
    calibrate_weights(&mut s, &g, true);
    let options = LowerOptions {
        outputs: vec!["logits/BiasAdd".into()],
        input_ranges: vec![("input".into(), 0.0, 1.0)],
        ..LowerOptions::default()
    };
    let m = lower(&g, &target, &options, &mut s).unwrap();
    let name = format!("separable/depthwise/weights_quant/{FQ}");
    let w = tensor(&m, &name);
    assert_eq!(w.shape, [1, 3, 3, 8]);
    let q = w.quant.as_ref().unwrap();
    assert_eq!(
        (q.scales.len(), q.zero_points.as_slice(), q.axis),
        (1, &[0][..], None)
    );
    let fq = fetch(&mut s, &name); // [3, 3, 8, 1]: same element order
    assert_dequantized_equal(w, &fq, |i| (i[1] * 3 + i[2]) * 8 + i[3], |_| 0);
    let b = tensor(&m, "separable/depthwise/BatchNorm_Fold/bias");
    assert_eq!(b.quant.as_ref().unwrap().axis, None);
}

// -------------------------------------------- nudging against TensorFlow

#[test]
fn nudged_levels_reproduce_tensorflow_fake_quant_outputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tf/fake_quant_vectors");
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let load = |f: &Value| -> Vec<f32> {
        let a: ArrayD<f32> = read_npy(dir.join(f.as_str().unwrap())).unwrap();
        a.iter().copied().collect()
    };
    let mut checked = 0;
    for case in &cases {
        let bits = case["num_bits"].as_u64().unwrap() as u32;
        let narrow = case["narrow_range"].as_bool().unwrap();
        let rounding = match case["op"].as_str().unwrap() {
            "vars" => Rounding::Divide,
            _ => Rounding::Multiply,
        };
        let (x, y) = (load(&case["x"]), load(&case["y"]));
        let (mins, maxs) = (load(&case["min_file"]), load(&case["max_file"]));
        for (i, (&xv, &yv)) in x.iter().zip(&y).enumerate() {
            let c = i % mins.len();
            if check_range(mins[c], maxs[c]).is_err() {
                continue; // [0, 0]: the kernel's special case, never lowered
            }
            let n = nudge(mins[c], maxs[c], bits, narrow);
            let got = n.steps(xv, rounding) as f32 * n.scale;
            assert_eq!(
                got.to_bits(),
                yv.to_bits(),
                "{} element {i}: x = {xv}",
                case["name"]
            );
            checked += 1;
        }
    }
    assert!(checked > 10_000, "{checked}");
}

// ------------------------------------- integer execution vs the eval graph

/// Sets every activation range to what a batch of `x` observes (including
/// 0), as the EMA quantizers would after one step.
fn calibrate_activations(s: &mut Session, graph: &Graph, x: &Tensor) {
    let fqs: Vec<(String, String)> = graph
        .nodes()
        .filter(|(_, n)| n.op() == FQ && !n.name().contains("weights_quant/"))
        .map(|(_, n)| (n.name().to_string(), graph.outlet_name(n.inputs()[0])))
        .collect();
    let fetches: Vec<&str> = fqs.iter().map(|(_, i)| i.as_str()).collect();
    let values = s.run(&[("input", x.clone())], &fetches).unwrap();
    for ((fq, _), v) in fqs.iter().zip(values) {
        let a = v.array::<f32>().unwrap();
        let lo = a.iter().fold(0f32, |m, &v| m.min(v));
        let hi = a.iter().fold(0f32, |m, &v| m.max(v));
        set_range(s, fq, vec![lo], vec![hi.max(lo + 1e-3)]);
    }
}

fn random_images(seed: u64, batch: usize) -> Tensor {
    let mut rng = Rng::new(seed);
    let v: Vec<f32> = (0..batch * 28 * 28).map(|_| rng.uniform()).collect();
    Tensor::from_vec(&[batch, 28, 28, 1], v).unwrap()
}

/// Runs the lowered model (float I/O) and the eval graph on `x` and returns
/// the largest difference of the outputs in output quantization steps.
fn steps_apart(m: &IntModel, s: &mut Session, fq: &str, x: &Tensor) -> f32 {
    let got = IntExecutor::new(m)
        .unwrap()
        .run(std::slice::from_ref(x))
        .unwrap();
    let got = got[0].array::<f32>().unwrap();
    let want = fetch_fed(s, fq, x);
    assert_eq!(got.shape(), want.shape());
    let step = tensor(m, fq).quant.as_ref().unwrap().scales[0];
    got.iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs() / step)
        .fold(0f32, f32::max)
}

fn fetch_fed(s: &mut Session, name: &str, x: &Tensor) -> ArrayD<f32> {
    s.run(&[("input", x.clone())], &[name]).unwrap()[0]
        .array::<f32>()
        .unwrap()
        .clone()
}

#[test]
fn lowered_mnist_runs_within_two_output_steps_of_the_eval_graph() {
    for target in [Target::tflite_int8(), Target::tflite_uint8()] {
        let g = eval_graph("mnist-cnn", &target);
        let mut s = Session::new(g.clone()).unwrap();
        calibrate_weights(&mut s, &g, target.symmetric_weights);
        calibrate_activations(&mut s, &g, &random_images(1, 8));
        let m = lower(&g, &target, &mnist_options(), &mut s).unwrap();
        let fq = format!("logits/act_quant/{FQ}");
        let x = random_images(2, 4);
        let d = steps_apart(&m, &mut s, &fq, &x);
        assert!(d <= 2.0, "{}: {d} steps apart", target.name);
    }
}

#[test]
fn lowered_resnet_block_runs_within_two_output_steps_of_the_eval_graph() {
    let target = Target::tflite_int8();
    let g = eval_graph("resnet-block", &target);
    let mut s = Session::new(g.clone()).unwrap();
    calibrate_weights(&mut s, &g, true);
    calibrate_activations(&mut s, &g, &random_images(3, 8));
    let options = LowerOptions {
        outputs: vec!["logits/BiasAdd".into()],
        input_ranges: vec![("input".into(), 0.0, 1.0)],
        ..LowerOptions::default()
    };
    let m = lower(&g, &target, &options, &mut s).unwrap();
    // The eval graph averages exactly where the integer MEAN rounds to its
    // input's grid, hence up to two steps (measured: 2.0 at most).
    let fq = format!("logits/act_quant/{FQ}");
    let d = steps_apart(&m, &mut s, &fq, &random_images(4, 4));
    assert!(d <= 2.0 + 1e-3, "{d} steps apart");
}

// ------------------------------- concat, pad, average pool and softmax

/// Two conv branches (ReLU6 and ReLU) concatenated on channels, padded,
/// average-pooled, flattened, a dense layer and a softmax.
fn branches_graph() -> Graph {
    use quant_core::builder::Padding;
    let mut rng = Rng::new(7);
    let mut normal = |shape: &[usize], scale: f32| {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.normal() * scale).collect();
        Tensor::from_vec(shape, v).unwrap()
    };
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder(
            "input",
            DType::F32,
            Shape(vec![None, Some(8), Some(8), Some(2)]),
        )
        .unwrap();
    let wa = b
        .variable("a/weights", normal(&[3, 3, 2, 4], 0.5), true)
        .unwrap();
    let a = b.conv2d("a/Conv2D", x, wa, [1, 1], Padding::Same).unwrap();
    let a = b.relu6("a/Relu6", a).unwrap();
    let wb = b
        .variable("b/weights", normal(&[1, 1, 2, 4], 0.5), true)
        .unwrap();
    let c = b.conv2d("b/Conv2D", x, wb, [1, 1], Padding::Same).unwrap();
    let c = b.unary("Relu", "b/Relu", c).unwrap();
    let cat = b.concat("cat", &[a, c], 3).unwrap();
    let pads = Tensor::from_vec(&[4, 2], vec![0i32, 0, 1, 1, 1, 1, 0, 0]).unwrap();
    let pads = b.constant("pad/paddings", pads).unwrap();
    let pad = b.add("Pad", "pad", &[cat, pads], Attrs::new()).unwrap();
    let avg = b
        .pool("AvgPool", "avg", pad.into(), 2, 2, Padding::Valid)
        .unwrap();
    let flat = b.reshape("flat", avg, &[-1, 200]).unwrap();
    let wf = b
        .variable("fc/weights", normal(&[200, 3], 0.1), true)
        .unwrap();
    let bf = b.variable("fc/biases", normal(&[3], 0.1), true).unwrap();
    let y = b.matmul("fc/MatMul", flat, wf, false, false).unwrap();
    let y = b.bias_add("fc/BiasAdd", y, bf).unwrap();
    b.unary("Softmax", "prob", y).unwrap();
    b.finish()
}

#[test]
fn concat_pad_average_pool_and_softmax() {
    for target in [Target::tflite_int8(), Target::tflite_uint8()] {
        let mut g = branches_graph();
        experimental_create_eval_graph(&mut g, &target.eval_options()).unwrap();
        let mut s = Session::new(g.clone()).unwrap();
        calibrate_weights(&mut s, &g, target.symmetric_weights);
        set_range(&mut s, &format!("a/act_quant/{FQ}"), vec![0.0], vec![6.0]);
        set_range(&mut s, &format!("b/act_quant/{FQ}"), vec![0.0], vec![3.0]);
        set_range(&mut s, &format!("fc/act_quant/{FQ}"), vec![-4.0], vec![4.0]);
        let options = LowerOptions {
            outputs: vec!["fc/BiasAdd".into(), "prob".into()],
            input_ranges: vec![("input".into(), -1.0, 1.0)],
            ..LowerOptions::default()
        };
        let m = lower(&g, &target, &options, &mut s).unwrap();
        let int8 = target.storage == quant_passes::Storage::I8;
        let mut want = vec!["QUANTIZE", "CONV_2D", "CONV_2D"];
        if int8 {
            // int8 CONCATENATION needs equal parameters: b ([0, 3]) is
            // requantized to the union range [0, 6], which is a's.
            want.push("QUANTIZE");
        }
        want.extend([
            "CONCATENATION",
            "PAD",
            "AVERAGE_POOL_2D",
            "RESHAPE",
            "FULLY_CONNECTED",
            "DEQUANTIZE",
            "SOFTMAX",
            "DEQUANTIZE",
        ]);
        assert_eq!(op_names(&m), want, "{}", target.name);
        let (offset, name) = if int8 {
            (-128, "tflite-int8")
        } else {
            (0, "tflite-uint8")
        };
        assert_eq!(target.name, name);
        let a = per_tensor(6.0 / 255.0, offset);
        assert_eq!(tensor(&m, &format!("a/act_quant/{FQ}")).quant, a);
        assert_eq!(
            tensor(&m, &format!("b/act_quant/{FQ}")).quant,
            per_tensor(3.0 / 255.0, offset)
        );
        assert_eq!(tensor(&m, "cat").quant, a, "union of [0, 6] and [0, 3]");
        assert_eq!(tensor(&m, "pad").quant, a);
        assert_eq!(tensor(&m, "avg").quant, a);
        assert_eq!(
            weight_values(tensor(&m, "pad/paddings")),
            [0, 0, 1, 1, 1, 1, 0, 0]
        );
        assert_eq!(tensor(&m, "prob").quant, per_tensor(1.0 / 256.0, offset));
        assert!(matches!(
            m.ops
                .iter()
                .find(|o| o.kind.tflite_name() == "CONCATENATION")
                .unwrap()
                .kind,
            IntOpKind::Concatenation { axis: 3, .. }
        ));

        // The logits against the eval graph: within two output steps. The
        // softmax against a double-precision softmax of the integer model's
        // own logits: within one step of 1/256.
        let mut rng = Rng::new(11);
        let v: Vec<f32> = (0..4 * 8 * 8 * 2)
            .map(|_| rng.uniform() * 2.0 - 1.0)
            .collect();
        let x = Tensor::from_vec(&[4, 8, 8, 2], v).unwrap();
        let fc = format!("fc/act_quant/{FQ}");
        assert!(steps_apart(&m, &mut s, &fc, &x) <= 2.0, "{}", target.name);
        let out = IntExecutor::new(&m)
            .unwrap()
            .run(std::slice::from_ref(&x))
            .unwrap();
        let (logits, prob) = (
            out[0].array::<f32>().unwrap(),
            out[1].array::<f32>().unwrap(),
        );
        assert_eq!(prob.shape(), [4, 3]);
        for row in 0..4 {
            let l: Vec<f64> = (0..3).map(|j| f64::from(logits[[row, j]])).collect();
            let top = l.iter().fold(f64::MIN, |a, &b| a.max(b));
            let sum: f64 = l.iter().map(|v| (v - top).exp()).sum();
            for j in 0..3 {
                let want = (l[j] - top).exp() / sum;
                let d = (f64::from(prob[[row, j]]) - want).abs() * 256.0;
                assert!(d <= 1.0, "{} [{row}, {j}]: {d} steps", target.name);
            }
        }
    }
}

// ------------------------------------------------------ TFLite round trip

#[test]
fn lowered_models_are_legal_tflite_and_round_trip() {
    for target in [Target::tflite_int8(), Target::tflite_uint8()] {
        let g = eval_graph("mnist-cnn", &target);
        let mut s = mnist_session(&g, target.symmetric_weights);
        for integer_io in [false, true] {
            let options = LowerOptions {
                integer_io,
                ..mnist_options()
            };
            let m = lower(&g, &target, &options, &mut s).unwrap();
            let bytes = quant_tflite::write(&m)
                .unwrap_or_else(|e| panic!("{} (integer I/O {integer_io}): {e}", target.name));
            let back = quant_tflite::read(&bytes).unwrap();
            assert_eq!(back, m, "{} (integer I/O {integer_io})", target.name);
        }
    }
}

// ---------------------------------------------------- mul and logistic

#[test]
fn mul_of_two_activations_and_a_sigmoid() {
    use quant_core::builder::Padding;
    let mut rng = Rng::new(9);
    let mut normal = |shape: &[usize]| {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.normal() * 0.5).collect();
        Tensor::from_vec(shape, v).unwrap()
    };
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder(
            "input",
            DType::F32,
            Shape(vec![None, Some(6), Some(6), Some(2)]),
        )
        .unwrap();
    let wa = b
        .variable("a/weights", normal(&[3, 3, 2, 4]), true)
        .unwrap();
    let a = b.conv2d("a/Conv2D", x, wa, [1, 1], Padding::Same).unwrap();
    let a = b.relu6("a/Relu6", a).unwrap();
    let wb = b
        .variable("b/weights", normal(&[1, 1, 2, 4]), true)
        .unwrap();
    let c = b.conv2d("b/Conv2D", x, wb, [1, 1], Padding::Same).unwrap();
    let c = b.relu6("b/Relu6", c).unwrap();
    let p = b.binary("Mul", "gate/Mul", a, c).unwrap();
    b.unary("Sigmoid", "gate/Sigmoid", p).unwrap();
    let float_graph = b.finish();
    for target in [Target::tflite_int8(), Target::tflite_uint8()] {
        let mut g = float_graph.clone();
        experimental_create_eval_graph(&mut g, &target.eval_options()).unwrap();
        let mul_fq = format!("gate/Mul/activation_Mul_quant/{FQ}");
        assert!(
            g.by_name(&mul_fq).is_some(),
            "the intermediate pass quantizes the Mul"
        );
        let mut s = Session::new(g.clone()).unwrap();
        calibrate_weights(&mut s, &g, target.symmetric_weights);
        set_range(&mut s, &format!("a/act_quant/{FQ}"), vec![0.0], vec![6.0]);
        set_range(&mut s, &format!("b/act_quant/{FQ}"), vec![0.0], vec![6.0]);
        set_range(&mut s, &mul_fq, vec![0.0], vec![8.0]);
        let options = LowerOptions {
            outputs: vec!["gate/Mul".into(), "gate/Sigmoid".into()],
            input_ranges: vec![("input".into(), -1.0, 1.0)],
            ..LowerOptions::default()
        };
        let m = lower(&g, &target, &options, &mut s).unwrap();
        assert_eq!(
            op_names(&m),
            [
                "QUANTIZE",
                "CONV_2D",
                "CONV_2D",
                "MUL",
                "DEQUANTIZE",
                "LOGISTIC",
                "DEQUANTIZE"
            ],
            "{}",
            target.name
        );
        let offset = if target.storage == quant_passes::Storage::I8 {
            -128
        } else {
            0
        };
        assert_eq!(tensor(&m, &mul_fq).quant, per_tensor(8.0 / 255.0, offset));
        assert_eq!(
            tensor(&m, "gate/Sigmoid").quant,
            per_tensor(1.0 / 256.0, offset)
        );

        let mut rng = Rng::new(13);
        let v: Vec<f32> = (0..4 * 6 * 6 * 2)
            .map(|_| rng.uniform() * 2.0 - 1.0)
            .collect();
        let x = Tensor::from_vec(&[4, 6, 6, 2], v).unwrap();
        assert!(
            steps_apart(&m, &mut s, &mul_fq, &x) <= 2.0,
            "{}",
            target.name
        );
        // The logistic against the sigmoid of the model's own MUL output:
        // within one step of 1/256.
        let out = IntExecutor::new(&m)
            .unwrap()
            .run(std::slice::from_ref(&x))
            .unwrap();
        let (prod, sig) = (
            out[0].array::<f32>().unwrap(),
            out[1].array::<f32>().unwrap(),
        );
        for (p, y) in prod.iter().zip(sig.iter()) {
            let want = 1.0 / (1.0 + (-f64::from(*p)).exp());
            assert!(
                (f64::from(*y) - want).abs() * 256.0 <= 1.0,
                "{}: {y} vs {want}",
                target.name
            );
        }
    }
}
