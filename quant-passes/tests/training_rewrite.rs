//! The training rewrite of graphs whose batch norms train: batch-norm
//! folding in training form (reference semantics §2.4, scenarios 37–41, 45),
//! `freeze_bn_delay`, and `quant_delay` (decision 7, scenario 51), checked
//! by structure (snapshots, wiring) and through the executor.
//!
//! Snapshots live in `tests/snapshots/*.txt`; regenerate them with
//! `UPDATE_SNAPSHOTS=1 cargo test -p quant-passes --test training_rewrite`.

use ndarray::ArrayD;
use quant_core::builder::{GraphBuilder, Padding};
use quant_core::graph::dump;
use quant_core::models::{self, ModelOptions, Rng};
use quant_core::{DType, Graph, Shape, Tensor};
use quant_kernels::session::Session;
use quant_passes::passes::fold_batch_norms::FOLD_FUSED;
use quant_passes::passes::gradients::{GradientOptions, gradients_with_seeds};
use quant_passes::{
    FoldBatchNorms, PassManager, PassReport, QuantizeConfig, TrainingOptions,
    experimental_create_training_graph,
};

mod common;
use common::{arrays, check_snapshot, line, max_rel_error, model, randomize_batch_norms};

fn training_model(name: &str) -> Graph {
    models::builtin(
        name,
        ModelOptions {
            training: true,
            ..ModelOptions::default()
        },
    )
    .unwrap()
    .unwrap()
}

fn fold(graph: &mut Graph, freeze_bn_delay: Option<i64>) -> PassReport {
    let config = QuantizeConfig {
        freeze_bn_delay,
        ..QuantizeConfig::training()
    };
    PassManager::new()
        .with(FoldBatchNorms)
        .run(graph, &config)
        .unwrap()
}

fn rewrite(graph: &mut Graph, options: &TrainingOptions) -> PassReport {
    experimental_create_training_graph(graph, options).unwrap()
}

/// The moving-average update ops (`.../AssignMovingAvg`, `..._1`), in graph order.
fn update_ops(graph: &Graph) -> Vec<String> {
    graph
        .nodes()
        .filter(|(_, n)| n.op() == "AssignSub" && n.name().contains("AssignMovingAvg"))
        .map(|(_, n)| n.name().to_string())
        .collect()
}

fn images(seed: u64, n: usize) -> Tensor {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..n * 28 * 28).map(|_| rng.uniform()).collect();
    Tensor::from_vec(&[n, 28, 28, 1], x).unwrap()
}

/// Runs `graph` on `x`, fetching the logits and every moving-average update.
fn logits_and_updates(graph: Graph, x: &Tensor, step: Option<i64>) -> Vec<ArrayD<f32>> {
    let updates = update_ops(&graph);
    let mut fetches = vec![models::LOGITS];
    fetches.extend(updates.iter().map(String::as_str));
    let mut s = Session::new(graph).unwrap();
    if let Some(step) = step {
        s.set_step(step).unwrap();
    }
    arrays(s.run(&[(models::INPUT, x.clone())], &fetches).unwrap())
}

// ---------------------------------------------------------------- structure

#[test]
fn training_batch_norms_fold_as_the_snapshots_say() {
    for (name, freeze, snapshot) in [
        ("mnist-cnn", None, "mnist_cnn_training_fold"),
        ("mnist-cnn", Some(100), "mnist_cnn_training_fold_freeze"),
        ("resnet-block", None, "resnet_block_training_fold"),
    ] {
        let mut g = training_model(name);
        let report = fold(&mut g, freeze);
        assert!(report.count(FOLD_FUSED) >= 2, "{name}");
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        check_snapshot(snapshot, &dump(&g));
    }
}

#[test]
fn scenarios_37_to_39_the_training_fold_is_wired_as_section_2_4_says() {
    let mut g = training_model("mnist-cnn");
    fold(&mut g, None);
    let s = "conv1";
    let f = "conv1/BatchNorm_Fold";
    let c = "conv1/BatchNorm_Fold/batch_norm_correction";
    let bn = "conv1/BatchNorm/FusedBatchNormV3";
    for (node, want) in [
        // Batch statistics, the variance without Bessel's correction.
        (
            "conv1/BatchNorm/Undo_Bessel_Correction",
            format!("Mul({bn}:2, conv1/BatchNorm/Undo_Bessel_Correction/factor)"),
        ),
        (
            "conv1/BatchNorm_Fold/add",
            format!("Add(conv1/BatchNorm/Undo_Bessel_Correction, {f}/add/y)"),
        ),
        (
            "conv1/BatchNorm_Fold/mul_1",
            format!("Mul({bn}:1, {f}/mul)"),
        ),
        // Corrections: c = rsqrt(σ²_mv+ε)/rsqrt(σ²_B+ε), r = 1/c.
        (
            &format!("{c}/add"),
            format!("Add(conv1/BatchNorm/moving_variance, {c}/add/y)"),
        ),
        (
            &format!("{c}/scale_compute"),
            format!("RealDiv({c}/Rsqrt, {f}/Rsqrt)"),
        ),
        (
            &format!("{c}/reciprocal_compute"),
            format!("RealDiv({c}/reciprocal_compute/x, {c}/correction_scale)"),
        ),
        (
            &format!("{c}/offset_compute"),
            format!("Mul(conv1/BatchNorm/gamma, {c}/sub)"),
        ),
        // 37: mul_fold = correction_mult ⊙ m feeds the clone.
        (
            "conv1/correction_mult",
            format!("Mul(conv1/weights, {c}/correction_scale)"),
        ),
        (
            "conv1/mul_fold",
            format!("Mul({s}/correction_mult, {f}/mul)"),
        ),
        // 38: the clone reads the original input and feeds post_conv_mul.
        ("conv1/Conv2D_Fold", "Conv2D(input, conv1/mul_fold)".into()),
        (
            "conv1/post_conv_mul",
            format!("Mul(conv1/Conv2D_Fold, {c}/correction_recip)"),
        ),
        (
            "conv1/correction_add",
            format!("Add(conv1/post_conv_mul, {c}/correction_offset)"),
        ),
        // 39: add_fold = correction_add + bias feeds the activation.
        (
            "conv1/add_fold",
            format!("Add(conv1/correction_add, {f}/bias)"),
        ),
        ("conv1/Relu6", "Relu6(conv1/add_fold)".into()),
    ] {
        assert_eq!(line(&g, node), format!("{node} = {want}"));
    }
    // Without a freeze delay there is no step counter and no select.
    assert!(g.by_name("fake_quantization_step").is_none());
    assert!(!dump(&g).contains("SelectV2"));
    // The batch norm keeps computing batch statistics for the fold and the
    // moving averages: its output 0 is dangling.
    let bn_id = g.id(bn).unwrap();
    assert!(g.consumers(g.outlet(bn).unwrap()).is_empty());
    assert!(g.has_consumers(bn_id));
}

#[test]
fn scenario_40_a_freeze_delay_switches_the_corrections_and_the_update_decays() {
    let mut g = training_model("mnist-cnn");
    fold(&mut g, Some(100));
    let c = "conv1/BatchNorm_Fold/batch_norm_correction";
    for (node, want) in [
        (
            format!("{c}/use_moving_average"),
            format!("GreaterEqual(fake_quantization_step/Identity, {c}/use_moving_average/y)"),
        ),
        (
            format!("{c}/correction_recip"),
            format!("SelectV2({c}/use_moving_average, {c}/ones, {c}/reciprocal_compute)"),
        ),
        (
            format!("{c}/correction_offset"),
            format!("SelectV2({c}/use_moving_average, {c}/offset_compute, {c}/zeros)"),
        ),
        (
            "conv1/BatchNorm/AssignMovingAvg/mul".into(),
            format!("Mul(conv1/BatchNorm/AssignMovingAvg/sub, {c}/freeze_moving_mean)"),
        ),
        (
            "conv1/BatchNorm/AssignMovingAvg_1/mul".into(),
            format!("Mul(conv1/BatchNorm/AssignMovingAvg_1/sub, {c}/freeze_moving_var)"),
        ),
        (
            format!("{c}/freeze_moving_mean"),
            format!(
                "SelectV2({c}/use_moving_average, {c}/freeze_moving_mean/zero, \
                 conv1/BatchNorm/AssignMovingAvg/decay)"
            ),
        ),
    ] {
        assert_eq!(line(&g, &node), format!("{node} = {want}"));
    }
    let delay = g
        .by_name(&format!("{c}/use_moving_average/y"))
        .unwrap()
        .attr_tensor("value")
        .unwrap()
        .clone();
    assert_eq!(delay, Tensor::scalar(100i64));
    // One step counter shared by both layers.
    assert_eq!(
        dump(&g)
            .matches("= AssignAdd(fake_quantization_step")
            .count(),
        1
    );
}

#[test]
fn scenario_41_45_names_have_no_double_slash_and_depthwise_corrections_are_reshaped() {
    let mut g = training_model("resnet-block");
    rewrite(
        &mut g,
        &TrainingOptions {
            quant_delay: 10,
            freeze_bn_delay: Some(20),
            ..TrainingOptions::default()
        },
    );
    for (_, n) in g.nodes() {
        assert!(!n.name().contains("//"), "{}", n.name());
    }
    let s = "separable/depthwise";
    let f = "separable/depthwise/BatchNorm_Fold";
    assert_eq!(
        line(&g, &format!("{f}/scale_reshape")),
        format!("{f}/scale_reshape = Reshape({f}/mul, {f}/scale_reshape/shape)")
    );
    assert_eq!(
        line(&g, &format!("{f}/correction_reshape")),
        format!(
            "{f}/correction_reshape = Reshape({f}/batch_norm_correction/correction_scale, \
             {f}/correction_reshape/shape)"
        )
    );
    assert_eq!(
        line(&g, &format!("{s}/correction_mult")),
        format!("{s}/correction_mult = Mul({s}/depthwise_weights, {f}/correction_reshape)")
    );
    assert_eq!(
        line(&g, &format!("{s}/mul_fold")),
        format!("{s}/mul_fold = Mul({s}/correction_mult, {f}/scale_reshape)")
    );
    // Scenario 34: the weights quantizer sits between mul_fold and the clone.
    assert_eq!(
        line(&g, &format!("{s}/weights_quant/FakeQuantWithMinMaxVars")),
        format!(
            "{s}/weights_quant/FakeQuantWithMinMaxVars = FakeQuantWithMinMaxVars({s}/mul_fold, \
             {s}/weights_quant/AssignMinLast, {s}/weights_quant/AssignMaxLast)"
        )
    );
    let clone = g.by_name(&format!("{s}/depthwise_Fold")).unwrap();
    assert_eq!(clone.op(), "DepthwiseConv2dNative");
    assert_eq!(
        g.outlet_name(clone.inputs()[1]),
        format!("{s}/weights_quant/delayed_quant")
    );
}

#[test]
fn training_rewrites_snapshot_and_are_idempotent() {
    let cases: [(&str, TrainingOptions, &str); 4] = [
        (
            "mnist-cnn",
            TrainingOptions::default(),
            "mnist_cnn_training_quantize",
        ),
        (
            "resnet-block",
            TrainingOptions {
                quant_delay: 100,
                freeze_bn_delay: Some(200),
                ..TrainingOptions::default()
            },
            "resnet_block_training_quantize_delay",
        ),
        (
            "resnet-block",
            TrainingOptions {
                symmetric: true,
                ..TrainingOptions::default()
            },
            "resnet_block_training_quantize_symmetric",
        ),
        (
            "resnet-block",
            TrainingOptions {
                per_channel: true,
                ..TrainingOptions::default()
            },
            "resnet_block_training_quantize_per_channel",
        ),
    ];
    for (name, options, snapshot) in cases {
        let mut g = training_model(name);
        rewrite(&mut g, &options);
        check_snapshot(snapshot, &dump(&g));
        let once = dump(&g);
        let report = rewrite(&mut g, &options);
        assert!(report.quantizers.is_empty(), "{snapshot}");
        assert_eq!(
            dump(&g),
            once,
            "{snapshot}: a second rewrite changed the graph"
        );
    }
}

// ---------------------------------------------------------------- semantics

#[test]
fn before_freezing_the_folded_graph_is_batch_norm_with_batch_statistics() {
    for name in models::BUILTIN_MODELS {
        let mut g = training_model(name);
        randomize_batch_norms(&mut g, &mut Rng::new(7));
        let mut folded = g.clone();
        fold(&mut folded, Some(1000));
        let x = images(3, 4);
        let want = logits_and_updates(g, &x, None);
        let got = logits_and_updates(folded, &x, Some(0));
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let err = max_rel_error(a, b);
            assert!(err <= 1e-5, "{name} fetch {i}: relative error {err:e}");
        }
    }
}

#[test]
fn from_the_freeze_step_on_the_folded_graph_uses_the_moving_statistics() {
    for name in models::BUILTIN_MODELS {
        let mut g = training_model(name);
        randomize_batch_norms(&mut g, &mut Rng::new(11));
        fold(&mut g, Some(5));
        // The same network with inference-mode batch norms.
        let mut inference = model(name);
        randomize_batch_norms(&mut inference, &mut Rng::new(11));
        let x = images(5, 3);
        let want = arrays(
            Session::new(inference)
                .unwrap()
                .run(&[(models::INPUT, x.clone())], &[models::LOGITS])
                .unwrap(),
        );
        let updates = update_ops(&g);
        let mut s = Session::new(g).unwrap();
        let moving = |s: &Session| -> Vec<Tensor> {
            let mut v: Vec<Tensor> = s
                .variables()
                .filter(|(n, _)| n.contains("moving_"))
                .map(|(_, t)| t.clone())
                .collect();
            v.sort_by_key(|t| format!("{t:?}"));
            v
        };
        let before = moving(&s);
        // Run 5 reads step 5 = freeze_bn_delay: frozen.
        s.set_step(4).unwrap();
        let mut fetches = vec![models::LOGITS];
        fetches.extend(updates.iter().map(String::as_str));
        let got = arrays(s.run(&[(models::INPUT, x.clone())], &fetches).unwrap());
        let err = max_rel_error(&got[0], &want[0]);
        assert!(err <= 1e-5, "{name}: relative error {err:e}");
        assert_eq!(moving(&s), before, "{name}: the moving averages moved");
        // One step earlier they still move.
        s.set_step(0).unwrap();
        s.run(&[(models::INPUT, x)], &fetches).unwrap();
        assert_ne!(
            moving(&s),
            before,
            "{name}: the moving averages did not move"
        );
    }
}

/// `BatchNorm/FusedBatchNormV3` in training mode over `y` with variables
/// γ, β, μ_mv, σ²_mv filled with the given values, and its moving-average
/// updates `BatchNorm/AssignMovingAvg{,_1}` with `decay` (= 1 − momentum).
fn training_batch_norm(
    b: &mut GraphBuilder<'_>,
    y: quant_core::OutletId,
    [gamma, beta, mean, var]: [f32; 4],
    decay: f32,
) -> Result<quant_core::NodeId, quant_core::GraphError> {
    let n = b
        .graph()
        .fact(y)
        .shape
        .as_ref()
        .and_then(|s| s.dim(3))
        .unwrap();
    let c = |v: f32| Tensor::from_vec(&[n], vec![v; n]).unwrap();
    let gamma = b.variable("BatchNorm/gamma", c(gamma), true)?;
    let beta = b.variable("BatchNorm/beta", c(beta), true)?;
    let mean = b.variable("BatchNorm/moving_mean", c(mean), false)?;
    let var = b.variable("BatchNorm/moving_variance", c(var), false)?;
    let bn = b.fused_batch_norm(
        "BatchNorm/FusedBatchNormV3",
        y,
        gamma,
        beta,
        mean,
        var,
        0.001,
        true,
    )?;
    let decay = b.constant("BatchNorm/AssignMovingAvg/decay", Tensor::scalar(decay))?;
    for (k, moving, update) in [(1, mean, "AssignMovingAvg"), (2, var, "AssignMovingAvg_1")] {
        let stat = quant_core::OutletId::new(bn, k);
        let sub = b.binary("Sub", &format!("BatchNorm/{update}/sub"), moving, stat)?;
        let mul = b.binary("Mul", &format!("BatchNorm/{update}/mul"), sub, decay)?;
        b.add(
            "AssignSub",
            &format!("BatchNorm/{update}"),
            &[moving, mul],
            quant_core::Attrs::new(),
        )?;
    }
    Ok(bn)
}

/// One 1×1 convolution with one channel and a training-mode batch norm with
/// its updates: the §2.4 worked example (γ=2, β=0.5, ε=0.001, W=3,
/// μ_mv=0.25, σ²_mv=0.999, a batch with μ_B=1, σ²_B=3.999).
fn worked_example(freeze: Option<i64>) -> Session {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder(
            "input",
            DType::F32,
            Shape(vec![None, Some(1), Some(1), Some(1)]),
        )
        .unwrap();
    b.scope("test", |b| {
        let w = b.variable(
            "weights",
            Tensor::from_vec(&[1, 1, 1, 1], vec![3.0f32]).unwrap(),
            true,
        )?;
        let y = b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?;
        let bn = training_batch_norm(b, y, [2.0, 0.5, 0.25, 0.999], 0.1)?;
        b.relu6("Relu6", bn.into())
    })
    .unwrap();
    let mut g = b.finish();
    assert_eq!(fold(&mut g, freeze).count(FOLD_FUSED), 1);
    Session::new(g).unwrap()
}

#[test]
fn the_worked_example_of_section_2_4() {
    // Conv outputs 3x: [3, −1, 1+t, 1−t] with t² = 3.998 have mean 1 and
    // biased variance 3.999 (σ_B = 2); the kernel reports 3.999·4/3.
    let t = 3.998f64.sqrt();
    let x: Vec<f32> = [3.0, -1.0, 1.0 + t, 1.0 - t]
        .iter()
        .map(|v| (v / 3.0) as f32)
        .collect();
    let x = Tensor::from_vec(&[4, 1, 1, 1], x).unwrap();
    let first = |s: &mut Session, step: i64| -> f32 {
        s.set_step(step).unwrap();
        let out = s.run(&[("input", x.clone())], &["test/add_fold"]).unwrap();
        out[0]
            .array::<f32>()
            .unwrap()
            .iter()
            .copied()
            .next()
            .unwrap()
    };
    // Before freezing: γ(Wx − μ_B)/σ_B + β = 2·2/2 + 0.5 = 2.5.
    let mut s = worked_example(None);
    let y = first(&mut s, 0);
    assert!((y - 2.5).abs() < 1e-4, "{y}");
    let mut s = worked_example(Some(3));
    assert!((first(&mut s, 0) - 2.5).abs() < 1e-4);
    // After freezing: γ(Wx − μ_mv)/σ_mv + β = 2·2.75/1 + 0.5 = 6.0.
    let y = first(&mut s, 5);
    assert!((y - 6.0).abs() < 1e-4, "{y}");
}

#[test]
fn below_quant_delay_the_training_graph_computes_the_float_training_graph() {
    let mut float = training_model("mnist-cnn");
    randomize_batch_norms(&mut float, &mut Rng::new(5));
    let mut quantized = float.clone();
    fold(&mut float, None);
    rewrite(
        &mut quantized,
        &TrainingOptions {
            quant_delay: 100,
            ..TrainingOptions::default()
        },
    );
    let x = images(9, 4);
    let want = logits_and_updates(float, &x, None);
    // Run 1 reads step 1 < 100: every select passes the float tensor.
    let mut s = Session::new(quantized).unwrap();
    let mut fetches = vec![models::LOGITS];
    let updates = update_ops(s.graph());
    fetches.extend(updates.iter().map(String::as_str));
    let got = arrays(s.run(&[(models::INPUT, x.clone())], &fetches).unwrap());
    assert_eq!(
        got, want,
        "below the delay the outputs must be bit-identical"
    );
    // Run 100 reads step 100: quantized. The logits' act_quant select now
    // passes its fake quant, and the logits change.
    s.set_step(99).unwrap();
    let out = s
        .run(
            &[(models::INPUT, x)],
            &[
                models::LOGITS,
                "logits/act_quant/delayed_quant",
                "logits/act_quant/FakeQuantWithMinMaxVars",
            ],
        )
        .unwrap();
    let out = arrays(out);
    assert_eq!(out[1], out[2]);
    assert_ne!(out[0], want[0]);
}

/// The logits and `∂(Σ seed ⊙ logits)/∂input` of `graph` on `x`.
fn forward_and_input_gradient(mut graph: Graph, x: &Tensor, seed: &Tensor) -> Vec<ArrayD<f32>> {
    let logits = graph.outlet(models::LOGITS).unwrap();
    let input = graph.outlet(models::INPUT).unwrap();
    let mut b = GraphBuilder::extend(graph, quant_core::OpRegistry::builtin());
    let seed = b.constant("seed", seed.clone()).unwrap();
    graph = b.finish();
    let grads = gradients_with_seeds(
        &mut graph,
        &[(logits, seed)],
        &[input],
        &GradientOptions::default(),
    )
    .unwrap();
    let grad = graph.outlet_name(grads[0].unwrap());
    let mut s = Session::new(graph).unwrap();
    arrays(
        s.run(&[(models::INPUT, x.clone())], &[models::LOGITS, &grad])
            .unwrap(),
    )
}

#[test]
fn scenario_47_folding_keeps_the_forward_output_and_the_input_gradient() {
    for name in models::BUILTIN_MODELS {
        let mut g = training_model(name);
        randomize_batch_norms(&mut g, &mut Rng::new(13));
        let mut folded = g.clone();
        fold(&mut folded, None);
        let x = images(17, 4);
        let mut rng = Rng::new(19);
        let seed = Tensor::from_vec(&[4, 10], (0..40).map(|_| rng.normal()).collect()).unwrap();
        let want = forward_and_input_gradient(g, &x, &seed);
        let got = forward_and_input_gradient(folded, &x, &seed);
        for (what, a, b) in [
            ("logits", &got[0], &want[0]),
            ("input gradient", &got[1], &want[1]),
        ] {
            let err = max_rel_error(a, b);
            assert!(err <= 1e-3, "{name} {what}: relative error {err:e}");
        }
    }
}

/// `S/Conv2D` → training-mode `S/BatchNorm` with its moving-average
/// updates → `S/BatchNorm/Identity` (the "forced updates" form) → `act`.
fn conv_bn_forced_updates(
    b: &mut GraphBuilder<'_>,
    scope: &str,
    x: quant_core::OutletId,
    act: &str,
) -> quant_core::OutletId {
    b.scope(scope, |b| {
        let w = b.variable(
            "weights",
            Tensor::from_vec(
                &[1, 1, 3, 3],
                (0..9).map(|i| i as f32 * 0.1 - 0.4).collect(),
            )
            .unwrap(),
            true,
        )?;
        let y = b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?;
        let bn = training_batch_norm(b, y, [1.0, 0.0, 0.0, 1.0], 0.01)?;
        let forced = b.identity("BatchNorm/Identity", bn.into())?;
        b.unary(act, act, forced)
    })
    .unwrap()
}

#[test]
fn scenario_36_forced_batch_norm_updates_keep_the_post_activation_bypass_quantized() {
    for act in ["Relu", "Relu6", "Identity"] {
        let mut b = GraphBuilder::new();
        let x = b
            .placeholder("input", DType::F32, Shape::known(&[1, 4, 4, 3]))
            .unwrap();
        let y = conv_bn_forced_updates(&mut b, "test/test", x, act);
        let sum = b.binary("AddV2", "test/add", y, x).unwrap();
        conv_bn_forced_updates(&mut b, "test/next", sum, "Relu6");
        let mut g = b.finish();
        rewrite(&mut g, &TrainingOptions::default());
        let add = g.by_name("test/add").unwrap();
        let fq_input = add
            .inputs()
            .iter()
            .any(|i| g.node(i.node).op() == "FakeQuantWithMinMaxVars");
        let fq_consumer = g
            .consumer_nodes(g.id("test/add").unwrap())
            .into_iter()
            .any(|c| g.node(c).op() == "FakeQuantWithMinMaxVars");
        assert!(fq_input && fq_consumer, "{act}:\n{}", dump(&g));
        assert!(
            g.by_name("test/post_activation_bypass_quant/FakeQuantWithMinMaxVars")
                .is_some(),
            "{act}"
        );
    }
}

#[test]
fn scenario_7_the_step_counter_is_created_once_and_counts_runs() {
    use quant_passes::passes::step::{STEP_TENSOR, quantization_step};
    let mut b = GraphBuilder::new();
    let first = quantization_step(&mut b).unwrap();
    let nodes = b.graph().len();
    assert_eq!(quantization_step(&mut b).unwrap(), first);
    assert_eq!(b.graph().len(), nodes, "the second request adds nothing");
    let one = b.constant("one", Tensor::scalar(1i64)).unwrap();
    b.binary("AddV2", "a", first, one).unwrap();
    b.binary("Mul", "b", first, one).unwrap();
    let mut s = Session::new(b.finish()).unwrap();
    let read = |s: &mut Session, fetches: &[&str]| -> Vec<i64> {
        s.run(&[], fetches)
            .unwrap()
            .iter()
            .map(|t| t.array::<i64>().unwrap().iter().copied().next().unwrap())
            .collect()
    };
    assert_eq!(read(&mut s, &[STEP_TENSOR]), [1]);
    // Two expressions using the step in one run: one increment.
    assert_eq!(read(&mut s, &["a", "b"]), [3, 2]);
    assert_eq!(s.step(), Some(2));
}
