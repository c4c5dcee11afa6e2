//! Plugins through the CLI (`cargo xtask plugins list`, `rewrite --plugin`),
//! with the example plugins of `plugins/examples` and a bad manifest for
//! every refusal of issue 7.

mod common;

use common::{root, xtask};

use quant_core::builder::GraphBuilder;
use quant_core::serialize::{read_graph, write_graph_json};
use quant_core::{Attrs, DType, Graph, Shape, Tensor};
use quant_kernels::session::Session;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example(name: &str) -> String {
    root()
        .join("plugins/examples")
        .join(name)
        .join("plugin.toml")
        .display()
        .to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON object")
}

/// Asserts exit code 1 and one `error:` line naming `manifest` and containing `needle`.
fn assert_refused(o: &Output, manifest: &Path, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(
        err.contains(&manifest.display().to_string()),
        "the manifest should be named: {err}"
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(o.stdout.is_empty(), "nothing on stdout on error");
}

fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Builds the cdylib `package` with cargo and returns the library's path.
fn build_library(package: &str) -> PathBuf {
    build_cdylib(&["-p", package])
}

/// Runs `cargo build` with `args` and returns the path of the cdylib it built.
fn build_cdylib(args: &[&str]) -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "--quiet", "--message-format=json"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["crate_types"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "cdylib"))
        })
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| {
            f.extension()
                .is_some_and(|e| e == "so" || e == "dylib" || e == "dll")
        })
        .expect("cargo reports the cdylib")
}

/// The committed manifest of `example`, copied to `dir` with `library`
/// pointing at `library` and the given `sha256` line.
fn relocated(dir: &Path, example_name: &str, library: &Path, sha256: &str) -> PathBuf {
    let text = std::fs::read_to_string(example(example_name)).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("library = ") {
                format!(
                    "library = {:?}\nsha256 = \"{sha256}\"",
                    library.display().to_string()
                )
            } else {
                l.to_string()
            }
        })
        .collect();
    let path = dir.join(format!("{example_name}.toml"));
    std::fs::write(&path, text.join("\n")).unwrap();
    path
}

fn custom_op_manifest(dir: &Path) -> PathBuf {
    let library = build_library("quant-plugin-custom-op");
    relocated(dir, "custom-op", &library, &sha256(&library))
}

fn names(rows: &Value) -> Vec<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["name"].as_str().unwrap(),
                r["from"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn plugins_list_shows_builtins_and_the_three_examples() {
    let dir = tempfile::tempdir().unwrap();
    let custom = custom_op_manifest(dir.path());
    let bare = json(&xtask(&["plugins", "list", "--json"]));
    assert_eq!(
        names(&bare["targets"]),
        ["tflite-int8:built-in", "tflite-uint8:built-in"]
    );
    let all = json(&xtask(&[
        "plugins",
        "list",
        "--json",
        "--plugin",
        &example("int4-target"),
        "--plugin",
        &example("tanh-dense"),
        "--plugin",
        custom.to_str().unwrap(),
    ]));
    assert_eq!(
        names(&all["targets"]),
        [
            "int4-weights:int4-target",
            "int8-hardswish:custom-op",
            "tflite-int8:built-in",
            "tflite-uint8:built-in"
        ]
    );
    assert_eq!(all["targets"][1]["exporter"], "op-census");
    let int4 = &all["targets"][0];
    assert_eq!(int4["weight_bits"], 4);
    assert_eq!(int4["activation_bits"], 8);
    assert_eq!(int4["per_channel_weights"], true);
    assert_eq!(int4["symmetric_weights"], true);
    assert_eq!(int4["exporter"], Value::Null);
    assert_eq!(
        names(&all["patterns"])[..2],
        ["dense-tanh:tanh-dense", "dense-hardswish:custom-op"]
    );
    assert_eq!(
        names(&all["patterns"])[2..],
        [
            "post_activation_bypass:built-in",
            "activation:built-in",
            "final_layer:built-in",
            "separable:built-in"
        ]
    );
    assert_eq!(names(&all["ops"]), ["HardSwish:custom-op"]);
    assert_eq!(all["ops"][0]["gradient"], "HardSwishGrad");
    assert_eq!(all["ops"][0]["integer_kernel"], true);
    assert!(names(&all["exporters"]).contains(&"op-census:custom-op".to_string()));

    let text = xtask(&["plugins", "list", "--plugin", &example("int4-target")]);
    assert!(text.status.success(), "{}", stderr(&text));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("int4-weights") && text.contains("exporter none (cannot be exported)"),
        "{text}"
    );
}

/// Rewrites `input` with `args`, returning the `--json` summary and the rewritten graph.
fn rewrite(dir: &Path, input: &Path, args: &[&str]) -> (Value, Graph, PathBuf) {
    let output = dir.join("rewritten.json");
    let mut all = vec![
        "rewrite",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--json",
    ];
    all.extend_from_slice(args);
    let summary = json(&xtask(&all));
    let graph = read_graph(&output, quant_core::OpRegistry::builtin()).unwrap();
    (summary, graph, output)
}

fn quantizers(summary: &Value) -> Vec<(String, String, u64, bool)> {
    summary["fake_quants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap().to_string(),
                q["role"].as_str().unwrap().to_string(),
                q["bits"].as_u64().unwrap(),
                q["per_channel"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_int4_target_gives_4_bit_per_channel_weights_in_the_rewrite_and_the_simulation() {
    let dir = tempfile::tempdir().unwrap();
    // A conv layer with distinct weights per output channel.
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("x", DType::F32, Shape::known(&[1, 4, 4, 2]))
        .unwrap();
    let values: Vec<f32> = (0..3 * 3 * 2 * 3)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
        .collect();
    let w = b
        .variable(
            "conv/weights",
            Tensor::from_vec(&[3, 3, 2, 3], values).unwrap(),
            true,
        )
        .unwrap();
    let y = b
        .conv2d(
            "conv/Conv2D",
            x,
            w,
            [1, 1],
            quant_core::builder::Padding::Same,
        )
        .unwrap();
    let r = b.unary("Relu", "conv/Relu", y).unwrap();
    b.identity("out", r).unwrap();
    let input = dir.path().join("conv.json");
    write_graph_json(&input, &b.finish()).unwrap();

    let (summary, graph, _) = rewrite(
        dir.path(),
        &input,
        &[
            "--mode",
            "eval",
            "--target",
            "int4-weights",
            "--plugin",
            &example("int4-target"),
        ],
    );
    assert_eq!(
        quantizers(&summary),
        [
            (
                "conv/weights_quant/FakeQuantWithMinMaxVarsPerChannel".to_string(),
                "weights".to_string(),
                4,
                true
            ),
            (
                "conv/act_quant/FakeQuantWithMinMaxVars".to_string(),
                "activation".to_string(),
                8,
                false
            )
        ]
    );
    // The simulation: with ranges from the data, each output channel of the
    // fake-quantized weights takes at most 2^4 − 1 = 15 values (narrow range).
    let mut session = Session::new(graph).unwrap();
    let w = session.variable("conv/weights").unwrap().clone();
    let ws = w.to_f64_vec();
    let mut mins = [f64::MAX; 3];
    let mut maxs = [f64::MIN; 3];
    for (i, v) in ws.iter().enumerate() {
        mins[i % 3] = mins[i % 3].min(*v);
        maxs[i % 3] = maxs[i % 3].max(*v);
    }
    let range =
        |v: [f64; 3]| Tensor::from_vec(&[3], v.iter().map(|&x| x as f32).collect()).unwrap();
    session
        .set_variable("conv/weights_quant/min", range(mins))
        .unwrap();
    session
        .set_variable("conv/weights_quant/max", range(maxs))
        .unwrap();
    let fq = session
        .run(
            &[],
            &["conv/weights_quant/FakeQuantWithMinMaxVarsPerChannel"],
        )
        .unwrap();
    let q = fq[0].to_f64_vec();
    for c in 0..3 {
        let levels: BTreeSet<u64> = q.iter().skip(c).step_by(3).map(|v| v.to_bits()).collect();
        assert!(levels.len() <= 15, "channel {c}: {} levels", levels.len());
        assert!(
            levels.len() >= 8,
            "channel {c}: {} levels, expected most of 15",
            levels.len()
        );
        // TensorFlow's fake quant: 14 steps of (max − min) / 14 over the
        // range nudged so that 0 is on the grid, so every value is a whole
        // number of steps.
        let step = (maxs[c] - mins[c]) / 14.0;
        for v in q.iter().skip(c).step_by(3) {
            let k = v / step;
            assert!(
                (k - k.round()).abs() < 1e-3,
                "channel {c}: {v} is off the 4-bit grid"
            );
        }
    }

    // Without the plugin the target is unknown.
    let o = xtask(&[
        "rewrite",
        "--input",
        input.to_str().unwrap(),
        "--output",
        dir.path().join("o.json").to_str().unwrap(),
        "--mode",
        "eval",
        "--target",
        "int4-weights",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown target `int4-weights`"),
        "{}",
        stderr(&o)
    );
}

/// `x[2,3] → dense/MatMul → dense/Add(+bias) → dense/<act> → out`, the
/// activation built with `registry` (so plugin ops get their facts).
fn dense(act: &str, registry: &quant_core::OpRegistry) -> Graph {
    let mut b = GraphBuilder::with_registry(registry);
    let x = b
        .placeholder("x", DType::F32, Shape::known(&[2, 3]))
        .unwrap();
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 6.0) / 8.0).collect();
    let w = b
        .variable("dense/weights", Tensor::from_vec(&[3, 4], w).unwrap(), true)
        .unwrap();
    let bias = b
        .variable(
            "dense/bias",
            Tensor::from_vec(&[4], vec![0.1f32, -0.2, 0.3, 0.0]).unwrap(),
            true,
        )
        .unwrap();
    let mm = b.matmul("dense/MatMul", x, w, false, false).unwrap();
    let add = b.binary("Add", "dense/Add", mm, bias).unwrap();
    let a = b.add(act, "dense/act", &[add], Attrs::new()).unwrap();
    b.identity("out", a.into()).unwrap();
    b.finish()
}

fn producer_of(graph: &Graph, node: &str) -> String {
    let n = graph
        .by_name(node)
        .unwrap_or_else(|| panic!("{node} exists"));
    graph.node(n.inputs()[0].node).name().to_string()
}

#[test]
fn the_tanh_dense_pattern_moves_the_activation_quantizer_after_the_tanh() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dense.json");
    write_graph_json(&input, &dense("Tanh", quant_core::OpRegistry::builtin())).unwrap();
    let act = "dense/act_quant/FakeQuantWithMinMaxVars";

    let (_, plain, _) = rewrite(dir.path(), &input, &["--mode", "eval"]);
    assert_eq!(
        producer_of(&plain, act),
        "dense/Add",
        "built-in: quantize before the tanh"
    );
    assert_eq!(producer_of(&plain, "out"), "dense/act");

    let (summary, graph, _) = rewrite(
        dir.path(),
        &input,
        &["--mode", "training", "--plugin", &example("tanh-dense")],
    );
    let roles: Vec<_> = quantizers(&summary)
        .into_iter()
        .map(|q| (q.0, q.1))
        .collect();
    assert_eq!(
        roles,
        [
            (
                "dense/weights_quant/FakeQuantWithMinMaxVars".to_string(),
                "weights".to_string()
            ),
            (act.to_string(), "activation".to_string())
        ]
    );
    assert_eq!(producer_of(&graph, act), "dense/act");
    assert_eq!(producer_of(&graph, "out"), act);
}

#[test]
fn the_custom_op_plugin_rewrites_runs_and_exports_a_hardswish_layer() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = custom_op_manifest(dir.path());
    let plugins = quant_plugin_api::load_plugins(std::slice::from_ref(&manifest)).unwrap();
    let input = dir.path().join("dense.json");
    write_graph_json(&input, &dense("HardSwish", plugins.ops())).unwrap();

    // The plugin's matcher quantizes the weights, the layer output (the
    // bias add) and the HardSwish output.
    let (summary, _, output) = rewrite(
        dir.path(),
        &input,
        &["--mode", "eval", "--plugin", manifest.to_str().unwrap()],
    );
    let act = "dense/act_quant/FakeQuantWithMinMaxVars";
    let post = "dense/post_activation_bypass_quant/FakeQuantWithMinMaxVars";
    let roles: Vec<_> = quantizers(&summary)
        .into_iter()
        .map(|q| (q.0, q.1))
        .collect();
    assert_eq!(roles.len(), 3, "{roles:?}");
    assert_eq!(roles[1].0, act);
    assert_eq!(roles[2].0, post);
    let graph = read_graph(&output, plugins.ops()).unwrap();
    assert_eq!(producer_of(&graph, act), "dense/Add");
    assert_eq!(producer_of(&graph, "dense/act"), act);
    assert_eq!(producer_of(&graph, post), "dense/act");
    assert_eq!(graph.by_name("dense/act").unwrap().op(), "HardSwish");

    // Run it: the HardSwish kernel comes from the library. The ranges are
    // the rewrite's initial ones: weights [−6, 6], the layer output [0, 6],
    // the HardSwish output [−6, 6].
    let mut session = Session::with_kernels(graph, plugins.kernels().clone()).unwrap();
    let xs = vec![1.0f32, 0.5, -1.0, 2.0, 0.0, 1.5];
    let x = Tensor::from_vec(&[2, 3], xs.clone()).unwrap();
    let got = session.run(&[("x", x)], &["dense/act", "out"]).unwrap();
    // Reference: the same layer computed here. TensorFlow's fake quant on
    // [min, max] with 8 bits: scale (max − min)/255 (narrow range: /254),
    // zero point round(−min/scale), so the grid is nudged to hold 0.
    let fake_quant = |v: f64, min: f64, max: f64, levels: f64| {
        let scale = (max - min) / levels;
        let zero = (-min / scale).round();
        let (lo, hi) = (-zero * scale, (levels - zero) * scale);
        ((v.clamp(lo, hi) - lo) / scale).round() * scale + lo
    };
    let w: Vec<f64> = (0..12)
        .map(|i| fake_quant((f64::from(i) - 6.0) / 8.0, -6.0, 6.0, 254.0))
        .collect();
    let bias = [0.1, -0.2, 0.3, 0.0];
    let hs = got[0].to_f64_vec();
    let out = got[1].to_f64_vec();
    for r in 0..2 {
        for c in 0..4 {
            let v: f64 = (0..3)
                .map(|k| f64::from(xs[r * 3 + k]) * w[k * 4 + c])
                .sum::<f64>()
                + bias[c];
            let a = fake_quant(v, 0.0, 6.0, 255.0);
            let h = a * (a + 3.0).clamp(0.0, 6.0) / 6.0;
            let i = r * 4 + c;
            assert!((hs[i] - h).abs() < 1e-5, "[{r},{c}] {} vs {h}", hs[i]);
            let q = fake_quant(h, -6.0, 6.0, 255.0);
            assert!((out[i] - q).abs() < 1e-5, "[{r},{c}] {} vs {q}", out[i]);
        }
    }

    // Export: rewritten for the plugin's target (symmetric per-channel int8
    // weights), lowered to QUANTIZE, FULLY_CONNECTED, CUSTOM HardSwish,
    // DEQUANTIZE, and handed to the plugin's exporter.
    let (_, _, for_target) = rewrite(
        dir.path(),
        &input,
        &[
            "--mode",
            "eval",
            "--target",
            "int8-hardswish",
            "--plugin",
            manifest.to_str().unwrap(),
        ],
    );
    let census = dir.path().join("census.txt");
    let export = |target: &str, out: &Path| {
        xtask(&[
            "export",
            "--graph",
            for_target.to_str().unwrap(),
            "--target",
            target,
            "--output",
            out.to_str().unwrap(),
            "--output-node",
            "out",
            "--input-range",
            "x=-2,2",
            "--plugin",
            manifest.to_str().unwrap(),
            "--json",
        ])
    };
    let summary = json(&export("int8-hardswish", &census));
    assert_eq!(summary["exporter"], "op-census");
    assert_eq!(
        summary["ops"],
        serde_json::json!([
            "QUANTIZE",
            "FULLY_CONNECTED",
            "CUSTOM:HardSwish",
            "DEQUANTIZE"
        ])
    );
    assert_eq!(
        std::fs::read_to_string(&census).unwrap(),
        "DEQUANTIZE 1\nFULLY_CONNECTED 1\nHardSwish 1\nQUANTIZE 1\n"
    );
    // tflite-int8 does not list HardSwish: lowering refuses it by name.
    let o = export("tflite-int8", &dir.path().join("m.tflite"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("`dense/act` (HardSwish) cannot be lowered"),
        "{}",
        stderr(&o)
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD_PLUGIN: &str = "[plugin]\nname = \"p\"\nversion = \"1\"\nabi = 2\n";

fn target(name: &str, weight_bits: u32, activation_bits: u32) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\nweight_bits = {weight_bits}\nactivation_bits = {activation_bits}\nsymmetric_weights = true\nper_channel_weights = true\nstorage = \"int8\"\n"
    )
}

#[test]
fn bad_plugins_are_refused_with_one_error_line_naming_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let list = |manifests: &[&Path]| {
        let mut args = vec!["plugins".to_string(), "list".to_string()];
        for m in manifests {
            args.push("--plugin".into());
            args.push(m.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        xtask(&args)
    };
    let check = |name: &str, text: &str, needle: &str| {
        let path = write(d, name, text);
        assert_refused(&list(&[&path]), &path, needle);
    };

    check("syntax.toml", "[plugin\nname = \"p\"\n", "line 1: ");
    check(
        "unknown-field.toml",
        &format!("{GOOD_PLUGIN}colour = \"red\"\n"),
        "unknown field `colour`",
    );
    check(
        "missing-library.toml",
        &format!("{GOOD_PLUGIN}library = \"libnothing.so\"\n"),
        "libnothing.so: the file does not exist",
    );
    write(d, "libtext.so", "this is text, not a library\n");
    check(
        "not-shared-object.toml",
        &format!("{GOOD_PLUGIN}library = \"libtext.so\"\n"),
        "libtext.so: is not a shared object",
    );
    check(
        "abi.toml",
        "[plugin]\nname = \"p\"\nversion = \"1\"\nabi = 1\n",
        "ABI version mismatch: the manifest says abi = 1, this quant speaks abi = 2",
    );
    check(
        "unknown-op.toml",
        &format!(
            "{GOOD_PLUGIN}[[pattern]]\nname = \"x\"\nroot = \"a\"\nroles = {{ layer = \"l\", weights = \"w\", activation = \"a\" }}\n\
             [[pattern.node]]\nname = \"w\"\nop = \"Const\"\n\
             [[pattern.node]]\nname = \"l\"\nop = \"Conv3DTransposeFancy\"\ninputs = [\"*\", \"w\"]\n\
             [[pattern.node]]\nname = \"a\"\nop = \"Relu\"\ninputs = [\"l\"]\n"
        ),
        "node `l` uses unknown op type `Conv3DTransposeFancy`",
    );
    check(
        "bits-low.toml",
        &format!("{GOOD_PLUGIN}{}", target("w1", 1, 8)),
        "target `w1`: weight_bits = 1 is out of range: bit widths must be in 2..=16",
    );
    check(
        "bits-high.toml",
        &format!("{GOOD_PLUGIN}{}", target("a17", 8, 17)),
        "target `a17`: activation_bits = 17 is out of range",
    );
    check(
        "builtin-name.toml",
        &format!("{GOOD_PLUGIN}{}", target("tflite-int8", 8, 8)),
        "target `tflite-int8` is already registered by the built-in targets",
    );
    check(
        "4-bit-tflite.toml",
        &format!(
            "{GOOD_PLUGIN}{}exporter = \"tflite-int8\"\n",
            target("t4", 4, 8)
        ),
        "exporter `tflite-int8` writes 8-bit weights and activations only",
    );

    // Two plugins registering the same target name: the second is named,
    // with the first as the owner.
    let first = write(
        d,
        "first.toml",
        &format!("{GOOD_PLUGIN}{}", target("edge", 8, 8)),
    );
    let second = write(
        d,
        "second.toml",
        &format!(
            "[plugin]\nname = \"q\"\nversion = \"1\"\nabi = 2\n{}",
            target("edge", 8, 8)
        ),
    );
    let o = list(&[&first, &second]);
    assert_refused(
        &o,
        &second,
        &format!("target `edge` is already registered by {}", first.display()),
    );

    // A library built for ABI version 1, behind a manifest that says abi = 2.
    let wrong = build_cdylib(&["-p", "quant-plugin-panicking", "--example", "wrong_abi"]);
    check(
        "wrong-abi.toml",
        &format!(
            "[plugin]\nname = \"wrong-abi\"\nversion = \"1\"\nabi = 2\nlibrary = {:?}\n",
            wrong.display().to_string()
        ),
        "ABI version mismatch: the library says abi = 1, this quant speaks abi = 2",
    );

    // SHA-256 pin mismatch, on the real library.
    let library = build_library("quant-plugin-custom-op");
    let pinned = relocated(d, "custom-op", &library, &"0".repeat(64));
    assert_refused(
        &list(&[&pinned]),
        &pinned,
        &format!(
            "SHA-256 mismatch: the manifest pins {}, the file has {}",
            "0".repeat(64),
            sha256(&library)
        ),
    );
}

#[test]
fn docs_plugins_md_quotes_the_tested_examples_verbatim() {
    let doc = std::fs::read_to_string(root().join("docs/plugins.md")).unwrap();
    let examples = root().join("plugins/examples");
    for file in [
        "int4-target/plugin.toml",
        "tanh-dense/plugin.toml",
        "custom-op/plugin.toml",
        "custom-op/Cargo.toml",
    ] {
        let text = std::fs::read_to_string(examples.join(file)).unwrap();
        assert!(
            doc.contains(&format!("```toml\n{text}```")),
            "docs/plugins.md should quote plugins/examples/{file} verbatim"
        );
    }
    let source = std::fs::read_to_string(examples.join("custom-op/src/lib.rs")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```rust\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert_eq!(
        blocks.len(),
        4,
        "the op, the matcher, the exporter and the entry point"
    );
    for block in blocks {
        assert!(
            source.contains(block),
            "docs/plugins.md quotes code that is not in custom-op/src/lib.rs:\n{block}"
        );
    }
}
