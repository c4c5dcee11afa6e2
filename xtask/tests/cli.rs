//! The command-line contract of docs/cli.md, driven through the real binary.

mod common;

use common::{assert_user_error, root, stderr, xtask};

use std::path::Path;

#[test]
fn inspect_json_reports_tensorflows_counts_for_pb_and_pbtxt() {
    for fixture in ["cnn", "resnet", "unfused_bn", "fake_quant"] {
        let dir = root().join("fixtures/tf").join(fixture);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        for file in ["graph.pb", "graph.pbtxt"] {
            let o = xtask(&["inspect", dir.join(file).to_str().unwrap(), "--json"]);
            assert!(o.status.success(), "{}", stderr(&o));
            let report: serde_json::Value =
                serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
            assert_eq!(report["nodes"], meta["nodes"], "{fixture}/{file}");
            assert_eq!(report["ops"], meta["ops"], "{fixture}/{file}");
        }
    }
}

#[test]
fn inspect_prints_a_table_without_json() {
    let o = xtask(&[
        "inspect",
        root().join("fixtures/tf/cnn/graph.pbtxt").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("34 nodes, 12 op types"), "{out}");
    assert!(out.contains("Softmax"), "{out}");
}

#[test]
fn usage_errors_exit_with_2() {
    assert_eq!(xtask(&["inspect", "--no-such-flag"]).status.code(), Some(2));
    assert_eq!(xtask(&["inspect"]).status.code(), Some(2));
    assert_eq!(xtask(&["no-such-command"]).status.code(), Some(2));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

const OUT: &str = r#""outputs": [{"dtype": "f32", "shape": [2]}]"#;

#[test]
fn malformed_files_are_refused_with_one_error_line_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let pb = std::fs::read(root().join("fixtures/tf/cnn/graph.pb")).unwrap();

    let truncated = write(dir.path(), "truncated.pb", &pb[..pb.len() * 3 / 5]);
    assert_user_error(
        &xtask(&["inspect", &truncated]),
        &format!("{truncated}: not a valid binary GraphDef"),
    );

    let corrupt: Vec<u8> = pb
        .iter()
        .enumerate()
        .map(|(i, b)| if i % 7 == 3 { b ^ 0xA5 } else { *b })
        .collect();
    let corrupt = write(dir.path(), "corrupt.pb", &corrupt);
    assert_user_error(&xtask(&["inspect", &corrupt]), &format!("{corrupt}: "));

    let garbage = write(dir.path(), "garbage.pbtxt", b"node { name: \"a\" op: 17 }");
    assert_user_error(&xtask(&["inspect", &garbage]), "not a valid text GraphDef");

    let cases: [(&str, String, &str); 7] = [
        ("invalid.json", "{\"format_version\": 1, \"nodes\": [".into(), "invalid graph JSON: EOF while parsing"),
        (
            "dangling.json",
            format!(r#"{{"format_version": 1, "nodes": [{{"name": "r", "op": "Relu", "inputs": ["ghost"], {OUT}}}]}}"#),
            "node 'r': input 0 refers to 'ghost', which is not in the graph",
        ),
        (
            "cycle.json",
            format!(r#"{{"format_version": 1, "nodes": [{{"name": "a", "op": "Relu", "inputs": ["b"], {OUT}}}, {{"name": "b", "op": "Relu", "inputs": ["a"], {OUT}}}]}}"#),
            "the graph has a cycle through node",
        ),
        (
            "duplicate.json",
            format!(r#"{{"format_version": 1, "nodes": [{{"name": "a", "op": "Placeholder", "attrs": {{"dtype": {{"type": "f32"}}}}, {OUT}}}, {{"name": "a", "op": "Placeholder", "attrs": {{"dtype": {{"type": "f32"}}}}, {OUT}}}]}}"#),
            "duplicate node name 'a'",
        ),
        (
            "attr_type.json",
            format!(r#"{{"format_version": 1, "nodes": [{{"name": "p", "op": "Placeholder", "attrs": {{"dtype": {{"str": "float"}}}}, {OUT}}}]}}"#),
            "node 'p': attribute 'dtype': expected type, found str",
        ),
        (
            "const_length.json",
            r#"{"format_version": 1, "nodes": [{"name": "c", "op": "Const", "attrs": {"value": {"tensor": {"dtype": "f32", "shape": [3], "data": [1.0]}}}, "outputs": [{}]}]}"#.into(),
            "node 'c': shape [3] expects 3 values, found 1",
        ),
        ("version.json", r#"{"format_version": 2, "nodes": []}"#.into(), "unsupported format_version 2"),
    ];
    for (name, text, needle) in cases {
        let path = write(dir.path(), name, text.as_bytes());
        let o = xtask(&["inspect", &path]);
        assert_user_error(&o, needle);
        assert!(
            stderr(&o).starts_with(&format!("error: {path}: ")),
            "the file is named first: {}",
            stderr(&o)
        );
    }

    let missing = dir.path().join("missing.pb");
    assert_user_error(
        &xtask(&["inspect", missing.to_str().unwrap()]),
        "No such file",
    );
    let unknown = write(dir.path(), "model.onnx", b"");
    assert_user_error(&xtask(&["inspect", &unknown]), "unknown graph format");
}

#[test]
fn a_const_with_the_wrong_byte_count_in_a_graphdef_is_refused() {
    // Rewrite the first float Const of a text GraphDef to claim a larger shape.
    let text =
        std::fs::read_to_string(root().join("fixtures/tf/conv_bn_relu6/graph.pbtxt")).unwrap();
    let pos = text
        .find("tensor_content")
        .expect("fixture has tensor_content");
    let dim_pos = text[..pos].rfind("size: ").unwrap();
    let end = dim_pos + text[dim_pos..].find('\n').unwrap();
    let bad = format!("{}size: 99{}", &text[..dim_pos], &text[end..]);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad_const.pbtxt", bad.as_bytes());
    assert_user_error(&xtask(&["inspect", &path]), "bytes, found");
}

#[test]
fn generated_code_is_fresh() {
    let o = xtask(&["codegen", "--check"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn read_f32(path: &Path) -> ndarray::ArrayD<f32> {
    ndarray_npy::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn run_reproduces_tensorflow_on_a_frozen_cnn() {
    let fixture = root().join("fixtures/tf/cnn");
    let out = tempfile::tempdir().unwrap();
    for graph in ["graph.pb", "graph.pbtxt"] {
        let o = xtask(&[
            "run",
            "--graph",
            fixture.join(graph).to_str().unwrap(),
            "--feed",
            &format!("input={}", fixture.join("input.npy").display()),
            "--fetch",
            "logits/BiasAdd",
            "--fetch",
            "Softmax:0",
            "--output-dir",
            out.path().to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["outputs"][0]["shape"], serde_json::json!([2, 10]));
        for (file, want) in [
            ("logits__BiasAdd.npy", "logits.npy"),
            ("Softmax__0.npy", "probs.npy"),
        ] {
            let (got, want) = (
                read_f32(&out.path().join(file)),
                read_f32(&fixture.join(want)),
            );
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
                / scale;
            assert!(err <= 1e-5, "{graph}/{file}: relative error {err:e}");
        }
    }
}

#[test]
fn run_reproduces_tensorflow_fake_quant_bit_for_bit() {
    let fixture = root().join("fixtures/tf/fake_quant");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("meta.json")).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "run".to_string(),
        "--graph".into(),
        fixture.join("graph.pbtxt").display().to_string(),
        "--feed".into(),
        format!("input={}", fixture.join("input.npy").display()),
        "--output-dir".into(),
        out.path().display().to_string(),
    ];
    let fetches = meta["fetches"].as_object().unwrap();
    for name in fetches.keys() {
        args.extend(["--fetch".to_string(), name.clone()]);
    }
    let o = xtask(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    for (name, file) in fetches {
        let got = read_f32(
            &out.path()
                .join(format!("{}.npy", name.replace(['/', ':'], "__"))),
        );
        let want = read_f32(&fixture.join(file.as_str().unwrap()));
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name} differs from TensorFlow"
        );
    }
}

#[test]
fn run_errors_name_the_node_and_exit_1() {
    let fixture = root().join("fixtures/tf/cnn");
    let graph = fixture.join("graph.pb");
    let graph = graph.to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    assert_user_error(
        &xtask(&[
            "run",
            "--graph",
            graph,
            "--fetch",
            "Softmax",
            "--output-dir",
            dir,
        ]),
        "node 'input': placeholder needs a feed",
    );
    let bad = out.path().join("bad.npy");
    ndarray_npy::write_npy(&bad, &ndarray::Array3::<f32>::zeros((2, 28, 28))).unwrap();
    assert_user_error(
        &xtask(&[
            "run",
            "--graph",
            graph,
            "--feed",
            &format!("input={}", bad.display()),
            "--fetch",
            "Softmax",
            "--output-dir",
            dir,
        ]),
        "feed 'input': expected shape [2,28,28,1], got [2, 28, 28]",
    );
    let unknown = out.path().join("unknown.pbtxt");
    std::fs::write(&unknown, "node { name: \"x\" op: \"Placeholder\" attr { key: \"dtype\" value { type: DT_FLOAT } } }\nnode { name: \"y\" op: \"Erfinv\" input: \"x\" }").unwrap();
    let feed = fixture.join("input.npy");
    assert_user_error(
        &xtask(&[
            "run",
            "--graph",
            unknown.to_str().unwrap(),
            "--feed",
            &format!("x={}", feed.display()),
            "--fetch",
            "y",
            "--output-dir",
            dir,
        ]),
        "node 'y': no kernel for op type Erfinv",
    );
}

/// Every fake-quant vector case of TensorFlow, forward and gradient, as a
/// graph run through `cargo xtask run`: y and dx bit for bit, dmin/dmax
/// (sums in Eigen's order) within 1e-5 relative.
#[test]
fn run_reproduces_tensorflow_fake_quant_vectors_and_gradients() {
    use quant_core::{AttrValue, Attrs, DType, Shape, Tensor, builder::GraphBuilder};
    let dir = root().join("fixtures/tf/fake_quant_vectors");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let file = |k: &str| dir.join(case[k].as_str().unwrap());
        let (x, min, max) = (
            read_f32(&file("x")),
            read_f32(&file("min_file")),
            read_f32(&file("max_file")),
        );
        let op = case["op"].as_str().unwrap();
        let mut b = GraphBuilder::new();
        let any = |a: &ndarray::ArrayD<f32>| Shape::known(a.shape());
        let xp = b.placeholder("x", DType::F32, any(&x)).unwrap();
        let gp = b.placeholder("g", DType::F32, any(&x)).unwrap();
        let mut attrs = Attrs::new();
        attrs.insert(
            "num_bits".into(),
            AttrValue::Int(case["num_bits"].as_i64().unwrap()),
        );
        attrs.insert(
            "narrow_range".into(),
            AttrValue::Bool(case["narrow_range"].as_bool().unwrap()),
        );
        let (fwd, grad, inputs) = if op == "args" {
            attrs.insert(
                "min".into(),
                AttrValue::Float(min.iter().next().copied().unwrap()),
            );
            attrs.insert(
                "max".into(),
                AttrValue::Float(max.iter().next().copied().unwrap()),
            );
            (
                "FakeQuantWithMinMaxArgs",
                "FakeQuantWithMinMaxArgsGradient",
                vec![],
            )
        } else {
            let mn = b.constant("min", Tensor::from_array(min.clone())).unwrap();
            let mx = b.constant("max", Tensor::from_array(max.clone())).unwrap();
            let (f, g) = if op == "vars" {
                ("FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsGradient")
            } else {
                (
                    "FakeQuantWithMinMaxVarsPerChannel",
                    "FakeQuantWithMinMaxVarsPerChannelGradient",
                )
            };
            (f, g, vec![mn, mx])
        };
        let fwd_inputs: Vec<_> = std::iter::once(xp).chain(inputs.iter().copied()).collect();
        b.add(fwd, "y", &fwd_inputs, attrs.clone()).unwrap();
        let grad_inputs: Vec<_> = [gp, xp].into_iter().chain(inputs.iter().copied()).collect();
        b.add(grad, "grad", &grad_inputs, attrs).unwrap();
        let graph_path = out.path().join(format!("{name}.json"));
        quant_core::serialize::write_graph_json(&graph_path, &b.finish()).unwrap();
        let case_out = out.path().join(name);
        let mut args = vec![
            "run".to_string(),
            "--graph".into(),
            graph_path.display().to_string(),
            "--feed".into(),
            format!("x={}", file("x").display()),
            "--feed".into(),
            format!("g={}", file("g").display()),
            "--fetch".into(),
            "y".into(),
            "--fetch".into(),
            "grad:0".into(),
            "--output-dir".into(),
            case_out.display().to_string(),
        ];
        if op != "args" {
            args.extend([
                "--fetch".into(),
                "grad:1".into(),
                "--fetch".into(),
                "grad:2".into(),
            ]);
        }
        let o = xtask(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        for (fetch, key) in [("y", "y"), ("grad__0", "dx")] {
            let (got, want) = (
                read_f32(&case_out.join(format!("{fetch}.npy"))),
                read_f32(&file(key)),
            );
            let bad = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(bad.is_none(), "{name}/{key}: first mismatch at {bad:?}");
        }
        if op != "args" {
            for (fetch, key) in [("grad__1", "dmin"), ("grad__2", "dmax")] {
                let (got, want) = (
                    read_f32(&case_out.join(format!("{fetch}.npy"))),
                    read_f32(&file(key)),
                );
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                        "{name}/{key}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
