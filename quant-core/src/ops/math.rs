//! Arithmetic: broadcasting binary ops, elementwise unary ops, MatMul,
//! BiasAdd and reductions.

use super::infer::{InferCtx, broadcast, norm_axis};
use super::{Arity, OpSpec};
use crate::attr::AttrValue;
use crate::graph::OutputFact;
use crate::shape::Shape;

fn binary(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    if let (Some(x), Some(y)) = (a.dtype, b.dtype)
        && x != y
    {
        return Err(format!("inputs have different dtypes ({x} and {y})"));
    }
    let shape = match (&a.shape, &b.shape) {
        (Some(x), Some(y)) => Some(broadcast(x, y)?),
        _ => None,
    };
    Ok(vec![OutputFact {
        dtype: a.dtype.or(b.dtype),
        shape,
    }])
}

fn matmul(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let (Some(a), Some(b)) = (ctx.shape(0)?, ctx.shape(1)?) else {
        return Ok(vec![OutputFact {
            dtype,
            shape: Some(Shape(vec![None, None])),
        }]);
    };
    if a.rank() != 2 || b.rank() != 2 {
        return Err(format!("MatMul needs rank-2 inputs, found {a} and {b}"));
    }
    let (ta, tb) = (ctx.bool("transpose_a")?, ctx.bool("transpose_b")?);
    let (m, ka) = if ta {
        (a.0[1], a.0[0])
    } else {
        (a.0[0], a.0[1])
    };
    let (kb, n) = if tb {
        (b.0[1], b.0[0])
    } else {
        (b.0[0], b.0[1])
    };
    if let (Some(x), Some(y)) = (ka, kb)
        && x != y
    {
        return Err(format!(
            "inner dimensions differ: {a} times {b} (transpose_a={ta}, transpose_b={tb})"
        ));
    }
    Ok(vec![OutputFact {
        dtype,
        shape: Some(Shape(vec![m, n])),
    }])
}

fn bias_add(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let out = ctx.same_as_input0()?;
    let channels_last = ctx.str("data_format")? != "NCHW";
    if let (Some(x), Some(b)) = (ctx.shape(0)?, ctx.shape(1)?) {
        if b.rank() != 1 {
            return Err(format!("bias must be rank 1, found {b}"));
        }
        let channel = if channels_last {
            x.rank().checked_sub(1)
        } else {
            Some(1)
        };
        if let (Some(c), Some(n)) = (channel.and_then(|c| x.dim(c)), b.dim(0))
            && c != n
        {
            return Err(format!(
                "bias has {n} elements but the input {x} has {c} channels"
            ));
        }
    }
    Ok(out)
}

fn reduce(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let keep = ctx.bool("keep_dims")?;
    let Some(shape) = ctx.shape(0)? else {
        return Ok(vec![OutputFact { dtype, shape: None }]);
    };
    let Some(axes) = ctx.const_ints(1)? else {
        let shape = keep.then(|| Shape(vec![None; shape.rank()]));
        return Ok(vec![OutputFact { dtype, shape }]);
    };
    let axes: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, shape.rank()))
        .collect::<Result<_, _>>()?;
    let dims = shape
        .0
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match (axes.contains(&i), keep) {
            (true, true) => Some(Some(1)),
            (true, false) => None,
            (false, _) => Some(*d),
        })
        .collect();
    Ok(vec![OutputFact {
        dtype,
        shape: Some(Shape(dims)),
    }])
}

pub(super) fn specs() -> Vec<OpSpec> {
    let mut specs: Vec<OpSpec> = [
        "Add",
        "AddV2",
        "Sub",
        "Mul",
        "Maximum",
        "Minimum",
        "RealDiv",
        "SquaredDifference",
        "Pow",
    ]
    .into_iter()
    .map(|name| OpSpec::new(name, Arity::Exact(2), 1, binary))
    .collect();
    for name in [
        "Rsqrt", "Sqrt", "Relu", "Relu6", "Sigmoid", "Tanh", "Neg", "Square", "Softmax",
    ] {
        specs.push(OpSpec::new(name, Arity::Exact(1), 1, |ctx| {
            ctx.same_as_input0()
        }));
    }
    specs.push(
        OpSpec::new("MatMul", Arity::Exact(2), 1, matmul)
            .optional("transpose_a", false)
            .optional("transpose_b", false),
    );
    specs
        .push(OpSpec::new("BiasAdd", Arity::Exact(2), 1, bias_add).optional("data_format", "NHWC"));
    for name in ["Mean", "Sum", "Max", "Min"] {
        specs.push(
            OpSpec::new(name, Arity::Exact(2), 1, reduce)
                .optional("keep_dims", AttrValue::Bool(false)),
        );
    }
    specs
}
