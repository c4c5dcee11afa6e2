//! The command-line contract of docs/cli.md, driven through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit code 1 and a single `error:` line that contains `needle`.
fn assert_user_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

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

#[test]
fn demo_runs_on_the_built_in_models() {
    let dir = tempfile::tempdir().unwrap();
    let o = xtask(&["demo", "--out", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("mnist-cnn") && out.contains("resnet-block"),
        "{out}"
    );
    assert!(dir.path().join("mnist-cnn.json").exists());
}
