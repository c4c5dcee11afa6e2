//! The matcher semantics of section 6 of the reference document, one test
//! per point.

use quant_core::builder::{GraphBuilder, Padding};
use quant_core::matcher::{MAX_PATTERN_INPUTS, PatternBuilder, PatternError};
use quant_core::{DType, Graph, NewNode, NodeId, OutletId, OutputFact, Shape, Tensor};

/// x → Conv2D(x, w) → BiasAdd(·, b) → Relu6, plus a FusedBatchNormV3 whose
/// output 1 feeds an Identity, and a Mul whose inputs are (w, x).
struct Net {
    g: Graph,
    x: OutletId,
    w: OutletId,
    conv: NodeId,
    bias_add: NodeId,
    relu: NodeId,
    bn: NodeId,
    ident: NodeId,
    mul: NodeId,
}

fn net() -> Net {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("x", DType::F32, Shape::known(&[1, 4, 4, 2]))
        .unwrap();
    let w = b
        .constant("w", Tensor::zeros(DType::F32, &[1, 1, 2, 2]).unwrap())
        .unwrap();
    let bias = b
        .constant("b", Tensor::zeros(DType::F32, &[2]).unwrap())
        .unwrap();
    let conv = b.conv2d("conv", x, w, [1, 1], Padding::Same).unwrap();
    let bias_add = b.bias_add("bias_add", conv, bias).unwrap();
    let relu = b.relu6("relu", bias_add).unwrap();
    let p = b
        .constant("p", Tensor::zeros(DType::F32, &[2]).unwrap())
        .unwrap();
    let bn = b
        .fused_batch_norm("bn", x, p, p, p, p, 0.001, true)
        .unwrap();
    let ident = b.identity("ident", OutletId::new(bn, 1)).unwrap();
    let mul = b.binary("Mul", "mul", bias, bias).unwrap();
    let mut g = b.finish();
    // Make the Mul read (w, x)-like operands of different producers for the unordered tests.
    let c = g.id("b").unwrap();
    g.set_inputs(
        mul.node,
        vec![OutletId::new(c, 0), OutletId::new(g.id("p").unwrap(), 0)],
    )
    .unwrap();
    Net {
        g,
        x,
        w,
        conv: conv.node,
        bias_add: bias_add.node,
        relu: relu.node,
        bn,
        ident: ident.node,
        mul: mul.node,
    }
}

#[test]
fn wildcard_matches_any_op_type() {
    let n = net();
    let mut p = PatternBuilder::new();
    let any = p.any();
    let pattern = p.build(any).unwrap();
    assert_eq!(pattern.match_graph(&n.g).count(), n.g.len());
}

#[test]
fn alternation_accepts_each_listed_type_exactly() {
    let n = net();
    let mut p = PatternBuilder::new();
    let root = p.op("Relu|Relu6").id();
    let pattern = p.build(root).unwrap();
    let roots: Vec<NodeId> = pattern.match_graph(&n.g).map(|m| m.root()).collect();
    assert_eq!(roots, [n.relu]);
    // Exact string equality per alternative: a prefix does not match.
    let mut p = PatternBuilder::new();
    let root = p.op("Relu").id();
    assert_eq!(p.build(root).unwrap().match_graph(&n.g).count(), 0);
}

#[test]
fn a_pattern_without_inputs_accepts_any_inputs() {
    let n = net();
    let mut p = PatternBuilder::new();
    let root = p.op("Conv2D").id(); // like a bare string in the original
    let m = p.build(root).unwrap();
    assert_eq!(m.match_node(&n.g, n.conv).map(|m| m.root()), Some(n.conv));
}

#[test]
fn input_count_must_be_exact_and_control_inputs_do_not_count() {
    let mut n = net();
    let mut p = PatternBuilder::new();
    let a = p.any();
    let one = p.op("Conv2D").inputs([a]).id();
    let pattern = p.build(one).unwrap();
    assert!(
        pattern.match_node(&n.g, n.conv).is_none(),
        "Conv2D has two inputs, the pattern lists one"
    );

    let mut p = PatternBuilder::new();
    let (a, b) = (p.any(), p.any());
    let two = p.op("Conv2D").inputs([a, b]).id();
    let pattern = p.build(two).unwrap();
    n.g.set_control_inputs(n.conv, vec![n.x.node]).unwrap();
    assert!(pattern.match_node(&n.g, n.conv).is_some());
}

#[test]
fn bound_tensors_are_the_exact_output_that_feeds_the_consumer() {
    let n = net();
    let mut p = PatternBuilder::new();
    let bn = p.op("FusedBatchNormV3").name("bn").id();
    let root = p.op("Identity").inputs([bn]).id();
    let pattern = p.build(root).unwrap();
    let m = pattern.match_node(&n.g, n.ident).unwrap();
    assert_eq!(m.node(bn), Some(n.bn));
    assert_eq!(m.tensor(bn), Some(OutletId::new(n.bn, 1)));
    assert_eq!(m.tensor(root), None, "the root's tensor is always none");
}

#[test]
fn unordered_inputs_try_every_permutation_in_order() {
    let n = net();
    let b_const = n.g.id("b").unwrap();
    // BiasAdd(conv, b) against the input list (Const, Conv2D).
    let mut q = PatternBuilder::new();
    let c = q.op("Const").id();
    let conv = q.op("Conv2D").id();
    let ordered = q.op("BiasAdd").inputs([c, conv]).id();
    let pattern = q.build(ordered).unwrap();
    assert!(
        pattern.match_node(&n.g, n.bias_add).is_none(),
        "ordered inputs must line up"
    );

    let mut q = PatternBuilder::new();
    let c = q.op("Const").id();
    let conv = q.op("Conv2D").id();
    let unordered = q.op("BiasAdd").inputs([c, conv]).unordered().id();
    let pattern = q.build(unordered).unwrap();
    let m = pattern.match_node(&n.g, n.bias_add).unwrap();
    assert_eq!(m.node(conv), Some(n.conv));
    assert_eq!(m.tensor(c), Some(OutletId::new(b_const, 0)));

    // Mul(b, p), both Consts: the identity permutation is tried first and wins.
    let mut q = PatternBuilder::new();
    let first = q.op("Const").name("first").id();
    let second = q.op("Const").name("second").id();
    let root = q.op("Mul").inputs([first, second]).unordered().id();
    let pattern = q.build(root).unwrap();
    let m = pattern.match_node(&n.g, n.mul).unwrap();
    assert_eq!(m.node_named("first"), Some(b_const));
    assert_eq!(m.node_named("second"), n.g.id("p"));
}

#[test]
fn one_of_takes_the_first_alternative_that_matches_and_forgets_failed_ones() {
    let n = net();
    let mut p = PatternBuilder::new();
    let inp = p.any();
    // Alternative 1 binds "w_pat" to the Const filter, then fails on the second input.
    let w_pat = p.op("Const").name("w_pat").id();
    let never = p.op("NoSuchOp").id();
    let alt1 = p
        .op("Conv2D")
        .inputs([w_pat, never])
        .unordered()
        .name("alt1")
        .id();
    let filter = p.any();
    let alt2 = p.op("Conv2D").inputs([inp, filter]).name("alt2").id();
    let alt3 = p.op("Conv2D").name("alt3").id();
    let layer = p.one_of([alt1, alt2, alt3]);
    p.set_name(layer, "layer");
    let bias = p.any();
    let root = p.op("BiasAdd").inputs([layer, bias]).id();
    let pattern = p.build(root).unwrap();
    let m = pattern.match_node(&n.g, n.bias_add).unwrap();
    assert_eq!(m.node(alt2), Some(n.conv), "the second alternative matched");
    assert_eq!(m.node(alt3), None, "later alternatives are not tried");
    assert_eq!(
        m.node(w_pat),
        None,
        "bindings of the failed first alternative are rolled back"
    );
    assert_eq!(m.node(alt1), None);
    assert_eq!(
        m.node_named("layer"),
        Some(n.conv),
        "the one-of itself is bound"
    );
    assert_eq!(m.tensor(inp), Some(n.x));
}

#[test]
fn lookups_by_id_and_name_and_missing_bindings() {
    let n = net();
    let mut p = PatternBuilder::new();
    let w = p.op("Const").name("weights").id();
    let input = p.any();
    let conv = p.op("Conv2D").inputs([input, w]).name("layer").id();
    let unused = p.op("Relu").name("unused").id();
    let bias = p.any();
    let root = p.op("BiasAdd").inputs([conv, bias]).id();
    let pattern = p.build(root).unwrap();
    let m = pattern.match_node(&n.g, n.bias_add).unwrap();
    assert_eq!(m.node_named("layer"), Some(n.conv));
    assert_eq!(m.tensor_named("weights"), Some(n.w));
    assert_eq!(m.node(unused), None);
    assert_eq!(m.node_named("unused"), None);
    assert_eq!(m.node_named("no such name"), None);
    assert_eq!(pattern.find("weights"), Some(w));
}

#[test]
fn when_two_patterns_share_a_name_the_last_bound_wins() {
    let n = net();
    let mut p = PatternBuilder::new();
    let inner = p.op("Conv2D").name("same").id();
    let bias = p.any();
    let root = p.op("BiasAdd").inputs([inner, bias]).name("same").id();
    let pattern = p.build(root).unwrap();
    let m = pattern.match_node(&n.g, n.bias_add).unwrap();
    // The root is bound first, then its input.
    assert_eq!(m.node_named("same"), Some(n.conv));
}

#[test]
fn match_graph_yields_one_match_per_op_in_creation_order() {
    let mut b = GraphBuilder::new();
    let x = b.placeholder("x", DType::F32, Shape::known(&[2])).unwrap();
    let mut relus = Vec::new();
    for i in 0..5 {
        relus.push(b.unary("Relu", &format!("r{i}"), x).unwrap().node);
    }
    let g = b.finish();
    let mut p = PatternBuilder::new();
    let input = p.any();
    let root = p.op("Relu").inputs([input]).id();
    let pattern = p.build(root).unwrap();
    let roots: Vec<NodeId> = pattern.match_graph(&g).map(|m| m.root()).collect();
    assert_eq!(roots, relus);
}

#[test]
fn a_shared_sub_pattern_is_bound_whichever_branch_matched() {
    let n = net();
    let mut p = PatternBuilder::new();
    let layer = p.op("Conv2D").name("layer").id();
    let bias = p.any();
    let bias_add = p.op("BiasAdd").inputs([layer, bias]).name("bias_add").id();
    let other = p.any();
    let bypass = p.op("AddV2").inputs([bias_add, other]).id();
    let act_in = p.one_of([bypass, bias_add]);
    let root = p.op("Relu6").inputs([act_in]).id();
    let pattern = p.build(root).unwrap();
    let m = pattern.match_node(&n.g, n.relu).unwrap();
    assert_eq!(m.node(bias_add), Some(n.bias_add));
    assert_eq!(m.node(layer), Some(n.conv));
    assert_eq!(m.node(bypass), None);
}

#[test]
fn construction_errors() {
    let mut p = PatternBuilder::new();
    let inputs: Vec<_> = (0..=MAX_PATTERN_INPUTS).map(|_| p.any()).collect();
    let root = p.op("ConcatV2").inputs(inputs).name("too_many").id();
    assert_eq!(
        p.build(root).unwrap_err(),
        PatternError::TooManyInputs("too_many".into(), 9)
    );
    let mut p = PatternBuilder::new();
    let root = p.op("Relu|").id();
    assert!(matches!(p.build(root), Err(PatternError::EmptyType(..))));
    let mut p = PatternBuilder::new();
    let root = p.one_of([]);
    assert!(matches!(p.build(root), Err(PatternError::EmptyOneOf(_))));
}

#[test]
fn multi_output_producers_resolve_per_consumer() {
    // Two Identities read outputs 1 and 2 of the same batch norm.
    let mut g = net().g;
    let bn = g.id("bn").unwrap();
    let id2 = g
        .add_node(
            NewNode::new("ident2", "Identity")
                .inputs([OutletId::new(bn, 2)])
                .outputs(vec![OutputFact::default()]),
        )
        .unwrap();
    let mut p = PatternBuilder::new();
    let src = p.op("FusedBatchNormV3").id();
    let root = p.op("Identity").inputs([src]).id();
    let pattern = p.build(root).unwrap();
    let tensors: Vec<_> = pattern
        .match_graph(&g)
        .map(|m| m.tensor(src).unwrap().slot)
        .collect();
    assert_eq!(tensors, [1, 2]);
    assert!(pattern.match_node(&g, id2).is_some());
}

// Scenarios 1–5 of section 8 of the reference document.

fn unknown(g: &mut Graph, name: &str, op: &str, inputs: &[OutletId], outputs: usize) -> NodeId {
    g.add_node(
        NewNode::new(name, op)
            .inputs(inputs.iter().copied())
            .outputs(vec![OutputFact::default(); outputs]),
    )
    .unwrap()
}

#[test]
fn scenario_01_conv_bn_relu_matches_once_and_binds_the_input_by_pattern_and_name() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("x", DType::F32, Shape::known(&[1, 4, 4, 2]))
        .unwrap();
    let w = b
        .constant("w", Tensor::zeros(DType::F32, &[3, 3, 2, 2]).unwrap())
        .unwrap();
    let p = b
        .constant("p", Tensor::zeros(DType::F32, &[2]).unwrap())
        .unwrap();
    let conv = b.conv2d("conv", x, w, [1, 1], Padding::Same).unwrap();
    let bn = b
        .fused_batch_norm("bn", conv, p, p, p, p, 0.001, false)
        .unwrap();
    b.unary("Relu", "relu", bn.into()).unwrap();
    let g = b.finish();
    let mut q = PatternBuilder::new();
    let inputs = q.op("*").name("inputs").id();
    let filter = q.any();
    let conv_p = q.op("Conv2D").inputs([inputs, filter]).id();
    let params: Vec<_> = (0..4).map(|_| q.any()).collect();
    let bn_p = q
        .op("FusedBatchNormV3")
        .inputs([conv_p, params[0], params[1], params[2], params[3]])
        .id();
    let root = q.op("Relu").inputs([bn_p]).id();
    let pattern = q.build(root).unwrap();
    let matches: Vec<_> = pattern.match_graph(&g).collect();
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].tensor(inputs), Some(x));
    assert_eq!(matches[0].tensor_named("inputs"), Some(x));
}

#[test]
fn scenario_02_a_wildcard_binds_the_exact_output_of_a_multi_output_producer() {
    let mut g = Graph::new();
    let y = unknown(&mut g, "y", "Placeholder2", &[], 1);
    let z = unknown(&mut g, "z", "Placeholder2", &[], 1);
    let split = unknown(&mut g, "split", "Split", &[y.into()], 2);
    let sub = unknown(
        &mut g,
        "sub",
        "Sub",
        &[OutletId::new(split, 1), z.into()],
        1,
    );
    let mut q = PatternBuilder::new();
    let (a, b) = (q.any(), q.any());
    let root = q.op("Sub").inputs([a, b]).id();
    let m = q
        .build(root)
        .unwrap()
        .match_node(&g, sub)
        .map(|m| (m.node(a), m.tensor(a)));
    assert_eq!(m, Some((Some(split), Some(OutletId::new(split, 1)))));
}

#[test]
fn scenario_03_alternation_matches_add_and_sub_in_graph_order() {
    let mut b = GraphBuilder::new();
    let x = b.placeholder("x", DType::F32, Shape::known(&[2])).unwrap();
    let add = b.binary("AddV2", "add", x, x).unwrap();
    let sub = b.binary("Sub", "sub", add, x).unwrap();
    b.binary("Mul", "mul", sub, x).unwrap();
    let g = b.finish();
    let mut q = PatternBuilder::new();
    let (l, r) = (q.any(), q.any());
    let root = q.op("AddV2|Add|Sub").inputs([l, r]).id();
    let roots: Vec<NodeId> = q
        .build(root)
        .unwrap()
        .match_graph(&g)
        .map(|m| m.root())
        .collect();
    assert_eq!(roots, [add.node, sub.node]);
}

#[test]
fn scenario_04_one_of_binds_the_slice_only_when_present() {
    let mut g = Graph::new();
    let x = unknown(&mut g, "x", "Placeholder2", &[], 1);
    let c = unknown(&mut g, "c", "Const2", &[], 1);
    let reshape = unknown(&mut g, "reshape", "Reshape", &[x.into(), c.into()], 1);
    let t1 = unknown(&mut g, "t1", "Transpose", &[reshape.into(), c.into()], 1);
    let slice = unknown(
        &mut g,
        "slice",
        "Slice",
        &[reshape.into(), c.into(), c.into()],
        1,
    );
    let t2 = unknown(&mut g, "t2", "Transpose", &[slice.into(), c.into()], 1);
    let mut q = PatternBuilder::new();
    let reshape_p = q.op("Reshape").name("reshape").id();
    let (s1, s2, t_any1, t_any2) = (q.any(), q.any(), q.any(), q.any());
    let slice_p = q.op("Slice").inputs([reshape_p, s1, s2]).name("slice").id();
    let with_slice = q
        .op("Transpose")
        .inputs([slice_p, t_any1])
        .name("transpose")
        .id();
    let without = q
        .op("Transpose")
        .inputs([reshape_p, t_any2])
        .name("transpose")
        .id();
    let root = q.one_of([with_slice, without]);
    let pattern = q.build(root).unwrap();
    let m = pattern.match_node(&g, t1).unwrap();
    assert_eq!(
        (
            m.node_named("reshape"),
            m.node_named("slice"),
            m.node_named("transpose")
        ),
        (Some(reshape), None, Some(t1))
    );
    let m = pattern.match_node(&g, t2).unwrap();
    assert_eq!(
        (
            m.node_named("reshape"),
            m.node_named("slice"),
            m.node_named("transpose")
        ),
        (Some(reshape), Some(slice), Some(t2))
    );
}

#[test]
fn scenario_05_unordered_inputs_match_either_order_ordered_only_one() {
    let mut b = GraphBuilder::new();
    let x = b.placeholder("x", DType::F32, Shape::known(&[2])).unwrap();
    let c = b
        .constant("c", Tensor::zeros(DType::F32, &[2]).unwrap())
        .unwrap();
    let add = b.binary("Add", "add", x, c).unwrap().node;
    let g = b.finish();
    let try_match = |first: &str, second: &str, ordered: bool| {
        let mut q = PatternBuilder::new();
        let (a, b) = (q.op(first).id(), q.op(second).id());
        let op = q.op("Add").inputs([a, b]);
        let root = if ordered {
            op.id()
        } else {
            op.unordered().id()
        };
        q.build(root).unwrap().match_node(&g, add).is_some()
    };
    assert!(try_match("Const", "Placeholder", false));
    assert!(try_match("Placeholder", "Const", false));
    assert!(!try_match("Const", "Placeholder", true));
}
