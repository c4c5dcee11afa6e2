//! Neural-network layers: convolutions, pooling, fused batch norm.

use super::infer::{InferCtx, window_out};
use super::{Arity, OpSpec};
use crate::attr::{AttrKind, AttrValue};
use crate::dtype::DType;
use crate::graph::OutputFact;
use crate::shape::Shape;

/// Spatial output dims (H, W) of an NHWC windowed op.
fn spatial(
    ctx: &InferCtx<'_>,
    x: &Shape,
    kernel: (Option<usize>, Option<usize>),
    strides: &[i64],
    dilations: &[i64],
) -> Result<(Option<usize>, Option<usize>), String> {
    if strides.len() != 4 || dilations.len() != 4 {
        return Err(format!(
            "strides {strides:?} and dilations {dilations:?} must have 4 entries"
        ));
    }
    let padding = ctx.str("padding")?;
    let explicit = match padding {
        "EXPLICIT" => {
            let p = ctx.ints("explicit_paddings")?;
            if p.len() != 8 || p.iter().any(|&v| v < 0) {
                return Err(format!(
                    "explicit_paddings {p:?} must hold 8 non-negative values"
                ));
            }
            [
                (p[2] as usize, p[3] as usize),
                (p[4] as usize, p[5] as usize),
            ]
        }
        _ => [(0, 0), (0, 0)],
    };
    let pos = |v: i64| usize::try_from(v).map_err(|_| format!("negative stride or dilation {v}"));
    let h = window_out(
        x.dim(1),
        kernel.0,
        pos(strides[1])?,
        pos(dilations[1])?,
        padding,
        explicit[0],
    )?;
    let w = window_out(
        x.dim(2),
        kernel.1,
        pos(strides[2])?,
        pos(dilations[2])?,
        padding,
        explicit[1],
    )?;
    Ok((h, w))
}

fn nhwc_only(ctx: &InferCtx<'_>) -> Result<bool, String> {
    Ok(ctx.str("data_format")? == "NHWC")
}

fn conv(ctx: &InferCtx<'_>, depthwise: bool) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let (Some(x), Some(f)) = (ctx.shape(0)?, ctx.shape(1)?) else {
        return Ok(vec![OutputFact {
            dtype,
            shape: Some(Shape(vec![None; 4])),
        }]);
    };
    if x.rank() != 4 || f.rank() != 4 {
        return Err(format!("needs rank-4 input and filter, found {x} and {f}"));
    }
    if !nhwc_only(ctx)? {
        return Ok(vec![OutputFact {
            dtype,
            shape: Some(Shape(vec![None; 4])),
        }]);
    }
    if let (Some(c), Some(fc)) = (x.dim(3), f.dim(2)) {
        let fits = if depthwise {
            c == fc
        } else {
            fc > 0 && c % fc == 0
        };
        if !fits {
            return Err(format!(
                "input {x} has {c} channels but the filter {f} expects {fc}"
            ));
        }
    }
    let (h, w) = spatial(
        ctx,
        x,
        (f.dim(0), f.dim(1)),
        ctx.ints("strides")?,
        ctx.ints("dilations")?,
    )?;
    let out_c = if depthwise {
        f.dim(2).zip(f.dim(3)).and_then(|(c, m)| c.checked_mul(m))
    } else {
        f.dim(3)
    };
    Ok(vec![OutputFact {
        dtype,
        shape: Some(Shape(vec![x.dim(0), h, w, out_c])),
    }])
}

fn pool(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let Some(x) = ctx.shape(0)? else {
        return Ok(vec![OutputFact {
            dtype,
            shape: Some(Shape(vec![None; 4])),
        }]);
    };
    if x.rank() != 4 {
        return Err(format!("needs a rank-4 input, found {x}"));
    }
    if !nhwc_only(ctx)? {
        return Ok(vec![OutputFact {
            dtype,
            shape: Some(Shape(vec![None; 4])),
        }]);
    }
    let k = ctx.ints("ksize")?;
    if k.len() != 4 || k.iter().any(|&v| v <= 0) {
        return Err(format!("ksize {k:?} must hold 4 positive values"));
    }
    let (h, w) = spatial(
        ctx,
        x,
        (Some(k[1] as usize), Some(k[2] as usize)),
        ctx.ints("strides")?,
        &[1, 1, 1, 1],
    )?;
    Ok(vec![OutputFact {
        dtype,
        shape: Some(Shape(vec![x.dim(0), h, w, x.dim(3)])),
    }])
}

fn fused_batch_norm(ctx: &InferCtx<'_>, outputs: usize) -> Result<Vec<OutputFact>, String> {
    let dtype = ctx.dtype0();
    let x = ctx.shape(0)?;
    let channels = match x {
        Some(s) if s.rank() != 4 => return Err(format!("needs a rank-4 input, found {s}")),
        Some(s) if nhwc_only(ctx)? => s.dim(3),
        Some(s) => s.dim(1),
        None => None,
    };
    for (i, name) in [(1, "scale"), (2, "offset"), (3, "mean"), (4, "variance")] {
        if let Some(p) = ctx.shape(i)? {
            let ok = p.rank() == 1
                && (channels.is_none()
                    || p.dim(0).is_none()
                    || p.dim(0) == channels
                    || (i >= 3 && p.dim(0) == Some(0)));
            if !ok {
                return Err(format!(
                    "{name} has shape {p}, expected [{}]",
                    channels.map_or("?".to_string(), |c| c.to_string())
                ));
            }
        }
    }
    let stat = OutputFact {
        dtype: Some(DType::F32),
        shape: Some(Shape(vec![channels])),
    };
    let mut facts = vec![OutputFact {
        dtype,
        shape: x.cloned(),
    }];
    facts.extend(std::iter::repeat_n(stat, outputs - 1));
    Ok(facts)
}

fn conv_spec(name: &str, depthwise: bool) -> OpSpec {
    OpSpec::new(name, Arity::Exact(2), 1, move |ctx| conv(ctx, depthwise))
        .required("strides", AttrKind::Ints)
        .required("padding", AttrKind::Str)
        .optional("dilations", AttrValue::Ints(vec![1, 1, 1, 1]))
        .optional("data_format", "NHWC")
        .optional("explicit_paddings", AttrValue::Ints(vec![]))
}

fn pool_spec(name: &str) -> OpSpec {
    OpSpec::new(name, Arity::Exact(1), 1, pool)
        .required("ksize", AttrKind::Ints)
        .required("strides", AttrKind::Ints)
        .required("padding", AttrKind::Str)
        .optional("data_format", "NHWC")
}

fn batch_norm_spec(name: &str, outputs: usize) -> OpSpec {
    OpSpec::new(name, Arity::Exact(5), outputs, move |ctx| {
        fused_batch_norm(ctx, outputs)
    })
    .optional("epsilon", 0.0001f32)
    .optional("is_training", true)
    .optional("data_format", "NHWC")
    .optional("exponential_avg_factor", 1.0f32)
}

pub(super) fn specs() -> Vec<OpSpec> {
    vec![
        conv_spec("Conv2D", false),
        conv_spec("DepthwiseConv2dNative", true),
        pool_spec("MaxPool"),
        pool_spec("AvgPool"),
        batch_norm_spec("FusedBatchNorm", 5),
        batch_norm_spec("FusedBatchNormV3", 6),
    ]
}
