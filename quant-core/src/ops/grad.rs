//! Backward ops (TensorFlow's gradient op types) and stateful variable
//! updates. The `gradients` rewrite appends these; the executor runs them
//! like any other op.

use super::infer::InferCtx;
use super::{Arity, OpSpec};
use crate::attr::{AttrKind, AttrValue};
use crate::dtype::DType;
use crate::graph::OutputFact;
use crate::shape::Shape;

/// Output shaped like input `i` (e.g. the input a gradient flows back to).
fn like(ctx: &InferCtx<'_>, i: usize) -> Result<OutputFact, String> {
    Ok(OutputFact {
        dtype: ctx.input(i)?.dtype,
        shape: ctx.shape(i)?.cloned(),
    })
}

/// Output whose shape is the value of a constant `int32` shape input.
fn shape_from(ctx: &InferCtx<'_>, i: usize, dtype_from: usize) -> Result<OutputFact, String> {
    let dtype = ctx.input(dtype_from)?.dtype;
    let shape = match ctx.const_ints(i)? {
        Some(dims) => Some(Shape(
            dims.iter().map(|&d| usize::try_from(d).ok()).collect(),
        )),
        None => ctx
            .shape(i)?
            .and_then(|s| s.dim(0))
            .map(|r| Shape(vec![None; r])),
    };
    Ok(OutputFact { dtype, shape })
}

fn conv_grad_spec(name: &str, shape_input: usize, like_input: usize) -> OpSpec {
    OpSpec::new(name, Arity::Exact(3), 1, move |ctx| {
        Ok(vec![shape_from(ctx, shape_input, like_input)?])
    })
    .required("strides", AttrKind::Ints)
    .required("padding", AttrKind::Str)
    .optional("dilations", AttrValue::Ints(vec![1, 1, 1, 1]))
    .optional("data_format", "NHWC")
    .optional("explicit_paddings", AttrValue::Ints(vec![]))
}

fn pool_grad_spec(
    name: &str,
    inputs: usize,
    infer: fn(&InferCtx<'_>) -> Result<Vec<OutputFact>, String>,
) -> OpSpec {
    OpSpec::new(name, Arity::Exact(inputs), 1, infer)
        .required("ksize", AttrKind::Ints)
        .required("strides", AttrKind::Ints)
        .required("padding", AttrKind::Str)
        .optional("data_format", "NHWC")
}

fn channels_of(ctx: &InferCtx<'_>, i: usize) -> Option<usize> {
    ctx.shape(i)
        .ok()
        .flatten()
        .and_then(|s| s.rank().checked_sub(1).and_then(|last| s.dim(last)))
}

fn bias_add_grad(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    Ok(vec![OutputFact {
        dtype: ctx.dtype0(),
        shape: Some(Shape(vec![channels_of(ctx, 0)])),
    }])
}

fn xent(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let logits = ctx.shape(0)?;
    let batch = logits.map(|s| Shape(vec![s.dim(0)]));
    Ok(vec![
        OutputFact {
            dtype: ctx.dtype0(),
            shape: batch,
        },
        like(ctx, 0)?,
    ])
}

fn batch_norm_grad(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    let c = OutputFact {
        dtype: Some(DType::F32),
        shape: ctx.shape(2)?.cloned(),
    };
    let empty = OutputFact {
        dtype: Some(DType::F32),
        shape: None,
    };
    Ok(vec![like(ctx, 1)?, c.clone(), c, empty.clone(), empty])
}

fn fake_quant_grad(ctx: &InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
    Ok(vec![like(ctx, 1)?, like(ctx, 2)?, like(ctx, 3)?])
}

fn fq_attrs(spec: OpSpec) -> OpSpec {
    spec.optional("num_bits", 8i64)
        .optional("narrow_range", false)
}

pub(super) fn specs() -> Vec<OpSpec> {
    let mut specs = vec![
        conv_grad_spec("Conv2DBackpropInput", 0, 1),
        conv_grad_spec("Conv2DBackpropFilter", 1, 0),
        conv_grad_spec("DepthwiseConv2dNativeBackpropInput", 0, 1),
        conv_grad_spec("DepthwiseConv2dNativeBackpropFilter", 1, 0),
        pool_grad_spec("MaxPoolGrad", 3, |ctx| Ok(vec![like(ctx, 0)?])),
        pool_grad_spec("AvgPoolGrad", 2, |ctx| Ok(vec![shape_from(ctx, 0, 1)?])),
        OpSpec::new("BiasAddGrad", Arity::Exact(1), 1, bias_add_grad)
            .optional("data_format", "NHWC"),
        OpSpec::new(
            "SparseSoftmaxCrossEntropyWithLogits",
            Arity::Exact(2),
            2,
            xent,
        ),
        OpSpec::new("SoftmaxCrossEntropyWithLogits", Arity::Exact(2), 2, xent),
        OpSpec::new("FusedBatchNormGradV3", Arity::Exact(6), 5, batch_norm_grad)
            .optional("epsilon", 0.0001f32)
            .optional("is_training", true)
            .optional("data_format", "NHWC"),
        fq_attrs(OpSpec::new(
            "FakeQuantWithMinMaxVarsGradient",
            Arity::Exact(4),
            3,
            fake_quant_grad,
        )),
        fq_attrs(OpSpec::new(
            "FakeQuantWithMinMaxVarsPerChannelGradient",
            Arity::Exact(4),
            3,
            fake_quant_grad,
        )),
        fq_attrs(OpSpec::new(
            "FakeQuantWithMinMaxArgsGradient",
            Arity::Exact(2),
            1,
            |ctx| Ok(vec![like(ctx, 1)?]),
        ))
        .optional("min", -6.0f32)
        .optional("max", 6.0f32),
    ];
    // Elementwise gradients: (y or x, dy) -> dx shaped like input 0.
    for name in [
        "ReluGrad",
        "Relu6Grad",
        "RsqrtGrad",
        "SqrtGrad",
        "SigmoidGrad",
        "TanhGrad",
    ] {
        specs.push(OpSpec::new(name, Arity::Exact(2), 1, |ctx| {
            Ok(vec![like(ctx, 0)?])
        }));
    }
    // Variable updates: input 0 is the variable, output the updated value.
    for name in ["Assign", "AssignAdd", "AssignSub"] {
        specs.push(OpSpec::new(name, Arity::Exact(2), 1, |ctx| {
            Ok(vec![like(ctx, 0)?])
        }));
    }
    specs
}
