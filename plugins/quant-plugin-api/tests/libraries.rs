//! The example plugin libraries, built with cargo (once per package per
//! test binary) and loaded through the host API: kernels against worked
//! examples and finite differences, panicking kernels, a custom matcher
//! (and one naming nodes that do not exist), the data patterns in the
//! rewrite, and a plugin op end to end: rewrite, train, lower to a CUSTOM
//! op, run on the integer executor, write and read TFLite, export.

use quant_core::builder::GraphBuilder;
use quant_core::integer::{IntModel, IntOp, IntOpKind, IntTensor};
use quant_core::{Attrs, DType, Graph, OutletId, QuantParams, Shape, Tensor};
use quant_kernels::integer::{IntError, IntExecutor, KernelPath};
use quant_kernels::session::{ExecError, Session};
use quant_passes::api::{EvalOptions, experimental_create_eval_graph_with_patterns};
use quant_plugin_api::{Plugins, exporter_for, load_plugins};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `package` (a cdylib) with cargo, once per test binary, and
/// returns the library's path.
fn build_library(package: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(package) {
        return path.clone();
    }
    let path = cargo_build(package);
    built.insert(package.to_string(), path.clone());
    path
}

fn cargo_build(package: &str) -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "--quiet", "--message-format=json", "-p", package])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["kind"][0] == "cdylib")
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
        })
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| {
            f.extension()
                .is_some_and(|e| e == "so" || e == "dylib" || e == "dll")
        })
        .expect("cargo reports the cdylib")
}

/// Copies the example manifest `example` into `dir`, pointing `library` at
/// the freshly built library of `package` and pinning its SHA-256.
fn manifest_for(dir: &Path, example: &str, package: &str) -> PathBuf {
    relocated(dir, example, &build_library(package))
}

/// Copies the example manifest `example` into `dir`, pointing `library` at
/// `library` and pinning its SHA-256.
fn relocated(dir: &Path, example: &str, library: &Path) -> PathBuf {
    let digest: String = Sha256::digest(std::fs::read(library).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = std::fs::read_to_string(
        root()
            .join("plugins/examples")
            .join(example)
            .join("plugin.toml"),
    )
    .unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("library = ") {
                format!(
                    "library = {:?}\nsha256 = \"{digest}\"",
                    library.display().to_string()
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join(format!("{example}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn unary_graph(plugins: &Plugins, op: &str, shape: &[usize]) -> Graph {
    let mut b = GraphBuilder::with_registry(plugins.ops());
    let x = b.placeholder("x", DType::F32, Shape::known(shape)).unwrap();
    b.add(op, "y", &[x], Attrs::new()).unwrap();
    b.finish()
}

#[test]
fn hard_swish_runs_with_its_gradient_and_the_exporter_counts_ops() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_for(dir.path(), "custom-op", "quant-plugin-custom-op");
    let plugins = load_plugins(&[manifest]).unwrap();
    let graph = unary_graph(&plugins, "HardSwish", &[6]);
    let y = graph.by_name("y").unwrap();
    assert_eq!(
        y.outputs()[0].shape,
        Some(Shape::known(&[6])),
        "inferred by the op spec"
    );

    let mut session = Session::with_kernels(graph.clone(), plugins.kernels().clone()).unwrap();
    let xs = [-4.0f32, -3.0, -1.0, 0.0, 1.0, 4.0];
    let x = Tensor::from_vec(&[6], xs.to_vec()).unwrap();
    let out = session.run(&[("x", x.clone())], &["y"]).unwrap();
    // Worked example: x · relu6(x + 3) / 6.
    let expected = [0.0, 0.0, -1.0 / 3.0, 0.0, 2.0 / 3.0, 4.0];
    let got = out[0].to_f64_vec();
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e).abs() < 1e-6, "{got:?}");
    }

    // The gradient op against central differences of the forward kernel.
    let mut b = GraphBuilder::extend(graph, plugins.ops());
    let x_in = OutletId::new(b.graph().id("x").unwrap(), 0);
    let dy = b.placeholder("dy", DType::F32, Shape::known(&[6])).unwrap();
    b.add("HardSwishGrad", "dx", &[x_in, dy], Attrs::new())
        .unwrap();
    let mut session = Session::with_kernels(b.finish(), plugins.kernels().clone()).unwrap();
    let points = [-4.0f32, -2.5, -1.0, 0.5, 2.0, 4.0];
    let dys = [1.0f32, 2.0, -1.0, 0.5, 1.0, 3.0];
    let feeds = [
        ("x", Tensor::from_vec(&[6], points.to_vec()).unwrap()),
        ("dy", Tensor::from_vec(&[6], dys.to_vec()).unwrap()),
    ];
    let dx = session.run(&feeds, &["dx"]).unwrap()[0].to_f64_vec();
    let eps = 1e-2f32;
    let shifted = |d: f32| {
        let t = Tensor::from_vec(&[6], points.iter().map(|p| p + d).collect()).unwrap();
        session_forward(&plugins, t)
    };
    let (up, down) = (shifted(eps), shifted(-eps));
    for i in 0..6 {
        let numeric = f64::from(dys[i]) * (up[i] - down[i]) / f64::from(2.0 * eps);
        assert!(
            (dx[i] - numeric).abs() < 1e-3,
            "point {i}: {} vs {numeric}",
            dx[i]
        );
    }

    // The integer kernel, on a CUSTOM op: int8 input (scale 0.05, zero
    // point 0) at −4, −1, 0, 1, 4; output scale 1/32, zero point −100.
    // Worked example: HardSwish gives 0, −1/3, 0, 2/3, 4, i.e.
    // round(y·32) − 100 = −100, −111 (−10.67 rounds to −11), −100, −79
    // (21.33 → 21), 28.
    let model = custom_model("HardSwish", 0.05, 0, 1.0 / 32.0, -100);
    let run = IntExecutor::with_custom_kernels(&model, KernelPath::Fast, plugins.integer_kernels())
        .unwrap()
        .run(&[Tensor::from_vec(&[5], vec![-80i8, -20, 0, 20, 80]).unwrap()])
        .unwrap();
    assert_eq!(run[0].to_i64_vec().unwrap(), [-100, -111, -100, -79, 28]);
    // Without the plugin's kernels the CUSTOM op is an error naming it.
    let err = IntExecutor::new(&model).unwrap_err();
    assert_eq!(
        err,
        IntError::UnknownCustomOp {
            op: 0,
            name: "HardSwish".into()
        }
    );
    assert!(err.to_string().contains("custom op `HardSwish`"), "{err}");
}

/// One CUSTOM op `name` from an int8 `[5]` input to an int8 `[5]` output
/// with the given scales and zero points.
fn custom_model(name: &str, s_in: f32, z_in: i64, s_out: f32, z_out: i64) -> IntModel {
    let tensor = |name: &str, scale: f32, zero_point: i64| IntTensor {
        name: name.into(),
        dtype: DType::I8,
        shape: vec![5],
        quant: Some(QuantParams {
            scales: vec![scale],
            zero_points: vec![zero_point],
            axis: None,
        }),
        data: None,
    };
    IntModel {
        tensors: vec![tensor("x", s_in, z_in), tensor("y", s_out, z_out)],
        ops: vec![IntOp {
            kind: IntOpKind::Custom { name: name.into() },
            inputs: vec![Some(0)],
            outputs: vec![1],
        }],
        inputs: vec![0],
        outputs: vec![1],
        description: String::new(),
    }
}

fn session_forward(plugins: &Plugins, x: Tensor) -> Vec<f64> {
    let graph = unary_graph(plugins, "HardSwish", x.shape());
    let mut s = Session::with_kernels(graph, plugins.kernels().clone()).unwrap();
    s.run(&[("x", x)], &["y"]).unwrap()[0].to_f64_vec()
}

#[test]
fn a_panicking_plugin_kernel_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_for(dir.path(), "panicking", "quant-plugin-panicking");
    let plugins = load_plugins(&[manifest]).unwrap();
    let graph = unary_graph(&plugins, "Explode", &[2]);
    let mut session = Session::with_kernels(graph, plugins.kernels().clone()).unwrap();
    let x = Tensor::from_vec(&[2], vec![1.0f32, 2.0]).unwrap();
    let err = session.run(&[("x", x)], &["y"]).unwrap_err();
    assert!(matches!(err, ExecError::Kernel { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "node 'y' (Explode): plugin `panicking`: op `Explode` forward: panicked: Explode always panics"
    );

    // Its integer kernel panics too: an error of the CUSTOM op, not an abort.
    let model = custom_model("Explode", 0.1, 0, 0.1, 0);
    let executor =
        IntExecutor::with_custom_kernels(&model, KernelPath::Fast, plugins.integer_kernels())
            .unwrap();
    let err = executor
        .run(&[Tensor::from_vec(&[5], vec![1i8, 2, 3, 4, 5]).unwrap()])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "op 0 (CUSTOM), tensor 'y': custom op `Explode`: plugin `panicking`: op `Explode` \
         integer kernel: panicked: Explode panics on integers too"
    );
}

#[test]
fn a_matcher_naming_an_unknown_node_fails_the_rewrite_naming_plugin_matcher_and_node() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_for(dir.path(), "panicking", "quant-plugin-panicking");
    let plugins = load_plugins(&[manifest]).unwrap();
    let mut graph = dense_tanh();
    let err = experimental_create_eval_graph_with_patterns(
        &mut graph,
        &EvalOptions::new(),
        Arc::new(plugins.patterns().clone()),
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "ghost",
        "plugin `panicking`: matcher `ghost`: layer 0: `layer` names `no/such/MatMul`, which is not a node of the graph",
    ] {
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
}

/// `x[2,3] → dense/MatMul(x, dense/weights) → dense/Add(+ dense/bias) → dense/Tanh → out/Identity`.
fn dense_tanh() -> Graph {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("x", DType::F32, Shape::known(&[2, 3]))
        .unwrap();
    let w = b
        .variable(
            "dense/weights",
            Tensor::from_vec(&[3, 4], vec![0.1f32; 12]).unwrap(),
            true,
        )
        .unwrap();
    let bias = b
        .variable(
            "dense/bias",
            Tensor::from_vec(&[4], vec![0.0f32; 4]).unwrap(),
            true,
        )
        .unwrap();
    let mm = b.matmul("dense/MatMul", x, w, false, false).unwrap();
    let add = b.binary("Add", "dense/Add", mm, bias).unwrap();
    let t = b.unary("Tanh", "dense/Tanh", add).unwrap();
    b.identity("out", t).unwrap();
    b.finish()
}

#[test]
fn the_tanh_dense_pattern_quantizes_the_tanh_output_instead_of_the_add() {
    let mut plain = dense_tanh();
    let report = experimental_create_eval_graph_with_patterns(
        &mut plain,
        &EvalOptions::new(),
        Arc::default(),
    )
    .unwrap();
    let quantized: Vec<_> = report.quantizers.iter().map(|q| q.node.as_str()).collect();
    assert_eq!(
        quantized,
        [
            "dense/weights_quant/FakeQuantWithMinMaxVars",
            "dense/act_quant/FakeQuantWithMinMaxVars"
        ]
    );
    // Without the pattern the activation quantizer reads the Add.
    let act = plain
        .by_name("dense/act_quant/FakeQuantWithMinMaxVars")
        .unwrap();
    assert_eq!(plain.node(act.inputs()[0].node).name(), "dense/Add");

    let manifest = root().join("plugins/examples/tanh-dense/plugin.toml");
    let plugins = load_plugins(&[manifest]).unwrap();
    let mut graph = dense_tanh();
    experimental_create_eval_graph_with_patterns(
        &mut graph,
        &EvalOptions::new(),
        Arc::new(plugins.patterns().clone()),
    )
    .unwrap();
    let act = graph
        .by_name("dense/act_quant/FakeQuantWithMinMaxVars")
        .unwrap();
    assert_eq!(graph.node(act.inputs()[0].node).name(), "dense/Tanh");
    let out = graph.by_name("out").unwrap();
    assert_eq!(
        graph.node(out.inputs()[0].node).name(),
        "dense/act_quant/FakeQuantWithMinMaxVars"
    );
    let mm = graph.by_name("dense/MatMul").unwrap();
    assert_eq!(
        graph.node(mm.inputs()[1].node).name(),
        "dense/weights_quant/FakeQuantWithMinMaxVars"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_bad_manifest_anywhere_means_no_library_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    // A copy under a unique name, so the process's mappings tell whether it was opened.
    let library = dir.path().join("libunopened_custom_op.so");
    std::fs::copy(build_library("quant-plugin-custom-op"), &library).unwrap();
    let good = relocated(dir.path(), "custom-op", &library);
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[plugin]\nname = \"bad\"\nversion = \"1\"\nabi = 1\n[[target]]\nname = \"t\"\n\
         weight_bits = 1\nactivation_bits = 8\nsymmetric_weights = true\n\
         per_channel_weights = true\nstorage = \"int8\"\n",
    )
    .unwrap();
    let mapped = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .contains(library.to_str().unwrap())
    };
    let err = load_plugins(&[good.clone(), bad.clone()]).unwrap_err();
    assert_eq!(err.manifest, bad);
    assert!(!mapped(), "the good plugin's library must not be opened");
    load_plugins(&[good]).unwrap();
    assert!(mapped(), "loading the good plugin alone opens its library");
}

#[test]
fn the_int4_target_cannot_be_exported_and_says_why() {
    let manifest = root().join("plugins/examples/int4-target/plugin.toml");
    let plugins = load_plugins(&[manifest]).unwrap();
    let int4 = plugins.targets().get("int4-weights").unwrap();
    assert_eq!(
        exporter_for(int4).unwrap_err().to_string(),
        "target `int4-weights` cannot be exported: no exporter writes 4-bit weights with \
         8-bit activations (the target has no `exporter`); it can still be trained and \
         evaluated with fake quantization"
    );
    let int8 = plugins.targets().get("tflite-int8").unwrap();
    assert_eq!(exporter_for(int8), Ok("tflite-int8"));
}

/// `x[4,3] → dense/MatMul → dense/Add → dense/act (HardSwish) → out`,
/// `loss = mean((out − t)²)`.
fn hard_swish_regression(plugins: &Plugins) -> Graph {
    let mut b = GraphBuilder::with_registry(plugins.ops());
    let x = b
        .placeholder("x", DType::F32, Shape::known(&[4, 3]))
        .unwrap();
    let t = b
        .placeholder("t", DType::F32, Shape::known(&[4, 2]))
        .unwrap();
    let w: Vec<f32> = (0..6).map(|i| (i as f32 - 2.5) / 5.0).collect();
    let w = b
        .variable("dense/weights", Tensor::from_vec(&[3, 2], w).unwrap(), true)
        .unwrap();
    let bias = b
        .variable(
            "dense/bias",
            Tensor::from_vec(&[2], vec![0.0f32; 2]).unwrap(),
            true,
        )
        .unwrap();
    let mm = b.matmul("dense/MatMul", x, w, false, false).unwrap();
    let add = b.binary("Add", "dense/Add", mm, bias).unwrap();
    let act = b
        .add("HardSwish", "dense/act", &[add], Attrs::new())
        .unwrap();
    let out = b.identity("out", act.into()).unwrap();
    let diff = b.binary("Sub", "loss/sub", out, t).unwrap();
    let sq = b.unary("Square", "loss/square", diff).unwrap();
    b.mean("loss", sq, &[0, 1], false).unwrap();
    b.finish()
}

#[test]
fn a_hardswish_layer_trains_lowers_to_a_custom_op_and_runs_exports_and_round_trips() {
    use quant_passes::api::{TrainingOptions, experimental_create_training_graph_with_patterns};
    use quant_passes::lower::{LowerOptions, check_lowering, lower_to_integer};
    use quant_passes::{
        GradientOptions, OptimizerConfig, OptimizerKind, PassError, apply_gradients, gradients,
        learning_rate_placeholder, trainable_variables,
    };
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_for(dir.path(), "custom-op", "quant-plugin-custom-op");
    let plugins = load_plugins(&[manifest]).unwrap();
    let target = plugins.targets().get("int8-hardswish").unwrap().clone();
    let patterns = Arc::new(plugins.patterns().clone());

    // 1. The training rewrite: the plugin's matcher finds the layer, so the
    // weights, the bias add (the layer's output) and the HardSwish output
    // are quantized.
    let mut graph = hard_swish_regression(&plugins);
    let options: TrainingOptions = target.training_options();
    let report =
        experimental_create_training_graph_with_patterns(&mut graph, &options, patterns.clone())
            .unwrap();
    let quantized: Vec<_> = report.quantizers.iter().map(|q| q.node.as_str()).collect();
    assert_eq!(
        quantized,
        [
            "dense/weights_quant/FakeQuantWithMinMaxVarsPerChannel",
            "dense/act_quant/FakeQuantWithMinMaxVars",
            "dense/post_activation_bypass_quant/FakeQuantWithMinMaxVars"
        ]
    );
    let post = graph
        .by_name("dense/post_activation_bypass_quant/FakeQuantWithMinMaxVars")
        .unwrap();
    assert_eq!(graph.node(post.inputs()[0].node).name(), "dense/act");
    let act = graph
        .by_name("dense/act_quant/FakeQuantWithMinMaxVars")
        .unwrap();
    assert_eq!(graph.node(act.inputs()[0].node).name(), "dense/Add");
    let loss = OutletId::new(graph.id("loss").unwrap(), 0);

    // 2. Gradients: without the hook, the gradients pass has no rule for
    // the plugin op; with it, `HardSwishGrad` from the library.
    let vars = trainable_variables(&graph, loss, &GradientOptions::default());
    let xs: Vec<OutletId> = vars.iter().map(|&v| OutletId::new(v, 0)).collect();
    let err = gradients(
        &mut graph.clone(),
        &[loss],
        &xs,
        &GradientOptions::default(),
    );
    assert!(
        matches!(&err, Err(PassError::NoGradient { op, .. }) if op == "HardSwish"),
        "{err:?}"
    );
    assert_eq!(plugins.gradient_ops(), ["HardSwish".to_string()].into());
    let options = GradientOptions {
        gradient_ops: plugins.gradient_ops(),
        ..GradientOptions::default()
    };
    let names: Vec<&str> = vars.iter().map(|&v| graph.node(v).name()).collect();
    assert_eq!(names, ["dense/weights", "dense/bias"]);
    let grads = gradients(&mut graph, &[loss], &xs, &options).unwrap();
    let pairs: Vec<_> = vars
        .iter()
        .zip(&grads)
        .map(|(&v, g)| (v, g.expect("the loss depends on every variable")))
        .collect();
    let lr = learning_rate_placeholder(&mut graph).unwrap();
    let sgd = OptimizerConfig {
        kind: OptimizerKind::Sgd,
        weight_decay: 0.0,
    };
    let train = apply_gradients(&mut graph, &sgd, &pairs, lr).unwrap();
    let mut fetches = vec!["loss".to_string()];
    fetches.extend(train.fetch_names(&graph));
    let fetches: Vec<&str> = fetches.iter().map(String::as_str).collect();

    // 3. Train.
    let mut session = Session::with_kernels(graph, plugins.kernels().clone()).unwrap();
    let x: Vec<f32> = (0..12).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
    let t: Vec<f32> = (0..8).map(|i| (i % 4) as f32 * 0.5).collect();
    let feeds = |lr: f32| {
        [
            ("x", Tensor::from_vec(&[4, 3], x.clone()).unwrap()),
            ("t", Tensor::from_vec(&[4, 2], t.clone()).unwrap()),
            ("learning_rate", Tensor::scalar(lr)),
        ]
    };
    let mut losses = Vec::new();
    for _ in 0..30 {
        let out = session.run(&feeds(0.1), &fetches).unwrap();
        losses.push(out[0].to_f64_vec()[0]);
    }
    assert!(
        losses[29] < 0.5 * losses[0],
        "the loss should fall: {losses:?}"
    );

    // 4. The eval rewrite of the float graph, with the trained variables
    // (weights, bias and the learned ranges).
    let mut eval = hard_swish_regression(&plugins);
    experimental_create_eval_graph_with_patterns(&mut eval, &target.eval_options(), patterns)
        .unwrap();
    let mut eval_session = Session::with_kernels(eval.clone(), plugins.kernels().clone()).unwrap();
    let trained: Vec<(String, Tensor)> = session
        .variables()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    let mut copied = 0;
    for (name, value) in trained {
        if eval_session.variable(&name).is_some() {
            eval_session.set_variable(&name, value).unwrap();
            copied += 1;
        }
    }
    assert!(
        copied >= 6,
        "weights, bias and two ranges each for 2 quantizers: {copied}"
    );

    // 5. Lower: FULLY_CONNECTED, then HardSwish as a CUSTOM op.
    let lower_options = LowerOptions {
        inputs: vec!["x".into()],
        outputs: vec!["out".into()],
        input_ranges: vec![("x".into(), -1.5, 1.5)],
        ..LowerOptions::default()
    };
    let graph_for_values = eval.clone();
    let mut values = |outlets: &[OutletId]| {
        let names: Vec<String> = outlets
            .iter()
            .map(|o| format!("{}:{}", graph_for_values.node(o.node).name(), o.slot))
            .collect();
        let fetches: Vec<&str> = names.iter().map(String::as_str).collect();
        eval_session.run(&[], &fetches).map_err(|e| e.to_string())
    };
    let model = lower_to_integer(&eval, &target, &lower_options, &mut values).unwrap();
    let kinds: Vec<&IntOpKind> = model.ops.iter().map(|o| &o.kind).collect();
    assert!(
        matches!(
            kinds.as_slice(),
            [
                IntOpKind::Quantize,
                IntOpKind::FullyConnected { .. },
                IntOpKind::Custom { name },
                IntOpKind::Dequantize
            ] if name == "HardSwish"
        ),
        "{kinds:?}"
    );
    // Without the op in the target's ops, lowering refuses it.
    let mut plain = target.clone();
    plain.ops.retain(|o| o != "HardSwish");
    let errors = check_lowering(&eval, &plain, &lower_options);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let err = &errors[0];
    assert!(
        err.to_string()
            .contains("`dense/act` (HardSwish) cannot be lowered"),
        "{err}"
    );

    // 6. Run the integer model and compare with the fake-quant float graph.
    // Inputs on the input grid, so that quantizing them is exact.
    let input_q = model.ops[0].outputs[0];
    let qp = model.tensors[input_q].quant.clone().unwrap();
    let (s_in, z_in) = (qp.scales[0], qp.zero_points[0]);
    let xs: Vec<f32> = (0..12i64)
        .map(|i| s_in * ((i * 23 % 200 - 100) - z_in) as f32)
        .collect();
    let x_feed = Tensor::from_vec(&[4, 3], xs).unwrap();
    let float = eval_session
        .run(&[("x", x_feed.clone())], &["out"])
        .unwrap()[0]
        .to_f64_vec();
    let executor =
        IntExecutor::with_custom_kernels(&model, KernelPath::Fast, plugins.integer_kernels())
            .unwrap();
    let integer = executor.run(std::slice::from_ref(&x_feed)).unwrap();
    let out_q = model.ops[2].outputs[0];
    let s_out = f64::from(model.tensors[out_q].quant.as_ref().unwrap().scales[0]);
    let got = integer[0].to_f64_vec();
    assert_eq!(got.len(), 8);
    for (i, (g, f)) in got.iter().zip(&float).enumerate() {
        assert!(
            (g - f).abs() <= s_out * 1.0001,
            "output {i}: integer {g} vs fake-quant {f} (1 LSB = {s_out})"
        );
    }
    assert!(
        float.iter().any(|v| v.abs() > 4.0 * s_out),
        "not all zero: {float:?}"
    );

    // 7. TFLite: a CUSTOM operator with custom_code "HardSwish"; write →
    // read gives the same model, which runs to the same integers.
    let bytes = quant_tflite::write(&model).unwrap();
    let read = quant_tflite::read(&bytes).unwrap();
    assert!(matches!(&read.ops[2].kind, IntOpKind::Custom { name } if name == "HardSwish"));
    assert_eq!(quant_tflite::write(&read).unwrap(), bytes);
    let again =
        IntExecutor::with_custom_kernels(&read, KernelPath::Fast, plugins.integer_kernels())
            .unwrap()
            .run(std::slice::from_ref(&x_feed))
            .unwrap();
    assert_eq!(again[0].to_f64_vec(), got);

    // 8. The plugin's exporter receives the lowered model.
    let plugin = plugins
        .exporter_plugin("op-census")
        .expect("custom-op exports op-census");
    let census = plugin.export("op-census", &model).unwrap();
    assert_eq!(
        String::from_utf8(census).unwrap(),
        "DEQUANTIZE 1\nFULLY_CONNECTED 1\nHardSwish 1\nQUANTIZE 1\n"
    );
}
