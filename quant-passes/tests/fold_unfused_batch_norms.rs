//! `FoldUnfusedBatchNorms` (reference semantics §2.5, decision 4), mostly
//! the eval form: the folded TensorFlow fixture reproduces TensorFlow's
//! output, the rewired nodes are those §2.5 item 7 names, rules that must
//! not fire do not (NCHW layers, batch statistics without moving averages),
//! a second run changes nothing, and the §8 scenarios 9, 36 and 41–45 hold.
//! The training form against TensorFlow is in `fold_tf_fixtures.rs`.

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use quant_core::builder::{GraphBuilder, Padding};
use quant_core::graph::dump;
use quant_core::serialize::read_graph;
use quant_core::{DType, Graph, OpRegistry, OutletId, Shape, Tensor};
use quant_passes::passes::fold_unfused_batch_norms::FOLD_UNFUSED;
use quant_passes::{
    FoldBatchNorms, FoldUnfusedBatchNorms, PassManager, PassReport, QuantizeConfig,
    TrainingOptions, create_eval_graph, experimental_create_training_graph,
};
use std::path::Path;

mod common;
use common::{check_snapshot, line, max_rel_error, model, run};

fn fold_with(graph: &mut Graph, config: &QuantizeConfig) -> PassReport {
    PassManager::new()
        .with(FoldBatchNorms)
        .with(FoldUnfusedBatchNorms)
        .run(graph, config)
        .unwrap()
}

fn fold(graph: &mut Graph) -> PassReport {
    fold_with(graph, &QuantizeConfig::eval())
}

/// `n` values `a, a + k, a + 2k, ...`.
fn ramp(n: usize, a: f32, k: f32) -> Tensor {
    Tensor::from_vec(&[n], (0..n).map(|i| a + k * i as f32).collect::<Vec<f32>>()).unwrap()
}

/// Which optional parameters the batch norm has.
#[derive(Clone, Copy)]
struct Flavour {
    gamma: bool,
    beta: bool,
}

const FULL: Flavour = Flavour {
    gamma: true,
    beta: true,
};

/// The arithmetic `tf.nn.batch_normalization` builds, under scope `scope`
/// (names as TensorFlow gives them): `add = AddV2(σ², add/y)`, `Rsqrt`,
/// `mul = Mul(Rsqrt, γ)` (with γ), `mul_1 = Mul(x, inv)`,
/// `mul_2 = Mul(μ, inv)` (`Mul(Neg(μ), inv)` without β),
/// `sub = Sub(β, mul_2)` (with β), `add_1 = AddV2(mul_1, sub | mul_2)`.
fn unfused_bn(
    b: &mut GraphBuilder<'_>,
    scope: &str,
    x: OutletId,
    channels: usize,
    flavour: Flavour,
) -> OutletId {
    b.scope(scope, |b| {
        let n = channels;
        let var = b.constant("moving_variance", ramp(n, 0.3, 0.35))?;
        let mean = b.constant("moving_mean", ramp(n, 0.4, -0.15))?;
        let eps = b.constant("add/y", Tensor::scalar(0.001f32))?;
        let add = b.binary("AddV2", "add", var, eps)?;
        let rsqrt = b.unary("Rsqrt", "Rsqrt", add)?;
        let inv = if flavour.gamma {
            let gamma = b.constant("gamma", ramp(n, 0.5, 0.25))?;
            b.binary("Mul", "mul", rsqrt, gamma)?
        } else {
            rsqrt
        };
        let mul_1 = b.binary("Mul", "mul_1", x, inv)?;
        let bias = if flavour.beta {
            let beta = b.constant("beta", ramp(n, -0.5, 0.2))?;
            let mul_2 = b.binary("Mul", "mul_2", mean, inv)?;
            b.binary("Sub", "sub", beta, mul_2)?
        } else {
            let neg = b.unary("Neg", "Neg", mean)?;
            b.binary("Mul", "mul_2", neg, inv)?
        };
        b.binary("AddV2", "add_1", mul_1, bias)
    })
    .unwrap()
}

/// `input [1, h, w, 3]` → `scope/Conv2D` (3 → 4, 3×3 SAME) → unfused BN
/// `scope/BatchNorm/batchnorm_1` → `scope/Relu`.
fn conv_bn_relu(scope: &str, spatial: Option<usize>, flavour: Flavour) -> Graph {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder(
            "input",
            DType::F32,
            Shape(vec![Some(1), spatial, spatial, Some(3)]),
        )
        .unwrap();
    // `scope/name`, or `name` at top level.
    let n = |name: &str| {
        if scope.is_empty() {
            name.to_string()
        } else {
            format!("{scope}/{name}")
        }
    };
    let w: Vec<f32> = (0..3 * 3 * 3 * 4)
        .map(|i| ((i * 5) % 13) as f32 * 0.1 - 0.6)
        .collect();
    let w = b
        .constant(&n("weights"), Tensor::from_vec(&[3, 3, 3, 4], w).unwrap())
        .unwrap();
    let conv = b.conv2d(&n("Conv2D"), x, w, [1, 1], Padding::Same).unwrap();
    let y = unfused_bn(&mut b, &n("BatchNorm/batchnorm_1"), conv, 4, flavour);
    b.unary("Relu", &n("Relu"), y).unwrap();
    b.finish()
}

fn image(h: usize) -> Tensor {
    let n = h * h * 3;
    Tensor::from_vec(
        &[1, h, h, 3],
        (0..n).map(|i| ((i * 7) % 17) as f32 * 0.1 - 0.8).collect(),
    )
    .unwrap()
}

/// Folds `g` and checks that `fetch` is unchanged (relative error ≤ 1e-5).
fn assert_folding_preserves(
    g: &Graph,
    feeds: &[(&str, Tensor)],
    fetch: &str,
    folds: usize,
) -> Graph {
    let mut folded = g.clone();
    let report = fold(&mut folded);
    assert_eq!(report.count(FOLD_UNFUSED), folds, "{:?}", report.skipped);
    let want = run(g.clone(), feeds, &[fetch]);
    let got = run(folded.clone(), feeds, &[fetch]);
    let err = max_rel_error(&got[0], &want[0]);
    assert!(err <= 1e-5, "{fetch}: relative error {err:e}");
    folded
}

// ------------------------------------------------------------ TF reference

#[derive(serde::Deserialize)]
struct Meta {
    fetches: std::collections::BTreeMap<String, String>,
}

#[test]
fn the_tensorflow_fixture_folds_and_reproduces_tensorflows_output() {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tf/unfused_bn");
    let meta: Meta =
        serde_json::from_str(&std::fs::read_to_string(d.join("meta.json")).unwrap()).unwrap();
    let mut g = read_graph(&d.join("graph.pb"), OpRegistry::builtin()).unwrap();
    let report = fold(&mut g);
    let applied: Vec<&str> = report.applied.iter().map(|a| a.node.as_str()).collect();
    assert_eq!(applied, ["conv1/BatchNorm/batchnorm/add_1"]);
    let bn = "conv1/BatchNorm/batchnorm";
    assert_eq!(
        line(&g, "conv1/mul_fold"),
        format!("conv1/mul_fold = Mul(conv1/weights, {bn}/mul)")
    );
    assert_eq!(
        line(&g, "conv1/Conv2D_Fold"),
        "conv1/Conv2D_Fold = Conv2D(input, conv1/mul_fold)"
    );
    assert_eq!(
        line(&g, "conv1/add_fold"),
        format!("conv1/add_fold = AddV2(conv1/Conv2D_Fold, {bn}/sub)")
    );
    assert_eq!(line(&g, "conv1/Relu"), "conv1/Relu = Relu(conv1/add_fold)");
    assert!(!g.has_consumers(g.id(&format!("{bn}/add_1")).unwrap()));

    let x: ArrayD<f32> = read_npy(d.join("input.npy")).unwrap();
    let fetches: Vec<&str> = meta.fetches.keys().map(String::as_str).collect();
    let got = run(g, &[("input", Tensor::from_array(x))], &fetches);
    for ((fetch, file), got) in meta.fetches.iter().zip(got) {
        let want: ArrayD<f32> = read_npy(d.join(file)).unwrap();
        let err = max_rel_error(&got, &want);
        assert!(err <= 1e-5, "{fetch}: relative error {err:e}");
    }
}

#[test]
fn the_folded_fixture_matches_the_snapshot() {
    // Reviewed against §2.5 item 7: mul_fold, Conv2D_Fold and add_fold are
    // appended; the batch-norm arithmetic stays, add_1 dangling.
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tf/unfused_bn");
    let mut g = read_graph(&d.join("graph.pb"), OpRegistry::builtin()).unwrap();
    fold(&mut g);
    check_snapshot("unfused_bn_eval_fold", &dump(&g));
}

#[test]
fn models_with_fused_batch_norms_give_the_unfused_pass_nothing_to_do() {
    for name in quant_core::models::BUILTIN_MODELS {
        let mut g = model(name);
        let before = dump(&g);
        let report = PassManager::new()
            .with(FoldUnfusedBatchNorms)
            .run(&mut g, &QuantizeConfig::eval())
            .unwrap();
        assert!(
            report.is_empty() && report.skipped.is_empty(),
            "{name}: {report:?}"
        );
        assert_eq!(dump(&g), before, "{name}");
    }
}

#[test]
fn the_eval_rewrite_quantizes_the_folded_fixture_like_a_fused_one() {
    // Scenarios 37–39 read in eval form: the weights quantizer reads
    // mul_fold, the activation quantizer follows the Relu add_fold feeds.
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tf/unfused_bn");
    let mut g = read_graph(&d.join("graph.pb"), OpRegistry::builtin()).unwrap();
    let report = create_eval_graph(&mut g).unwrap();
    assert_eq!(report.count(FOLD_UNFUSED), 1);
    assert_eq!(
        line(&g, "conv1/weights_quant/FakeQuantWithMinMaxVars"),
        "conv1/weights_quant/FakeQuantWithMinMaxVars = FakeQuantWithMinMaxVars(conv1/mul_fold, \
         conv1/weights_quant/min, conv1/weights_quant/max)"
    );
    assert_eq!(
        line(&g, "conv1/Conv2D_Fold"),
        "conv1/Conv2D_Fold = Conv2D(input, conv1/weights_quant/FakeQuantWithMinMaxVars)"
    );
    assert_eq!(
        line(&g, "conv1/act_quant/FakeQuantWithMinMaxVars"),
        "conv1/act_quant/FakeQuantWithMinMaxVars = FakeQuantWithMinMaxVars(conv1/Relu, \
         conv1/act_quant/min, conv1/act_quant/max)"
    );
}

// ---------------------------------------------------------------- structure

#[test]
fn with_and_without_gamma_and_beta_the_fold_preserves_the_output() {
    for gamma in [true, false] {
        for beta in [true, false] {
            let g = conv_bn_relu("test", Some(5), Flavour { gamma, beta });
            let g = assert_folding_preserves(&g, &[("input", image(5))], "test/Relu", 1);
            let bn = "test/BatchNorm/batchnorm_1";
            // Scenario 37 (multiplier): batchnorm_1/mul with γ, Rsqrt without.
            let multiplier = if gamma { "mul" } else { "Rsqrt" };
            assert_eq!(
                line(&g, "test/mul_fold"),
                format!("test/mul_fold = Mul(test/weights, {bn}/{multiplier})")
            );
            // Scenario 39 (bias): batchnorm_1/sub with β, mul_2 = (−μ)·inv without.
            let bias = if beta { "sub" } else { "mul_2" };
            assert_eq!(
                line(&g, "test/add_fold"),
                format!("test/add_fold = AddV2(test/Conv2D_Fold, {bn}/{bias})")
            );
            assert_eq!(line(&g, "test/Relu"), "test/Relu = Relu(test/add_fold)");
        }
    }
}

#[test]
fn scenario_9_and_41_a_top_level_batch_norm_folds_without_a_scope() {
    let g = conv_bn_relu("", Some(4), FULL);
    let g = assert_folding_preserves(&g, &[("input", image(4))], "Relu", 1);
    assert_eq!(
        line(&g, "mul_fold"),
        "mul_fold = Mul(weights, BatchNorm/batchnorm_1/mul)"
    );
    assert_eq!(
        line(&g, "Conv2D_Fold"),
        "Conv2D_Fold = Conv2D(input, mul_fold)"
    );
    assert_eq!(
        line(&g, "add_fold"),
        "add_fold = AddV2(Conv2D_Fold, BatchNorm/batchnorm_1/sub)"
    );
    assert!(
        g.nodes()
            .all(|(_, n)| !n.name().contains("//") && !n.name().starts_with('/'))
    );
}

#[test]
fn folding_twice_gives_a_byte_identical_dump() {
    let mut g = conv_bn_relu("test", Some(5), FULL);
    fold(&mut g);
    let once = dump(&g);
    let report = fold(&mut g);
    assert!(report.is_empty(), "{:?}", report.applied);
    assert_eq!(report.skipped.len(), 1);
    assert!(
        report.skipped[0].reason.starts_with("already folded"),
        "{:?}",
        report.skipped
    );
    assert_eq!(dump(&g), once);
}

#[test]
fn a_batch_norm_whose_add_1_has_no_consumers_is_left_alone() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[1, 4, 4, 3]))
        .unwrap();
    let w = b
        .constant(
            "test/weights",
            Tensor::from_vec(&[1, 1, 3, 4], vec![0.5f32; 12]).unwrap(),
        )
        .unwrap();
    let conv = b
        .conv2d("test/Conv2D", x, w, [1, 1], Padding::Same)
        .unwrap();
    unfused_bn(&mut b, "test/BatchNorm/batchnorm_1", conv, 4, FULL);
    let mut g = b.finish();
    let before = dump(&g);
    let report = fold(&mut g);
    assert!(report.is_empty());
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].node, "test/BatchNorm/batchnorm_1/add_1");
    assert_eq!(
        report.skipped[0].reason,
        "already folded: 'test/BatchNorm/batchnorm_1/add_1' has no consumers"
    );
    assert_eq!(dump(&g), before);
}

#[test]
fn in_a_training_rewrite_given_statistics_fold_in_eval_form() {
    // The statistics are constants, not batch moments of the layer output:
    // nothing to correct, as for an inference-mode fused batch norm.
    let g = conv_bn_relu("test", Some(5), FULL);
    let mut folded = g.clone();
    let report = fold_with(&mut folded, &QuantizeConfig::training());
    assert_eq!(report.count(FOLD_UNFUSED), 1, "{:?}", report.skipped);
    assert!(!dump(&folded).contains("batch_norm_correction"));
    let feeds = [("input", image(5))];
    let want = run(g, &feeds, &["test/Relu"]);
    let got = run(folded, &feeds, &["test/Relu"]);
    assert!(max_rel_error(&got[0], &want[0]) <= 1e-5);
}

/// `input [2, 4, 4, 3]` → `test/Conv2D` (3 → 2) → a batch norm on the
/// batch moments (`tf.nn.moments`: `Mean`, `SquaredDifference`,
/// `Squeeze`) with no moving averages → `test/Relu`.
fn batch_moments_without_updates() -> Graph {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[2, 4, 4, 3]))
        .unwrap();
    let w = b
        .constant(
            "test/weights",
            Tensor::from_vec(&[1, 1, 3, 2], vec![0.5f32, -0.25, 1.0, 0.75, -0.5, 0.2]).unwrap(),
        )
        .unwrap();
    let y = b
        .conv2d("test/Conv2D", x, w, [1, 1], Padding::Same)
        .unwrap();
    let y = b
        .scope("test/BatchNorm", |b| {
            let mean = b.mean("moments/mean", y, &[0, 1, 2], true)?;
            let stop = b.unary("StopGradient", "moments/StopGradient", mean)?;
            let sq = b.binary("SquaredDifference", "moments/SquaredDifference", y, stop)?;
            let var = b.mean("moments/variance", sq, &[0, 1, 2], true)?;
            let squeeze = |b: &mut GraphBuilder<'_>, name: &str, t| {
                let a = [(
                    "squeeze_dims".into(),
                    quant_core::AttrValue::Ints(vec![0, 1, 2]),
                )];
                b.add("Squeeze", name, &[t], a.into_iter().collect())
                    .map(OutletId::from)
            };
            let mean = squeeze(b, "moments/Squeeze", mean)?;
            let var = squeeze(b, "moments/Squeeze_1", var)?;
            let eps = b.constant("batchnorm_1/add/y", Tensor::scalar(0.001f32))?;
            let add = b.binary("AddV2", "batchnorm_1/add", var, eps)?;
            let inv = b.unary("Rsqrt", "batchnorm_1/Rsqrt", add)?;
            let mul_1 = b.binary("Mul", "batchnorm_1/mul_1", y, inv)?;
            let mul_2 = b.binary("Mul", "batchnorm_1/mul_2", mean, inv)?;
            let beta = b.constant("beta", ramp(2, 0.1, 0.2))?;
            let sub = b.binary("Sub", "batchnorm_1/sub", beta, mul_2)?;
            b.binary("AddV2", "batchnorm_1/add_1", mul_1, sub)
        })
        .unwrap();
    b.unary("Relu", "test/Relu", y).unwrap();
    b.finish()
}

#[test]
fn batch_statistics_without_moving_averages_are_reported_and_left_alone() {
    let mut g = batch_moments_without_updates();
    let before = dump(&g);
    let report = fold_with(&mut g, &QuantizeConfig::training());
    assert!(report.is_empty());
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].node, "test/BatchNorm/batchnorm_1/add_1");
    assert_eq!(
        report.skipped[0].reason,
        "batch statistics without a moving-average update of the mean \
         (Mul(Sub(moving_mean, 'test/BatchNorm/moments/Squeeze'), decay)): the training form \
         of folding needs the moving statistics"
    );
    assert_eq!(dump(&g), before);
}

/// `scope/Conv2D` (1×1, 3 → 3) → an unfused batch norm on the batch
/// moments (contrib's names, `keep_dims = false`) with its moving-average
/// updates → `scope/BatchNorm/Identity` (the "forced updates" form) → `act`.
fn conv_unfused_training_bn(
    b: &mut GraphBuilder<'_>,
    scope: &str,
    x: OutletId,
    act: &str,
) -> OutletId {
    b.scope(scope, |b| {
        let w: Vec<f32> = (0..9).map(|i| i as f32 * 0.1 - 0.4).collect();
        let w = b.variable("weights", Tensor::from_vec(&[1, 1, 3, 3], w).unwrap(), true)?;
        let y = b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?;
        let gamma = b.variable("BatchNorm/gamma", ramp(3, 0.8, 0.2), true)?;
        let beta = b.variable("BatchNorm/beta", ramp(3, -0.1, 0.1), true)?;
        let moving_mean = b.variable("BatchNorm/moving_mean", ramp(3, 0.0, 0.1), false)?;
        let moving_var = b.variable("BatchNorm/moving_variance", ramp(3, 1.0, 0.2), false)?;
        let mean = b.mean("BatchNorm/moments/mean", y, &[0, 1, 2], false)?;
        let stop = b.unary("StopGradient", "BatchNorm/moments/StopGradient", mean)?;
        let sq = b.binary(
            "SquaredDifference",
            "BatchNorm/moments/SquaredDifference",
            y,
            stop,
        )?;
        let var = b.mean("BatchNorm/moments/variance", sq, &[0, 1, 2], false)?;
        let n = |name: &str| format!("BatchNorm/batchnorm_1/{name}");
        let eps = b.constant(&n("add/y"), Tensor::scalar(0.001f32))?;
        let add = b.binary("AddV2", &n("add"), var, eps)?;
        let rsqrt = b.unary("Rsqrt", &n("Rsqrt"), add)?;
        let inv = b.binary("Mul", &n("mul"), rsqrt, gamma)?;
        let mul_1 = b.binary("Mul", &n("mul_1"), y, inv)?;
        let mul_2 = b.binary("Mul", &n("mul_2"), mean, inv)?;
        let sub = b.binary("Sub", &n("sub"), beta, mul_2)?;
        let add_1 = b.binary("AddV2", &n("add_1"), mul_1, sub)?;
        let decay = b.constant("BatchNorm/AssignMovingAvg/decay", Tensor::scalar(0.1f32))?;
        for (moving, stat, update) in [
            (moving_mean, mean, "AssignMovingAvg"),
            (moving_var, var, "AssignMovingAvg_1"),
        ] {
            let sub = b.binary("Sub", &format!("BatchNorm/{update}/sub"), moving, stat)?;
            let mul = b.binary("Mul", &format!("BatchNorm/{update}/mul"), sub, decay)?;
            b.add(
                "AssignSub",
                &format!("BatchNorm/{update}"),
                &[moving, mul],
                quant_core::Attrs::new(),
            )?;
        }
        let forced = b.identity("BatchNorm/Identity", add_1)?;
        b.unary(act, act, forced)
    })
    .unwrap()
}

#[test]
fn scenario_36_forced_updates_of_unfused_batch_norms_keep_the_bypass_quantized() {
    for act in ["Relu", "Relu6", "Identity"] {
        let mut b = GraphBuilder::new();
        let x = b
            .placeholder("input", DType::F32, Shape::known(&[2, 4, 4, 3]))
            .unwrap();
        let y = conv_unfused_training_bn(&mut b, "test/test", x, act);
        let sum = b.binary("AddV2", "test/add", y, x).unwrap();
        conv_unfused_training_bn(&mut b, "test/next", sum, "Relu6");
        let mut g = b.finish();
        let report =
            experimental_create_training_graph(&mut g, &TrainingOptions::default()).unwrap();
        assert_eq!(report.count(FOLD_UNFUSED), 2, "{act}: {:?}", report.skipped);
        assert_eq!(
            line(&g, "test/test/BatchNorm/Identity"),
            "test/test/BatchNorm/Identity = Identity(test/test/add_fold)"
        );
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
fn an_nchw_layer_is_declined_with_a_reason() {
    let mut g = conv_bn_relu("test", Some(5), FULL);
    let conv = g.id("test/Conv2D").unwrap();
    g.set_attr(conv, "data_format", "NCHW");
    let before = dump(&g);
    let report = fold(&mut g);
    assert!(report.is_empty());
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].node, "test/BatchNorm/batchnorm_1/add_1");
    assert_eq!(
        report.skipped[0].reason,
        "'test/Conv2D' has data_format NCHW: batch norms are folded into NHWC layers only"
    );
    assert_eq!(dump(&g), before);
}

#[test]
fn arithmetic_that_is_not_a_batch_norm_is_not_matched() {
    // x·inv + (β − μ·s) where s is another Rsqrt: the bias does not use inv.
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[1, 4, 4, 3]))
        .unwrap();
    let w = b
        .constant(
            "weights",
            Tensor::from_vec(&[1, 1, 3, 2], vec![0.5f32; 6]).unwrap(),
        )
        .unwrap();
    let conv = b.conv2d("Conv2D", x, w, [1, 1], Padding::Same).unwrap();
    let var = b.constant("var", ramp(2, 0.5, 0.5)).unwrap();
    let eps = b.constant("eps", Tensor::scalar(0.001f32)).unwrap();
    let add = b.binary("AddV2", "add", var, eps).unwrap();
    let inv = b.unary("Rsqrt", "Rsqrt", add).unwrap();
    let other = b.unary("Rsqrt", "Rsqrt_1", add).unwrap();
    let mul_1 = b.binary("Mul", "mul_1", conv, inv).unwrap();
    let mean = b.constant("mean", ramp(2, 0.1, 0.1)).unwrap();
    let mul_2 = b.binary("Mul", "mul_2", mean, other).unwrap();
    let beta = b.constant("beta", ramp(2, 0.0, 1.0)).unwrap();
    let sub = b.binary("Sub", "sub", beta, mul_2).unwrap();
    let add_1 = b.binary("AddV2", "add_1", mul_1, sub).unwrap();
    b.unary("Relu", "Relu", add_1).unwrap();
    let mut g = b.finish();
    let before = dump(&g);
    let report = fold(&mut g);
    assert!(report.is_empty() && report.skipped.is_empty(), "{report:?}");
    assert_eq!(dump(&g), before);
}

/// Scenario 42's network: in `topnet/testnet`, conv `testnet/layer1` (no
/// normalizer) → batch norm under the custom scope `layer1` → Relu → conv
/// `testnet/layer2` with a batch-norm normalizer → Relu → batch norm under
/// the custom scope `layer2` → Relu.
fn scenario_42_network() -> Graph {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[1, 5, 5, 3]))
        .unwrap();
    let conv = |b: &mut GraphBuilder<'_>, scope: &str, x, cin: usize| {
        b.scope(scope, |b| {
            let w: Vec<f32> = (0..cin * 4)
                .map(|i| ((i * 3) % 7) as f32 * 0.2 - 0.5)
                .collect();
            let w = b.constant("weights", Tensor::from_vec(&[1, 1, cin, 4], w).unwrap())?;
            b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)
        })
        .unwrap()
    };
    let t = "topnet/testnet";
    let y = conv(&mut b, &format!("{t}/testnet/layer1"), x, 3);
    let y = unfused_bn(&mut b, &format!("{t}/layer1/batchnorm"), y, 4, FULL);
    let y = b.unary("Relu", &format!("{t}/Relu"), y).unwrap();
    let y = conv(&mut b, &format!("{t}/testnet/layer2"), y, 4);
    let y = unfused_bn(
        &mut b,
        &format!("{t}/testnet/layer2/BatchNorm/batchnorm_1"),
        y,
        4,
        FULL,
    );
    let y = b
        .unary("Relu", &format!("{t}/testnet/layer2/Relu"), y)
        .unwrap();
    let y = unfused_bn(&mut b, &format!("{t}/layer2/batchnorm"), y, 4, FULL);
    b.unary("Relu", &format!("{t}/Relu_1"), y).unwrap();
    b.finish()
}

#[test]
fn scenario_42_a_multi_layer_net_folds_the_batch_norms_that_follow_layers() {
    let g = scenario_42_network();
    let t = "topnet/testnet";
    let folded = assert_folding_preserves(&g, &[("input", image(5))], &format!("{t}/Relu_1"), 2);
    let mut report_graph = g.clone();
    let report = fold(&mut report_graph);
    let applied: Vec<&str> = report.applied.iter().map(|a| a.node.as_str()).collect();
    // Decision 4: found by structure, so the custom-scoped batch norm right
    // after conv layer1 folds too (upstream only folds `BatchNorm/` names).
    assert_eq!(
        applied,
        [
            format!("{t}/layer1/batchnorm/add_1"),
            format!("{t}/testnet/layer2/BatchNorm/batchnorm_1/add_1"),
        ]
    );
    // The custom-scoped batch norm after a Relu does not follow a layer.
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(
        report.skipped[0].node,
        format!("{t}/layer2/batchnorm/add_1")
    );
    assert_eq!(
        report.skipped[0].reason,
        "the scaled tensor is produced by Relu, not by Conv2D, DepthwiseConv2dNative or MatMul"
    );
    let s = format!("{t}/testnet/layer2");
    assert_eq!(
        line(&folded, &format!("{s}/mul_fold")),
        format!("{s}/mul_fold = Mul({s}/weights, {s}/BatchNorm/batchnorm_1/mul)")
    );
    assert_eq!(
        line(&folded, &format!("{s}/Conv2D_Fold")),
        format!("{s}/Conv2D_Fold = Conv2D({t}/Relu, {s}/mul_fold)")
    );
    assert_eq!(
        line(&folded, &format!("{s}/add_fold")),
        format!("{s}/add_fold = AddV2({s}/Conv2D_Fold, {s}/BatchNorm/batchnorm_1/sub)")
    );
    assert_eq!(
        line(&folded, &format!("{s}/Relu")),
        format!("{s}/Relu = Relu({s}/add_fold)")
    );
    assert_eq!(
        line(&folded, &format!("{t}/layer2/batchnorm/mul_1")),
        format!("{t}/layer2/batchnorm/mul_1 = Mul({s}/Relu, {t}/layer2/batchnorm/mul)")
    );
}

#[test]
fn scenario_43_unknown_spatial_dims_fold_identically() {
    let strip = |g: &Graph| -> Vec<String> { g.nodes().map(|(_, n)| line(g, n.name())).collect() };
    let mut known = conv_bn_relu("test", Some(5), FULL);
    let mut unknown = conv_bn_relu("test", None, FULL);
    let a = fold(&mut known);
    let b = fold(&mut unknown);
    assert_eq!(a, b);
    assert_eq!(a.count(FOLD_UNFUSED), 1);
    assert_eq!(strip(&known), strip(&unknown));
    // And the folded graph still computes the same thing.
    let feeds = [("input", image(6))];
    let want = run(conv_bn_relu("test", None, FULL), &feeds, &["test/Relu"]);
    let got = run(unknown, &feeds, &["test/Relu"]);
    assert!(max_rel_error(&got[0], &want[0]) <= 1e-5);
}

#[test]
fn scenario_44_fully_connected_folds_into_matmul_fold() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[2, 3]))
        .unwrap();
    let w = b
        .constant(
            "fc/weights",
            Tensor::from_vec(&[3, 4], (0..12).map(|i| i as f32 * 0.1 - 0.5).collect()).unwrap(),
        )
        .unwrap();
    let y = b.matmul("fc/MatMul", x, w, false, false).unwrap();
    let y = unfused_bn(&mut b, "fc/BatchNorm/batchnorm_1", y, 4, FULL);
    b.relu6("fc/Relu6", y).unwrap();
    let g = b.finish();
    let x = Tensor::from_vec(&[2, 3], vec![0.3f32, -1.0, 2.0, 0.5, 0.25, -0.75]).unwrap();
    let g = assert_folding_preserves(&g, &[("input", x)], "fc/Relu6", 1);
    assert_eq!(
        line(&g, "fc/MatMul_Fold"),
        "fc/MatMul_Fold = MatMul(input, fc/mul_fold)"
    );
    assert_eq!(
        g.by_name("fc/MatMul_Fold").unwrap().attrs(),
        g.by_name("fc/MatMul").unwrap().attrs()
    );
    assert_eq!(line(&g, "fc/Relu6"), "fc/Relu6 = Relu6(fc/add_fold)");
}

#[test]
fn a_matmul_with_transposed_weights_is_not_folded() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[2, 3]))
        .unwrap();
    let w = b
        .constant(
            "fc/weights",
            Tensor::from_vec(&[4, 3], vec![0.5f32; 12]).unwrap(),
        )
        .unwrap();
    let y = b.matmul("fc/MatMul", x, w, false, true).unwrap();
    let y = unfused_bn(&mut b, "fc/BatchNorm/batchnorm_1", y, 4, FULL);
    b.relu6("fc/Relu6", y).unwrap();
    let mut g = b.finish();
    let before = dump(&g);
    let report = fold(&mut g);
    assert!(report.is_empty());
    assert_eq!(
        report.skipped[0].reason,
        "MatMul with transpose_b is not folded"
    );
    assert_eq!(dump(&g), before);
}

#[test]
fn scenario_45_depthwise_scale_is_reshaped_to_in_by_multiplier() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[1, 5, 5, 3]))
        .unwrap();
    let s = "test";
    let w: Vec<f32> = (0..3 * 3 * 3 * 2)
        .map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5)
        .collect();
    let w = b
        .constant(
            &format!("{s}/depthwise_weights"),
            Tensor::from_vec(&[3, 3, 3, 2], w).unwrap(),
        )
        .unwrap();
    let y = b
        .depthwise_conv2d(&format!("{s}/depthwise"), x, w, [1, 1], Padding::Same)
        .unwrap();
    let y = unfused_bn(&mut b, &format!("{s}/BatchNorm/batchnorm_1"), y, 6, FULL);
    b.relu6(&format!("{s}/Relu6"), y).unwrap();
    let g = b.finish();
    let g = assert_folding_preserves(&g, &[("input", image(5))], "test/Relu6", 1);
    assert_eq!(
        line(&g, "test/scale_reshape"),
        "test/scale_reshape = Reshape(test/BatchNorm/batchnorm_1/mul, test/scale_reshape/shape)"
    );
    let shape = g
        .by_name("test/scale_reshape/shape")
        .unwrap()
        .attr_tensor("value")
        .unwrap()
        .to_i64_vec()
        .unwrap();
    assert_eq!(shape, [3, 2]);
    assert_eq!(
        line(&g, "test/mul_fold"),
        "test/mul_fold = Mul(test/depthwise_weights, test/scale_reshape)"
    );
    assert_eq!(
        line(&g, "test/depthwise_Fold"),
        "test/depthwise_Fold = DepthwiseConv2dNative(input, test/mul_fold)"
    );
}

#[test]
fn an_atrous_layer_folds_through_a_cloned_batch_to_space() {
    // Scenario 46's structure (eval form): the clone of BatchToSpaceND is
    // named after the original, `<b2s name>_Fold`.
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("input", DType::F32, Shape::known(&[4, 3, 3, 3]))
        .unwrap();
    let w = b
        .constant(
            "test/depthwise_weights",
            Tensor::from_vec(&[1, 1, 3, 1], vec![0.5f32; 3]).unwrap(),
        )
        .unwrap();
    let y = b
        .depthwise_conv2d("test/depthwise", x, w, [1, 1], Padding::Valid)
        .unwrap();
    let block = b
        .constant(
            "test/depthwise/block_shape",
            Tensor::from_vec(&[2], vec![2i32, 2]).unwrap(),
        )
        .unwrap();
    let crops = b
        .constant(
            "test/depthwise/crops",
            Tensor::from_vec(&[2, 2], vec![0i32; 4]).unwrap(),
        )
        .unwrap();
    let y = b
        .add(
            "BatchToSpaceND",
            "test/depthwise/BatchToSpaceND",
            &[y, block, crops],
            Default::default(),
        )
        .unwrap()
        .into();
    let y = unfused_bn(&mut b, "test/BatchNorm/batchnorm_1", y, 3, FULL);
    b.relu6("test/Relu6", y).unwrap();
    let mut g = b.finish();
    assert_eq!(fold(&mut g).count(FOLD_UNFUSED), 1);
    assert_eq!(
        line(&g, "test/depthwise_Fold"),
        "test/depthwise_Fold = DepthwiseConv2dNative(input, test/mul_fold)"
    );
    assert_eq!(
        line(&g, "test/depthwise/BatchToSpaceND_Fold"),
        "test/depthwise/BatchToSpaceND_Fold = BatchToSpaceND(test/depthwise_Fold, \
         test/depthwise/block_shape, test/depthwise/crops)"
    );
    assert_eq!(
        line(&g, "test/add_fold"),
        "test/add_fold = AddV2(test/depthwise/BatchToSpaceND_Fold, test/BatchNorm/batchnorm_1/sub)"
    );
}
