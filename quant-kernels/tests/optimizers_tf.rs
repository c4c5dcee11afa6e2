//! The optimizer update kernels against TensorFlow: every case of
//! `fixtures/tf/optimizers/kernels.json` (made by
//! `tools/fixtures/make_tf_optimizer_fixtures.py`, which runs
//! `ResourceApplyGradientDescent`, `ResourceApplyMomentum` and
//! `ResourceApplyAdam` for a few steps) is replayed through the executor as
//! one `Apply*` node over variables, and the variable and its slots are
//! compared with TensorFlow's after every step.
//!
//! The kernels evaluate the update formulas in TensorFlow's operation order,
//! so every case matches bit for bit (the bound the brief allows is 1e-6
//! relative; the test asserts equality so that any drift is noticed).

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use quant_core::builder::GraphBuilder;
use quant_core::{Attrs, DType, Shape, Tensor};
use quant_kernels::kernels::optimizers;
use quant_kernels::session::{ExecError, Session};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    op: String,
    use_nesterov: bool,
    shape: Vec<usize>,
    steps: usize,
    hyper: BTreeMap<String, f32>,
    lr: Vec<f32>,
    #[serde(default)]
    beta1_power: Vec<f32>,
    #[serde(default)]
    beta2_power: Vec<f32>,
    files: BTreeMap<String, String>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tf/optimizers")
}

fn load(file: &str) -> ArrayD<f32> {
    read_npy(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(dir().join("kernels.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The slot variables of each op, in input order after the variable.
fn slots(op: &str) -> &'static [&'static str] {
    match op {
        "ApplyGradientDescent" => &[],
        "ApplyMomentum" => &["accum"],
        "ApplyAdam" => &["m", "v"],
        other => panic!("unknown op {other}"),
    }
}

/// `var` and its slots as variables, the scalar inputs that change per step
/// as placeholders, the constant hyper-parameters as constants, and one
/// `update` node of the case's op.
fn graph(case: &Case) -> quant_core::Graph {
    let mut b = GraphBuilder::new();
    let var0 = Tensor::from_array(load(&case.files["var0"]));
    let var = b.variable("var", var0, true).unwrap();
    let mut slot_vars = Vec::new();
    for slot in slots(&case.op) {
        let zeros = Tensor::zeros(DType::F32, &case.shape).unwrap();
        slot_vars.push(b.variable(slot, zeros, false).unwrap());
    }
    let shape = Shape::known(&case.shape);
    let grad = b.placeholder("grad", DType::F32, shape).unwrap();
    let mut scalar = |name: &str| b.placeholder(name, DType::F32, Shape::scalar()).unwrap();
    let lr = scalar("lr");
    let (b1p, b2p) = (scalar("beta1_power"), scalar("beta2_power"));
    let mut hyper = |name: &str| b.constant(name, Tensor::scalar(case.hyper[name])).unwrap();
    let inputs = match case.op.as_str() {
        "ApplyGradientDescent" => vec![var, lr, grad],
        "ApplyMomentum" => vec![var, slot_vars[0], lr, grad, hyper("momentum")],
        _ => vec![
            var,
            slot_vars[0],
            slot_vars[1],
            b1p,
            b2p,
            lr,
            hyper("beta1"),
            hyper("beta2"),
            hyper("epsilon"),
            grad,
        ],
    };
    let mut attrs = Attrs::new();
    if case.op != "ApplyGradientDescent" {
        attrs.insert("use_nesterov".into(), case.use_nesterov.into());
    }
    b.add(&case.op, "update", &inputs, attrs).unwrap();
    b.finish()
}

/// Largest relative difference (0 when bit-identical).
fn max_rel(ours: &Tensor, theirs: &ArrayD<f32>) -> f64 {
    let ours = ours.array::<f32>().unwrap();
    assert_eq!(ours.shape(), theirs.shape());
    ours.iter()
        .zip(theirs)
        .map(|(&a, &b)| {
            let d = (f64::from(a) - f64::from(b)).abs();
            if d < 1e-30 {
                0.0
            } else {
                d / f64::from(b).abs().max(1e-30)
            }
        })
        .fold(0.0, f64::max)
}

#[test]
fn updates_match_tensorflow_step_by_step() {
    let cases = cases();
    assert_eq!(cases.len(), 9);
    for case in &cases {
        let mut session = Session::new(graph(case)).unwrap();
        let grads = load(&case.files["grad"]);
        let mut names = vec!["var"];
        names.extend(slots(&case.op));
        let expected: Vec<ArrayD<f32>> = names.iter().map(|n| load(&case.files[*n])).collect();
        for t in 0..case.steps {
            let grad = Tensor::from_array(grads.index_axis(ndarray::Axis(0), t).to_owned());
            let mut feeds = vec![("grad", grad), ("lr", Tensor::scalar(case.lr[t]))];
            if case.op == "ApplyAdam" {
                feeds.push(("beta1_power", Tensor::scalar(case.beta1_power[t])));
                feeds.push(("beta2_power", Tensor::scalar(case.beta2_power[t])));
            }
            let out = session.run(&feeds, &["update"]).unwrap();
            assert_eq!(
                &out[0],
                session.variable("var").unwrap(),
                "output 0 is the updated variable"
            );
            for (name, after) in names.iter().zip(&expected) {
                let theirs = after.index_axis(ndarray::Axis(0), t).to_owned();
                let rel = max_rel(session.variable(name).unwrap(), &theirs);
                assert!(
                    rel == 0.0,
                    "{}: {name} after step {}: relative difference {rel:e}",
                    case.name,
                    t + 1
                );
            }
        }
    }
}

#[test]
fn malformed_updates_are_errors() {
    // A learning rate that is not a scalar, given to the kernel directly
    // (the executor's feed check and shape inference refuse it earlier).
    let var = Tensor::zeros(DType::F32, &[2]).unwrap();
    let lr = Tensor::from_vec(&[2], vec![0.1f32, 0.2]).unwrap();
    let e = optimizers::apply_momentum(&[&var, &var, &lr, &var, &lr], false).unwrap_err();
    assert_eq!(e, "lr (input 2) must be a scalar, found shape [2]");
    let grad = Tensor::zeros(DType::F32, &[3]).unwrap();
    let e =
        optimizers::apply_gradient_descent(&[&var, &Tensor::scalar(0.1f32), &grad]).unwrap_err();
    assert_eq!(
        e,
        "delta (input 2) has shape [3], the variable has shape [2]"
    );
    // Shapes that disagree are refused when the graph is built.
    let mut b = GraphBuilder::new();
    let var = b
        .variable("var", Tensor::zeros(DType::F32, &[2, 3]).unwrap(), true)
        .unwrap();
    let lr = b
        .constant("lr", Tensor::from_vec(&[1], vec![0.1f32]).unwrap())
        .unwrap();
    let grad = b
        .constant("grad", Tensor::zeros(DType::F32, &[3, 2]).unwrap())
        .unwrap();
    let e = b
        .add(
            "ApplyGradientDescent",
            "update",
            &[var, lr, var],
            Attrs::new(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("node 'update'"), "{e}");
    assert!(e.to_string().contains("input 1 must be a scalar"), "{e}");
    let scalar = b.constant("scalar", Tensor::scalar(0.1f32)).unwrap();
    let e = b
        .add(
            "ApplyGradientDescent",
            "update",
            &[var, scalar, grad],
            Attrs::new(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("input 2 has shape"), "{e}");
    // The variable input must be a variable.
    let mut b = GraphBuilder::new();
    let value = b
        .constant("value", Tensor::zeros(DType::F32, &[2]).unwrap())
        .unwrap();
    let lr = b.constant("lr", Tensor::scalar(0.1f32)).unwrap();
    b.add(
        "ApplyGradientDescent",
        "update",
        &[value, lr, value],
        Attrs::new(),
    )
    .unwrap();
    let e = Session::new(b.finish())
        .unwrap()
        .run(&[], &["update"])
        .unwrap_err();
    assert!(
        matches!(&e, ExecError::Kernel { node, .. } if node == "update"),
        "{e}"
    );
    assert!(e.to_string().contains("input 0 must be a variable"), "{e}");
}
