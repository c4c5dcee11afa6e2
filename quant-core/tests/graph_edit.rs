//! Consumer lookups and restricted rerouting (reference semantics §8,
//! scenarios 6 and 8).

use quant_core::builder::GraphBuilder;
use quant_core::{DType, Graph, OutletId, Shape};

/// `x → relu6`, `x + y → add`, `x · y → mul`, and `y` used by nothing else.
fn graph() -> (Graph, [OutletId; 2]) {
    let mut b = GraphBuilder::new();
    let x = b.placeholder("x", DType::F32, Shape::known(&[2])).unwrap();
    let y = b.placeholder("y", DType::F32, Shape::known(&[2])).unwrap();
    b.relu6("relu6", x).unwrap();
    b.binary("AddV2", "add", x, y).unwrap();
    b.binary("Mul", "mul", x, y).unwrap();
    (b.finish(), [x, y])
}

fn consumer_names(g: &Graph, o: OutletId) -> Vec<&str> {
    g.consumers(o)
        .iter()
        .map(|i| g.node(i.node).name())
        .collect()
}

#[test]
fn scenario_6_consumers_of_a_tensor() {
    let (g, [x, y]) = graph();
    assert_eq!(consumer_names(&g, x), ["relu6", "add", "mul"]);
    assert_eq!(consumer_names(&g, y), ["add", "mul"]);
    let relu6 = g.outlet("relu6").unwrap();
    assert!(consumer_names(&g, relu6).is_empty());
}

#[test]
fn scenario_8_a_reroute_restricted_to_some_ops_changes_only_their_inputs() {
    let (mut g, [x, y]) = graph();
    let add = g.id("add").unwrap();
    let switched = g.reroute(x, y, Some(&[add])).unwrap();
    assert_eq!(switched, 1);
    assert_eq!(g.node(add).inputs(), [y, y]);
    let mul = g.id("mul").unwrap();
    assert_eq!(g.node(mul).inputs(), [x, y]);
    assert_eq!(consumer_names(&g, x), ["relu6", "mul"]);
}
