//! The public API (reference semantics §1): the training-op check (§1.3,
//! scenario 52, decision 2), option validation, equivalence with running
//! the passes directly, and idempotence (decision 9).

use quant_core::graph::dump;
use quant_core::models::{self, ModelOptions};
use quant_core::{Graph, NewNode};
use quant_passes::api::training_op_types;
use quant_passes::{
    ApiError, ConfigError, EvalOptions, FoldBatchNorms, OPTIMIZER_OP_TYPES, PassError, PassManager,
    PassReport, Quantize, QuantizeConfig, TrainingOptions, create_eval_graph,
    create_training_graph, experimental_create_eval_graph, experimental_create_training_graph,
};
use std::collections::BTreeSet;

fn model(name: &str) -> Graph {
    models::builtin(name, ModelOptions::default())
        .unwrap()
        .unwrap()
}

/// `graph` plus one node of each op type in `ops` (no inputs: the check
/// looks at op types only).
fn with_ops(mut graph: Graph, ops: &[&str]) -> Graph {
    for (i, op) in ops.iter().enumerate() {
        graph
            .add_node(NewNode::new(format!("train/update_{i}/{op}"), *op))
            .unwrap();
    }
    graph
}

/// One of the four entry points with its default options.
type EntryPoint = fn(&mut Graph) -> Result<PassReport, ApiError>;

fn eval_options() -> EvalOptions {
    EvalOptions::new()
}

// ------------------------------------------------------ training-op check

#[test]
fn the_optimizer_list_is_the_original_47_plus_the_gaps_of_decision_2() {
    let set: BTreeSet<&str> = OPTIMIZER_OP_TYPES.iter().copied().collect();
    assert_eq!(set.len(), OPTIMIZER_OP_TYPES.len(), "no duplicates");
    // §1.3, group by group.
    let dense = [
        "Adagrad",
        "AdagradDA",
        "Adam",
        "AddSign",
        "CenteredRMSProp",
        "Ftrl",
        "FtrlV2",
        "GradientDescent",
        "Momentum",
        "PowerSign",
        "ProximalAdagrad",
        "ProximalGradientDescent",
        "RMSProp",
    ];
    let sparse = [
        "Adadelta",
        "Adagrad",
        "AdagradDA",
        "CenteredRMSProp",
        "Ftrl",
        "FtrlV2",
        "Momentum",
        "ProximalAdagrad",
        "ProximalGradientDescent",
        "RMSProp",
    ];
    let mut original = Vec::new();
    original.extend(dense.iter().map(|o| format!("Apply{o}")));
    original.extend(
        dense
            .iter()
            .chain(&["Adadelta"])
            .map(|o| format!("ResourceApply{o}")),
    );
    original.extend(sparse.iter().map(|o| format!("ResourceSparseApply{o}")));
    original.extend(sparse.iter().map(|o| format!("SparseApply{o}")));
    assert_eq!(original.len(), 47);
    for op in &original {
        assert!(set.contains(op.as_str()), "{op}");
    }
    for gap in [
        "ApplyAdadelta",
        "ApplyAdaMax",
        "ResourceApplyAdaMax",
        "ResourceApplyKerasMomentum",
        "ResourceApplyAdamWithAmsgrad",
    ] {
        assert!(set.contains(gap), "{gap}");
    }
}

#[test]
fn scenario_52_a_graph_with_gradient_descent_updates_is_refused_by_every_entry_point() {
    let g = with_ops(model("mnist-cnn"), &["ApplyGradientDescent"]);
    let before = dump(&g);
    let calls: [(&str, EntryPoint); 4] = [
        ("create_training_graph", |g| create_training_graph(g, 0)),
        ("create_eval_graph", create_eval_graph),
        ("experimental_create_training_graph", |g| {
            experimental_create_training_graph(g, &TrainingOptions::default())
        }),
        ("experimental_create_eval_graph", |g| {
            experimental_create_eval_graph(g, &eval_options())
        }),
    ];
    for (name, call) in calls {
        let mut graph = g.clone();
        let err = call(&mut graph).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Training op found in graph, exiting"),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("ApplyGradientDescent"), "{err}");
        match err {
            ApiError::TrainingOps { op_types } => assert_eq!(op_types, ["ApplyGradientDescent"]),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(dump(&graph), before, "{name} left the graph unchanged");
    }
}

#[test]
fn the_gaps_of_the_original_list_are_refused_too() {
    for op in ["ApplyAdadelta", "ResourceApplyAdamWithAmsgrad"] {
        let mut g = with_ops(model("mnist-cnn"), &[op]);
        let err = create_eval_graph(&mut g).unwrap_err();
        assert!(
            matches!(&err, ApiError::TrainingOps { op_types } if op_types == &[op]),
            "{err:?}"
        );
    }
    // Every offending type is named once, sorted.
    let g = with_ops(
        model("mnist-cnn"),
        &["SparseApplyMomentum", "ApplyAdaMax", "SparseApplyMomentum"],
    );
    assert_eq!(
        training_op_types(&g),
        ["ApplyAdaMax", "SparseApplyMomentum"]
    );
    let err = create_training_graph(&mut g.clone(), 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Training op found in graph, exiting: {ApplyAdaMax, SparseApplyMomentum}"
    );
}

#[test]
fn a_clean_graph_passes_the_check() {
    let mut g = model("mnist-cnn");
    assert!(training_op_types(&g).is_empty());
    // Ops that merely look like optimizers are not refused.
    let mut g2 = with_ops(g.clone(), &["Apply", "ApplyGradientDescentV9", "NoOp"]);
    assert!(training_op_types(&g2).is_empty());
    create_eval_graph(&mut g2).unwrap();
    let report = create_training_graph(&mut g, 0).unwrap();
    assert_eq!(report.quantizers.len(), 6);
}

// ------------------------------------------------------- option validation

#[test]
fn bit_widths_outside_2_to_16_are_refused_before_any_edit() {
    let g = model("mnist-cnn");
    let mut graph = g.clone();
    let err = experimental_create_eval_graph(
        &mut graph,
        &EvalOptions {
            weight_bits: 1,
            ..eval_options()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Config(ConfigError::Bits {
                which: "weight_bits",
                bits: 1
            })
        ),
        "{err:?}"
    );
    let err = experimental_create_training_graph(
        &mut graph,
        &TrainingOptions {
            activation_bits: 17,
            ..TrainingOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: activation_bits = 17 is out of range: bit widths must be in 2..=16"
    );
    assert_eq!(dump(&graph), dump(&g));
}

#[test]
fn freeze_bn_delay_is_refused_in_eval_and_negative_delays_everywhere() {
    let mut g = model("mnist-cnn");
    let err = experimental_create_eval_graph(
        &mut g,
        &EvalOptions {
            freeze_bn_delay: Some(100),
            ..eval_options()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Config(ConfigError::FreezeWithoutTraining(100))
        ),
        "{err:?}"
    );
    let err = create_training_graph(&mut g, -5).unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Config(ConfigError::NegativeDelay {
                which: "quant_delay",
                value: -5
            })
        ),
        "{err:?}"
    );
}

#[test]
fn a_scope_matching_no_node_is_an_error_and_a_scope_gets_its_slash() {
    for scope in ["NonExisting", "NonExisting/", "conv", ""] {
        let mut g = model("mnist-cnn");
        let before = dump(&g);
        let err = experimental_create_eval_graph(
            &mut g,
            &EvalOptions {
                scope: Some(scope.into()),
                ..eval_options()
            },
        )
        .unwrap_err();
        let expected = if scope.ends_with('/') {
            scope.to_string()
        } else {
            format!("{scope}/")
        };
        assert!(
            matches!(&err, ApiError::ScopeMatchesNothing { scope } if *scope == expected),
            "{scope}: {err:?}"
        );
        assert_eq!(dump(&g), before);
    }
    // `conv1` becomes `conv1/`: only conv1 is quantized.
    let mut g = model("mnist-cnn");
    let report = experimental_create_eval_graph(
        &mut g,
        &EvalOptions {
            scope: Some("conv1".into()),
            ..eval_options()
        },
    )
    .unwrap();
    assert!(!report.quantizers.is_empty());
    for q in &report.quantizers {
        assert!(q.node.starts_with("conv1/"), "{}", q.node);
    }
}

#[test]
fn scenario_51_a_quant_delay_is_an_int64_const_in_activate_quant_in_every_api() {
    let consts = |graph: &Graph| -> Vec<i64> {
        graph
            .nodes()
            .filter(|(_, n)| n.op() == "Const" && n.name().contains("activate_quant"))
            .map(|(_, n)| {
                let t = n.attr_tensor("value").unwrap();
                assert_eq!(t.dtype(), quant_core::DType::I64, "{}", n.name());
                t.array::<i64>().unwrap().iter().copied().next().unwrap()
            })
            .collect()
    };
    let training = || {
        models::builtin(
            "mnist-cnn",
            ModelOptions {
                training: true,
                ..ModelOptions::default()
            },
        )
        .unwrap()
        .unwrap()
    };
    let mut graphs = Vec::new();
    let mut g = training();
    create_training_graph(&mut g, 100).unwrap();
    graphs.push(g);
    for symmetric in [false, true] {
        let mut g = training();
        experimental_create_training_graph(
            &mut g,
            &TrainingOptions {
                quant_delay: 100,
                symmetric,
                ..TrainingOptions::default()
            },
        )
        .unwrap();
        graphs.push(g);
    }
    // A positive delay in the eval API inserts the select too (§1.1).
    let mut g = model("mnist-cnn");
    experimental_create_eval_graph(
        &mut g,
        &EvalOptions {
            quant_delay: Some(100),
            ..eval_options()
        },
    )
    .unwrap();
    graphs.push(g);
    for g in &graphs {
        let found = consts(g);
        // Three weights, two activations, the logits' bias add.
        assert_eq!(found, vec![100; 6]);
        assert!(g.by_name("conv1/act_quant/delayed_quant").is_some());
    }
}

#[test]
fn a_training_batch_norm_without_its_updates_is_refused_and_the_graph_left_alone() {
    // The built-in training model without its moving-average update ops.
    let mut g = models::builtin(
        "mnist-cnn",
        ModelOptions {
            training: true,
            ..ModelOptions::default()
        },
    )
    .unwrap()
    .unwrap();
    let updates: Vec<_> = g
        .nodes()
        .filter(|(_, n)| n.name().contains("AssignMovingAvg"))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        updates.len(),
        2 * 7,
        "decay, then sub, mul and AssignSub twice per batch norm"
    );
    g.remove_dead(|g, id| !g.node(id).name().contains("AssignMovingAvg"));
    let before = dump(&g);
    let mut graph = g.clone();
    let err = create_training_graph(&mut graph, 0).unwrap_err();
    assert!(
        matches!(
            &err,
            ApiError::Pass(PassError::Unsupported {
                pass: "fold_batch_norms",
                node,
                ..
            }) if node == "conv1/BatchNorm/FusedBatchNormV3"
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("moving-average update"), "{err}");
    assert_eq!(dump(&graph), before);
}

// --------------------------------------- equivalence with the passes, idempotence

#[test]
fn the_eval_api_gives_the_same_graph_as_the_passes() {
    for name in models::BUILTIN_MODELS {
        let mut direct = model(name);
        let expected = PassManager::new()
            .with(FoldBatchNorms)
            .with(Quantize)
            .run(&mut direct, &QuantizeConfig::eval())
            .unwrap();
        let mut via_api = model(name);
        let report = create_eval_graph(&mut via_api).unwrap();
        assert_eq!(report, expected, "{name}");
        assert_eq!(dump(&via_api), dump(&direct), "{name}");
        assert!(!report.quantizers.is_empty(), "{name}");
    }
}

#[test]
fn the_training_api_gives_the_same_graph_as_the_passes() {
    for name in models::BUILTIN_MODELS {
        let mut direct = model(name);
        let expected = PassManager::new()
            .with(FoldBatchNorms)
            .with(Quantize)
            .run(&mut direct, &QuantizeConfig::training())
            .unwrap();
        let mut via_api = model(name);
        let report = create_training_graph(&mut via_api, 0).unwrap();
        assert_eq!(report, expected, "{name}");
        assert_eq!(dump(&via_api), dump(&direct), "{name}");
    }
}

#[test]
fn a_second_rewrite_through_the_api_changes_nothing() {
    let training = TrainingOptions {
        weight_bits: 4,
        symmetric: true,
        per_channel: true,
        ..TrainingOptions::default()
    };
    let eval = EvalOptions {
        activation_bits: 4,
        per_channel: true,
        scope: Some("conv2".into()),
        ..eval_options()
    };
    for name in models::BUILTIN_MODELS {
        let mut g = model(name);
        create_eval_graph(&mut g).unwrap();
        let once = dump(&g);
        let again = create_eval_graph(&mut g).unwrap();
        assert!(again.is_empty() && again.quantizers.is_empty(), "{name}");
        assert_eq!(dump(&g), once, "{name}");

        let mut g = model(name);
        experimental_create_training_graph(&mut g, &training).unwrap();
        let once = dump(&g);
        let again = experimental_create_training_graph(&mut g, &training).unwrap();
        assert!(again.is_empty() && again.quantizers.is_empty(), "{name}");
        assert_eq!(dump(&g), once, "{name}");
    }
    let mut g = model("mnist-cnn");
    experimental_create_eval_graph(&mut g, &eval).unwrap();
    let once = dump(&g);
    let again = experimental_create_eval_graph(&mut g, &eval).unwrap();
    assert!(again.is_empty(), "{:?}", again.applied);
    assert_eq!(dump(&g), once);
}
