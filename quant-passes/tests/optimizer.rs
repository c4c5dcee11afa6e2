//! The optimizer pass: names and structure as TensorFlow 1 builds them,
//! several training steps through the executor against TensorFlow's own
//! optimizers (`fixtures/tf/optimizers/optimizers.json`, made by
//! `tools/fixtures/make_tf_optimizer_fixtures.py`), the training-op check
//! after the pass, refused inputs, and the learning-rate schedules.
//!
//! Gradients are fed as placeholders: the pass only consumes them.

use ndarray::{ArrayD, Axis};
use ndarray_npy::read_npy;
use quant_core::builder::GraphBuilder;
use quant_core::models::{ModelOptions, mnist_cnn};
use quant_core::{AttrValue, DType, Graph, NewNode, NodeId, OutletId, OutputFact, Shape, Tensor};
use quant_kernels::session::Session;
use quant_passes::{
    ApiError, LrSchedule, OptimizerConfig, OptimizerError, OptimizerKind, TrainOp, apply_gradients,
    create_eval_graph, create_training_graph, learning_rate_placeholder,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    optimizer: String,
    hyper: BTreeMap<String, serde_json::Value>,
    weight_decay: f32,
    steps: usize,
    lr: Vec<f32>,
    update_ops: Vec<String>,
    files: BTreeMap<String, String>,
    after: BTreeMap<String, String>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tf/optimizers")
}

fn load(file: &str) -> ArrayD<f32> {
    read_npy(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(dir().join("optimizers.json")).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 6);
    cases
}

fn config(case: &Case) -> OptimizerConfig {
    let f = |k: &str| case.hyper[k].as_f64().unwrap() as f32;
    let kind = match case.optimizer.as_str() {
        "GradientDescent" => OptimizerKind::Sgd,
        "Momentum" => OptimizerKind::Momentum {
            momentum: f("momentum"),
            nesterov: case.hyper["nesterov"].as_bool().unwrap(),
        },
        "Adam" => OptimizerKind::Adam {
            beta1: f("beta1"),
            beta2: f("beta2"),
            epsilon: f("epsilon"),
        },
        other => panic!("unknown optimizer {other}"),
    };
    OptimizerConfig {
        kind,
        weight_decay: case.weight_decay,
    }
}

/// Variables `w` [4, 3] and `b` [3] with the case's initial values,
/// gradient placeholders `grad_w` and `grad_b`, and the optimizer.
fn graph(case: &Case) -> (Graph, TrainOp) {
    let mut b = GraphBuilder::new();
    let w = b
        .variable("w", Tensor::from_array(load(&case.files["w0"])), true)
        .unwrap();
    let bias = b
        .variable("b", Tensor::from_array(load(&case.files["b0"])), true)
        .unwrap();
    let gw = b
        .placeholder("grad_w", DType::F32, Shape::known(&[4, 3]))
        .unwrap();
    let gb = b
        .placeholder("grad_b", DType::F32, Shape::known(&[3]))
        .unwrap();
    let mut g = b.finish();
    let lr = learning_rate_placeholder(&mut g).unwrap();
    let train =
        apply_gradients(&mut g, &config(case), &[(w.node, gw), (bias.node, gb)], lr).unwrap();
    (g, train)
}

fn step(array: &ArrayD<f32>, t: usize) -> Tensor {
    Tensor::from_array(array.index_axis(Axis(0), t).to_owned())
}

#[test]
fn training_steps_match_tensorflow_optimizers() {
    for case in cases() {
        let (g, train) = graph(&case);
        let fetches = train.fetch_names(&g);
        let fetches: Vec<&str> = fetches.iter().map(String::as_str).collect();
        let mut session = Session::new(g).unwrap();
        let (gw, gb) = (load(&case.files["grad_w"]), load(&case.files["grad_b"]));
        let after: BTreeMap<&str, ArrayD<f32>> = case
            .after
            .iter()
            .map(|(name, file)| (name.as_str(), load(file)))
            .collect();
        for t in 0..case.steps {
            let feeds = [
                ("grad_w", step(&gw, t)),
                ("grad_b", step(&gb, t)),
                ("learning_rate", Tensor::scalar(case.lr[t])),
            ];
            let out = session.run(&feeds, &fetches).unwrap();
            assert_eq!(
                &out[0],
                session.variable("w").unwrap(),
                "update 0 is the new w"
            );
            // Every TensorFlow variable and slot, by TensorFlow's name, bit for bit.
            for (name, values) in &after {
                let ours = session
                    .variable(name)
                    .unwrap_or_else(|| panic!("{}: no variable '{name}'", case.name));
                assert_eq!(
                    ours,
                    &step(values, t),
                    "{}: '{name}' after step {}",
                    case.name,
                    t + 1
                );
            }
        }
    }
}

#[test]
fn names_and_structure_follow_tensorflow() {
    for case in cases() {
        let (g, train) = graph(&case);
        let opt = config(&case).name();
        assert_eq!(train.scope, opt);
        let mut updates: Vec<&str> = g
            .nodes()
            .filter(|(_, n)| n.op().starts_with("Apply"))
            .map(|(_, n)| n.name())
            .collect();
        updates.sort_unstable();
        assert_eq!(updates, case.update_ops, "{}", case.name);
        // The slots are exactly TensorFlow's, zero-initialised (beta powers
        // at beta) and not trainable.
        let mut slots: Vec<&str> = train.slots.iter().map(|&s| g.node(s).name()).collect();
        slots.sort_unstable();
        let mut expected: Vec<&str> = case
            .after
            .keys()
            .map(String::as_str)
            .filter(|k| !["w", "b"].contains(k))
            .collect();
        expected.sort_unstable();
        assert_eq!(slots, expected, "{}", case.name);
        for &s in &train.slots {
            let node = g.node(s);
            assert_eq!(node.attr("trainable"), Some(&AttrValue::Bool(false)));
            let init = node.attr_tensor("initial_value").unwrap();
            if !node.name().starts_with("beta") {
                assert!(
                    init.to_f64_vec().iter().all(|&v| v == 0.0),
                    "{}",
                    node.name()
                );
            }
        }
        // Inputs of the update of w, in TensorFlow's order.
        let update = g.by_name(&format!("{opt}/update_w/Apply{opt}")).unwrap();
        let inputs: Vec<String> = update.inputs().iter().map(|&o| g.outlet_name(o)).collect();
        let grad = if case.weight_decay > 0.0 {
            format!("{opt}/update_w/weight_decay/add")
        } else {
            "grad_w".to_string()
        };
        let expected: Vec<String> = match opt {
            "GradientDescent" => vec!["w".into(), "learning_rate".into(), grad],
            "Momentum" => vec![
                "w".into(),
                "w/Momentum".into(),
                "learning_rate".into(),
                grad,
                "Momentum/momentum".into(),
            ],
            _ => [
                "w",
                "w/Adam",
                "w/Adam_1",
                "beta1_power",
                "beta2_power",
                "learning_rate",
                "Adam/beta1",
                "Adam/beta2",
                "Adam/epsilon",
            ]
            .into_iter()
            .map(String::from)
            .chain([grad])
            .collect(),
        };
        assert_eq!(inputs, expected, "{}", case.name);
        // Weight decay: grad + λ·w for the rank-2 weight, never the bias.
        if case.weight_decay > 0.0 {
            let add = g
                .by_name(&format!("{opt}/update_w/weight_decay/add"))
                .unwrap();
            let mul = g
                .by_name(&format!("{opt}/update_w/weight_decay/mul"))
                .unwrap();
            let names = |n: &quant_core::Node| -> Vec<String> {
                n.inputs().iter().map(|&o| g.outlet_name(o)).collect()
            };
            assert_eq!(
                names(add),
                ["grad_w", &format!("{opt}/update_w/weight_decay/mul")]
            );
            assert_eq!(names(mul), [format!("{opt}/weight_decay"), "w".into()]);
            assert!(
                g.by_name(&format!("{opt}/update_b/weight_decay/add"))
                    .is_none()
            );
            let b_update = g.by_name(&format!("{opt}/update_b/Apply{opt}")).unwrap();
            assert!(names(b_update).contains(&"grad_b".to_string()));
        }
        let fetches = train.fetch_names(&g);
        let mut expected = vec![
            format!("{opt}/update_w/Apply{opt}"),
            format!("{opt}/update_b/Apply{opt}"),
        ];
        if opt == "Adam" {
            expected.extend(["Adam/Assign".to_string(), "Adam/Assign_1".to_string()]);
            let mul = g.by_name("Adam/mul").unwrap();
            let inputs: Vec<String> = mul.inputs().iter().map(|&o| g.outlet_name(o)).collect();
            assert_eq!(inputs, ["beta1_power", "Adam/beta1"]);
        }
        assert_eq!(fetches, expected, "{}", case.name);
        if opt != "GradientDescent" {
            let nesterov = case.hyper.get("nesterov").is_some_and(|v| v == true);
            assert_eq!(
                update.attr("use_nesterov"),
                Some(&AttrValue::Bool(nesterov)),
                "{}",
                case.name
            );
        }
    }
}

/// `(variable, gradient placeholder)` for every trainable variable.
fn placeholder_gradients(g: &mut Graph) -> Vec<(NodeId, OutletId)> {
    let vars: Vec<(NodeId, String, Vec<usize>)> = g
        .nodes()
        .filter(|(_, n)| {
            n.op() == "Variable" && n.attr("trainable") == Some(&AttrValue::Bool(true))
        })
        .map(|(id, n)| {
            let shape = n.outputs()[0].shape.as_ref().unwrap().as_known().unwrap();
            (id, n.name().to_string(), shape)
        })
        .collect();
    let mut b = GraphBuilder::extend(std::mem::take(g), quant_core::OpRegistry::builtin());
    let pairs = vars
        .into_iter()
        .map(|(id, name, shape)| {
            let grad = b
                .placeholder(&format!("grad/{name}"), DType::F32, Shape::known(&shape))
                .unwrap();
            (id, grad)
        })
        .collect();
    *g = b.finish();
    pairs
}

#[test]
fn the_training_op_check_refuses_a_graph_with_the_optimizer() {
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Momentum {
            momentum: 0.9,
            nesterov: true,
        },
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        },
    ] {
        let mut g = mnist_cnn(ModelOptions::default()).unwrap();
        create_training_graph(&mut g, 0).unwrap();
        let pairs = placeholder_gradients(&mut g);
        assert!(pairs.len() >= 4);
        let lr = learning_rate_placeholder(&mut g).unwrap();
        let config = OptimizerConfig {
            kind,
            weight_decay: 1e-4,
        };
        apply_gradients(&mut g, &config, &pairs, lr).unwrap();
        let before = quant_core::graph::dump(&g);
        let op = format!("Apply{}", config.name());
        match create_training_graph(&mut g, 0) {
            Err(ApiError::TrainingOps { op_types }) => assert_eq!(op_types, [op]),
            other => panic!("expected the training-op error, got {other:?}"),
        }
        assert!(matches!(
            create_eval_graph(&mut g),
            Err(ApiError::TrainingOps { .. })
        ));
        assert_eq!(
            quant_core::graph::dump(&g),
            before,
            "the graph is unchanged"
        );
    }
}

#[test]
fn refused_inputs_name_the_node_and_leave_the_graph_alone() {
    let mut b = GraphBuilder::new();
    let w = b
        .variable("w", Tensor::zeros(DType::F32, &[2, 2]).unwrap(), true)
        .unwrap();
    let x = b
        .placeholder("x", DType::F32, Shape::known(&[2, 2]))
        .unwrap();
    let wrong = b
        .placeholder("wrong", DType::F32, Shape::known(&[3]))
        .unwrap();
    let mut g = b.finish();
    g.add_node(
        NewNode::new("v2", "VariableV2")
            .attr("dtype", DType::F32)
            .attr("shape", AttrValue::Shape(None))
            .outputs(vec![OutputFact::dtype(DType::F32)]),
    )
    .unwrap();
    let v2 = g.id("v2").unwrap();
    let lr = learning_rate_placeholder(&mut g).unwrap();
    assert_eq!(
        learning_rate_placeholder(&mut g).unwrap(),
        lr,
        "created once"
    );
    let before = quant_core::graph::dump(&g);
    let sgd = OptimizerConfig {
        kind: OptimizerKind::Sgd,
        weight_decay: 0.0,
    };
    let e = apply_gradients(&mut g, &sgd, &[(x.node, x)], lr).unwrap_err();
    assert!(
        matches!(&e, OptimizerError::NotAVariable { node, op } if node == "x" && op == "Placeholder"),
        "{e}"
    );
    let e = apply_gradients(&mut g, &sgd, &[(w.node, x), (w.node, x)], lr).unwrap_err();
    assert!(
        matches!(&e, OptimizerError::Duplicate(n) if n == "w"),
        "{e}"
    );
    let e = apply_gradients(&mut g, &sgd, &[(v2, x)], lr).unwrap_err();
    assert!(
        matches!(&e, OptimizerError::Variable { node, .. } if node == "v2"),
        "{e}"
    );
    let e = apply_gradients(&mut g, &sgd, &[(w.node, wrong)], lr).unwrap_err();
    assert!(
        matches!(&e, OptimizerError::Graph { node, .. } if node == "w"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("GradientDescent/update_w/ApplyGradientDescent"),
        "{e}"
    );
    let e = apply_gradients(&mut g, &sgd, &[(w.node, x)], x).unwrap_err();
    assert!(e.to_string().contains("must be a scalar"), "{e}");
    let adam = OptimizerConfig {
        kind: OptimizerKind::Adam {
            beta1: 1.0,
            beta2: 0.999,
            epsilon: 1e-8,
        },
        weight_decay: 0.0,
    };
    let e = apply_gradients(&mut g, &adam, &[(w.node, x)], lr).unwrap_err();
    assert!(
        matches!(
            e,
            OptimizerError::Setting {
                setting: "beta1",
                ..
            }
        ),
        "{e}"
    );
    let e = OptimizerConfig {
        kind: OptimizerKind::Sgd,
        weight_decay: -1.0,
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "optimizer setting weight_decay = -1 is out of range"
    );
    assert_eq!(quant_core::graph::dump(&g), before);
    // A second optimizer gets its own scope.
    apply_gradients(&mut g, &sgd, &[(w.node, x)], lr).unwrap();
    let second = apply_gradients(&mut g, &sgd, &[(w.node, x)], lr).unwrap();
    assert_eq!(second.scope, "GradientDescent_1");
    assert!(
        g.by_name("GradientDescent_1/update_w/ApplyGradientDescent")
            .is_some()
    );
}

#[test]
fn schedules_follow_their_formulas() {
    let constant = LrSchedule::Constant(0.05);
    assert_eq!([constant.at(0), constant.at(1_000_000)], [0.05, 0.05]);

    // lr · gamma^⌊step / every⌋.
    let step = LrSchedule::Step {
        lr: 0.1,
        every: 100,
        gamma: 0.5,
    };
    let values = [0, 99, 100, 199, 250, 1000].map(|s| step.at(s));
    assert_eq!(values, [0.1, 0.1, 0.05, 0.05, 0.025, 0.1 / 1024.0]);
    let never = LrSchedule::Step {
        lr: 0.1,
        every: 0,
        gamma: 0.5,
    };
    assert_eq!(never.at(12345), 0.1);

    // final + (lr − final)·(1 + cos(π·step/total))/2, then final:
    // step 25: 0.001 + 0.099·(1 + √2/2)/2 = 0.08550178...
    let cosine = LrSchedule::Cosine {
        lr: 0.1,
        total_steps: 100,
        final_lr: 0.001,
    };
    let close = |a: f32, b: f64| (f64::from(a) - b).abs() <= 1e-7 * b.abs();
    assert_eq!(cosine.at(0), 0.1);
    assert!(close(
        cosine.at(25),
        0.001 + 0.099 * (1.0 + 0.5f64.sqrt()) / 2.0
    ));
    assert!(close(cosine.at(25), 0.085_501_786));
    assert!(close(cosine.at(50), 0.0505));
    assert!(close(
        cosine.at(75),
        0.001 + 0.099 * (1.0 - 0.5f64.sqrt()) / 2.0
    ));
    assert_eq!([cosine.at(100), cosine.at(5000)], [0.001, 0.001]);
}
