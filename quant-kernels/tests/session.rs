//! Executor behaviour: feeds, fetches, variables, assignments, the step
//! counter, checkpoints, and errors that name the node.

use quant_core::builder::GraphBuilder;
use quant_core::{AttrValue, Attrs, DType, Shape, Tensor};
use quant_kernels::session::{ExecError, STEP_VARIABLE, Session};

fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape, v).unwrap()
}

/// y = relu(x + w); w is a variable updated by `update = AssignSub(w, x)`;
/// the step counter is incremented by `step/inc`.
fn graph() -> quant_core::Graph {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("x", DType::F32, Shape(vec![Some(2)]))
        .unwrap();
    let w = b.variable("w", t(&[2], vec![1.0, -5.0]), true).unwrap();
    let s = b.binary("AddV2", "sum", x, w).unwrap();
    b.unary("Relu", "y", s).unwrap();
    b.add("AssignSub", "update", &[w, x], Attrs::new()).unwrap();
    let step = b
        .variable(STEP_VARIABLE, Tensor::scalar(0i64), false)
        .unwrap();
    let one = b.constant("one", Tensor::scalar(1i64)).unwrap();
    b.add("AssignAdd", "step/inc", &[step, one], Attrs::new())
        .unwrap();
    b.finish()
}

#[test]
fn fetches_compute_only_what_they_need_and_assignments_persist() {
    let mut s = Session::new(graph()).unwrap();
    let x = t(&[2], vec![2.0, 3.0]);
    let out = s.run(&[("x", x.clone())], &["y"]).unwrap();
    assert_eq!(out[0], t(&[2], vec![3.0, 0.0]));
    assert_eq!(
        s.variable("w"),
        Some(&t(&[2], vec![1.0, -5.0])),
        "y does not need the update"
    );
    let out = s.run(&[("x", x.clone())], &["update", "y"]).unwrap();
    assert_eq!(
        out[0],
        t(&[2], vec![-1.0, -8.0]),
        "the assignment outputs the new value"
    );
    assert_eq!(
        out[1],
        t(&[2], vec![3.0, 0.0]),
        "reads in the same run see the old value"
    );
    assert_eq!(s.variable("w"), Some(&t(&[2], vec![-1.0, -8.0])));
}

#[test]
fn the_step_counter_counts_runs_and_can_be_set() {
    let mut s = Session::new(graph()).unwrap();
    assert_eq!(s.step(), Some(0));
    for expected in 1..=3 {
        let out = s.run(&[], &["step/inc"]).unwrap();
        assert_eq!(out[0], Tensor::scalar(expected as i64));
    }
    assert_eq!(s.step(), Some(3));
    s.set_step(100).unwrap();
    assert_eq!(
        s.run(&[], &["step/inc"]).unwrap()[0],
        Tensor::scalar(101i64)
    );
}

#[test]
fn checkpoints_round_trip_through_safetensors() {
    let mut s = Session::new(graph()).unwrap();
    s.run(&[("x", t(&[2], vec![1.0, 1.0]))], &["update"])
        .unwrap();
    let dir = tempfile_dir();
    let path = dir.join("ck.safetensors");
    s.save(&path).unwrap();
    let mut fresh = Session::new(graph()).unwrap();
    assert_ne!(fresh.variable("w"), s.variable("w"));
    assert!(fresh.load(&path).unwrap().is_empty());
    assert_eq!(fresh.variable("w"), s.variable("w"));
    let err = fresh.set_variable("w", t(&[3], vec![0.0; 3])).unwrap_err();
    assert_eq!(err.to_string(), "variable 'w': expected shape [2], got [3]");
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quant-session-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn errors_name_the_node() {
    let mut s = Session::new(graph()).unwrap();
    let err = s.run(&[], &["y"]).unwrap_err();
    assert_eq!(err.to_string(), "node 'x': placeholder needs a feed");
    let err = s.run(&[("x", t(&[3], vec![0.0; 3]))], &["y"]).unwrap_err();
    assert_eq!(err.to_string(), "feed 'x': expected shape [2], got [3]");
    let err = s
        .run(
            &[("x", Tensor::from_vec(&[2], vec![1i32, 2]).unwrap())],
            &["y"],
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "feed 'x': expected f32, got i32");
    let err = s.run(&[], &["nope"]).unwrap_err();
    assert!(matches!(err, ExecError::BadName(_)), "{err}");

    let mut b = GraphBuilder::new();
    let x = b.placeholder("x", DType::F32, Shape(vec![None])).unwrap();
    let mut attrs = Attrs::new();
    attrs.insert("T".into(), AttrValue::Type(DType::F32));
    b.add("Erfinv", "mystery", &[x], attrs).unwrap();
    let mut s = Session::new(b.finish()).unwrap();
    let err = s
        .run(&[("x", t(&[1], vec![0.5]))], &["mystery"])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 'mystery': no kernel for op type Erfinv"
    );
}

#[test]
fn shape_mismatches_inside_kernels_name_the_node() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("x", DType::F32, Shape(vec![None, None]))
        .unwrap();
    let w = b.constant("w", t(&[3, 2], vec![0.0; 6])).unwrap();
    b.matmul("dense", x, w, false, false).unwrap();
    let mut s = Session::new(b.finish()).unwrap();
    let err = s
        .run(&[("x", t(&[1, 4], vec![0.0; 4]))], &["dense"])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 'dense' (MatMul): inner dimensions differ: [1, 4] times [3, 2] (transpose_a=false, transpose_b=false)"
    );
}
