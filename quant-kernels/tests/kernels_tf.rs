//! Every kernel against TensorFlow: each case of `fixtures/tf/kernels`
//! (made by `tools/fixtures/make_tf_fixtures.py --only kernels`) becomes a
//! one-node graph run by the executor, and its outputs are compared with
//! TensorFlow's raw-op outputs. Cases whose op computes a gradient of a
//! broadcasting binary op (`gradient_of`) belong to the gradients pass and
//! are checked there.

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use quant_core::{
    AttrValue, Attrs, DType, Graph, NewNode, OpRegistry, OutletId, OutputFact, Shape, Tensor,
};
use quant_kernels::session::Session;
use std::path::{Path, PathBuf};

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    op: String,
    attrs: serde_json::Map<String, serde_json::Value>,
    inputs: Vec<String>,
    outputs: Vec<Option<String>>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tf/kernels")
}

fn load(file: &str) -> Tensor {
    let path = dir().join(file);
    if let Ok(a) = read_npy::<_, ArrayD<f32>>(&path) {
        return Tensor::from_array(a);
    }
    if let Ok(a) = read_npy::<_, ArrayD<i32>>(&path) {
        return Tensor::from_array(a);
    }
    if let Ok(a) = read_npy::<_, ArrayD<bool>>(&path) {
        return Tensor::from_array(a);
    }
    if let Ok(a) = read_npy::<_, ArrayD<u8>>(&path) {
        return Tensor::from_array(a);
    }
    if let Ok(a) = read_npy::<_, ArrayD<i8>>(&path) {
        return Tensor::from_array(a);
    }
    Tensor::from_array(read_npy::<_, ArrayD<i64>>(&path).unwrap_or_else(|e| panic!("{file}: {e}")))
}

fn attr(value: &serde_json::Value) -> AttrValue {
    use serde_json::Value as J;
    match value {
        J::Bool(b) => AttrValue::Bool(*b),
        J::String(s) => AttrValue::Str(s.clone()),
        J::Number(n) if n.is_i64() => AttrValue::Int(n.as_i64().unwrap()),
        J::Number(n) => AttrValue::Float(n.as_f64().unwrap() as f32),
        J::Array(items) => AttrValue::Ints(
            items
                .iter()
                .map(|v| v.as_i64().expect("integer list"))
                .collect(),
        ),
        other => panic!("unexpected attribute {other}"),
    }
}

/// A graph of one Placeholder per input feeding one node of the case's op.
fn graph(case: &Case, inputs: &[Tensor]) -> Graph {
    let mut g = Graph::new();
    let mut wires = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let node = NewNode::new(format!("in{i}"), "Placeholder")
            .attr("dtype", t.dtype())
            .attr("shape", AttrValue::Shape(Some(Shape::known(t.shape()))))
            .outputs(vec![OutputFact::new(t.dtype(), Shape::known(t.shape()))]);
        wires.push(OutletId::from(g.add_node(node).unwrap()));
    }
    let mut attrs: Attrs = case
        .attrs
        .iter()
        .map(|(k, v)| (k.clone().into(), attr(v)))
        .collect();
    if case.op == "ConcatV2" {
        attrs.insert("N".into(), AttrValue::Int(inputs.len() as i64 - 1));
    }
    // Type attributes are left out of cases.json; those that choose the
    // output dtype are read back from the output file.
    let output_type = match case.op.as_str() {
        "Cast" => Some("DstT"),
        "Shape" | "Size" => Some("out_type"),
        "ArgMax" => Some("output_type"),
        _ => None,
    };
    if let (Some(name), Some(Some(file))) = (output_type, case.outputs.first()) {
        attrs.insert(name.into(), AttrValue::Type(load(file).dtype()));
    }
    let outputs = OpRegistry::builtin()
        .get(&case.op)
        .unwrap_or_else(|| panic!("{}: op {} is not registered", case.name, case.op))
        .outputs;
    let mut node = NewNode::new("op", case.op.clone())
        .inputs(wires)
        .outputs(vec![OutputFact::default(); outputs]);
    node.attrs = attrs;
    let id = g.add_node(node).unwrap();
    let facts = OpRegistry::builtin()
        .infer_node(&g, id)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    g.set_outputs(id, facts).unwrap();
    g
}

/// Ops whose float results TensorFlow computes exactly as we do (no
/// reordered sums, no transcendental approximations).
fn exact(op: &str) -> bool {
    matches!(
        op,
        "Relu"
            | "Relu6"
            | "ReluGrad"
            | "Relu6Grad"
            | "Neg"
            | "Square"
            | "Sqrt"
            | "Reshape"
            | "ConcatV2"
            | "MaxPool"
            | "Max"
            | "Min"
            | "Maximum"
            | "Minimum"
            | "Add"
            | "AddV2"
            | "Sub"
            | "Mul"
            | "RealDiv"
            | "Slice"
            | "BroadcastTo"
            | "Tile"
            | "ExpandDims"
            | "Fill"
            | "ZerosLike"
            | "OnesLike"
            | "StopGradient"
            | "Cast"
            | "Select"
            | "SelectV2"
            | "Abs"
            | "Floor"
    )
}

#[test]
fn every_kernel_matches_tensorflow() {
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases
        .iter()
        .filter(|c| !c.attrs.contains_key("gradient_of"))
    {
        let inputs: Vec<Tensor> = case.inputs.iter().map(|f| load(f)).collect();
        let mut session = Session::new(graph(case, &inputs)).unwrap();
        let feeds: Vec<(String, Tensor)> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("in{i}"), t.clone()))
            .collect();
        let feed_refs: Vec<(&str, Tensor)> =
            feeds.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let fetch_names: Vec<String> = (0..case.outputs.len()).map(|k| format!("op:{k}")).collect();
        let fetches: Vec<&str> = fetch_names.iter().map(String::as_str).collect();
        let got = match session.run(&feed_refs, &fetches) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        for (k, (want, got)) in case.outputs.iter().zip(&got).enumerate() {
            let Some(want) = want else { continue };
            let want = load(want);
            if want.len() == 1 && want.shape().is_empty() && got.is_empty() {
                continue; // reserve space: TF returns a scalar placeholder, we an empty tensor
            }
            if want.dtype() != got.dtype() {
                failures.push(format!(
                    "{} output {k}: dtype {}, TensorFlow {}",
                    case.name,
                    got.dtype(),
                    want.dtype()
                ));
                continue;
            }
            if want.shape() != got.shape() {
                failures.push(format!(
                    "{} output {k}: shape {:?}, TensorFlow {:?}",
                    case.name,
                    got.shape(),
                    want.shape()
                ));
                continue;
            }
            if want.dtype() != DType::F32 {
                // Integer and bool outputs: bit for bit.
                if want.to_le_bytes() != got.to_le_bytes() {
                    failures.push(format!(
                        "{} output {k}: {:?}, TensorFlow {:?}",
                        case.name,
                        got.data(),
                        want.data()
                    ));
                }
                continue;
            }
            let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
            let scale = w.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
            let err = w
                .iter()
                .zip(&g)
                .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
                / scale;
            let tolerance = if exact(&case.op) { 0.0 } else { 1e-5 };
            if err > tolerance {
                failures.push(format!(
                    "{} output {k}: relative error {err:e} (tolerance {tolerance:e})",
                    case.name
                ));
            }
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ from TensorFlow:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 200, "only {checked} cases checked");
}
