//! `FoldBatchNorms`, eval form: structure (snapshots of the dump, rules that
//! must not fire, idempotence) and semantics (the folded graph computes what
//! the unfolded one does, on our models and on TensorFlow's frozen graphs).
//!
//! Snapshots live in `tests/snapshots/*.txt`; after a deliberate change,
//! regenerate them with `UPDATE_SNAPSHOTS=1 cargo test -p quant-passes` and
//! review the diff against reference semantics §2.3.

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use quant_core::builder::{GraphBuilder, Padding};
use quant_core::graph::dump;
use quant_core::models::{self, Rng};
use quant_core::serialize::read_graph;
use quant_core::{DType, Graph, OpRegistry, Shape, Tensor};
use quant_kernels::session::Session;
use quant_passes::passes::fold_batch_norms::FOLD_FUSED;
use quant_passes::{FoldBatchNorms, PassError, PassManager, PassReport, QuantizeConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{check_snapshot, line, max_rel_error, model, randomize_batch_norms, run};

fn fold(graph: &mut Graph) -> PassReport {
    PassManager::new()
        .with(FoldBatchNorms)
        .run(graph, &QuantizeConfig::eval())
        .unwrap()
}

// ---------------------------------------------------------------- structure

#[test]
fn mnist_cnn_folds_as_the_snapshot_says() {
    let mut g = model("mnist-cnn");
    let report = fold(&mut g);
    assert_eq!(report.count(FOLD_FUSED), 2);
    let nodes: Vec<&str> = report.applied.iter().map(|a| a.node.as_str()).collect();
    assert_eq!(
        nodes,
        [
            "conv1/BatchNorm/FusedBatchNormV3",
            "conv2/BatchNorm/FusedBatchNormV3"
        ]
    );
    check_snapshot("mnist_cnn_eval_fold", &dump(&g));
}

#[test]
fn resnet_block_folds_as_the_snapshot_says() {
    let mut g = model("resnet-block");
    let report = fold(&mut g);
    assert_eq!(report.count(FOLD_FUSED), 6);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    check_snapshot("resnet_block_eval_fold", &dump(&g));
}

#[test]
fn conv_fold_wires_as_section_2_3_says() {
    let mut g = model("mnist-cnn");
    fold(&mut g);
    let s = "conv1";
    let bn = "conv1/BatchNorm";
    assert_eq!(
        line(&g, "conv1/BatchNorm_Fold/add"),
        format!("{s}/BatchNorm_Fold/add = Add({bn}/moving_variance, {s}/BatchNorm_Fold/add/y)")
    );
    assert_eq!(
        line(&g, "conv1/BatchNorm_Fold/mul"),
        format!("{s}/BatchNorm_Fold/mul = Mul({bn}/gamma, {s}/BatchNorm_Fold/Rsqrt)")
    );
    assert_eq!(
        line(&g, "conv1/BatchNorm_Fold/bias"),
        format!("{s}/BatchNorm_Fold/bias = Sub({bn}/beta, {s}/BatchNorm_Fold/mul_1)")
    );
    assert_eq!(
        line(&g, "conv1/mul_fold"),
        "conv1/mul_fold = Mul(conv1/weights, conv1/BatchNorm_Fold/mul)"
    );
    assert_eq!(
        line(&g, "conv1/Conv2D_Fold"),
        "conv1/Conv2D_Fold = Conv2D(input, conv1/mul_fold)"
    );
    assert_eq!(
        line(&g, "conv1/add_fold"),
        "conv1/add_fold = Add(conv1/Conv2D_Fold, conv1/BatchNorm_Fold/bias)"
    );
    assert_eq!(
        line(&g, "conv1/Relu6"),
        "conv1/Relu6 = Relu6(conv1/add_fold)"
    );
    // The batch norm stays, dangling, still fed by the original conv.
    let bn_id = g.id("conv1/BatchNorm/FusedBatchNormV3").unwrap();
    assert!(!g.has_consumers(bn_id));
    assert_eq!(g.node(bn_id).inputs()[0], g.outlet("conv1/Conv2D").unwrap());
    // The clone has the layer's attributes.
    assert_eq!(
        g.by_name("conv1/Conv2D_Fold").unwrap().attrs(),
        g.by_name("conv1/Conv2D").unwrap().attrs()
    );
}

#[test]
fn depthwise_scale_is_reshaped_to_in_by_multiplier() {
    let mut g = model("resnet-block");
    fold(&mut g);
    let s = "separable/depthwise";
    assert_eq!(
        line(&g, &format!("{s}/BatchNorm_Fold/scale_reshape")),
        format!(
            "{s}/BatchNorm_Fold/scale_reshape = Reshape({s}/BatchNorm_Fold/mul, \
             {s}/BatchNorm_Fold/scale_reshape/shape)"
        )
    );
    let shape = g
        .by_name(&format!("{s}/BatchNorm_Fold/scale_reshape/shape"))
        .unwrap()
        .attr_tensor("value")
        .unwrap()
        .to_i64_vec()
        .unwrap();
    assert_eq!(shape, [8, 1]);
    assert_eq!(
        line(&g, &format!("{s}/mul_fold")),
        format!("{s}/mul_fold = Mul({s}/depthwise_weights, {s}/BatchNorm_Fold/scale_reshape)")
    );
    assert_eq!(
        line(&g, &format!("{s}/depthwise_Fold")),
        format!("{s}/depthwise_Fold = DepthwiseConv2dNative(block1/Relu6, {s}/mul_fold)")
    );
}

#[test]
fn folding_twice_gives_a_byte_identical_dump() {
    for name in models::BUILTIN_MODELS {
        let mut g = model(name);
        fold(&mut g);
        let once = dump(&g);
        let report = fold(&mut g);
        assert!(report.is_empty(), "{name}: {:?}", report.applied);
        assert!(
            report
                .skipped
                .iter()
                .all(|s| s.reason.starts_with("already folded")),
            "{name}: {:?}",
            report.skipped
        );
        assert_eq!(dump(&g), once, "{name}");
    }
}

/// input → (optional conv) → BN (is_training as given) → Relu6.
fn bn_graph(with_conv: bool, is_training: bool, identity: bool) -> Graph {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[1, 4, 4, 2]))
        .unwrap();
    let c = |n: usize, v: f32| Tensor::from_vec(&[n], vec![v; n]).unwrap();
    let y = b
        .scope("test", |b| {
            let y = if with_conv {
                let w = b
                    .constant(
                        "weights",
                        Tensor::from_vec(&[1, 1, 2, 3], vec![0.5f32; 6]).unwrap(),
                    )
                    .unwrap();
                b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?
            } else {
                b.pool("MaxPool", "MaxPool", x, 1, 1, Padding::Same)?
            };
            let y = if identity {
                b.identity("conv_out", y)?
            } else {
                y
            };
            let n = if with_conv { 3 } else { 2 };
            let gamma = b.constant("BatchNorm/gamma", c(n, 2.0))?;
            let beta = b.constant("BatchNorm/beta", c(n, 0.5))?;
            let mean = b.constant("BatchNorm/moving_mean", c(n, 0.25))?;
            let var = b.constant("BatchNorm/moving_variance", c(n, 0.999))?;
            let bn = b.fused_batch_norm(
                "BatchNorm/FusedBatchNormV3",
                y,
                gamma,
                beta,
                mean,
                var,
                0.001,
                is_training,
            )?;
            b.relu6("Relu6", bn.into())
        })
        .unwrap();
    let _ = y;
    b.finish()
}

#[test]
fn a_batch_norm_not_fed_by_a_layer_is_left_alone() {
    let mut g = bn_graph(false, false, false);
    let before = dump(&g);
    let report = fold(&mut g);
    assert!(report.is_empty());
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].node, "test/BatchNorm/FusedBatchNormV3");
    assert_eq!(
        report.skipped[0].reason,
        "input 0 is produced by MaxPool, not by Conv2D, DepthwiseConv2dNative or MatMul"
    );
    assert_eq!(dump(&g), before);
}

#[test]
fn an_identity_between_layer_and_batch_norm_keeps_feeding_the_batch_norm() {
    // Scenario 56, fold part: the Identity still feeds the (dangling) BN;
    // the activation now reads add_fold.
    let mut g = bn_graph(true, false, true);
    assert_eq!(fold(&mut g).count(FOLD_FUSED), 1);
    assert_eq!(
        line(&g, "test/BatchNorm/FusedBatchNormV3"),
        "test/BatchNorm/FusedBatchNormV3 = FusedBatchNormV3(test/conv_out, test/BatchNorm/gamma, \
         test/BatchNorm/beta, test/BatchNorm/moving_mean, test/BatchNorm/moving_variance)"
    );
    assert_eq!(
        line(&g, "test/Conv2D_Fold"),
        "test/Conv2D_Fold = Conv2D(input, test/mul_fold)"
    );
    assert_eq!(line(&g, "test/Relu6"), "test/Relu6 = Relu6(test/add_fold)");
}

#[test]
fn a_training_mode_batch_norm_is_refused_and_the_graph_left_untouched() {
    let mut g = bn_graph(true, true, false);
    let before = dump(&g);
    let err = PassManager::new()
        .with(FoldBatchNorms)
        .run(&mut g, &QuantizeConfig::eval())
        .unwrap_err();
    assert!(
        matches!(&err, PassError::Unsupported { node, .. } if node == "test/BatchNorm/FusedBatchNormV3"),
        "{err}"
    );
    assert_eq!(dump(&g), before);
}

#[test]
fn an_nchw_layer_or_batch_norm_is_declined_with_a_reason() {
    // Our kernels and folds are NHWC: folding an NCHW layer would scale the
    // wrong axis, so the fold declines it and says which node and why.
    for (node, training) in [
        ("test/Conv2D", false),
        ("test/BatchNorm/FusedBatchNormV3", false),
        // Declined before the missing moving-average updates are noticed.
        ("test/Conv2D", true),
    ] {
        let mut g = bn_graph(true, training, false);
        let id = g.id(node).unwrap();
        g.set_attr(id, "data_format", "NCHW");
        let before = dump(&g);
        let report = fold(&mut g);
        assert!(report.is_empty());
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.skipped[0].node, "test/BatchNorm/FusedBatchNormV3");
        assert_eq!(
            report.skipped[0].reason,
            format!("'{node}' has data_format NCHW: batch norms are folded into NHWC layers only")
        );
        assert_eq!(dump(&g), before);
    }
}

#[test]
fn an_invalid_config_is_refused_before_any_pass_runs() {
    let mut g = bn_graph(true, false, false);
    let before = dump(&g);
    let config = QuantizeConfig {
        freeze_bn_delay: Some(10),
        ..QuantizeConfig::eval()
    };
    let err = PassManager::new()
        .with(FoldBatchNorms)
        .run(&mut g, &config)
        .unwrap_err();
    assert!(matches!(err, PassError::Config(_)), "{err}");
    assert_eq!(dump(&g), before);
}

#[test]
fn the_worked_example_of_section_2_4_folds_to_w_times_m_plus_b() {
    // One channel: γ=2, β=0.5, ε=0.001, μ_mv=0.25, σ²_mv=0.999 ⇒ m=2, b=0,
    // so y = 2·conv(x, W). Checked through the executor.
    let mut g = bn_graph(true, false, false);
    fold(&mut g);
    let x = Tensor::from_vec(&[1, 4, 4, 2], (0..32).map(|i| i as f32 * 0.01).collect()).unwrap();
    let mut s = Session::new(g).unwrap();
    let out = s
        .run(&[("input", x.clone())], &["test/add_fold", "test/Conv2D"])
        .unwrap();
    let folded = out[0].array::<f32>().unwrap();
    let conv = out[1].array::<f32>().unwrap();
    for (f, c) in folded.iter().zip(conv) {
        assert!(
            (f - 2.0 * c).abs() <= 1e-6 * (1.0 + c.abs()),
            "{f} vs 2·{c}"
        );
    }
}

#[test]
fn a_reshape_wrapped_matmul_folds_into_matmul_fold() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[2, 3]))
        .unwrap();
    let values = |n: usize, f: fn(usize) -> f32| {
        Tensor::from_vec(&[n], (0..n).map(f).collect::<Vec<f32>>()).unwrap()
    };
    b.scope("fc", |b| {
        let w = b.constant(
            "weights",
            Tensor::from_vec(&[3, 4], (0..12).map(|i| i as f32 * 0.1 - 0.5).collect()).unwrap(),
        )?;
        let y = b.matmul("MatMul", x, w, false, false)?;
        let y = b.reshape("Reshape", y, &[2, 1, 1, 4])?;
        let gamma = b.constant("BatchNorm/gamma", values(4, |i| 1.0 + i as f32 * 0.5))?;
        let beta = b.constant("BatchNorm/beta", values(4, |i| i as f32 * 0.25 - 0.5))?;
        let mean = b.constant("BatchNorm/moving_mean", values(4, |i| 0.3 - i as f32 * 0.2))?;
        let var = b.constant("BatchNorm/moving_variance", values(4, |i| 0.5 + i as f32))?;
        let bn = b.fused_batch_norm(
            "BatchNorm/FusedBatchNormV3",
            y,
            gamma,
            beta,
            mean,
            var,
            0.001,
            false,
        )?;
        let y = b.reshape("Reshape_1", bn.into(), &[2, 4])?;
        b.relu6("Relu6", y)
    })
    .unwrap();
    let g = b.finish();
    let mut folded = g.clone();
    assert_eq!(fold(&mut folded).count(FOLD_FUSED), 1);
    assert_eq!(
        line(&folded, "fc/MatMul_Fold"),
        "fc/MatMul_Fold = MatMul(input, fc/mul_fold)"
    );
    assert_eq!(line(&folded, "fc/Relu6"), "fc/Relu6 = Relu6(fc/add_fold)");
    assert!(!folded.has_consumers(folded.id("fc/Reshape_1").unwrap()));
    let once = dump(&folded);
    let mut twice = folded.clone();
    assert!(fold(&mut twice).is_empty());
    assert_eq!(dump(&twice), once);
    let x = Tensor::from_vec(&[2, 3], vec![0.3f32, -1.0, 2.0, 0.5, 0.25, -0.75]).unwrap();
    let want = run(g, &[("input", x.clone())], &["fc/Relu6"]);
    let got = run(folded, &[("input", x)], &["fc/Relu6"]);
    assert!(max_rel_error(&got[0], &want[0]) <= 1e-5);
}

// ---------------------------------------------------------------- semantics

#[test]
fn folded_builtin_models_compute_the_same_logits() {
    for name in models::BUILTIN_MODELS {
        for seed in [1u64, 2] {
            let mut rng = Rng::new(seed);
            let mut g = model(name);
            randomize_batch_norms(&mut g, &mut rng);
            let mut folded = g.clone();
            assert!(fold(&mut folded).count(FOLD_FUSED) >= 2);
            let x: Vec<f32> = (0..2 * 28 * 28).map(|_| rng.uniform()).collect();
            let x = Tensor::from_vec(&[2, 28, 28, 1], x).unwrap();
            let feeds = [(models::INPUT, x)];
            let want = run(g, &feeds, &[models::LOGITS]);
            let got = run(folded, &feeds, &[models::LOGITS]);
            let err = max_rel_error(&got[0], &want[0]);
            assert!(err <= 1e-5, "{name} seed {seed}: relative error {err:e}");
        }
    }
}

#[derive(serde::Deserialize)]
struct Meta {
    feeds: BTreeMap<String, String>,
    fetches: BTreeMap<String, String>,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tf")
        .join(name)
}

#[test]
fn folded_tensorflow_graphs_reproduce_tensorflow_outputs() {
    for (name, bns) in [("conv_bn_relu6", 1), ("cnn", 3), ("resnet", 6)] {
        let d = fixture(name);
        let meta: Meta =
            serde_json::from_str(&std::fs::read_to_string(d.join("meta.json")).unwrap()).unwrap();
        let mut g = read_graph(&d.join("graph.pb"), OpRegistry::builtin()).unwrap();
        let report = fold(&mut g);
        assert_eq!(
            report.count(FOLD_FUSED),
            bns,
            "{name}: {:?}",
            report.skipped
        );
        let feeds: Vec<(&str, Tensor)> = meta
            .feeds
            .iter()
            .map(|(n, f)| {
                let a: ArrayD<f32> = read_npy(d.join(f)).unwrap();
                (n.as_str(), Tensor::from_array(a))
            })
            .collect();
        let fetches: Vec<&str> = meta.fetches.keys().map(String::as_str).collect();
        let got = run(g, &feeds, &fetches);
        for ((fetch, file), got) in meta.fetches.iter().zip(got) {
            let want: ArrayD<f32> = read_npy(d.join(file)).unwrap();
            let err = max_rel_error(&got, &want);
            assert!(err <= 1e-5, "{name}/{fetch}: relative error {err:e}");
        }
    }
}

/// Two layers in one scope `test`: a depthwise conv with channel multiplier
/// 2 and a conv, each followed by a batch norm with distinct per-channel
/// parameters.
fn two_layers_in_one_scope() -> Graph {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[1, 5, 5, 3]))
        .unwrap();
    let ramp = |n: usize, a: f32, k: f32| {
        Tensor::from_vec(&[n], (0..n).map(|i| a + k * i as f32).collect::<Vec<f32>>()).unwrap()
    };
    b.scope("test", |b| {
        let bn = |b: &mut GraphBuilder<'_>, y, n: usize| {
            let gamma = b.constant("gamma", ramp(n, 0.5, 0.25))?;
            let beta = b.constant("beta", ramp(n, -0.5, 0.2))?;
            let mean = b.constant("moving_mean", ramp(n, 0.4, -0.15))?;
            let var = b.constant("moving_variance", ramp(n, 0.3, 0.35))?;
            b.fused_batch_norm("FusedBatchNormV3", y, gamma, beta, mean, var, 0.001, false)
        };
        let wd: Vec<f32> = (0..3 * 3 * 3 * 2)
            .map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let wd = b.constant(
            "depthwise_weights",
            Tensor::from_vec(&[3, 3, 3, 2], wd).unwrap(),
        )?;
        let y = b.depthwise_conv2d("depthwise", x, wd, [1, 1], Padding::Same)?;
        let y = bn(b, y, 6)?;
        let y = b.relu6("Relu6", y.into())?;
        let wc: Vec<f32> = (0..6 * 4)
            .map(|i| ((i * 5) % 9) as f32 * 0.1 - 0.4)
            .collect();
        let wc = b.constant("weights", Tensor::from_vec(&[1, 1, 6, 4], wc).unwrap())?;
        let y = b.conv2d("Conv2D", y, wc, [1, 1], Padding::Valid)?;
        let y = bn(b, y, 4)?;
        b.identity("output", y.into())
    })
    .unwrap();
    b.finish()
}

#[test]
fn a_second_fold_in_the_same_scope_gets_fresh_names() {
    let mut g = two_layers_in_one_scope();
    assert_eq!(fold(&mut g).count(FOLD_FUSED), 2);
    assert_eq!(
        line(&g, "test/BatchNorm_Fold_1/mul"),
        "test/BatchNorm_Fold_1/mul = Mul(test/gamma_1, test/BatchNorm_Fold_1/Rsqrt)"
    );
    assert_eq!(
        line(&g, "test/mul_fold_1"),
        "test/mul_fold_1 = Mul(test/weights, test/BatchNorm_Fold_1/mul)"
    );
    assert_eq!(
        line(&g, "test/Conv2D_Fold"),
        "test/Conv2D_Fold = Conv2D(test/Relu6, test/mul_fold_1)"
    );
    assert_eq!(
        line(&g, "test/add_fold_1"),
        "test/add_fold_1 = Add(test/Conv2D_Fold, test/BatchNorm_Fold_1/bias)"
    );
    assert_eq!(
        line(&g, "test/output"),
        "test/output = Identity(test/add_fold_1)"
    );
    assert!(
        !dump(&g).contains("//"),
        "no name contains '//' (scenario 41)"
    );
}

#[test]
fn a_depthwise_multiplier_scales_the_right_output_channels() {
    let g = two_layers_in_one_scope();
    let mut folded = g.clone();
    fold(&mut folded);
    let x: Vec<f32> = (0..75)
        .map(|i| ((i * 13) % 17) as f32 * 0.1 - 0.8)
        .collect();
    let x = Tensor::from_vec(&[1, 5, 5, 3], x).unwrap();
    let fetches = ["test/Relu6", "test/output"];
    let want = run(g, &[("input", x.clone())], &fetches);
    let got = run(folded, &[("input", x)], &fetches);
    for (i, fetch) in fetches.iter().enumerate() {
        let err = max_rel_error(&got[i], &want[i]);
        assert!(err <= 1e-5, "{fetch}: relative error {err:e}");
    }
}

#[test]
fn a_layer_feeding_two_batch_norms_is_folded_once() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[1, 3, 3, 2]))
        .unwrap();
    b.scope("test", |b| {
        let w = b.constant(
            "weights",
            Tensor::from_vec(&[1, 1, 2, 2], vec![0.5f32; 4]).unwrap(),
        )?;
        let y = b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?;
        for scope in ["bn_a", "bn_b"] {
            b.scope(scope, |b| {
                let c = |v: f32| Tensor::from_vec(&[2], vec![v; 2]).unwrap();
                let (g, be) = (b.constant("gamma", c(2.0))?, b.constant("beta", c(0.1))?);
                let (m, v) = (b.constant("mean", c(0.3))?, b.constant("variance", c(1.5))?);
                let bn = b.fused_batch_norm("FusedBatchNormV3", y, g, be, m, v, 0.001, false)?;
                b.relu6("Relu6", bn.into())
            })?;
        }
        Ok::<_, quant_core::GraphError>(())
    })
    .unwrap();
    let mut g = b.finish();
    let report = fold(&mut g);
    assert_eq!(report.count(FOLD_FUSED), 1);
    assert_eq!(report.applied[0].node, "test/bn_a/FusedBatchNormV3");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].node, "test/bn_b/FusedBatchNormV3");
    assert_eq!(
        report.skipped[0].reason,
        "layer 'test/Conv2D' is already folded by an earlier batch norm"
    );
    assert_eq!(
        line(&g, "test/bn_a/Relu6"),
        "test/bn_a/Relu6 = Relu6(test/add_fold)"
    );
    assert_eq!(
        line(&g, "test/bn_b/Relu6"),
        "test/bn_b/Relu6 = Relu6(test/bn_b/FusedBatchNormV3)"
    );
}
