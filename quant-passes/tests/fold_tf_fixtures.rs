//! Batch-norm folding against TensorFlow: atrous layers (reference
//! semantics §2.2–§2.5, scenario 46) and batch norms that train (§2.4,
//! §2.5 item 6, scenarios 34, 35, 37–41, 47), on the fixtures
//! `fixtures/tf/atrous_bn` and `fixtures/tf/bn_training` made by
//! `tools/fixtures/make_tf_fixtures.py --only graphs --only bn_training`;
//! and the `SpaceToBatchND`/`BatchToSpaceND` kernels and gradients they
//! need, against TensorFlow's values and finite differences.
//!
//! The snapshot lives in `tests/snapshots/bn_training_fold.txt`; regenerate
//! it with `UPDATE_SNAPSHOTS=1 cargo test -p quant-passes --test fold_tf_fixtures`.

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use quant_core::builder::GraphBuilder;
use quant_core::graph::dump;
use quant_core::models::Rng;
use quant_core::serialize::read_graph;
use quant_core::{Attrs, DType, Graph, OpRegistry, OutletId, Shape, Tensor};
use quant_kernels::kernels::space_to_batch::{batch_to_space_nd, space_to_batch_nd};
use quant_kernels::session::Session;
use quant_passes::passes::fold_batch_norms::FOLD_FUSED;
use quant_passes::passes::fold_unfused_batch_norms::FOLD_UNFUSED;
use quant_passes::passes::gradients::{GradientOptions, gradients_with_seeds};
use quant_passes::{
    FoldBatchNorms, FoldUnfusedBatchNorms, PassManager, PassReport, QuantizeConfig,
    TrainingOptions, create_eval_graph, experimental_create_training_graph,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{arrays, check_snapshot, line, max_rel_error, run};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tf")
        .join(name)
}

fn npy(dir: &Path, file: &str) -> ArrayD<f32> {
    read_npy(dir.join(file)).unwrap()
}

fn fold(graph: &mut Graph, config: &QuantizeConfig) -> PassReport {
    PassManager::new()
        .with(FoldBatchNorms)
        .with(FoldUnfusedBatchNorms)
        .run(graph, config)
        .unwrap()
}

fn training(freeze_bn_delay: Option<i64>) -> QuantizeConfig {
    QuantizeConfig {
        freeze_bn_delay,
        ..QuantizeConfig::training()
    }
}

fn const_ints(g: &Graph, name: &str) -> Vec<i64> {
    g.by_name(name)
        .unwrap()
        .attr_tensor("value")
        .unwrap()
        .to_i64_vec()
        .unwrap()
}

// ------------------------------------------------------ kernels, gradients

#[test]
fn space_to_batch_and_back_reproduce_tensorflow_exactly() {
    // TensorFlow's dilated depthwise conv: input [2, 9, 9, 3], rate 2, SAME,
    // so the paddings and crops are not zero.
    let d = fixture("atrous_bn");
    let g = read_graph(&d.join("graph.pb"), OpRegistry::builtin()).unwrap();
    let block = const_ints(&g, "dw/depthwise/SpaceToBatchND/block_shape");
    let paddings = const_ints(&g, "dw/depthwise/SpaceToBatchND/paddings");
    let crops = const_ints(&g, "dw/depthwise/BatchToSpaceND/crops");
    assert_eq!(block, [2, 2]);
    assert!(paddings.iter().any(|&p| p > 0) && crops.iter().any(|&c| c > 0));
    let x = Tensor::from_array(npy(&d, "input.npy"));
    let got = space_to_batch_nd(&x, &block, &paddings).unwrap();
    assert_eq!(got.array::<f32>().unwrap(), &npy(&d, "space_to_batch.npy"));
    let y = Tensor::from_array(npy(&d, "depthwise.npy"));
    let got = batch_to_space_nd(&y, &block, &crops).unwrap();
    assert_eq!(got.array::<f32>().unwrap(), &npy(&d, "batch_to_space.npy"));
    // And through the executor, with the shapes inference gives.
    let s2b = g.outlet("dw/depthwise/SpaceToBatchND").unwrap();
    assert_eq!(
        g.fact(s2b).shape.as_ref().unwrap().as_known().unwrap(),
        npy(&d, "space_to_batch.npy").shape()
    );
    let out = run(
        g,
        &[("input", x)],
        &["dw/depthwise/SpaceToBatchND", "dw/depthwise/BatchToSpaceND"],
    );
    assert_eq!(out[0], npy(&d, "space_to_batch.npy"));
    assert!(max_rel_error(&out[1], &npy(&d, "batch_to_space.npy")) <= 1e-5);
}

#[test]
fn space_to_batch_rejects_shapes_that_do_not_fit() {
    let x = Tensor::from_vec(&[1, 3, 3, 1], vec![0f32; 9]).unwrap();
    let err = space_to_batch_nd(&x, &[2, 2], &[0, 0, 0, 0]).unwrap_err();
    assert!(err.contains("not a multiple of block size 2"), "{err}");
    let err = space_to_batch_nd(&x, &[2, 2], &[0, 1]).unwrap_err();
    assert!(err.contains("paddings"), "{err}");
    let err = batch_to_space_nd(&x, &[2, 2], &[0, 0, 0, 0]).unwrap_err();
    assert!(
        err.contains("multiple of the block size product 4"),
        "{err}"
    );
    let y = Tensor::from_vec(&[4, 1, 1, 1], vec![0f32; 4]).unwrap();
    let err = batch_to_space_nd(&y, &[2, 2], &[2, 1, 0, 0]).unwrap_err();
    assert!(err.contains("exceed"), "{err}");
}

#[test]
fn space_to_batch_gradients_match_finite_differences() {
    // L = Σ seed ⊙ BatchToSpaceND(SpaceToBatchND(x) ⊙ w): both rules, with
    // a 2×3 block, a padded first row and a cropped last row and column:
    // [2, 5, 3, 2] → [12, 3, 1, 2] → [2, 5, 2, 2].
    let mut rng = Rng::new(23);
    let mut random = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|_| rng.normal()).collect::<Vec<f32>>()).unwrap()
    };
    let x0 = random(&[2, 5, 3, 2]);
    let w = random(&[12, 3, 1, 2]);
    let seed = random(&[2, 5, 2, 2]);
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("x", DType::F32, Shape::known(&[2, 5, 3, 2]))
        .unwrap();
    let ints = |b: &mut GraphBuilder<'_>, name: &str, shape: &[usize], v: Vec<i32>| {
        b.constant(name, Tensor::from_vec(shape, v).unwrap())
            .unwrap()
    };
    let block = ints(&mut b, "block", &[2], vec![2, 3]);
    let paddings = ints(&mut b, "paddings", &[2, 2], vec![1, 0, 0, 0]);
    let crops = ints(&mut b, "crops", &[2, 2], vec![0, 1, 0, 1]);
    let s2b: OutletId = b
        .add("SpaceToBatchND", "s2b", &[x, block, paddings], Attrs::new())
        .unwrap()
        .into();
    let w = b.constant("w", w).unwrap();
    let scaled = b.binary("Mul", "scaled", s2b, w).unwrap();
    let y: OutletId = b
        .add("BatchToSpaceND", "y", &[scaled, block, crops], Attrs::new())
        .unwrap()
        .into();
    assert_eq!(
        b.graph()
            .fact(y)
            .shape
            .as_ref()
            .unwrap()
            .as_known()
            .unwrap(),
        [2, 5, 2, 2]
    );
    let seed_node = b.constant("seed", seed.clone()).unwrap();
    let mut g = b.finish();
    let grads =
        gradients_with_seeds(&mut g, &[(y, seed_node)], &[x], &GradientOptions::default()).unwrap();
    let dx = g.outlet_name(grads[0].unwrap());
    let mut s = Session::new(g).unwrap();
    let analytic = arrays(s.run(&[("x", x0.clone())], &[&dx]).unwrap()).remove(0);
    let seed = seed.array::<f32>().unwrap().clone();
    let mut loss = |x: &ArrayD<f32>| -> f64 {
        let y = arrays(
            s.run(&[("x", Tensor::from_array(x.clone()))], &["y"])
                .unwrap(),
        )
        .remove(0);
        y.iter()
            .zip(&seed)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum()
    };
    let x0 = x0.array::<f32>().unwrap().clone();
    let eps = 1e-2f32;
    for i in 0..x0.len() {
        let mut plus = x0.clone();
        plus.as_slice_mut().unwrap()[i] += eps;
        let mut minus = x0.clone();
        minus.as_slice_mut().unwrap()[i] -= eps;
        let numeric = (loss(&plus) - loss(&minus)) / (2.0 * f64::from(eps));
        let got = f64::from(analytic.as_slice().unwrap()[i]);
        assert!(
            (numeric - got).abs() <= 1e-3 * (1.0 + numeric.abs()),
            "element {i}: finite difference {numeric}, gradient {got}"
        );
    }
    // The last row and column of x land in the crop: no gradient, which
    // the finite differences confirm above.
    assert!(analytic.iter().any(|&v| v == 0.0));
}

// ------------------------------------------------------ atrous, eval form

#[test]
fn scenario_46_atrous_layers_fold_in_eval_form_and_reproduce_tensorflow() {
    let d = fixture("atrous_bn");
    let mut g = read_graph(&d.join("graph.pb"), OpRegistry::builtin()).unwrap();
    let report = fold(&mut g, &QuantizeConfig::eval());
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.count(FOLD_FUSED), 1);
    assert_eq!(report.count(FOLD_UNFUSED), 1);
    for (node, want) in [
        // Fused: the clone reads the SpaceToBatchND output and feeds
        // S/BatchToSpaceND_Fold.
        (
            "dw/depthwise_Fold",
            "DepthwiseConv2dNative(dw/depthwise/SpaceToBatchND, dw/mul_fold)",
        ),
        (
            "dw/BatchToSpaceND_Fold",
            "BatchToSpaceND(dw/depthwise_Fold, dw/depthwise/BatchToSpaceND/block_shape, \
             dw/depthwise/BatchToSpaceND/crops)",
        ),
        (
            "dw/add_fold",
            "Add(dw/BatchToSpaceND_Fold, dw/BatchNorm_Fold/bias)",
        ),
        ("dw/Relu6", "Relu6(dw/add_fold)"),
        // Unfused: the BatchToSpaceND clone is named after the original.
        (
            "conv/Conv2D_Fold",
            "Conv2D(conv/SpaceToBatchND, conv/mul_fold)",
        ),
        (
            "conv/BatchToSpaceND_Fold",
            "BatchToSpaceND(conv/Conv2D_Fold, conv/BatchToSpaceND/block_shape, \
             conv/BatchToSpaceND/crops)",
        ),
        (
            "conv/add_fold",
            "AddV2(conv/BatchToSpaceND_Fold, conv/BatchNorm/batchnorm/sub)",
        ),
        ("conv/Relu", "Relu(conv/add_fold)"),
    ] {
        assert_eq!(line(&g, node), format!("{node} = {want}"));
    }
    let x = Tensor::from_array(npy(&d, "input.npy"));
    let got = run(g, &[("input", x)], &["conv/Relu"]);
    let err = max_rel_error(&got[0], &npy(&d, "output.npy"));
    assert!(err <= 1e-5, "relative error {err:e}");
}

#[test]
fn the_eval_rewrite_quantizes_folded_atrous_layers_through_batch_to_space() {
    // §3.1: lout = BatchToSpaceND(layer) | layer; in eval form add_fold is
    // the bias add after the BatchToSpaceND_Fold.
    let d = fixture("atrous_bn");
    let mut g = read_graph(&d.join("graph.pb"), OpRegistry::builtin()).unwrap();
    create_eval_graph(&mut g).unwrap();
    for (s, layer, act) in [
        ("dw", "depthwise_Fold", "Relu6"),
        ("conv", "Conv2D_Fold", "Relu"),
    ] {
        assert_eq!(
            line(&g, &format!("{s}/weights_quant/FakeQuantWithMinMaxVars")),
            format!(
                "{s}/weights_quant/FakeQuantWithMinMaxVars = FakeQuantWithMinMaxVars(\
                 {s}/mul_fold, {s}/weights_quant/min, {s}/weights_quant/max)"
            )
        );
        let clone = g.by_name(&format!("{s}/{layer}")).unwrap();
        assert_eq!(
            g.outlet_name(clone.inputs()[1]),
            format!("{s}/weights_quant/FakeQuantWithMinMaxVars")
        );
        assert_eq!(
            line(&g, &format!("{s}/act_quant/FakeQuantWithMinMaxVars")),
            format!(
                "{s}/act_quant/FakeQuantWithMinMaxVars = FakeQuantWithMinMaxVars(\
                 {s}/{act}, {s}/act_quant/min, {s}/act_quant/max)"
            )
        );
    }
}

// ------------------------------------------------- batch norms that train

#[derive(serde::Deserialize)]
struct TrainingMeta {
    output: String,
    variables: BTreeMap<String, String>,
    updated: BTreeMap<String, String>,
}

fn training_fixture() -> (PathBuf, TrainingMeta, Graph) {
    let d = fixture("bn_training");
    let meta: TrainingMeta =
        serde_json::from_str(&std::fs::read_to_string(d.join("meta.json")).unwrap()).unwrap();
    let g = read_graph(&d.join("graph.pb"), OpRegistry::builtin()).unwrap();
    (d, meta, g)
}

/// The moving-average update ops (`.../AssignMovingAvg{,_1}`), in graph order.
fn update_ops(graph: &Graph) -> Vec<String> {
    graph
        .nodes()
        .filter(|(_, n)| n.op() == "AssignSub")
        .map(|(_, n)| n.name().to_string())
        .collect()
}

/// A session on `graph` with the fixture's variable values, the gradient
/// of `Σ seed ⊙ output` with respect to the input appended when `grad`.
fn training_session(
    d: &Path,
    meta: &TrainingMeta,
    mut graph: Graph,
    grad: bool,
) -> (Session, Option<String>) {
    let mut dx = None;
    if grad {
        let y = graph.outlet(&meta.output).unwrap();
        let x = graph.outlet("input").unwrap();
        let mut b = GraphBuilder::extend(graph, OpRegistry::builtin());
        let seed = b
            .constant("seed", Tensor::from_array(npy(d, "seed.npy")))
            .unwrap();
        graph = b.finish();
        let grads =
            gradients_with_seeds(&mut graph, &[(y, seed)], &[x], &GradientOptions::default())
                .unwrap();
        dx = Some(graph.outlet_name(grads[0].unwrap()));
    }
    let mut s = Session::new(graph).unwrap();
    for (name, file) in &meta.variables {
        s.set_variable(name, Tensor::from_array(npy(d, file)))
            .unwrap();
    }
    (s, dx)
}

fn moving_statistics(s: &Session, meta: &TrainingMeta) -> Vec<ArrayD<f32>> {
    let vars: BTreeMap<&str, &Tensor> = s.variables().collect();
    meta.updated
        .keys()
        .map(|name| vars[name.as_str()].array::<f32>().unwrap().clone())
        .collect()
}

#[test]
fn the_training_fixture_folds_every_batch_norm_in_training_form() {
    let (_, _, mut g) = training_fixture();
    let report = fold(&mut g, &training(Some(100)));
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let applied: Vec<&str> = report.applied.iter().map(|a| a.node.as_str()).collect();
    assert_eq!(
        applied,
        [
            "dw/BatchNorm/FusedBatchNormV3",
            "conv1/BatchNorm/batchnorm_1/add_1",
            "conv2/BatchNorm/batchnorm_1/add_1",
        ]
    );
    check_snapshot("bn_training_fold", &dump(&g));
}

#[test]
fn scenarios_37_to_41_and_46_unfused_and_atrous_training_folds_are_wired_as_section_2_5_says() {
    let (_, _, mut g) = training_fixture();
    fold(&mut g, &training(Some(100)));
    let c1 = "conv1/batch_norm_correction";
    let bn1 = "conv1/BatchNorm/batchnorm_1";
    let c2 = "conv2/batch_norm_correction";
    let bn2 = "conv2/BatchNorm/batchnorm_1";
    let cd = "dw/BatchNorm_Fold/batch_norm_correction";
    for (node, want) in [
        // Unfused with γ: corrections from the batch moments.
        (
            format!("{c1}/add"),
            format!("Add(conv1/BatchNorm/moving_variance/read, {bn1}/add/y)"),
        ),
        (
            format!("{c1}/scale_compute"),
            format!("RealDiv({c1}/Rsqrt, {bn1}/Rsqrt)"),
        ),
        (
            format!("{c1}/mul"),
            format!("Mul(conv1/BatchNorm/moments/Squeeze, {bn1}/Rsqrt)"),
        ),
        (
            format!("{c1}/offset_compute"),
            format!("Mul(conv1/BatchNorm/gamma/read, {c1}/sub)"),
        ),
        // 37: mul_fold = correction_mult ⊙ batchnorm_1/mul feeds Conv2D_Fold.
        (
            "conv1/correction_mult".into(),
            format!("Mul(conv1/weights/read, {c1}/correction_scale)"),
        ),
        (
            "conv1/mul_fold".into(),
            format!("Mul(conv1/correction_mult, {bn1}/mul)"),
        ),
        // 38.
        (
            "conv1/Conv2D_Fold".into(),
            "Conv2D(input, conv1/mul_fold)".into(),
        ),
        (
            "conv1/post_conv_mul".into(),
            format!("Mul(conv1/Conv2D_Fold, {c1}/correction_recip)"),
        ),
        (
            "conv1/correction_add".into(),
            format!("Add(conv1/post_conv_mul, {c1}/correction_offset)"),
        ),
        // 39: add_fold (a clone of add_1) keeps batchnorm_1/sub as bias.
        (
            "conv1/add_fold".into(),
            format!("AddV2(conv1/correction_add, {bn1}/sub)"),
        ),
        ("conv1/Relu".into(), "Relu(conv1/add_fold)".into()),
        // 40: the update decays go through the freeze switch.
        (
            "conv1/BatchNorm/AssignMovingAvg/mul".into(),
            format!("Mul(conv1/BatchNorm/AssignMovingAvg/sub, {c1}/freeze_moving_mean)"),
        ),
        (
            "conv1/BatchNorm/AssignMovingAvg_1/mul".into(),
            format!("Mul(conv1/BatchNorm/AssignMovingAvg_1/sub, {c1}/freeze_moving_var)"),
        ),
        (
            format!("{c1}/correction_recip"),
            format!("SelectV2({c1}/use_moving_average, {c1}/ones, {c1}/reciprocal_compute)"),
        ),
        // Unfused without γ: the multiplier is the Rsqrt, the offset γ = 1.
        (
            "conv2/mul_fold".into(),
            format!("Mul(conv2/correction_mult, {bn2}/Rsqrt)"),
        ),
        (
            format!("{c2}/offset_compute"),
            format!("Identity({c2}/sub)"),
        ),
        // 46, unfused atrous: <b2s name>_Fold.
        (
            "conv2/Conv2D_Fold".into(),
            "Conv2D(conv2/SpaceToBatchND, conv2/mul_fold)".into(),
        ),
        (
            "conv2/BatchToSpaceND_Fold".into(),
            "BatchToSpaceND(conv2/Conv2D_Fold, conv2/BatchToSpaceND/block_shape, \
             conv2/BatchToSpaceND/crops)"
                .into(),
        ),
        (
            "conv2/post_conv_mul".into(),
            format!("Mul(conv2/BatchToSpaceND_Fold, {c2}/correction_recip)"),
        ),
        // 46, fused atrous: S/BatchToSpaceND_Fold, depthwise reshapes (45).
        (
            "dw/depthwise_Fold".into(),
            "DepthwiseConv2dNative(dw/depthwise/SpaceToBatchND, dw/mul_fold)".into(),
        ),
        (
            "dw/BatchToSpaceND_Fold".into(),
            "BatchToSpaceND(dw/depthwise_Fold, dw/depthwise/BatchToSpaceND/block_shape, \
             dw/depthwise/BatchToSpaceND/crops)"
                .into(),
        ),
        (
            "dw/post_conv_mul".into(),
            format!("Mul(dw/BatchToSpaceND_Fold, {cd}/correction_recip)"),
        ),
        (
            "dw/correction_mult".into(),
            "Mul(dw/depthwise_weights/read, dw/BatchNorm_Fold/correction_reshape)".into(),
        ),
        ("dw/Relu6".into(), "Relu6(dw/add_fold)".into()),
    ] {
        assert_eq!(line(&g, &node), format!("{node} = {want}"));
    }
    // 41.
    assert!(g.nodes().all(|(_, n)| !n.name().contains("//")));
    // One step counter for the three batch norms.
    assert_eq!(
        dump(&g)
            .matches("= AssignAdd(fake_quantization_step")
            .count(),
        1
    );
}

#[test]
fn scenario_47_before_freezing_the_folded_graph_computes_tensorflows_training_step() {
    // Forward output and moving-average updates within 1e-5, the input
    // gradient within 1e-3 of TensorFlow's (batch statistics throughout).
    for freeze in [None, Some(1000)] {
        let (d, meta, mut g) = training_fixture();
        fold(&mut g, &training(freeze));
        let updates = update_ops(&g);
        let (mut s, dx) = training_session(&d, &meta, g, true);
        let dx = dx.unwrap();
        let mut fetches = vec![meta.output.as_str(), dx.as_str()];
        fetches.extend(updates.iter().map(String::as_str));
        let x = Tensor::from_array(npy(&d, "input.npy"));
        let got = arrays(s.run(&[("input", x)], &fetches).unwrap());
        for (what, got, want, tol) in [
            ("output", &got[0], npy(&d, "output.npy"), 1e-5),
            (
                "input gradient",
                &got[1],
                npy(&d, "input_gradient.npy"),
                1e-3,
            ),
        ] {
            let err = max_rel_error(got, &want);
            assert!(err <= tol, "{freeze:?} {what}: relative error {err:e}");
        }
        for (got, (name, file)) in moving_statistics(&s, &meta).iter().zip(&meta.updated) {
            let err = max_rel_error(got, &npy(&d, file));
            assert!(err <= 1e-5, "{freeze:?} {name}: relative error {err:e}");
        }
    }
}

#[test]
fn from_the_freeze_step_on_the_folded_graph_uses_the_moving_statistics() {
    let (d, meta, mut g) = training_fixture();
    fold(&mut g, &training(Some(5)));
    let updates = update_ops(&g);
    let (mut s, _) = training_session(&d, &meta, g, false);
    let mut fetches = vec![meta.output.as_str()];
    fetches.extend(updates.iter().map(String::as_str));
    let x = Tensor::from_array(npy(&d, "input.npy"));
    let before = moving_statistics(&s, &meta);
    // Run 5 reads step 5 = freeze_bn_delay: frozen. TensorFlow's output of
    // the same network with inference-mode batch norms.
    s.set_step(4).unwrap();
    let got = arrays(s.run(&[("input", x.clone())], &fetches).unwrap());
    let err = max_rel_error(&got[0], &npy(&d, "output_inference.npy"));
    assert!(err <= 1e-5, "relative error {err:e}");
    assert_eq!(
        moving_statistics(&s, &meta),
        before,
        "the moving averages moved"
    );
    // One step earlier they move as TensorFlow's do.
    s.set_step(0).unwrap();
    s.run(&[("input", x)], &fetches).unwrap();
    for (got, (name, file)) in moving_statistics(&s, &meta).iter().zip(&meta.updated) {
        let err = max_rel_error(got, &npy(&d, file));
        assert!(err <= 1e-5, "{name}: relative error {err:e}");
    }
}

#[test]
fn scenarios_34_and_35_the_training_rewrite_quantizes_the_folded_layers_and_is_idempotent() {
    let (_, _, mut g) = training_fixture();
    let options = TrainingOptions {
        freeze_bn_delay: Some(100),
        ..TrainingOptions::default()
    };
    experimental_create_training_graph(&mut g, &options).unwrap();
    for (s, layer, act) in [
        ("conv1", "Conv2D_Fold", "Relu"),
        ("dw", "depthwise_Fold", "Relu6"),
        ("conv2", "Conv2D_Fold", "Relu"),
    ] {
        let fq = format!("{s}/weights_quant/FakeQuantWithMinMaxVars");
        let node = g
            .by_name(&fq)
            .unwrap_or_else(|| panic!("no {fq}:\n{}", dump(&g)));
        assert_eq!(g.outlet_name(node.inputs()[0]), format!("{s}/mul_fold"));
        let clone = g.by_name(&format!("{s}/{layer}")).unwrap();
        assert_eq!(g.outlet_name(clone.inputs()[1]), fq);
        let act_fq = g
            .by_name(&format!("{s}/act_quant/FakeQuantWithMinMaxVars"))
            .unwrap_or_else(|| panic!("no {s}/act_quant"));
        assert_eq!(g.outlet_name(act_fq.inputs()[0]), format!("{s}/{act}"));
    }
    let once = dump(&g);
    let report = experimental_create_training_graph(&mut g, &options).unwrap();
    assert!(report.quantizers.is_empty() && report.count(FOLD_UNFUSED) == 0);
    assert_eq!(dump(&g), once, "a second rewrite changed the graph");
}
