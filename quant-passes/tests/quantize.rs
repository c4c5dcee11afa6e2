//! `Quantize`, eval form: where fake quants go (snapshots of the dump,
//! reference scenarios of §8 by number, hand-written expectations for
//! TensorFlow's frozen graphs, rules that must not fire), idempotence, and
//! semantics (the quantized graph runs and its fake-quant outputs lie on
//! the quantization grid).
//!
//! Snapshots live in `tests/snapshots/*.txt`; after a deliberate change,
//! regenerate them with `UPDATE_SNAPSHOTS=1 cargo test -p quant-passes` and
//! review the diff against reference semantics §3.3.

use quant_core::builder::{GraphBuilder, Padding};
use quant_core::graph::dump;
use quant_core::models;
use quant_core::serialize::read_graph;
use quant_core::{DType, Graph, OpRegistry, OutletId, Shape, Tensor};
use quant_kernels::kernels::fake_quant::{FakeQuantParams, nudge};
use quant_kernels::kernels::observers::{EmaState, asymmetric_range, symmetric_range};
use quant_kernels::session::Session;
use quant_passes::passes::quantize::{ACT_QUANT, INTERMEDIATE_QUANT, LAYER_MATCH, WEIGHTS_QUANT};
use quant_passes::{
    FoldBatchNorms, PassManager, PassReport, Quantize, QuantizeConfig, QuantizerRole,
};
use std::path::Path;

mod common;
use common::{check_snapshot, line, model};

fn quantize_with(graph: &mut Graph, config: &QuantizeConfig) -> PassReport {
    PassManager::new()
        .with(FoldBatchNorms)
        .with(Quantize)
        .run(graph, config)
        .unwrap()
}

fn quantize(graph: &mut Graph) -> PassReport {
    quantize_with(graph, &QuantizeConfig::eval())
}

/// `(fake-quant node, role)` for every inserted quantizer, in order.
fn inserted(report: &PassReport) -> Vec<(String, &'static str)> {
    report
        .quantizers
        .iter()
        .map(|q| (q.node.clone(), q.role.as_str()))
        .collect()
}

fn fq(prefix: &str) -> String {
    format!("{prefix}/FakeQuantWithMinMaxVars")
}

fn ops_of(graph: &Graph, op: &str) -> Vec<String> {
    graph
        .nodes()
        .filter(|(_, n)| n.op() == op)
        .map(|(_, n)| n.name().to_string())
        .collect()
}

/// Quantizing again changes nothing (§3.8, decision 9).
fn assert_idempotent(graph: &Graph, config: &QuantizeConfig) {
    let mut again = graph.clone();
    let report = quantize_with(&mut again, config);
    assert!(report.is_empty(), "{:?}", report.applied);
    assert!(report.quantizers.is_empty());
    assert_eq!(dump(&again), dump(graph));
}

// ------------------------------------------------------------ built-in models

#[test]
fn mnist_cnn_quantizes_as_the_snapshot_says() {
    let mut g = model("mnist-cnn");
    let report = quantize(&mut g);
    assert_eq!(
        inserted(&report),
        [
            (fq("conv1/weights_quant"), "weights"),
            (fq("conv1/act_quant"), "activation"),
            (fq("conv2/weights_quant"), "weights"),
            (fq("conv2/act_quant"), "activation"),
            (fq("logits/weights_quant"), "weights"),
            (fq("logits/act_quant"), "activation"),
        ]
    );
    check_snapshot("mnist_cnn_eval_quantize", &dump(&g));
    assert_idempotent(&g, &QuantizeConfig::eval());
}

#[test]
fn resnet_block_quantizes_as_the_snapshot_says() {
    let mut g = model("resnet-block");
    let report = quantize(&mut g);
    assert_eq!(
        inserted(&report),
        [
            // Stage 1 (post-activation bypass): block2/add = AddV2(pointwise Relu6, conv Relu6).
            (fq("block2/conv/weights_quant"), "weights"),
            (fq("block2/conv/act_quant"), "activation"),
            (
                fq("block2/post_activation_bypass_quant"),
                "post_activation_bypass"
            ),
            // Stage 2 (activation), in graph order of the activations.
            (fq("stem/weights_quant"), "weights"),
            (fq("stem/act_quant"), "activation"),
            (fq("block1/conv_a/weights_quant"), "weights"),
            (fq("block1/conv_a/act_quant"), "activation"),
            // conv_b feeds the bypass block1/add → Relu6: act_quant at the parent scope.
            (fq("block1/conv_b/weights_quant"), "weights"),
            (fq("block1/act_quant"), "activation"),
            (fq("block1/conv_b/conv_quant"), "bias_add"),
            (fq("separable/depthwise/weights_quant"), "weights"),
            (fq("separable/depthwise/act_quant"), "activation"),
            (fq("separable/pointwise/weights_quant"), "weights"),
            (fq("separable/pointwise/act_quant"), "activation"),
            // Stage 3 (final layer): act_quant on the bias add.
            (fq("logits/weights_quant"), "weights"),
            (fq("logits/act_quant"), "activation"),
        ]
    );
    check_snapshot("resnet_block_eval_quantize", &dump(&g));
    assert_idempotent(&g, &QuantizeConfig::eval());
}

#[test]
fn the_quantizer_nodes_are_those_of_section_3_9() {
    let mut g = model("mnist-cnn");
    quantize(&mut g);
    let p = "conv1/weights_quant";
    assert_eq!(
        line(&g, &fq(p)),
        format!(
            "{p}/FakeQuantWithMinMaxVars = FakeQuantWithMinMaxVars(conv1/mul_fold, {p}/min, {p}/max)"
        )
    );
    let q = g.by_name(&fq(p)).unwrap();
    assert_eq!(q.attr_int("num_bits").unwrap(), 8);
    assert!(q.attr_bool("narrow_range").unwrap());
    for (name, init) in [(format!("{p}/min"), -6.0f32), (format!("{p}/max"), 6.0)] {
        let v = g.by_name(&name).unwrap();
        assert_eq!(v.op(), "Variable");
        assert!(!v.attr_bool("trainable").unwrap());
        assert_eq!(
            v.attr_tensor("initial_value").unwrap(),
            &Tensor::scalar(init)
        );
    }
    assert_eq!(
        line(&g, "conv1/Conv2D_Fold"),
        format!("conv1/Conv2D_Fold = Conv2D(input, {p}/FakeQuantWithMinMaxVars)")
    );
    let a = "conv1/act_quant";
    assert_eq!(
        g.by_name(&format!("{a}/min"))
            .unwrap()
            .attr_tensor("initial_value")
            .unwrap(),
        &Tensor::scalar(0.0f32)
    );
    assert!(
        !g.by_name(&fq(a))
            .unwrap()
            .attr_bool("narrow_range")
            .unwrap()
    );
    assert_eq!(
        line(&g, "pool1/MaxPool"),
        format!("pool1/MaxPool = MaxPool({a}/FakeQuantWithMinMaxVars)")
    );
    // Eval graphs hold no range updates (scenario 54, eval half).
    let text = dump(&g);
    for update in [
        "AssignMinLast",
        "AssignMaxLast",
        "AssignMinEma",
        "AssignMaxEma",
    ] {
        assert!(!text.contains(update), "{update}");
    }
}

#[test]
fn scenario_53_bit_widths_reach_every_quantizer() {
    for (weight_bits, activation_bits) in [(4, 8), (8, 4), (2, 16)] {
        let config = QuantizeConfig {
            weight_bits,
            activation_bits,
            ..QuantizeConfig::eval()
        };
        for name in models::BUILTIN_MODELS {
            let mut g = model(name);
            let report = quantize_with(&mut g, &config);
            assert!(!report.quantizers.is_empty());
            for q in &report.quantizers {
                let want = if q.role == QuantizerRole::Weights {
                    weight_bits
                } else {
                    activation_bits
                };
                assert_eq!(q.num_bits, want, "{}", q.node);
                let node = g.by_name(&q.node).unwrap();
                assert_eq!(node.attr_int("num_bits").unwrap(), i64::from(want));
                assert_eq!(q.narrow_range, q.role == QuantizerRole::Weights);
                assert_eq!(
                    node.attr_bool("narrow_range").unwrap(),
                    q.role == QuantizerRole::Weights
                );
            }
            assert_idempotent(&g, &config);
        }
    }
}

#[test]
fn per_channel_weights_use_the_output_channel_axis() {
    let config = QuantizeConfig {
        per_channel: true,
        ..QuantizeConfig::eval()
    };
    let mut g = model("resnet-block");
    let report = quantize_with(&mut g, &config);
    assert!(
        report.skipped.iter().all(|s| s.rule != WEIGHTS_QUANT),
        "{:?}",
        report.skipped
    );
    for q in &report.quantizers {
        assert_eq!(
            q.per_channel,
            q.role == QuantizerRole::Weights,
            "{}",
            q.node
        );
    }
    let channels = |name: &str| {
        g.by_name(name)
            .unwrap()
            .attr_tensor("initial_value")
            .unwrap()
            .shape()
            .to_vec()
    };
    // Conv2D [3,3,8,8] → 8, MatMul [16,10] → 10.
    assert_eq!(channels("block1/conv_a/weights_quant/min"), [8]);
    assert_eq!(channels("logits/weights_quant/max"), [10]);
    // Depthwise [3,3,8,1]: per in·mult = 8 channels through a reshape and back.
    let p = "separable/depthwise/weights_quant";
    assert_eq!(channels(&format!("{p}/min")), [8]);
    assert_eq!(
        line(&g, &format!("{p}/Reshape")),
        format!("{p}/Reshape = Reshape(separable/depthwise/mul_fold, {p}/Reshape/shape)")
    );
    assert_eq!(
        line(&g, &format!("{p}/FakeQuantWithMinMaxVarsPerChannel")),
        format!(
            "{p}/FakeQuantWithMinMaxVarsPerChannel = FakeQuantWithMinMaxVarsPerChannel({p}/Reshape, {p}/min, {p}/max)"
        )
    );
    assert_eq!(
        line(&g, "separable/depthwise/depthwise_Fold"),
        format!(
            "separable/depthwise/depthwise_Fold = DepthwiseConv2dNative(block1/act_quant/FakeQuantWithMinMaxVars, {p}/Reshape_1)"
        )
    );
    assert_eq!(
        g.by_name(&format!("{p}/Reshape_1")).unwrap().outputs()[0].shape,
        Some(Shape::known(&[3, 3, 8, 1]))
    );
    check_snapshot("resnet_block_eval_quantize_per_channel", &dump(&g));
    assert_idempotent(&g, &config);
}

#[test]
fn per_channel_falls_back_to_per_tensor_for_a_transposed_matmul() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[2, 3]))
        .unwrap();
    b.scope("fc", |b| {
        let w = b.variable("weights", ramp(&[4, 3]), true)?;
        let y = b.matmul("MatMul", x, w, false, true)?;
        b.relu6("Relu6", y)
    })
    .unwrap();
    let mut g = b.finish();
    let config = QuantizeConfig {
        per_channel: true,
        ..QuantizeConfig::eval()
    };
    let report = quantize_with(&mut g, &config);
    assert_eq!(report.quantizers[0].node, fq("fc/weights_quant"));
    assert!(!report.quantizers[0].per_channel);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(
        report.skipped[0].reason,
        "per-channel weights: a MatMul with transpose_b is not supported; quantized per tensor"
    );
    assert_idempotent(&g, &config);
}

// ------------------------------------------------- TensorFlow frozen graphs

fn tf_graph(name: &str) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tf")
        .join(name)
        .join("graph.pb");
    read_graph(&path, OpRegistry::builtin()).unwrap()
}

fn expected(list: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    list.iter().map(|(p, r)| (fq(p), *r)).collect()
}

#[test]
fn the_tensorflow_cnn_gets_the_quantizers_the_rules_call_for() {
    // Written from §3.2/§3.3: three conv-BN-Relu6 layers matched by their
    // activation (stage 2, in graph order), the dense layer by its bias add
    // (stage 3). Weights are frozen Consts, folded into `mul_fold`.
    let mut g = tf_graph("cnn");
    let report = quantize(&mut g);
    assert_eq!(
        inserted(&report),
        expected(&[
            ("conv1/weights_quant", "weights"),
            ("conv1/act_quant", "activation"),
            ("sep2/depthwise/weights_quant", "weights"),
            ("sep2/depthwise/act_quant", "activation"),
            ("sep2/pointwise/weights_quant", "weights"),
            ("sep2/pointwise/act_quant", "activation"),
            ("logits/weights_quant", "weights"),
            ("logits/act_quant", "activation"),
        ])
    );
    assert_eq!(
        line(&g, &fq("conv1/weights_quant")),
        "conv1/weights_quant/FakeQuantWithMinMaxVars = FakeQuantWithMinMaxVars(conv1/mul_fold, \
         conv1/weights_quant/min, conv1/weights_quant/max)"
    );
    assert_eq!(
        line(&g, "logits/MatMul"),
        "logits/MatMul = MatMul(flatten/Reshape, logits/weights_quant/FakeQuantWithMinMaxVars)"
    );
    assert_eq!(
        line(&g, "Softmax"),
        "Softmax = Softmax(logits/act_quant/FakeQuantWithMinMaxVars)"
    );
    assert_idempotent(&g, &QuantizeConfig::eval());
}

#[test]
fn the_tensorflow_resnet_gets_the_quantizers_the_rules_call_for() {
    // Written from §3.2/§3.3. Stage 1 (post-bypass roots, graph order):
    // block1/add = stem/Relu6 + ... makes the stem a post-bypass match (its
    // add feeds a Relu6: no post_activation_bypass_quant); block2/add =
    // block1/Relu6 + ... matches block1/conv2 with its bypass block1/add
    // (act_quant at the parent scope block1, conv_quant on its add_fold;
    // block1/add feeds a Relu6: no add_quant); block3/add = block2/Relu6 +
    // block3/conv/Relu feeds the Mean: post_activation_bypass_quant.
    // Stage 2: block1/conv1, the two block2 branches, block2/project with
    // its bypass block2/add. Stage 3: the dense layer.
    let mut g = tf_graph("resnet");
    let report = quantize(&mut g);
    assert_eq!(
        inserted(&report),
        expected(&[
            ("stem/weights_quant", "weights"),
            ("stem/act_quant", "activation"),
            ("block1/conv2/weights_quant", "weights"),
            ("block1/act_quant", "activation"),
            ("block1/conv2/conv_quant", "bias_add"),
            ("block3/conv/weights_quant", "weights"),
            ("block3/conv/act_quant", "activation"),
            (
                "block3/post_activation_bypass_quant",
                "post_activation_bypass"
            ),
            ("block1/conv1/weights_quant", "weights"),
            ("block1/conv1/act_quant", "activation"),
            ("block2/branch_a/weights_quant", "weights"),
            ("block2/branch_a/act_quant", "activation"),
            ("block2/branch_b/weights_quant", "weights"),
            ("block2/branch_b/act_quant", "activation"),
            ("block2/project/weights_quant", "weights"),
            ("block2/act_quant", "activation"),
            ("block2/project/conv_quant", "bias_add"),
            ("logits/weights_quant", "weights"),
            ("logits/act_quant", "activation"),
        ])
    );
    // An unfolded layer's Const weights are quantized where they are.
    assert_eq!(
        line(&g, "block3/conv/Conv2D"),
        "block3/conv/Conv2D = Conv2D(block2/act_quant/FakeQuantWithMinMaxVars, \
         block3/conv/weights_quant/FakeQuantWithMinMaxVars)"
    );
    assert_eq!(
        line(&g, "block1/add"),
        "block1/add = AddV2(block1/conv2/conv_quant/FakeQuantWithMinMaxVars, \
         stem/act_quant/FakeQuantWithMinMaxVars)"
    );
    assert_idempotent(&g, &QuantizeConfig::eval());
}

// ----------------------------------------------------------------- semantics

/// Runs `graph` on `feeds` and checks that every fake quant's output lies on
/// the grid of its (nudged) range: `(q − zp)·scale` for an integer `q` in
/// `[quant_min, quant_max]`, per channel of the last axis for per-channel ones.
fn assert_on_grid(graph: Graph, feeds: &[(&str, Tensor)]) -> usize {
    let fqs: Vec<(String, bool, FakeQuantParams, String, String)> = graph
        .nodes()
        .filter(|(_, n)| n.op().starts_with("FakeQuantWithMinMaxVars"))
        .map(|(_, n)| {
            let p = FakeQuantParams::new(
                n.attr_int("num_bits").unwrap() as u32,
                n.attr_bool("narrow_range").unwrap(),
            )
            .unwrap();
            // Eval: the variable itself; training: the update op assigning it.
            let range = |i: usize| {
                let mut p = graph.node(n.inputs()[i].node);
                if p.op().starts_with("Assign") {
                    p = graph.node(p.inputs()[0].node);
                }
                p.name().to_string()
            };
            (
                n.name().to_string(),
                n.op().ends_with("PerChannel"),
                p,
                range(1),
                range(2),
            )
        })
        .collect();
    assert!(!fqs.is_empty());
    let mut s = Session::new(graph).unwrap();
    let fetches: Vec<&str> = fqs.iter().map(|f| f.0.as_str()).collect();
    let out = s.run(feeds, &fetches).unwrap();
    for ((name, per_channel, p, min, max), t) in fqs.iter().zip(out) {
        let mins = s.variable(min).unwrap().to_f64_vec();
        let maxs = s.variable(max).unwrap().to_f64_vec();
        let values = t.array::<f32>().unwrap();
        let channels = if *per_channel { mins.len() } else { 1 };
        assert!(!values.is_empty(), "{name}");
        for (i, &v) in values.iter().enumerate() {
            let c = i % channels;
            let n = nudge(mins[c] as f32, maxs[c] as f32, *p);
            let q = (v / n.scale).round() as i64 + n.zero_point;
            assert!(
                (p.quant_min()..=p.quant_max()).contains(&q),
                "{name}[{i}] = {v}: level {q} off the grid"
            );
            let on_grid = (q - n.zero_point) as f32 * n.scale;
            assert!(
                (v - on_grid).abs() <= 1e-6 * (1.0 + v.abs()),
                "{name}[{i}] = {v} is not (q - zp)·scale = {on_grid}"
            );
        }
    }
    fqs.len()
}

fn ramp(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|i| ((i * 37) % 23) as f32 * 0.09 - 1.0)
        .collect();
    Tensor::from_vec(shape, values).unwrap()
}

#[test]
fn quantized_builtin_models_run_and_their_fake_quants_lie_on_the_grid() {
    for per_channel in [false, true] {
        for name in models::BUILTIN_MODELS {
            let config = QuantizeConfig {
                per_channel,
                weight_bits: 4,
                ..QuantizeConfig::eval()
            };
            let mut g = model(name);
            quantize_with(&mut g, &config);
            let n = assert_on_grid(g, &[(models::INPUT, ramp(&[2, 28, 28, 1]))]);
            assert!(n >= 6, "{name}");
        }
    }
}

#[test]
fn quantized_tensorflow_graphs_run_and_lie_on_the_grid() {
    for name in ["cnn", "resnet"] {
        let mut g = tf_graph(name);
        quantize(&mut g);
        let d = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/tf")
            .join(name);
        let x: ndarray::ArrayD<f32> = ndarray_npy::read_npy(d.join("input.npy")).unwrap();
        assert!(
            assert_on_grid(g, &[("input", Tensor::from_array(x))]) >= 8,
            "{name}"
        );
    }
}

// ------------------------------------------------ reference scenarios (§8)

fn input(b: &mut GraphBuilder<'_>) -> OutletId {
    b.placeholder("input", DType::F32, Shape::known(&[1, 4, 4, 3]))
        .unwrap()
}

fn channels(b: &GraphBuilder<'_>, x: OutletId) -> usize {
    b.graph().fact(x).shape.as_ref().unwrap().dim(3).unwrap()
}

/// contrib's `conv2d(scope)`: `scope/weights` → `scope/Conv2D` [→ `scope/biases`, `scope/BiasAdd`].
fn conv(b: &mut GraphBuilder<'_>, scope: &str, x: OutletId, out: usize, bias: bool) -> OutletId {
    let in_c = channels(b, x);
    b.scope(scope, |b| {
        let w = b.variable("weights", ramp(&[1, 1, in_c, out]), true)?;
        let y = b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?;
        if bias {
            let bias = b.variable("biases", ramp(&[out]), true)?;
            b.bias_add("BiasAdd", y, bias)
        } else {
            Ok(y)
        }
    })
    .unwrap()
}

fn fq_names(graph: &Graph) -> Vec<String> {
    let mut names = ops_of(graph, "FakeQuantWithMinMaxVars");
    names.extend(ops_of(graph, "FakeQuantWithMinMaxVarsPerChannel"));
    names
}

fn feeds_fq(graph: &Graph, name: &str) -> bool {
    let id = graph.id(name).unwrap();
    graph
        .consumer_nodes(id)
        .iter()
        .any(|&c| graph.node(c).op().starts_with("FakeQuant"))
}

fn has_fq_input(graph: &Graph, name: &str) -> bool {
    graph
        .by_name(name)
        .unwrap()
        .inputs()
        .iter()
        .any(|i| graph.node(i.node).op().starts_with("FakeQuant"))
}

#[test]
fn scenario_18_19_a_bypassed_layer_gets_conv_quant_and_no_fq_before_the_relu() {
    for depthwise in [false, true] {
        let mut b = GraphBuilder::new();
        let x = input(&mut b);
        let y = if depthwise {
            b.scope("test/test", |b| {
                let w = b.variable("depthwise_weights", ramp(&[3, 3, 3, 1]), true)?;
                let y = b.depthwise_conv2d("depthwise", x, w, [1, 1], Padding::Same)?;
                let bias = b.variable("biases", ramp(&[3]), true)?;
                b.bias_add("BiasAdd", y, bias)
            })
            .unwrap()
        } else {
            conv(&mut b, "test/test", x, 3, true)
        };
        let y = b.binary("AddV2", "test/add", y, x).unwrap();
        b.relu6("test/relu6", y).unwrap();
        let mut g = b.finish();
        let report = quantize(&mut g);
        assert_eq!(
            inserted(&report),
            expected(&[
                ("test/test/weights_quant", "weights"),
                ("test/act_quant", "activation"),
                ("test/test/conv_quant", "bias_add"),
            ])
        );
        assert!(!has_fq_input(&g, "test/relu6"));
        assert!(feeds_fq(&g, "test/relu6"));
        assert_idempotent(&g, &QuantizeConfig::eval());
    }
}

#[test]
fn scenario_20_separable_conv_quantizes_between_the_two_convs() {
    let mut b = GraphBuilder::new();
    let x = input(&mut b);
    let y = b
        .scope("test/test", |b| {
            let dw = b.variable("depthwise_weights", ramp(&[3, 3, 3, 1]), true)?;
            let pw = b.variable("pointwise_weights", ramp(&[1, 1, 3, 3]), true)?;
            let y =
                b.depthwise_conv2d("separable_conv2d/depthwise", x, dw, [1, 1], Padding::Same)?;
            let y = b.conv2d("separable_conv2d", y, pw, [1, 1], Padding::Valid)?;
            let bias = b.variable("biases", ramp(&[3]), true)?;
            b.bias_add("BiasAdd", y, bias)
        })
        .unwrap();
    let y = b.binary("AddV2", "test/add", y, x).unwrap();
    b.relu6("test/relu6", y).unwrap();
    let mut g = b.finish();
    let report = quantize(&mut g);
    assert_eq!(
        inserted(&report),
        expected(&[
            ("test/test/weights_quant", "weights"),
            ("test/act_quant", "activation"),
            ("test/test/conv_quant", "bias_add"),
            ("test/test/separable_conv2d/weights_quant", "weights"),
            ("test/test/separable_conv2d/act_quant", "activation"),
        ])
    );
    assert_eq!(
        line(&g, "test/test/separable_conv2d"),
        "test/test/separable_conv2d = Conv2D(\
         test/test/separable_conv2d/act_quant/FakeQuantWithMinMaxVars, \
         test/test/weights_quant/FakeQuantWithMinMaxVars)"
    );
    assert_idempotent(&g, &QuantizeConfig::eval());
}

#[test]
fn scenario_21_22_25_conv_relu6_and_conv_bias_without_activation() {
    // 21 (with a surrounding name scope: 25, no name doubles it).
    let mut b = GraphBuilder::new();
    let x = input(&mut b);
    let y = conv(&mut b, "name_scope/test", x, 4, false);
    b.relu6("name_scope/test/Relu6", y).unwrap();
    let mut g = b.finish();
    quantize(&mut g);
    assert_eq!(
        line(&g, "name_scope/test/Conv2D"),
        "name_scope/test/Conv2D = Conv2D(input, \
         name_scope/test/weights_quant/FakeQuantWithMinMaxVars)"
    );
    assert!(feeds_fq(&g, "name_scope/test/Relu6"));
    assert!(!dump(&g).contains("name_scope/name_scope/"));
    assert_idempotent(&g, &QuantizeConfig::eval());
    // 22.
    let mut b = GraphBuilder::new();
    let x = input(&mut b);
    conv(&mut b, "test", x, 4, true);
    let mut g = b.finish();
    let report = quantize(&mut g);
    assert_eq!(report.count(ACT_QUANT), 1);
    assert!(feeds_fq(&g, "test/BiasAdd"));
    assert_idempotent(&g, &QuantizeConfig::eval());
}

/// conv + relu6 under `scope/test`, `scope/add` = relu6 + input, then a second conv + relu6.
fn post_bypass_graph(scope: &str) -> Graph {
    let mut b = GraphBuilder::new();
    let x = input(&mut b);
    let y = conv(&mut b, &format!("{scope}/test"), x, 3, true);
    let y = b.relu6(&format!("{scope}/test/Relu6"), y).unwrap();
    let y = b.binary("AddV2", &format!("{scope}/add"), y, x).unwrap();
    let y = conv(&mut b, &format!("{scope}/next"), y, 2, false);
    b.relu6(&format!("{scope}/next/Relu6"), y).unwrap();
    b.finish()
}

#[test]
fn scenario_23_50_a_post_activation_bypass_is_quantized_on_both_sides() {
    for scope in ["test", "scope1"] {
        let mut g = post_bypass_graph(scope);
        let report = quantize(&mut g);
        let add = format!("{scope}/add");
        assert!(has_fq_input(&g, &add));
        assert!(feeds_fq(&g, &add));
        assert!(report.quantizers.iter().any(|q| q.node
            == fq(&format!("{scope}/post_activation_bypass_quant"))
            && q.role == QuantizerRole::PostActivationBypass));
        assert_idempotent(&g, &QuantizeConfig::eval());
    }
}

#[test]
fn scenario_24_overlapping_bypass() {
    let mut b = GraphBuilder::new();
    let x = input(&mut b);
    let y1 = conv(&mut b, "test/test1", x, 3, true);
    let y1 = b.relu6("test/test1/Relu6", y1).unwrap();
    let y2 = conv(&mut b, "test/test2", x, 3, true);
    let y = b.binary("AddV2", "test/add", y1, y2).unwrap();
    b.relu6("test/output", y).unwrap();
    let mut g = b.finish();
    quantize(&mut g);
    assert!(has_fq_input(&g, "test/add"));
    assert!(!feeds_fq(&g, "test/add"));
    let names = fq_names(&g);
    for prefix in [
        "test/test1/weights_quant",
        "test/test2/weights_quant",
        "test/test1/act_quant",
        "test/act_quant",
    ] {
        assert!(names.contains(&fq(prefix)), "{prefix}: {names:?}");
    }
    for act in ["test/test1/act_quant", "test/act_quant"] {
        let input = g.by_name(&fq(act)).unwrap().inputs()[0];
        assert_eq!(g.node(input.node).op(), "Relu6", "{act}");
    }
    assert_idempotent(&g, &QuantizeConfig::eval());
}

#[test]
fn scenario_27_58_the_scope_option_limits_the_rewrite() {
    let stacked = || {
        let mut b = GraphBuilder::new();
        let x = input(&mut b);
        let y = conv(&mut b, "scope1", x, 3, false);
        let y = b.relu6("scope1/Relu6", y).unwrap();
        let y = conv(&mut b, "scope2", y, 3, false);
        b.relu6("scope2/Relu6", y).unwrap();
        b.finish()
    };
    let config = |scope: &str| QuantizeConfig {
        scope: Some(scope.into()),
        ..QuantizeConfig::eval()
    };
    let mut g = stacked();
    let report = quantize_with(&mut g, &config("scope1"));
    assert_eq!(
        inserted(&report),
        expected(&[
            ("scope1/weights_quant", "weights"),
            ("scope1/act_quant", "activation"),
        ])
    );
    assert!(report.skipped.iter().any(|s| s.node == "scope2/weights"
        && s.reason == "consumer 'scope2/Conv2D' is outside scope 'scope1'"));
    assert_idempotent(&g, &config("scope1"));
    for scope in ["NonExisting/", "NonExisting"] {
        let mut g = stacked();
        let before = dump(&g);
        let report = quantize_with(&mut g, &config(scope));
        assert!(report.quantizers.is_empty());
        assert_eq!(dump(&g), before, "{scope}");
    }
}

#[test]
fn scenario_28_partitioned_weights_are_recognised() {
    for partitions in [1, 2] {
        let mut b = GraphBuilder::new();
        let x = input(&mut b);
        b.scope("part/test/test", |b| {
            let w = if partitions == 1 {
                let v = b.variable("weights/part_0", ramp(&[1, 1, 3, 4]), true)?;
                let read = b.identity("weights/part_0/read", v)?;
                b.identity("weights", read)?
            } else {
                let v0 = b.variable("weights/part_0", ramp(&[1, 1, 2, 4]), true)?;
                let v1 = b.variable("weights/part_1", ramp(&[1, 1, 1, 4]), true)?;
                let r0 = b.identity("weights/part_0/read", v0)?;
                let r1 = b.identity("weights/part_1/read", v1)?;
                let c = b.concat("weights/concat", &[r0, r1], 2)?;
                b.identity("weights", c)?
            };
            let y = b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?;
            b.relu6("Relu6", y)
        })
        .unwrap();
        let mut g = b.finish();
        quantize(&mut g);
        assert!(
            g.by_name(&fq("part/test/test/weights_quant")).is_some(),
            "{partitions} partitions"
        );
        assert_idempotent(&g, &QuantizeConfig::eval());
    }
}

#[test]
fn scenario_29_a_user_fake_quant_after_a_reshape_suppresses_act_quant() {
    for user_fq in [true, false] {
        let mut b = GraphBuilder::new();
        let x = input(&mut b);
        let y = conv(&mut b, "test", x, 4, false);
        let y = b.relu6("test/Relu6", y).unwrap();
        let y = b.reshape("test/Reshape", y, &[1, 64]).unwrap();
        if user_fq {
            let (lo, hi) = (
                b.constant("user/min", Tensor::scalar(0.0f32)).unwrap(),
                b.constant("user/max", Tensor::scalar(6.0f32)).unwrap(),
            );
            b.add(
                "FakeQuantWithMinMaxVars",
                "user/FakeQuant",
                &[y, lo, hi],
                Default::default(),
            )
            .unwrap();
        }
        let mut g = b.finish();
        let report = quantize(&mut g);
        assert_eq!(has_fq_input(&g, "test/Reshape"), !user_fq);
        if user_fq {
            assert!(report.skipped.iter().any(|s| s.rule == ACT_QUANT
                && s.node == "test/Relu6"
                && s.reason == "already followed by a fake quant"));
        }
        assert_idempotent(&g, &QuantizeConfig::eval());
    }
}

/// conv → [Identity test/conv_out →] fused BN → `tail`.
fn conv_bn(identity: bool, tail: impl FnOnce(&mut GraphBuilder<'_>, OutletId)) -> Graph {
    let mut b = GraphBuilder::new();
    let x = input(&mut b);
    let y = conv(&mut b, "test/Conv", x, 3, false);
    let y = if identity {
        b.identity("test/conv_out", y).unwrap()
    } else {
        y
    };
    let c = |v: f32| Tensor::from_vec(&[3], vec![v; 3]).unwrap();
    let bn = b
        .scope("test/BatchNorm", |b| {
            let gamma = b.variable("gamma", c(1.5), true)?;
            let beta = b.variable("beta", c(0.25), true)?;
            let mean = b.variable("moving_mean", c(0.1), false)?;
            let var = b.variable("moving_variance", c(0.9), false)?;
            b.fused_batch_norm("FusedBatchNormV3", y, gamma, beta, mean, var, 0.001, false)
        })
        .unwrap();
    tail(&mut b, bn.into());
    b.finish()
}

#[test]
fn scenario_56_the_statistics_identity_before_a_batch_norm_is_not_an_activation() {
    let mut g = conv_bn(true, |b, y| {
        b.identity("test/bn_out", y).unwrap();
    });
    quantize(&mut g);
    let names = fq_names(&g);
    assert!(names.contains(&fq("test/Conv/weights_quant")), "{names:?}");
    assert!(names.contains(&fq("test/Conv/act_quant")), "{names:?}");
    assert_eq!(
        line(&g, "test/bn_out"),
        "test/bn_out = Identity(test/Conv/add_fold)"
    );
    assert_eq!(
        line(&g, "test/BatchNorm/FusedBatchNormV3")
            .split(", ")
            .next(),
        Some("test/BatchNorm/FusedBatchNormV3 = FusedBatchNormV3(test/conv_out")
    );
    assert!(!feeds_fq(&g, "test/conv_out"));
    assert_idempotent(&g, &QuantizeConfig::eval());
}

fn activation_processing() -> Graph {
    conv_bn(false, |b, y| {
        let y = b.relu6("test/Relu6", y).unwrap();
        let two = b.constant("test/Const", Tensor::scalar(2.0f32)).unwrap();
        let three = b.constant("test/Const_1", Tensor::scalar(3.0f32)).unwrap();
        let m = b.binary("Mul", "test/Mul", two, y).unwrap();
        let m1 = b.binary("Mul", "test/Mul_1", three, y).unwrap();
        b.binary("AddV2", "test/add", m, m1).unwrap();
    })
}

#[test]
fn scenario_57_60_intermediate_adds_and_muls_are_quantized() {
    let mut g = activation_processing();
    let report = quantize(&mut g);
    let intermediate: Vec<_> = report
        .quantizers
        .iter()
        .filter(|q| q.role == QuantizerRole::Intermediate)
        .map(|q| (q.node.as_str(), q.num_bits, q.narrow_range, q.symmetric))
        .collect();
    assert_eq!(
        intermediate,
        [
            (
                "test/Mul/activation_Mul_quant/FakeQuantWithMinMaxVars",
                8,
                false,
                false
            ),
            (
                "test/Mul_1/activation_Mul_quant/FakeQuantWithMinMaxVars",
                8,
                false,
                false
            ),
            (
                "test/add/activation_AddV2_quant/FakeQuantWithMinMaxVars",
                8,
                false,
                false
            ),
        ]
    );
    assert_eq!(report.count(INTERMEDIATE_QUANT), 3);
    assert_eq!(
        line(&g, "test/add"),
        "test/add = AddV2(test/Mul/activation_Mul_quant/FakeQuantWithMinMaxVars, \
         test/Mul_1/activation_Mul_quant/FakeQuantWithMinMaxVars)"
    );
    assert_idempotent(&g, &QuantizeConfig::eval());
    // 60: with a scope matching nothing, no fake quant at all.
    let mut g = activation_processing();
    let config = QuantizeConfig {
        scope: Some("NonExisting".into()),
        ..QuantizeConfig::eval()
    };
    quantize_with(&mut g, &config);
    assert!(fq_names(&g).is_empty());
}

#[test]
fn scenario_59_the_intermediate_pass_respects_the_scope() {
    let mut b = GraphBuilder::new();
    let x = input(&mut b);
    let y = conv(&mut b, "scope1", x, 3, false);
    let y = b.identity("scope1/Identity", y).unwrap();
    let y = b.relu6("scope2/Relu6", y).unwrap();
    let two = b.constant("scope2/Const", Tensor::scalar(2.0f32)).unwrap();
    let m = b.binary("Mul", "scope2/Mul", two, y).unwrap();
    let m1 = b.binary("Mul", "scope2/Mul_1", two, y).unwrap();
    b.binary("AddV2", "scope2/add", m, m1).unwrap();
    let mut g = b.finish();
    let config = QuantizeConfig {
        scope: Some("scope1".into()),
        ..QuantizeConfig::eval()
    };
    let report = quantize_with(&mut g, &config);
    assert_eq!(report.quantizers.len(), 2);
    assert!(
        g.nodes()
            .all(|(_, n)| !(n.name().starts_with("scope2/") && n.name().contains("FakeQuant")))
    );
    assert_idempotent(&g, &config);
}

#[test]
fn scenario_61_shared_weights_get_one_weights_quant() {
    let mut b = GraphBuilder::new();
    let x = input(&mut b);
    let w = b.variable("weights", ramp(&[1, 1, 3, 3]), true).unwrap();
    let w = b.identity("weights/read", w).unwrap();
    for scope in ["block1", "block2"] {
        b.scope(scope, |b| {
            let y = b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?;
            b.relu6("Relu6", y)
        })
        .unwrap();
    }
    let mut g = b.finish();
    let report = quantize(&mut g);
    assert_eq!(report.count(WEIGHTS_QUANT), 1);
    let shared = fq("block1/weights_quant");
    for conv in ["block1/Conv2D", "block2/Conv2D"] {
        assert_eq!(line(&g, conv), format!("{conv} = Conv2D(input, {shared})"));
    }
    assert_idempotent(&g, &QuantizeConfig::eval());
}

// ------------------------------------------------- rules that must not fire

#[test]
fn a_layer_without_a_recognised_weight_source_is_left_alone() {
    let mut b = GraphBuilder::new();
    let x = input(&mut b);
    let w = b
        .placeholder("filter", DType::F32, Shape::known(&[1, 1, 3, 3]))
        .unwrap();
    let y = b
        .conv2d("test/Conv2D", x, w, [1, 1], Padding::Same)
        .unwrap();
    let y = b.relu6("test/Relu6", y).unwrap();
    // An activation produced by a Mul is not taken for folded weights (decision 5).
    let two = b.constant("test/two", Tensor::scalar(2.0f32)).unwrap();
    let m = b.binary("Mul", "test/Mul", y, two).unwrap();
    let y = b
        .conv2d("test/Conv2D_1", m, w, [1, 1], Padding::Same)
        .unwrap();
    b.relu6("test/Relu6_1", y).unwrap();
    let mut g = b.finish();
    let before = dump(&g);
    let report = quantize(&mut g);
    assert!(report.is_empty(), "{:?}", report.applied);
    assert_eq!(dump(&g), before);
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|s| (s.rule, s.node.as_str(), s.reason.as_str()))
        .collect();
    let reason = "input 1 is produced by Placeholder, not by a recognised weight source";
    assert_eq!(
        skipped,
        [
            (LAYER_MATCH, "test/Conv2D", reason),
            (LAYER_MATCH, "test/Conv2D_1", reason),
        ]
    );
}

#[test]
fn an_already_quantized_graph_is_left_alone() {
    let mut g = model("resnet-block");
    quantize(&mut g);
    let before = dump(&g);
    let report = PassManager::new()
        .with(Quantize)
        .run(&mut g, &QuantizeConfig::eval())
        .unwrap();
    assert!(report.is_empty());
    assert_eq!(dump(&g), before);
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.reason == "already followed by a fake quant")
    );
}

// ---------------------------------------------------------- training form

#[test]
fn scenario_54_training_graphs_update_their_ranges() {
    for symmetric in [false, true] {
        let config = QuantizeConfig {
            symmetric,
            ..QuantizeConfig::training()
        };
        let mut g = model("mnist-cnn");
        let report = quantize_with(&mut g, &config);
        assert_eq!(report.quantizers.len(), 6);
        assert!(report.quantizers.iter().all(|q| q.symmetric == symmetric));
        let w = "conv1/weights_quant";
        assert_eq!(
            line(&g, &fq(w)),
            format!(
                "{w}/FakeQuantWithMinMaxVars = FakeQuantWithMinMaxVars(conv1/mul_fold, {w}/AssignMinLast, {w}/AssignMaxLast)"
            )
        );
        assert_eq!(
            line(&g, &format!("{w}/AssignMinLast")),
            format!("{w}/AssignMinLast = Assign({w}/min, {w}/Minimum)")
        );
        let a = "conv1/act_quant";
        assert_eq!(
            line(&g, &fq(a)),
            format!(
                "{a}/FakeQuantWithMinMaxVars = FakeQuantWithMinMaxVars(conv1/Relu6, {a}/AssignMinEma, {a}/AssignMaxEma)"
            )
        );
        for shadow in [
            "min/biased",
            "min/local_step",
            "max/biased",
            "max/local_step",
        ] {
            let name = format!("{a}/{a}/{shadow}");
            assert_eq!(g.by_name(&name).map(|n| n.op()), Some("Variable"), "{name}");
        }
        assert_idempotent(&g, &config);

        // One step: last value is the batch range, the debiased EMA is the
        // observation (exactly the arithmetic of `kernels::observers`).
        let x = ramp(&[2, 28, 28, 1]);
        let mut s = Session::new(g.clone()).unwrap();
        let out = s
            .run(
                &[(models::INPUT, x.clone())],
                &["conv1/mul_fold", "conv1/Relu6", &fq(a)],
            )
            .unwrap();
        let range = |t: &Tensor| {
            let v = t.array::<f32>().unwrap();
            let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if symmetric {
                symmetric_range(lo, hi, 8, true)
            } else {
                asymmetric_range(lo, hi)
            }
        };
        let var = |name: &str| s.variable(name).unwrap().to_f64_vec()[0] as f32;
        let (wmin, wmax) = range(&out[0]);
        assert_eq!(
            (var(&format!("{w}/min")), var(&format!("{w}/max"))),
            (wmin, wmax)
        );
        let (amin, amax) = {
            let v = out[1].array::<f32>().unwrap();
            let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if symmetric {
                symmetric_range(lo, hi, 8, false)
            } else {
                asymmetric_range(lo, hi)
            }
        };
        let ema = |r: f32| EmaState::default().update(r, 0.999).value;
        assert_eq!(var(&format!("{a}/min")), ema(amin));
        assert_eq!(var(&format!("{a}/max")), ema(amax));
        assert!(assert_on_grid(g, &[(models::INPUT, x)]) == 6);
    }
}

#[test]
fn training_quantizers_with_per_channel_weights_run_and_are_idempotent() {
    let config = QuantizeConfig {
        per_channel: true,
        ..QuantizeConfig::training()
    };
    for name in models::BUILTIN_MODELS {
        let mut g = model(name);
        let report = quantize_with(&mut g, &config);
        assert!(report.quantizers.len() >= 6);
        assert_idempotent(&g, &config);
        let n = assert_on_grid(g, &[(models::INPUT, ramp(&[2, 28, 28, 1]))]);
        assert!(n >= 6, "{name}");
    }
}

/// The graph of scenarios 31–33 for one point of the matrix (no batch norm).
fn matrix_graph(layer: &str, act: &str, bypass: bool, resource: bool, scope: &str) -> Graph {
    let mut b = GraphBuilder::new();
    let matmul = layer == "MatMul";
    let x = if matmul {
        b.placeholder("input", DType::F32, Shape::known(&[2, 3]))
    } else {
        b.placeholder("input", DType::F32, Shape::known(&[1, 5, 5, 3]))
    }
    .unwrap();
    let join = |s: &str, n: &str| {
        if s.is_empty() {
            n.to_string()
        } else {
            format!("{s}/{n}")
        }
    };
    let l = join(scope, if bypass { "test2" } else { "test" });
    let (wname, wshape): (&str, &[usize]) = match layer {
        "MatMul" => ("weights", &[3, 3]),
        "depthwise" => ("depthwise_weights", &[3, 3, 3, 1]),
        _ => ("weights", &[3, 3, 3, 3]),
    };
    let y = b
        .scope(&l, |b| {
            let w = if resource {
                let attrs = |shape: &[usize]| {
                    let mut a = quant_core::Attrs::new();
                    a.insert("dtype".into(), DType::F32.into());
                    a.insert(
                        "shape".into(),
                        quant_core::AttrValue::Shape(Some(Shape::known(shape))),
                    );
                    a
                };
                let h = b.add("VarHandleOp", wname, &[], attrs(wshape))?;
                let mut a = quant_core::Attrs::new();
                a.insert("dtype".into(), DType::F32.into());
                let read_name = format!(
                    "{}/ReadVariableOp",
                    if matmul {
                        "MatMul"
                    } else if layer == "depthwise" {
                        "depthwise"
                    } else {
                        "Conv2D"
                    }
                );
                OutletId::from(b.add("ReadVariableOp", &read_name, &[h.into()], a)?)
            } else {
                let v = b.variable(wname, ramp(wshape), true)?;
                b.identity(&format!("{wname}/read"), v)?
            };
            let y = match layer {
                "MatMul" => b.matmul("MatMul", x, w, false, false)?,
                "depthwise" => b.depthwise_conv2d("depthwise", x, w, [1, 1], Padding::Same)?,
                _ => b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?,
            };
            let bias = b.variable("biases", ramp(&[3]), true)?;
            b.bias_add("BiasAdd", y, bias)
        })
        .unwrap();
    let y = if bypass {
        b.binary("AddV2", &join(scope, "AddV2"), y, x).unwrap()
    } else {
        y
    };
    let act_scope = if bypass { scope.to_string() } else { l.clone() };
    let y = b.unary(act, &join(&act_scope, act), y).unwrap();
    b.identity("control_dependency", y).unwrap();
    b.finish()
}

fn inputs_of(graph: &Graph, name: &str) -> Vec<String> {
    graph
        .by_name(name)
        .unwrap_or_else(|| panic!("no node {name}"))
        .inputs()
        .iter()
        .map(|&i| graph.outlet_name(i))
        .collect()
}

fn consumers_of(graph: &Graph, name: &str) -> Vec<String> {
    graph
        .consumer_nodes(graph.id(name).unwrap())
        .into_iter()
        .map(|c| graph.node(c).name().to_string())
        .collect()
}

#[test]
fn scenarios_31_to_33_35_the_training_matrix_without_batch_norm() {
    for delay in [None, Some(5000)] {
        let config = QuantizeConfig {
            quant_delay: delay,
            ..QuantizeConfig::training()
        };
        // The tensor the quantizer's consumers read: the fake quant, or its delayed select.
        let read_by = |g: &Graph, prefix: &str, case: &str| -> String {
            match delay {
                None => fq(prefix),
                Some(_) => {
                    let select = format!("{prefix}/delayed_quant");
                    assert_eq!(
                        consumers_of(g, &fq(prefix)),
                        std::slice::from_ref(&select),
                        "{case}"
                    );
                    assert_eq!(
                        inputs_of(g, &format!("{prefix}/activate_quant")),
                        [
                            "fake_quantization_step/Identity".to_string(),
                            format!("{prefix}/activate_quant/y")
                        ],
                        "{case}"
                    );
                    select
                }
            }
        };
        for layer in ["Conv2D", "MatMul", "depthwise"] {
            for act in ["Relu6", "Relu", "Identity"] {
                for bypass in [false, true] {
                    for resource in [false, true] {
                        for scope in ["", "test"] {
                            let case = format!(
                                "{layer} {act} bypass={bypass} resource={resource} scope={scope:?} \
                             delay={delay:?}"
                            );
                            let mut g = matrix_graph(layer, act, bypass, resource, scope);
                            quantize_with(&mut g, &config);
                            let join = |s: &str, n: &str| {
                                if s.is_empty() {
                                    n.to_string()
                                } else {
                                    format!("{s}/{n}")
                                }
                            };
                            let l = join(scope, if bypass { "test2" } else { "test" });
                            let layer_op = format!("{l}/{layer}");
                            // 31: weights_quant.
                            let w = format!("{l}/weights_quant");
                            let read = if resource {
                                format!("{layer_op}/ReadVariableOp")
                            } else if layer == "depthwise" {
                                format!("{l}/depthwise_weights/read")
                            } else {
                                format!("{l}/weights/read")
                            };
                            assert_eq!(
                                inputs_of(&g, &fq(&w)),
                                [
                                    read,
                                    format!("{w}/AssignMinLast"),
                                    format!("{w}/AssignMaxLast")
                                ],
                                "{case}"
                            );
                            let out = read_by(&g, &w, &case);
                            assert_eq!(consumers_of(&g, &out), [layer_op], "{case}");
                            // 32: conv_quant feeds the bypass add.
                            if bypass {
                                let c = format!("{l}/conv_quant");
                                assert_eq!(
                                    inputs_of(&g, &fq(&c)),
                                    [
                                        format!("{l}/BiasAdd"),
                                        format!("{c}/AssignMinEma"),
                                        format!("{c}/AssignMaxEma")
                                    ],
                                    "{case}"
                                );
                                let out = read_by(&g, &c, &case);
                                assert_eq!(
                                    consumers_of(&g, &out),
                                    [join(scope, "AddV2")],
                                    "{case}"
                                );
                            }
                            // 33: act_quant (parent scope of the layer when bypassed).
                            let a_scope = if bypass { scope.to_string() } else { l.clone() };
                            let a = join(&a_scope, "act_quant");
                            assert_eq!(
                                inputs_of(&g, &fq(&a)),
                                [
                                    join(&a_scope, act),
                                    format!("{a}/AssignMinEma"),
                                    format!("{a}/AssignMaxEma")
                                ],
                                "{case}"
                            );
                            let out = read_by(&g, &a, &case);
                            assert_eq!(consumers_of(&g, &out), ["control_dependency"], "{case}");
                            // 35.
                            assert_idempotent(&g, &config);
                            if !resource {
                                let shape: &[usize] = if layer == "MatMul" {
                                    &[2, 3]
                                } else {
                                    &[1, 5, 5, 3]
                                };
                                assert_on_grid(g, &[("input", ramp(shape))]);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn scenario_30_a_shared_resource_weight_gets_a_quantizer_per_read() {
    let mut b = GraphBuilder::new();
    let x = input(&mut b);
    let mut a = quant_core::Attrs::new();
    a.insert("dtype".into(), DType::F32.into());
    a.insert(
        "shape".into(),
        quant_core::AttrValue::Shape(Some(Shape::known(&[3, 3, 3, 1]))),
    );
    let h = b.add("VarHandleOp", "depthwise_weights", &[], a).unwrap();
    let mut y = x;
    for scope in ["depthwise_conv_1", "depthwise_conv_2"] {
        y = b
            .scope(scope, |b| {
                let mut a = quant_core::Attrs::new();
                a.insert("dtype".into(), DType::F32.into());
                let w = b.add("ReadVariableOp", "ReadVariableOp", &[h.into()], a)?;
                b.depthwise_conv2d("depthwise", y, w.into(), [1, 1], Padding::Same)
            })
            .unwrap();
    }
    b.binary("AddV2", "depthwise_conv_2/add", y, x).unwrap();
    let mut g = b.finish();
    let config = QuantizeConfig::training();
    let report = quantize_with(&mut g, &config);
    assert_eq!(
        inserted(&report),
        expected(&[
            ("depthwise_conv_2/weights_quant", "weights"),
            ("depthwise_conv_2/act_quant", "activation"),
            ("depthwise_conv_1/weights_quant", "weights"),
            ("depthwise_conv_1/act_quant", "activation"),
        ])
    );
    assert_idempotent(&g, &config);
}
