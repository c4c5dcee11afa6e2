//! The example plugin libraries, built with cargo and loaded through the
//! host API: kernels against worked examples and finite differences, a
//! panicking kernel, an exporter, and the data patterns in the rewrite.

use quant_core::builder::GraphBuilder;
use quant_core::{Attrs, DType, Graph, OutletId, Shape, Tensor};
use quant_kernels::session::{ExecError, Session};
use quant_passes::api::{EvalOptions, experimental_create_eval_graph_with_patterns};
use quant_plugin_api::{Plugins, exporter_for, load_plugins};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `package` (a cdylib) with cargo and returns the library's path.
fn build_library(package: &str) -> PathBuf {
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

    // The exporter: one line per op type.
    let plugin = plugins
        .exporter_plugin("op-census")
        .expect("custom-op exports op-census");
    let bytes = plugin.export("op-census", session.graph()).unwrap();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "HardSwish 1\nHardSwishGrad 1\nPlaceholder 2\n"
    );
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
fn a_hardswish_layer_rewrites_trains_and_runs_through_the_plugin_gradient() {
    use quant_passes::api::{TrainingOptions, experimental_create_training_graph_with_patterns};
    use quant_passes::{
        GradientOptions, OptimizerConfig, OptimizerKind, PassError, apply_gradients, gradients,
        learning_rate_placeholder, trainable_variables,
    };
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_for(dir.path(), "custom-op", "quant-plugin-custom-op");
    let plugins = load_plugins(&[manifest]).unwrap();
    let mut graph = hard_swish_regression(&plugins);
    let report = experimental_create_training_graph_with_patterns(
        &mut graph,
        &TrainingOptions::default(),
        Arc::new(plugins.patterns().clone()),
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
    let loss = OutletId::new(graph.id("loss").unwrap(), 0);

    // Without the hook, the gradients pass has no rule for the plugin op.
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
    // Run the trained graph (the learning rate of 0 leaves it unchanged).
    let run = session.run(&feeds(0.0), &["out", "loss"]).unwrap();
    assert_eq!(run[0].shape(), &[4, 2]);
    assert!(run[1].to_f64_vec()[0] < 0.5 * losses[0]);
}
