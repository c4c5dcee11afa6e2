//! Output-fact inference of the array, comparison and math ops that the
//! gradients, batch-norm folding and quant_delay rewrites emit. Expected
//! shapes and dtypes are TensorFlow's (its op docs and shape functions);
//! bad inputs must produce errors naming the node.

use quant_core::builder::GraphBuilder;
use quant_core::{AttrValue, Attrs, DType, GraphError, OutletId, OutputFact, Shape, Tensor};

fn placeholder(b: &mut GraphBuilder<'_>, name: &str, dtype: DType, dims: &[usize]) -> OutletId {
    b.placeholder(name, dtype, Shape::known(dims)).unwrap()
}

fn ints(b: &mut GraphBuilder<'_>, name: &str, values: &[i32]) -> OutletId {
    let t = Tensor::from_vec(&[values.len()], values.to_vec()).unwrap();
    b.constant(name, t).unwrap()
}

fn scalar_i32(b: &mut GraphBuilder<'_>, name: &str, value: i32) -> OutletId {
    b.constant(name, Tensor::scalar(value)).unwrap()
}

fn attrs<const N: usize>(items: [(&str, AttrValue); N]) -> Attrs {
    items
        .into_iter()
        .map(|(k, v)| (k.to_string().into(), v))
        .collect()
}

/// Adds a node and returns the fact of its first output.
fn infer(
    b: &mut GraphBuilder<'_>,
    op: &str,
    name: &str,
    inputs: &[OutletId],
    attrs: Attrs,
) -> Result<OutputFact, GraphError> {
    let id = b.add(op, name, inputs, attrs)?;
    Ok(b.graph().node(id).outputs()[0].clone())
}

fn known(dtype: DType, dims: &[usize]) -> OutputFact {
    OutputFact::new(dtype, Shape::known(dims))
}

/// The message of an inference error, checking that it names `node`.
fn inference_error(result: Result<OutputFact, GraphError>, node: &str) -> String {
    match result {
        Err(e @ GraphError::Inference { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&format!("'{node}'")), "{text}");
            text
        }
        other => panic!("expected an inference error, found {other:?}"),
    }
}

#[test]
fn shape_and_size_default_to_int32_and_honour_out_type() {
    let mut b = GraphBuilder::new();
    let x = placeholder(&mut b, "x", DType::F32, &[2, 3, 4]);
    assert_eq!(
        infer(&mut b, "Shape", "shape", &[x], Attrs::new()).unwrap(),
        known(DType::I32, &[3])
    );
    let i64_out = attrs([("out_type", DType::I64.into())]);
    assert_eq!(
        infer(&mut b, "Shape", "shape64", &[x], i64_out.clone()).unwrap(),
        known(DType::I64, &[3])
    );
    assert_eq!(
        infer(&mut b, "Size", "size", &[x], Attrs::new()).unwrap(),
        known(DType::I32, &[])
    );
    assert_eq!(
        infer(&mut b, "Size", "size64", &[x], i64_out).unwrap(),
        known(DType::I64, &[])
    );
    let bad = attrs([("out_type", DType::F32.into())]);
    let msg = inference_error(infer(&mut b, "Shape", "bad_shape", &[x], bad), "bad_shape");
    assert!(msg.contains("out_type"), "{msg}");
}

#[test]
fn slice_sizes_with_minus_one_and_out_of_range_errors() {
    let mut b = GraphBuilder::new();
    let x = placeholder(&mut b, "x", DType::F32, &[4, 5, 6]);
    let begin = ints(&mut b, "begin", &[1, 0, 2]);
    let size = ints(&mut b, "size", &[2, -1, 3]);
    assert_eq!(
        infer(&mut b, "Slice", "slice", &[x, begin, size], Attrs::new()).unwrap(),
        known(DType::F32, &[2, 5, 3])
    );
    let over = ints(&mut b, "over", &[4, 1, 1]);
    let msg = inference_error(
        infer(&mut b, "Slice", "too_far", &[x, begin, over], Attrs::new()),
        "too_far",
    );
    assert!(
        msg.contains("dimension 0") && msg.contains("out of range"),
        "{msg}"
    );
    let short = ints(&mut b, "short", &[1, 1]);
    let msg = inference_error(
        infer(
            &mut b,
            "Slice",
            "wrong_rank",
            &[x, short, size],
            Attrs::new(),
        ),
        "wrong_rank",
    );
    assert!(msg.contains("rank 3"), "{msg}");
    // Begin and size fed at run time: only the rank is known.
    let dyn_begin = placeholder(&mut b, "dyn_begin", DType::I32, &[3]);
    assert_eq!(
        infer(
            &mut b,
            "Slice",
            "dynamic",
            &[x, dyn_begin, size],
            Attrs::new()
        )
        .unwrap(),
        OutputFact {
            dtype: Some(DType::F32),
            shape: Some(Shape(vec![Some(2), None, Some(3)])),
        }
    );
}

#[test]
fn broadcast_to_fill_and_like_ops() {
    let mut b = GraphBuilder::new();
    let x = placeholder(&mut b, "x", DType::F32, &[3, 1]);
    let target = ints(&mut b, "target", &[2, 3, 4]);
    assert_eq!(
        infer(&mut b, "BroadcastTo", "bcast", &[x, target], Attrs::new()).unwrap(),
        known(DType::F32, &[2, 3, 4])
    );
    let bad = ints(&mut b, "bad", &[2, 4]);
    let msg = inference_error(
        infer(&mut b, "BroadcastTo", "bad_bcast", &[x, bad], Attrs::new()),
        "bad_bcast",
    );
    assert!(msg.contains("cannot broadcast"), "{msg}");

    let value = b.constant("value", Tensor::scalar(7i32)).unwrap();
    let dims = ints(&mut b, "dims", &[2, 5]);
    assert_eq!(
        infer(&mut b, "Fill", "fill", &[dims, value], Attrs::new()).unwrap(),
        known(DType::I32, &[2, 5])
    );
    let msg = inference_error(
        infer(&mut b, "Fill", "fill_vector", &[dims, dims], Attrs::new()),
        "fill_vector",
    );
    assert!(msg.contains("scalar"), "{msg}");

    for op in ["ZerosLike", "OnesLike", "StopGradient"] {
        assert_eq!(
            infer(&mut b, op, op, &[x], Attrs::new()).unwrap(),
            known(DType::F32, &[3, 1])
        );
    }
}

#[test]
fn cast_needs_dst_t_and_keeps_the_shape() {
    let mut b = GraphBuilder::new();
    let x = placeholder(&mut b, "x", DType::F32, &[2, 3]);
    let to_i64 = attrs([("DstT", DType::I64.into())]);
    assert_eq!(
        infer(&mut b, "Cast", "cast", &[x], to_i64).unwrap(),
        known(DType::I64, &[2, 3])
    );
    match infer(&mut b, "Cast", "no_dst", &[x], Attrs::new()) {
        Err(GraphError::Attr { node, attr, .. }) => {
            assert_eq!((node.as_str(), attr.as_str()), ("no_dst", "DstT"));
        }
        other => panic!("expected a missing-attribute error, found {other:?}"),
    }
    let wrong_src = attrs([("DstT", DType::Bool.into()), ("SrcT", DType::I32.into())]);
    let msg = inference_error(
        infer(&mut b, "Cast", "wrong_src", &[x], wrong_src),
        "wrong_src",
    );
    assert!(msg.contains("SrcT"), "{msg}");
}

#[test]
fn expand_dims_and_tile() {
    let mut b = GraphBuilder::new();
    let x = placeholder(&mut b, "x", DType::F32, &[2, 3]);
    for (axis, dims) in [
        (0, [1, 2, 3]),
        (2, [2, 3, 1]),
        (-1, [2, 3, 1]),
        (-3, [1, 2, 3]),
    ] {
        let a = scalar_i32(&mut b, &format!("axis{axis}"), axis);
        assert_eq!(
            infer(&mut b, "ExpandDims", "expand", &[x, a], Attrs::new()).unwrap(),
            known(DType::F32, &dims)
        );
    }
    let a = scalar_i32(&mut b, "axis3", 3);
    let msg = inference_error(
        infer(&mut b, "ExpandDims", "expand_far", &[x, a], Attrs::new()),
        "expand_far",
    );
    assert!(msg.contains("out of range"), "{msg}");

    let m = ints(&mut b, "multiples", &[3, 0]);
    assert_eq!(
        infer(&mut b, "Tile", "tile", &[x, m], Attrs::new()).unwrap(),
        known(DType::F32, &[6, 0])
    );
    let m3 = ints(&mut b, "multiples3", &[1, 2, 3]);
    inference_error(
        infer(&mut b, "Tile", "tile_rank", &[x, m3], Attrs::new()),
        "tile_rank",
    );
}

#[test]
fn comparisons_broadcast_to_bool() {
    let mut b = GraphBuilder::new();
    let x = placeholder(&mut b, "x", DType::F32, &[2, 1, 4]);
    let y = placeholder(&mut b, "y", DType::F32, &[3, 1]);
    for op in [
        "Greater",
        "GreaterEqual",
        "Less",
        "LessEqual",
        "Equal",
        "NotEqual",
    ] {
        assert_eq!(
            infer(&mut b, op, op, &[x, y], Attrs::new()).unwrap(),
            known(DType::Bool, &[2, 3, 4])
        );
    }
    let step = placeholder(&mut b, "step", DType::I64, &[]);
    let msg = inference_error(
        infer(&mut b, "GreaterEqual", "mixed", &[step, x], Attrs::new()),
        "mixed",
    );
    assert!(msg.contains("dtypes"), "{msg}");
    let z = placeholder(&mut b, "z", DType::F32, &[5]);
    inference_error(
        infer(&mut b, "Equal", "strict", &[x, z], Attrs::new()),
        "strict",
    );
    let tolerant = attrs([("incompatible_shape_error", false.into())]);
    assert_eq!(
        infer(&mut b, "NotEqual", "tolerant", &[x, z], tolerant).unwrap(),
        known(DType::Bool, &[])
    );
}

#[test]
fn logical_ops_need_bools() {
    let mut b = GraphBuilder::new();
    let p = placeholder(&mut b, "p", DType::Bool, &[2, 3]);
    let q = placeholder(&mut b, "q", DType::Bool, &[3]);
    let x = placeholder(&mut b, "x", DType::F32, &[3]);
    assert_eq!(
        infer(&mut b, "LogicalAnd", "and", &[p, q], Attrs::new()).unwrap(),
        known(DType::Bool, &[2, 3])
    );
    assert_eq!(
        infer(&mut b, "LogicalNot", "not", &[p], Attrs::new()).unwrap(),
        known(DType::Bool, &[2, 3])
    );
    let msg = inference_error(
        infer(&mut b, "LogicalAnd", "float_and", &[p, x], Attrs::new()),
        "float_and",
    );
    assert!(msg.contains("bool"), "{msg}");
}

#[test]
fn select_follows_tf1_rules_and_select_v2_broadcasts() {
    let mut b = GraphBuilder::new();
    let t = placeholder(&mut b, "t", DType::F32, &[4, 3]);
    let e = placeholder(&mut b, "e", DType::F32, &[4, 3]);
    for (name, dims) in [("same", &[4, 3][..]), ("rows", &[4]), ("scalar", &[])] {
        let c = placeholder(&mut b, &format!("cond_{name}"), DType::Bool, dims);
        assert_eq!(
            infer(&mut b, "Select", name, &[c, t, e], Attrs::new()).unwrap(),
            known(DType::F32, &[4, 3]),
            "{name}"
        );
    }
    let cols = placeholder(&mut b, "cond_cols", DType::Bool, &[3]);
    let msg = inference_error(
        infer(&mut b, "Select", "by_column", &[cols, t, e], Attrs::new()),
        "by_column",
    );
    assert!(msg.contains("condition"), "{msg}");
    let e3 = placeholder(&mut b, "e3", DType::F32, &[3]);
    let same = placeholder(&mut b, "cond_same2", DType::Bool, &[4, 3]);
    inference_error(
        infer(&mut b, "Select", "unequal", &[same, t, e3], Attrs::new()),
        "unequal",
    );
    let c = placeholder(&mut b, "cond_col", DType::Bool, &[4, 1]);
    assert_eq!(
        infer(&mut b, "SelectV2", "v2", &[c, e3, t], Attrs::new()).unwrap(),
        known(DType::F32, &[4, 3])
    );
    let i = placeholder(&mut b, "i", DType::I32, &[4, 3]);
    let msg = inference_error(
        infer(&mut b, "SelectV2", "v2_mixed", &[c, t, i], Attrs::new()),
        "v2_mixed",
    );
    assert!(msg.contains("dtypes"), "{msg}");
}

#[test]
fn arg_max_defaults_to_int64() {
    let mut b = GraphBuilder::new();
    let x = placeholder(&mut b, "x", DType::F32, &[8, 10]);
    let one = scalar_i32(&mut b, "one", 1);
    assert_eq!(
        infer(&mut b, "ArgMax", "argmax", &[x, one], Attrs::new()).unwrap(),
        known(DType::I64, &[8])
    );
    let i32_out = attrs([("output_type", DType::I32.into())]);
    let zero = scalar_i32(&mut b, "zero", 0);
    assert_eq!(
        infer(&mut b, "ArgMax", "argmax32", &[x, zero], i32_out).unwrap(),
        known(DType::I32, &[10])
    );
    let two = scalar_i32(&mut b, "two", 2);
    let msg = inference_error(
        infer(&mut b, "ArgMax", "far", &[x, two], Attrs::new()),
        "far",
    );
    assert!(msg.contains("out of range"), "{msg}");
    let vector = ints(&mut b, "vector", &[1]);
    let msg = inference_error(
        infer(&mut b, "ArgMax", "vector_dim", &[x, vector], Attrs::new()),
        "vector_dim",
    );
    assert!(msg.contains("scalar"), "{msg}");
}

#[test]
fn unary_math_keeps_the_input_fact() {
    let mut b = GraphBuilder::new();
    let x = placeholder(&mut b, "x", DType::F32, &[2, 5]);
    for op in ["Reciprocal", "Exp", "Log", "Abs", "Floor", "Cos"] {
        assert_eq!(
            infer(&mut b, op, op, &[x], Attrs::new()).unwrap(),
            known(DType::F32, &[2, 5])
        );
    }
}
