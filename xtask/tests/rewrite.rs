//! `cargo xtask rewrite` (docs/cli.md), driven through the real binary.

mod common;

use common::{assert_user_error, json, root, stderr, xtask};

use quant_core::builder::GraphBuilder;
use quant_core::models::{self, ModelOptions};
use quant_core::serialize::write_graph_json;
use quant_core::{Attrs, OpRegistry, Tensor};
use serde_json::Value;

fn fixture(name: &str) -> String {
    root()
        .join("fixtures/tf/cnn")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// `(name, role)` of every fake quant in a `--json` summary.
fn names_and_roles(summary: &Value) -> Vec<(String, String)> {
    summary["fake_quants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap().to_string(),
                q["role"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn eval_rewrite_of_the_tensorflow_cnn_lists_the_prescribed_fake_quants() {
    // Written from reference semantics §3.2/§3.3 for fixtures/tf/cnn (see
    // its meta.json): conv1, the depthwise and the pointwise conv are
    // Conv/Depthwise + FusedBatchNormV3 + Relu6, folded first (3 folds),
    // then matched by their activation in graph order (stage 2): each gets
    // `C/weights_quant` on its `mul_fold` and `C/act_quant` on its Relu6.
    // The dense layer (MatMul + BiasAdd, no activation, feeding Softmax) is
    // matched by its bias add (stage 3): `logits/weights_quant` and
    // `logits/act_quant`. Weights are narrow range, all 8 bits, asymmetric,
    // per tensor. No Add/Mul is fed by a fake quant: no intermediates.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cnn_eval.json");
    let o = xtask(&[
        "rewrite",
        "--input",
        &fixture("graph.pb"),
        "--output",
        out.to_str().unwrap(),
        "--mode",
        "eval",
        "--json",
    ]);
    let summary = json(&o);
    let expected: Vec<(String, String)> = [
        ("conv1/weights_quant", "weights"),
        ("conv1/act_quant", "activation"),
        ("sep2/depthwise/weights_quant", "weights"),
        ("sep2/depthwise/act_quant", "activation"),
        ("sep2/pointwise/weights_quant", "weights"),
        ("sep2/pointwise/act_quant", "activation"),
        ("logits/weights_quant", "weights"),
        ("logits/act_quant", "activation"),
    ]
    .iter()
    .map(|(p, r)| (format!("{p}/FakeQuantWithMinMaxVars"), r.to_string()))
    .collect();
    assert_eq!(names_and_roles(&summary), expected);
    for q in summary["fake_quants"].as_array().unwrap() {
        assert_eq!(q["bits"], 8, "{q}");
        assert_eq!(q["narrow_range"], q["role"] == "weights", "{q}");
        assert_eq!(q["symmetric"], false, "{q}");
        assert_eq!(q["per_channel"], false, "{q}");
    }
    assert_eq!(summary["nodes_before"], 34);
    assert_eq!(summary["folded_batch_norms"], 3);

    // The output re-reads with `inspect`.
    let o = xtask(&["inspect", out.to_str().unwrap(), "--json"]);
    let inspected = json(&o);
    assert_eq!(inspected["nodes"], summary["nodes_after"]);
    assert_eq!(inspected["ops"]["FakeQuantWithMinMaxVars"], 8);

    // The text form of the same GraphDef gives the same summary.
    let out2 = dir.path().join("cnn_eval_text.json");
    let o = xtask(&[
        "rewrite",
        "--input",
        &fixture("graph.pbtxt"),
        "--output",
        out2.to_str().unwrap(),
        "--mode",
        "eval",
        "--json",
    ]);
    assert_eq!(json(&o), summary);
    // And a .json input: rewriting the rewritten graph changes nothing.
    let out3 = dir.path().join("again.json");
    let o = xtask(&[
        "rewrite",
        "--input",
        out.to_str().unwrap(),
        "--output",
        out3.to_str().unwrap(),
        "--mode",
        "eval",
        "--json",
    ]);
    let again = json(&o);
    assert_eq!(again["nodes_before"], summary["nodes_after"]);
    assert_eq!(again["nodes_after"], summary["nodes_after"]);
    assert_eq!(again["folded_batch_norms"], 0);
    assert_eq!(again["fake_quants"], Value::Array(vec![]));
}

#[test]
fn without_input_the_builtin_model_is_rewritten_in_training_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("train.json");
    let o = xtask(&[
        "rewrite",
        "--output",
        out.to_str().unwrap(),
        "--mode",
        "training",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("built-in model mnist-cnn: training rewrite"),
        "{text}"
    );
    assert!(
        text.contains("2 batch norms folded, 6 fake quants"),
        "{text}"
    );
    let inspected = json(&xtask(&["inspect", out.to_str().unwrap(), "--json"]));
    // Training quantizers update their ranges (§4.1): AssignMinLast and
    // AssignMaxLast for each of the three weight quantizers.
    assert_eq!(inspected["ops"]["FakeQuantWithMinMaxVars"], 6);
    assert_eq!(inspected["ops"]["Assign"], 6);
    // The built-in model is built for training: its batch norms fold in
    // training form (§2.4) and keep their moving-average updates (two per
    // batch norm), beside the 12 EMA updates of the 3 activation quantizers.
    assert_eq!(inspected["ops"]["AssignSub"], 2 * 2 + 12);
    assert!(inspected["ops"]["RealDiv"].as_u64().unwrap() > 0);
}

#[test]
fn a_quant_delay_inserts_delayed_quant_selects() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("delay.json");
    let o = xtask(&[
        "rewrite",
        "--output",
        out.to_str().unwrap(),
        "--mode",
        "training",
        "--quant-delay",
        "10",
        "--freeze-bn-delay",
        "20",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let inspected = json(&xtask(&["inspect", out.to_str().unwrap(), "--json"]));
    // One select per fake quant, plus per batch norm two corrections and
    // two frozen decays.
    assert_eq!(inspected["ops"]["SelectV2"], 6 + 2 * 4);
    assert_eq!(inspected["ops"]["GreaterEqual"], 6 + 2);
}

#[test]
fn options_reach_the_fake_quants() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("opts.json");
    let o = xtask(&[
        "rewrite",
        "--output",
        out.to_str().unwrap(),
        "--mode",
        "training",
        "--weight-bits",
        "4",
        "--activation-bits",
        "6",
        "--symmetric",
        "--per-channel",
        "--scope",
        "conv2",
        "--json",
    ]);
    let summary = json(&o);
    let quants = summary["fake_quants"].as_array().unwrap();
    assert!(!quants.is_empty());
    for q in quants {
        let name = q["name"].as_str().unwrap();
        assert!(name.starts_with("conv2/"), "{q}");
        assert_eq!(q["symmetric"], true, "{q}");
        if q["role"] == "weights" {
            assert_eq!(q["bits"], 4, "{q}");
            assert_eq!(q["per_channel"], true, "{q}");
        } else {
            assert_eq!(q["bits"], 6, "{q}");
            assert_eq!(q["per_channel"], false, "{q}");
        }
    }
}

#[test]
fn bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let out_s = out.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["rewrite", "--output", out_s];
        args.extend_from_slice(extra);
        xtask(&args)
    };

    // Usage errors: exit 2.
    assert_eq!(run(&["--mode", "inference"]).status.code(), Some(2));
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(
        run(&["--mode", "eval", "--weight-bits", "x"]).status.code(),
        Some(2)
    );

    // Everything else: exit 1, one `error:` line naming the flag or file.
    assert_user_error(
        &run(&["--mode", "eval", "--weight-bits", "1"]),
        "--weight-bits",
    );
    assert_user_error(
        &run(&["--mode", "training", "--activation-bits", "17"]),
        "--activation-bits",
    );
    let missing = dir.path().join("missing.pb");
    let missing = missing.to_str().unwrap();
    assert_user_error(
        &run(&["--mode", "eval", "--input", missing]),
        &format!("{missing}: "),
    );
    assert_user_error(&run(&["--mode", "eval", "--scope", "nowhere"]), "--scope");
    assert_user_error(
        &run(&["--mode", "eval", "--freeze-bn-delay", "10"]),
        "--freeze-bn-delay",
    );
    assert_user_error(
        &run(&["--mode", "eval", "--target", "edgetpu"]),
        "--target: unknown target `edgetpu`",
    );
    assert_user_error(&run(&["--mode", "eval", "--plugin", "p.toml"]), "--plugin");
    assert_user_error(
        &xtask(&[
            "rewrite",
            "--output",
            dir.path().join("out.pb").to_str().unwrap(),
            "--mode",
            "eval",
        ]),
        "--output",
    );

    // A graph that already holds optimizer updates (§1.3).
    let g = models::builtin("mnist-cnn", ModelOptions::default())
        .unwrap()
        .unwrap();
    let w = g.outlet("conv1/weights").unwrap();
    let mut b = GraphBuilder::extend(g, OpRegistry::builtin());
    let alpha = b
        .constant("train/learning_rate", Tensor::scalar(0.1f32))
        .unwrap();
    b.add(
        "ApplyGradientDescent",
        "train/update_conv1/ApplyGradientDescent",
        &[w, alpha, w],
        Attrs::new(),
    )
    .unwrap();
    let g = b.finish();
    let trained = dir.path().join("trained.json");
    write_graph_json(&trained, &g).unwrap();
    let trained = trained.to_str().unwrap();
    let o = run(&["--mode", "eval", "--input", trained]);
    assert_user_error(
        &o,
        &format!("{trained}: Training op found in graph, exiting: {{ApplyGradientDescent}}"),
    );

    // Training-mode batch norms without their moving-average updates
    // cannot fold in training form.
    let mut g = models::builtin(
        "mnist-cnn",
        ModelOptions {
            training: true,
            ..ModelOptions::default()
        },
    )
    .unwrap()
    .unwrap();
    g.remove_dead(|g, id| !g.node(id).name().contains("AssignMovingAvg"));
    let bn = dir.path().join("bn_training.json");
    write_graph_json(&bn, &g).unwrap();
    let bn = bn.to_str().unwrap();
    assert_user_error(
        &run(&["--mode", "training", "--input", bn]),
        "conv1/BatchNorm/FusedBatchNormV3",
    );

    assert!(!out.exists(), "nothing is written on error");
}
