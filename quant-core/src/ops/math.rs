//! Arithmetic: broadcasting binary ops, elementwise unary ops, MatMul,
//! BiasAdd and reductions; comparisons, logical ops, Select/SelectV2 and
//! ArgMax.

use super::infer::{InferCtx, broadcast, norm_axis};
use super::{Arity, OpSpec};
use crate::attr::AttrValue;
use crate::dtype::DType;
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

/// Broadcasting comparisons: like [`binary`], with bool outputs. `Equal`
/// and `NotEqual` with `incompatible_shape_error=false` give a scalar for
/// shapes that do not broadcast.
fn compare(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    if let (Some(x), Some(y)) = (a.dtype, b.dtype)
        && x != y
    {
        return Err(format!("inputs have different dtypes ({x} and {y})"));
    }
    let tolerant = !ctx.bool("incompatible_shape_error").unwrap_or(true);
    let shape = match (&a.shape, &b.shape) {
        (Some(x), Some(y)) => match broadcast(x, y) {
            // Unknown dims might not broadcast, which would make a scalar.
            Ok(s) if tolerant && s.as_known().is_none() => None,
            Ok(s) => Some(s),
            Err(_) if tolerant => Some(Shape::scalar()),
            Err(e) => return Err(e),
        },
        _ => None,
    };
    Ok(vec![OutputFact {
        dtype: Some(DType::Bool),
        shape,
    }])
}

fn expect_bool(ctx: &InferCtx<'_>, i: usize, what: &str) -> Result<(), String> {
    match ctx.dtype(i)? {
        Some(t) if t != DType::Bool => Err(format!("{what} (input {i}) must be bool, found {t}")),
        _ => Ok(()),
    }
}

fn logical(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    for i in 0..ctx.num_inputs() {
        expect_bool(ctx, i, "operand")?;
    }
    let shape = if ctx.num_inputs() == 2 {
        binary(ctx)?.into_iter().next().and_then(|f| f.shape)
    } else {
        ctx.shape(0)?.cloned()
    };
    Ok(vec![OutputFact {
        dtype: Some(DType::Bool),
        shape,
    }])
}

/// The dtype shared by `t` and `e` (inputs 1 and 2) of a select.
fn select_dtype(ctx: &InferCtx<'_>) -> Result<Option<DType>, String> {
    expect_bool(ctx, 0, "condition")?;
    let (t, e) = (ctx.dtype(1)?, ctx.dtype(2)?);
    if let (Some(a), Some(b)) = (t, e)
        && a != b
    {
        return Err(format!("t and e have different dtypes ({a} and {b})"));
    }
    Ok(t.or(e))
}

/// TensorFlow 1's `Select`: `t` and `e` have one shape; the condition has
/// that shape too, or is a vector over its first dimension, or a scalar.
fn select(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = select_dtype(ctx)?;
    let (c, t, e) = (ctx.shape(0)?, ctx.shape(1)?, ctx.shape(2)?);
    let shape = match (t, e) {
        (Some(t), Some(e)) => {
            if t.rank() != e.rank() {
                return Err(format!("t {t} and e {e} must have the same shape"));
            }
            let mut dims = Vec::with_capacity(t.rank());
            for (a, b) in t.0.iter().zip(&e.0) {
                match (a, b) {
                    (Some(x), Some(y)) if x != y => {
                        return Err(format!("t {t} and e {e} must have the same shape"));
                    }
                    _ => dims.push(a.or(*b)),
                }
            }
            Some(Shape(dims))
        }
        (s, None) | (None, s) => s.cloned(),
    };
    if let (Some(c), Some(s)) = (c, &shape) {
        let fits = c.rank() == 0
            || (c.rank() == s.rank()
                && c.0
                    .iter()
                    .zip(&s.0)
                    .all(|(a, b)| a.is_none() || b.is_none() || a == b))
            || (c.rank() == 1
                && s.rank() > 1
                && (c.0[0].is_none() || s.0[0].is_none() || c.0[0] == s.0[0]));
        if !fits {
            return Err(format!(
                "condition {c} must be a scalar, have the shape {s} of t and e, or be a vector over their first dimension"
            ));
        }
    }
    Ok(vec![OutputFact { dtype, shape }])
}

/// `SelectV2`: the condition, `t` and `e` broadcast together.
fn select_v2(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = select_dtype(ctx)?;
    let mut shape = ctx.shape(0)?.cloned();
    for i in 1..3 {
        shape = match (shape, ctx.shape(i)?) {
            (Some(a), Some(b)) => Some(broadcast(&a, b)?),
            _ => None,
        };
    }
    Ok(vec![OutputFact { dtype, shape }])
}

fn arg_max(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = Some(super::array::index_type(ctx, "output_type")?);
    let Some(x) = ctx.shape(0)? else {
        return Ok(vec![OutputFact { dtype, shape: None }]);
    };
    if x.rank() == 0 {
        return Err("the input must have rank 1 or more, found a scalar".into());
    }
    if let Some(d) = ctx.shape(1)?
        && d.rank() != 0
    {
        return Err(format!("dimension must be a scalar, found shape {d}"));
    }
    let axis = match ctx.const_ints(1)? {
        Some(v) if v.len() == 1 => norm_axis(v[0], x.rank())?,
        Some(v) => return Err(format!("dimension must hold one value, found {v:?}")),
        None => {
            return Ok(vec![OutputFact {
                dtype,
                shape: Some(Shape(vec![None; x.rank() - 1])),
            }]);
        }
    };
    if x.dim(axis) == Some(0) {
        return Err(format!(
            "cannot take the argmax over the empty dimension {axis} of {x}"
        ));
    }
    let mut dims = x.0.clone();
    dims.remove(axis);
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
        "Rsqrt",
        "Sqrt",
        "Relu",
        "Relu6",
        "Sigmoid",
        "Tanh",
        "Neg",
        "Square",
        "Softmax",
        "Reciprocal",
        "Exp",
        "Log",
        "Abs",
        "Floor",
        "Cos",
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
    for name in ["Greater", "GreaterEqual", "Less", "LessEqual"] {
        specs.push(OpSpec::new(name, Arity::Exact(2), 1, compare));
    }
    for name in ["Equal", "NotEqual"] {
        specs.push(
            OpSpec::new(name, Arity::Exact(2), 1, compare)
                .optional("incompatible_shape_error", true),
        );
    }
    specs.push(OpSpec::new("LogicalAnd", Arity::Exact(2), 1, logical));
    specs.push(OpSpec::new("LogicalNot", Arity::Exact(1), 1, logical));
    specs.push(OpSpec::new("Select", Arity::Exact(3), 1, select));
    specs.push(OpSpec::new("SelectV2", Arity::Exact(3), 1, select_v2));
    specs.push(
        OpSpec::new("ArgMax", Arity::Exact(2), 1, arg_max).optional("output_type", DType::I64),
    );
    specs
}
