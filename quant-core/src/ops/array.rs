//! Sources and data-movement ops: Placeholder, Const, variables, Identity,
//! Reshape, ConcatV2, Pad, Squeeze, space/batch reshuffles, NoOp; shape
//! queries (Shape, Size), Slice, BroadcastTo, ExpandDims, Tile, Fill,
//! ZerosLike/OnesLike, Cast and StopGradient.

use super::infer::{InferCtx, norm_axis};
use super::{Arity, OpSpec};
use crate::attr::{AttrKind, AttrValue};
use crate::dtype::DType;
use crate::graph::OutputFact;
use crate::shape::Shape;

fn shape_attr(ctx: &InferCtx<'_>, name: &str) -> Option<Shape> {
    match ctx.attr(name) {
        Some(AttrValue::Shape(s)) => s.clone(),
        _ => None,
    }
}

fn source(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    Ok(vec![OutputFact {
        dtype: ctx.type_attr("dtype"),
        shape: shape_attr(ctx, "shape"),
    }])
}

fn konst(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let value = match ctx.attr("value") {
        Some(AttrValue::Tensor(t)) => t,
        _ => return Err("attribute 'value' must be a tensor".into()),
    };
    if let Some(declared) = ctx.type_attr("dtype").filter(|d| *d != value.dtype()) {
        return Err(format!(
            "attribute 'dtype' is {declared} but the value is {}",
            value.dtype()
        ));
    }
    Ok(vec![OutputFact::new(
        value.dtype(),
        Shape::known(value.shape()),
    )])
}

fn variable(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.type_attr("dtype");
    let shape = shape_attr(ctx, "shape");
    if let Some(AttrValue::Tensor(init)) = ctx.attr("initial_value") {
        if Some(init.dtype()) != dtype {
            return Err(format!(
                "initial value is {} but the variable is {}",
                init.dtype(),
                dtype.map_or("?", DType::name)
            ));
        }
        if let Some(s) = &shape
            && s.as_known().as_deref() != Some(init.shape())
        {
            return Err(format!(
                "initial value has shape {:?} but the variable has shape {s}",
                init.shape()
            ));
        }
    }
    Ok(vec![OutputFact { dtype, shape }])
}

fn reshape(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let Some(target) = ctx.const_ints(1)? else {
        let rank = ctx.shape(1)?.and_then(|s| s.dim(0));
        return Ok(vec![OutputFact {
            dtype,
            shape: rank.map(|r| Shape(vec![None; r])),
        }]);
    };
    if target.iter().filter(|&&d| d == -1).count() > 1 || target.iter().any(|&d| d < -1) {
        return Err(format!("invalid target shape {target:?}"));
    }
    let known = target
        .iter()
        .filter(|&&d| d >= 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .ok_or_else(|| format!("target shape {target:?} is too large"))?;
    let total = ctx.shape(0)?.and_then(Shape::num_elements);
    let mut dims = Vec::with_capacity(target.len());
    for &d in &target {
        dims.push(if d >= 0 {
            Some(d as usize)
        } else {
            match total {
                Some(t) if known > 0 && t % known == 0 => Some(t / known),
                Some(t) if known > 0 => {
                    return Err(format!("cannot reshape {t} elements to {target:?}"));
                }
                _ => None,
            }
        });
    }
    let out = Shape(dims);
    if let (Some(t), Some(n)) = (total, out.num_elements())
        && t != n
    {
        return Err(format!("cannot reshape {t} elements to {target:?}"));
    }
    Ok(vec![OutputFact {
        dtype,
        shape: Some(out),
    }])
}

fn concat(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let n = ctx.num_inputs() - 1;
    let dtype = ctx.dtype0();
    let shapes: Vec<Option<&Shape>> = (0..n).map(|i| ctx.shape(i)).collect::<Result<_, _>>()?;
    let Some(rank) = shapes.iter().flatten().map(|s| s.rank()).next() else {
        return Ok(vec![OutputFact { dtype, shape: None }]);
    };
    let Some(axis) = ctx.const_ints(n)?.and_then(|v| v.first().copied()) else {
        return Ok(vec![OutputFact {
            dtype,
            shape: Some(Shape(vec![None; rank])),
        }]);
    };
    let axis = norm_axis(axis, rank)?;
    let mut dims = vec![None; rank];
    let mut along = Some(0usize);
    for (i, s) in shapes.iter().enumerate() {
        let Some(s) = s else {
            along = None;
            continue;
        };
        if s.rank() != rank {
            return Err(format!(
                "input {i} has rank {} where input 0 has rank {rank}",
                s.rank()
            ));
        }
        for (d, slot) in dims.iter_mut().enumerate() {
            if d == axis {
                continue;
            }
            match (*slot, s.0[d]) {
                (Some(a), Some(b)) if a != b => {
                    return Err(format!(
                        "input {i} has size {b} in dimension {d}, expected {a}"
                    ));
                }
                (None, b) => *slot = b,
                _ => {}
            }
        }
        along = along.and_then(|a| s.0[axis].and_then(|b| a.checked_add(b)));
    }
    dims[axis] = along;
    Ok(vec![OutputFact {
        dtype,
        shape: Some(Shape(dims)),
    }])
}

fn pad(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let (Some(shape), Some(p)) = (ctx.shape(0)?, ctx.const_ints(1)?) else {
        return Ok(vec![OutputFact {
            dtype,
            shape: ctx.shape(0)?.map(|s| Shape(vec![None; s.rank()])),
        }]);
    };
    if p.len() != 2 * shape.rank() || p.iter().any(|&v| v < 0) {
        return Err(format!("paddings {p:?} do not fit rank {}", shape.rank()));
    }
    let dims = shape
        .0
        .iter()
        .enumerate()
        .map(|(i, d)| d.and_then(|d| d.checked_add(p[2 * i].checked_add(p[2 * i + 1])? as usize)))
        .collect();
    Ok(vec![OutputFact {
        dtype,
        shape: Some(Shape(dims)),
    }])
}

fn squeeze(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let Some(shape) = ctx.shape(0)? else {
        return Ok(vec![OutputFact { dtype, shape: None }]);
    };
    let axes: Vec<usize> = ctx
        .ints("squeeze_dims")?
        .iter()
        .map(|&a| norm_axis(a, shape.rank()))
        .collect::<Result<_, _>>()?;
    let mut dims = Vec::new();
    for (i, d) in shape.0.iter().enumerate() {
        let listed = axes.contains(&i);
        match d {
            Some(1) if axes.is_empty() || listed => {}
            Some(n) if listed => return Err(format!("cannot squeeze dimension {i} of size {n}")),
            None if axes.is_empty() => return Ok(vec![OutputFact { dtype, shape: None }]),
            None if listed => {}
            other => dims.push(*other),
        }
    }
    Ok(vec![OutputFact {
        dtype,
        shape: Some(Shape(dims)),
    }])
}

/// `SpaceToBatchND` (`to_batch`) and `BatchToSpaceND`: the reshuffled
/// shape when the block shape and the paddings (crops) are constants, else
/// only the input's rank.
fn space_batch(ctx: &InferCtx<'_>, to_batch: bool) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let Some(input) = ctx.shape(0)? else {
        return Ok(vec![OutputFact { dtype, shape: None }]);
    };
    let (Some(block), Some(margins)) = (ctx.const_ints(1)?, ctx.const_ints(2)?) else {
        return Ok(vec![OutputFact {
            dtype,
            shape: Some(Shape(vec![None; input.rank()])),
        }]);
    };
    let what = if to_batch { "paddings" } else { "crops" };
    let m = block.len();
    if m == 0
        || m >= input.rank()
        || margins.len() != 2 * m
        || block.iter().any(|&b| b < 1)
        || margins.iter().any(|&p| p < 0)
    {
        return Err(format!(
            "block_shape {block:?} and {what} {margins:?} do not fit a rank-{} input",
            input.rank()
        ));
    }
    let as_usize = |v: i64| usize::try_from(v).map_err(|_| format!("{v} is out of range"));
    let offsets = block.iter().try_fold(1usize, |acc, &b| {
        acc.checked_mul(as_usize(b)?)
            .ok_or_else(|| format!("block_shape {block:?} overflows"))
    })?;
    let mut dims = input.dims().to_vec();
    dims[0] = match dims[0] {
        Some(n) if to_batch => Some(n * offsets),
        Some(n) if n.is_multiple_of(offsets) => Some(n / offsets),
        Some(n) => {
            return Err(format!(
                "batch {n} is not a multiple of the block size product {offsets}"
            ));
        }
        None => None,
    };
    for k in 0..m {
        let (b, lo, hi) = (
            as_usize(block[k])?,
            as_usize(margins[2 * k])?,
            as_usize(margins[2 * k + 1])?,
        );
        let Some(d) = dims[k + 1] else { continue };
        dims[k + 1] = Some(if to_batch {
            let padded = d + lo + hi;
            if !padded.is_multiple_of(b) {
                return Err(format!(
                    "padded spatial dim {k} ({padded}) is not a multiple of block size {b}"
                ));
            }
            padded / b
        } else {
            (d * b)
                .checked_sub(lo + hi)
                .ok_or_else(|| format!("crops exceed spatial dim {k} ({})", d * b))?
        });
    }
    Ok(vec![OutputFact {
        dtype,
        shape: Some(Shape(dims)),
    }])
}

/// The `out_type` (or `output_type`) attribute of a shape- or index-valued
/// op, which TensorFlow restricts to int32 and int64.
pub(super) fn index_type(ctx: &InferCtx<'_>, name: &str) -> Result<DType, String> {
    match ctx.type_attr(name) {
        Some(t @ (DType::I32 | DType::I64)) => Ok(t),
        Some(t) => Err(format!("attribute '{name}' must be i32 or i64, found {t}")),
        None => Err(format!("attribute '{name}' must be a dtype")),
    }
}

fn shape_op(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let rank = ctx.shape(0)?.map(Shape::rank);
    Ok(vec![OutputFact {
        dtype: Some(index_type(ctx, "out_type")?),
        shape: Some(Shape(vec![rank])),
    }])
}

fn size_op(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    Ok(vec![OutputFact::new(
        index_type(ctx, "out_type")?,
        Shape::scalar(),
    )])
}

/// The dims of an output whose shape is the value of the 1-D integer input
/// `i`: known when the input is constant, else only its rank when the
/// input's length is known.
fn shape_input(ctx: &InferCtx<'_>, i: usize, what: &str) -> Result<Option<Shape>, String> {
    if let Some(s) = ctx.shape(i)?
        && s.rank() > 1
    {
        return Err(format!(
            "{what} (input {i}) must be a vector, found shape {s}"
        ));
    }
    match ctx.const_ints(i)? {
        Some(dims) => dims
            .iter()
            .map(|&d| {
                usize::try_from(d)
                    .map(Some)
                    .map_err(|_| format!("{what} {dims:?} has a negative dimension"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|d| Some(Shape(d))),
        None => Ok(ctx
            .shape(i)?
            .and_then(|s| s.dim(0))
            .map(|r| Shape(vec![None; r]))),
    }
}

fn slice(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let input = ctx.shape(0)?;
    let (begin, size) = (ctx.const_ints(1)?, ctx.const_ints(2)?);
    let rank = input
        .map(Shape::rank)
        .or(begin.as_ref().map(Vec::len))
        .or(size.as_ref().map(Vec::len))
        .or(ctx.shape(1)?.and_then(|s| s.dim(0)));
    for (what, v) in [("begin", &begin), ("size", &size)] {
        if let (Some(v), Some(r)) = (v, rank)
            && v.len() != r
        {
            return Err(format!("{what} {v:?} has {} values for rank {r}", v.len()));
        }
    }
    let Some(rank) = rank else {
        return Ok(vec![OutputFact { dtype, shape: None }]);
    };
    let mut dims = vec![None; rank];
    for (d, slot) in dims.iter_mut().enumerate() {
        let b = begin.as_ref().map(|b| b[d]);
        let s = size.as_ref().map(|s| s[d]);
        let n = input.and_then(|x| x.dim(d));
        if b.is_some_and(|b| b < 0) || s.is_some_and(|s| s < -1) {
            return Err(format!(
                "begin {begin:?} and size {size:?} must be non-negative (size -1 means the rest)"
            ));
        }
        *slot = match (b, s, n) {
            (Some(b), Some(-1), Some(n)) => {
                if b as u64 > n as u64 {
                    return Err(format!(
                        "dimension {d}: begin {b} is out of range for size {n}"
                    ));
                }
                Some(n - b as usize)
            }
            (b, Some(s), n) if s >= 0 => {
                if let (Some(b), Some(n)) = (b, n)
                    && (b as u64).saturating_add(s as u64) > n as u64
                {
                    return Err(format!(
                        "dimension {d}: begin {b} + size {s} is out of range for size {n}"
                    ));
                }
                Some(s as usize)
            }
            _ => None,
        };
    }
    Ok(vec![OutputFact {
        dtype,
        shape: Some(Shape(dims)),
    }])
}

fn broadcast_to(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let target = shape_input(ctx, 1, "shape")?;
    if let (Some(x), Some(t)) = (ctx.shape(0)?, &target) {
        if x.rank() > t.rank() {
            return Err(format!("cannot broadcast {x} to the lower rank {t}"));
        }
        let offset = t.rank() - x.rank();
        for (i, d) in x.0.iter().enumerate() {
            if let (Some(a), Some(b)) = (*d, t.0[i + offset])
                && a != b
                && a != 1
            {
                return Err(format!("cannot broadcast {x} to {t}"));
            }
        }
    }
    Ok(vec![OutputFact {
        dtype: ctx.dtype0(),
        shape: target,
    }])
}

fn fill(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    if let Some(v) = ctx.shape(1)?
        && v.rank() != 0
    {
        return Err(format!("value must be a scalar, found shape {v}"));
    }
    Ok(vec![OutputFact {
        dtype: ctx.dtype(1)?,
        shape: shape_input(ctx, 0, "dims")?,
    }])
}

fn cast(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dst = ctx
        .type_attr("DstT")
        .ok_or("attribute 'DstT' must be a dtype")?;
    if let (Some(src), Some(x)) = (ctx.type_attr("SrcT"), ctx.dtype(0)?)
        && src != x
    {
        return Err(format!("attribute 'SrcT' is {src} but the input is {x}"));
    }
    for t in [Some(dst), ctx.dtype(0)?].into_iter().flatten() {
        if t.size_of().is_none() {
            return Err(format!("cannot cast to or from {t}"));
        }
    }
    Ok(vec![OutputFact {
        dtype: Some(dst),
        shape: ctx.shape(0)?.cloned(),
    }])
}

/// A scalar or one-element axis input, if constant.
fn const_axis(ctx: &InferCtx<'_>, i: usize, what: &str) -> Result<Option<i64>, String> {
    match ctx.const_ints(i)? {
        Some(v) if v.len() == 1 => Ok(Some(v[0])),
        Some(v) => Err(format!("{what} must hold one value, found {v:?}")),
        None => Ok(None),
    }
}

fn expand_dims(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let Some(x) = ctx.shape(0)? else {
        return Ok(vec![OutputFact { dtype, shape: None }]);
    };
    let Some(axis) = const_axis(ctx, 1, "dim")? else {
        return Ok(vec![OutputFact {
            dtype,
            shape: Some(Shape(vec![None; x.rank() + 1])),
        }]);
    };
    let axis = norm_axis(axis, x.rank() + 1)?;
    let mut dims = x.0.clone();
    dims.insert(axis, Some(1));
    Ok(vec![OutputFact {
        dtype,
        shape: Some(Shape(dims)),
    }])
}

fn tile(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let Some(x) = ctx.shape(0)? else {
        return Ok(vec![OutputFact { dtype, shape: None }]);
    };
    let Some(m) = ctx.const_ints(1)? else {
        return Ok(vec![OutputFact {
            dtype,
            shape: Some(Shape(vec![None; x.rank()])),
        }]);
    };
    if m.len() != x.rank() || m.iter().any(|&v| v < 0) {
        return Err(format!(
            "multiples {m:?} must be {} non-negative values for input {x}",
            x.rank()
        ));
    }
    let dims =
        x.0.iter()
            .zip(&m)
            .map(|(d, &k)| d.and_then(|d| d.checked_mul(k as usize)))
            .collect();
    Ok(vec![OutputFact {
        dtype,
        shape: Some(Shape(dims)),
    }])
}

pub(super) fn specs() -> Vec<OpSpec> {
    vec![
        OpSpec::new("Placeholder", Arity::Exact(0), 1, source)
            .required("dtype", AttrKind::Type)
            .optional("shape", AttrValue::Shape(None)),
        OpSpec::new("Const", Arity::Exact(0), 1, konst).required("value", AttrKind::Tensor),
        OpSpec::new("Variable", Arity::Exact(0), 1, variable)
            .required("dtype", AttrKind::Type)
            .required("shape", AttrKind::Shape)
            .required("initial_value", AttrKind::Tensor)
            .optional("trainable", true),
        OpSpec::new("VariableV2", Arity::Exact(0), 1, source)
            .required("dtype", AttrKind::Type)
            .required("shape", AttrKind::Shape),
        OpSpec::new("VarHandleOp", Arity::Exact(0), 1, |_| {
            Ok(vec![OutputFact::new(DType::Resource, Shape::scalar())])
        })
        .required("dtype", AttrKind::Type)
        .required("shape", AttrKind::Shape),
        OpSpec::new("ReadVariableOp", Arity::Exact(1), 1, |ctx| {
            Ok(vec![OutputFact {
                dtype: ctx.type_attr("dtype"),
                shape: None,
            }])
        })
        .required("dtype", AttrKind::Type),
        OpSpec::new("Identity", Arity::Exact(1), 1, |ctx| ctx.same_as_input0()),
        OpSpec::new("Reshape", Arity::Exact(2), 1, reshape),
        OpSpec::new("ConcatV2", Arity::AttrPlus("N", 1), 1, concat).required("N", AttrKind::Int),
        OpSpec::new("Pad", Arity::Exact(2), 1, pad),
        OpSpec::new("Squeeze", Arity::Exact(1), 1, squeeze)
            .optional("squeeze_dims", AttrValue::Ints(vec![])),
        OpSpec::new("BatchToSpaceND", Arity::Exact(3), 1, |ctx| {
            space_batch(ctx, false)
        }),
        OpSpec::new("SpaceToBatchND", Arity::Exact(3), 1, |ctx| {
            space_batch(ctx, true)
        }),
        OpSpec::new("NoOp", Arity::Exact(0), 0, |_| Ok(vec![])),
        OpSpec::new("Shape", Arity::Exact(1), 1, shape_op).optional("out_type", DType::I32),
        OpSpec::new("Size", Arity::Exact(1), 1, size_op).optional("out_type", DType::I32),
        OpSpec::new("Slice", Arity::Exact(3), 1, slice),
        OpSpec::new("BroadcastTo", Arity::Exact(2), 1, broadcast_to),
        OpSpec::new("ZerosLike", Arity::Exact(1), 1, |ctx| ctx.same_as_input0()),
        OpSpec::new("OnesLike", Arity::Exact(1), 1, |ctx| ctx.same_as_input0()),
        OpSpec::new("Fill", Arity::Exact(2), 1, fill),
        OpSpec::new("Cast", Arity::Exact(1), 1, cast)
            .required("DstT", AttrKind::Type)
            .optional("Truncate", false),
        OpSpec::new("StopGradient", Arity::Exact(1), 1, |ctx| {
            ctx.same_as_input0()
        }),
        OpSpec::new("ExpandDims", Arity::Exact(2), 1, expand_dims),
        OpSpec::new("Tile", Arity::Exact(2), 1, tile),
    ]
}
