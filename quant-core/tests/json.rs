//! Graph JSON: exact round trips, and clear errors for malformed input.

use proptest::prelude::*;
use quant_core::models::{self, ModelOptions};
use quant_core::serialize::json::{from_json, to_json};
use quant_core::{AttrValue, GraphError, NewNode, OpRegistry, OutputFact, Tensor};

fn registry() -> &'static OpRegistry {
    OpRegistry::builtin()
}

#[test]
fn builtin_models_round_trip_exactly() {
    for name in models::BUILTIN_MODELS {
        let g = models::builtin(
            name,
            ModelOptions {
                seed: 7,
                training: false,
            },
        )
        .unwrap()
        .unwrap();
        let text = to_json(&g);
        let back = from_json(&text, registry()).unwrap();
        assert_eq!(back, g, "{name}");
        assert_eq!(to_json(&back), text, "{name}");
    }
}

#[test]
fn the_format_is_versioned_and_fields_come_in_a_stable_order() {
    let g = models::mnist_cnn(ModelOptions::default()).unwrap();
    let text = to_json(&g);
    assert!(
        text.starts_with("{\n  \"format_version\": 1,\n  \"nodes\": ["),
        "{}",
        &text[..60]
    );
    let first = text.find("\"name\"").unwrap();
    let order: Vec<usize> = [
        "\"name\"",
        "\"op\"",
        "\"inputs\"",
        "\"attrs\"",
        "\"outputs\"",
    ]
    .iter()
    .map(|k| text[first..].find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

#[test]
fn every_attribute_kind_and_odd_floats_round_trip() {
    let mut g = quant_core::Graph::new();
    let t = Tensor::from_vec(
        &[5],
        vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-45],
    )
    .unwrap();
    let node = NewNode::new("n", "SomeUnknownOp")
        .attr("i", -3i64)
        .attr("f", 0.1f32)
        .attr("b", true)
        .attr("s", "SAME")
        .attr("t", quant_core::DType::I8)
        .attr("tensor", t)
        .attr("ints", vec![1i64, 2])
        .outputs(vec![
            OutputFact::default(),
            OutputFact::dtype(quant_core::DType::F32),
        ]);
    let id = g.add_node(node).unwrap();
    g.set_attr(
        id,
        "floats",
        AttrValue::Floats(vec![f32::MAX, f32::MIN_POSITIVE]),
    );
    g.set_attr(id, "shape", AttrValue::Shape(None));
    g.set_attr(
        id,
        "shapes",
        AttrValue::Shapes(vec![Some(quant_core::Shape(vec![None, Some(3)])), None]),
    );
    g.set_attr(id, "strs", AttrValue::Strs(vec!["a".into(), "é".into()]));
    g.set_attr(id, "types", AttrValue::Types(vec![quant_core::DType::Bool]));
    g.set_attr(id, "bools", AttrValue::Bools(vec![false]));
    g.set_attr(id, "func", AttrValue::Func("f".into()));
    g.set_attr(
        id,
        "f64",
        AttrValue::from(Tensor::from_vec(&[2], vec![0.1f64, 1.0 / 3.0]).unwrap()),
    );
    let back = from_json(&to_json(&g), registry()).unwrap();
    // NaN != NaN, so compare the JSON text and the bits.
    assert_eq!(to_json(&back), to_json(&g));
    let bits = |g: &quant_core::Graph| match g.by_name("n").unwrap().attr("tensor") {
        Some(AttrValue::Tensor(t)) => t.to_le_bytes(),
        _ => unreachable!(),
    };
    assert_eq!(bits(&back), bits(&g));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn f32_values_round_trip_bit_for_bit(bits in prop::collection::vec(any::<u32>(), 1..64)) {
        let values: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).filter(|v| !v.is_nan()).collect();
        let mut g = quant_core::Graph::new();
        let t = Tensor::from_vec(&[values.len()], values.clone()).unwrap();
        g.add_node(NewNode::new("c", "Const").attr("value", t).outputs(vec![OutputFact::default()])).unwrap();
        let back = from_json(&to_json(&g), registry()).unwrap();
        let got = back.by_name("c").unwrap().attr_tensor("value").unwrap().array::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(got, values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
}

fn err(text: &str) -> String {
    from_json(text, registry()).unwrap_err().to_string()
}

const OUT: &str = r#""outputs": [{"dtype": "f32", "shape": [2]}]"#;

#[test]
fn malformed_graphs_are_refused_naming_the_problem() {
    assert!(
        err("{not json").starts_with("invalid graph JSON: key must be a string at line 1 column 2"),
        "{}",
        err("{not json")
    );
    assert!(err(r#"{"format_version": 9, "nodes": []}"#).contains("unsupported format_version 9"));
    assert!(
        err(r#"{"format_version": 1, "nodes": [], "extra": 1}"#).contains("unknown field `extra`")
    );

    let dangling = format!(
        r#"{{"format_version": 1, "nodes": [{{"name": "r", "op": "Relu", "inputs": ["ghost:0"], {OUT}}}]}}"#
    );
    assert_eq!(
        err(&dangling),
        "node 'r': input 0 refers to 'ghost:0', which is not in the graph"
    );

    let cycle = format!(
        r#"{{"format_version": 1, "nodes": [
            {{"name": "a", "op": "Relu", "inputs": ["b"], {OUT}}},
            {{"name": "b", "op": "Relu", "inputs": ["a"], {OUT}}}]}}"#
    );
    assert!(
        err(&cycle).starts_with("the graph has a cycle through node '"),
        "{}",
        err(&cycle)
    );

    let duplicate = format!(
        r#"{{"format_version": 1, "nodes": [
            {{"name": "a", "op": "Placeholder", "attrs": {{"dtype": {{"type": "f32"}}}}, {OUT}}},
            {{"name": "a", "op": "Placeholder", "attrs": {{"dtype": {{"type": "f32"}}}}, {OUT}}}]}}"#
    );
    assert_eq!(err(&duplicate), "duplicate node name 'a'");

    let wrong_attr = format!(
        r#"{{"format_version": 1, "nodes": [{{"name": "p", "op": "Placeholder", "attrs": {{"dtype": {{"int": 1}}}}, {OUT}}}]}}"#
    );
    assert_eq!(
        err(&wrong_attr),
        "node 'p': attribute 'dtype': expected type, found int"
    );

    let bad_const = r#"{"format_version": 1, "nodes": [{"name": "c", "op": "Const",
        "attrs": {"value": {"tensor": {"dtype": "f32", "shape": [2, 2], "data": [1, 2, 3]}}}, "outputs": [{}]}]}"#;
    assert_eq!(
        err(bad_const),
        "node 'c': shape [2, 2] expects 4 values, found 3"
    );

    let arity =
        format!(r#"{{"format_version": 1, "nodes": [{{"name": "r", "op": "Relu", {OUT}}}]}}"#);
    assert_eq!(err(&arity), "node 'r': op Relu takes 1 inputs, found 0");

    let bad_slot = format!(
        r#"{{"format_version": 1, "nodes": [
            {{"name": "a", "op": "Placeholder", "attrs": {{"dtype": {{"type": "f32"}}}}, {OUT}}},
            {{"name": "r", "op": "Relu", "inputs": ["a:3"], {OUT}}}]}}"#
    );
    assert_eq!(
        err(&bad_slot),
        "node 'r': input 0 refers to output 3 of 'a', which has 1 outputs"
    );

    let bad_value = r#"{"format_version": 1, "nodes": [{"name": "c", "op": "Const",
        "attrs": {"value": {"tensor": {"dtype": "u8", "shape": [1], "data": [300]}}}, "outputs": [{}]}]}"#;
    assert_eq!(err(bad_value), "node 'c': value 300 does not fit u8");
}

#[test]
fn errors_are_typed() {
    let dangling = format!(
        r#"{{"format_version": 1, "nodes": [{{"name": "r", "op": "Relu", "inputs": ["ghost"], {OUT}}}]}}"#
    );
    match from_json(&dangling, registry()) {
        Err(quant_core::serialize::ParseError::Graph(GraphError::DanglingInput {
            node,
            index,
            input,
        })) => {
            assert_eq!((node.as_str(), index, input.as_str()), ("r", 0, "ghost"));
        }
        other => panic!("expected a dangling-input error, got {other:?}"),
    }
}
