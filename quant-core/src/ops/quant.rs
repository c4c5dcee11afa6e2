//! Fake-quantization ops (TensorFlow's `FakeQuantWithMinMax*`).

use super::infer::InferCtx;
use super::{Arity, OpSpec};
use crate::graph::OutputFact;

fn check_bits(ctx: &InferCtx<'_>) -> Result<(), String> {
    let bits = ctx.int("num_bits")?;
    if !(2..=16).contains(&bits) {
        return Err(format!(
            "num_bits must be between 2 and 16, inclusive; found {bits}"
        ));
    }
    Ok(())
}

fn per_tensor(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    check_bits(ctx)?;
    for i in 1..ctx.num_inputs() {
        if let Some(s) = ctx.shape(i)?
            && s.rank() != 0
        {
            return Err(format!("input {i} (min/max) must be a scalar, found {s}"));
        }
    }
    ctx.same_as_input0()
}

fn per_channel(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    check_bits(ctx)?;
    let channels = ctx
        .shape(0)?
        .and_then(|s| s.rank().checked_sub(1).map(|last| s.dim(last)));
    for i in [1, 2] {
        if let Some(s) = ctx.shape(i)? {
            let fits = s.rank() == 1
                && (channels.flatten().is_none()
                    || s.dim(0).is_none()
                    || s.dim(0) == channels.flatten());
            if !fits {
                return Err(format!(
                    "input {i} (min/max) has shape {s}; expected one value per channel of the last dimension"
                ));
            }
        }
    }
    ctx.same_as_input0()
}

fn args(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    check_bits(ctx)?;
    let (min, max) = match (ctx.attr("min"), ctx.attr("max")) {
        (Some(crate::AttrValue::Float(a)), Some(crate::AttrValue::Float(b))) => (*a, *b),
        _ => return Err("attributes min and max must be floats".into()),
    };
    if min >= max {
        return Err(format!(
            "min has to be smaller than max, found min={min} max={max}"
        ));
    }
    ctx.same_as_input0()
}

pub(super) fn specs() -> Vec<OpSpec> {
    vec![
        OpSpec::new("FakeQuantWithMinMaxVars", Arity::Exact(3), 1, per_tensor)
            .optional("num_bits", 8i64)
            .optional("narrow_range", false),
        OpSpec::new(
            "FakeQuantWithMinMaxVarsPerChannel",
            Arity::Exact(3),
            1,
            per_channel,
        )
        .optional("num_bits", 8i64)
        .optional("narrow_range", false),
        OpSpec::new("FakeQuantWithMinMaxArgs", Arity::Exact(1), 1, args)
            .optional("min", -6.0f32)
            .optional("max", 6.0f32)
            .optional("num_bits", 8i64)
            .optional("narrow_range", false),
    ]
}
