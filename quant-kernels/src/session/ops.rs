//! The kernel table: one adapter per op type, reading a node's attributes
//! and inputs and calling the pure kernels of [`crate::kernels`].

use crate::kernels::array;
use crate::kernels::compare::{self, Comparison};
use crate::kernels::optimizers;
use crate::kernels::space_to_batch;
use crate::kernels::window::{Padding, Window2d};
use crate::kernels::{
    batch_norm, conv, depthwise, elementwise as ew, fake_quant as fq, matmul, pool, reduce, softmax,
};
use ndarray::{Array4, ArrayD, ArrayView4, IxDyn};
use quant_core::{AttrValue, Graph, Node, OpRegistry, Tensor, TensorData};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// A value flowing along a wire (shared, so variable reads and `Identity` do not copy).
pub type Value = Arc<Tensor>;

/// A kernel: computes a node's outputs from its inputs, or explains why not.
pub type Kernel = Arc<dyn Fn(&KernelCtx<'_>) -> Result<Vec<Value>, String> + Send + Sync>;

/// What a kernel sees of its node.
pub struct KernelCtx<'a> {
    graph: &'a Graph,
    node: &'a Node,
    inputs: &'a [Value],
    writes: RefCell<Vec<(String, Value)>>,
}

impl<'a> KernelCtx<'a> {
    pub(super) fn new(graph: &'a Graph, node: &'a Node, inputs: &'a [Value]) -> KernelCtx<'a> {
        KernelCtx {
            graph,
            node,
            inputs,
            writes: RefCell::new(Vec::new()),
        }
    }

    pub(super) fn into_writes(self) -> Vec<(String, Value)> {
        self.writes.into_inner()
    }

    /// The node being executed.
    pub fn node(&self) -> &Node {
        self.node
    }

    /// Input `i`.
    pub fn input(&self, i: usize) -> Result<&Tensor, String> {
        self.inputs
            .get(i)
            .map(|v| &**v)
            .ok_or_else(|| format!("missing input {i}"))
    }

    /// Input `i` as f32 elements.
    pub fn f32(&self, i: usize) -> Result<&ArrayD<f32>, String> {
        self.input(i)?
            .array::<f32>()
            .map_err(|e| format!("input {i}: {e}"))
    }

    /// Input `i` as integers (shapes, axes, labels).
    pub fn ints(&self, i: usize) -> Result<Vec<i64>, String> {
        self.input(i)?
            .to_i64_vec()
            .map_err(|e| format!("input {i}: {e}"))
    }

    /// Input `i` as a rank-4 f32 view.
    pub fn f32_4d(&self, i: usize) -> Result<ArrayView4<'_, f32>, String> {
        let a = self.f32(i)?;
        a.view()
            .into_dimensionality()
            .map_err(|_| format!("input {i} must be rank 4, found shape {:?}", a.shape()))
    }

    /// Attribute `name`, or the op's declared default.
    pub fn attr(&self, name: &str) -> Option<&AttrValue> {
        self.node.attr(name).or_else(|| {
            OpRegistry::builtin()
                .get(self.node.op())
                .and_then(|s| s.attr(name))
                .and_then(|a| a.default.as_ref())
        })
    }

    fn attr_or<T>(
        &self,
        name: &str,
        kind: &str,
        get: impl Fn(&AttrValue) -> Option<T>,
    ) -> Result<T, String> {
        let v = self
            .attr(name)
            .ok_or_else(|| format!("attribute '{name}' is missing"))?;
        get(v).ok_or_else(|| format!("attribute '{name}' should be {kind}"))
    }

    /// Integer attribute.
    pub fn attr_int(&self, name: &str) -> Result<i64, String> {
        self.attr_or(name, "int", |v| {
            if let AttrValue::Int(i) = v {
                Some(*i)
            } else {
                None
            }
        })
    }

    /// Float attribute.
    pub fn attr_float(&self, name: &str) -> Result<f32, String> {
        self.attr_or(name, "float", |v| {
            if let AttrValue::Float(f) = v {
                Some(*f)
            } else {
                None
            }
        })
    }

    /// Boolean attribute.
    pub fn attr_bool(&self, name: &str) -> Result<bool, String> {
        self.attr_or(name, "bool", |v| {
            if let AttrValue::Bool(b) = v {
                Some(*b)
            } else {
                None
            }
        })
    }

    /// String attribute.
    pub fn attr_str(&self, name: &str) -> Result<String, String> {
        self.attr_or(name, "str", |v| {
            if let AttrValue::Str(s) = v {
                Some(s.clone())
            } else {
                None
            }
        })
    }

    /// Integer-list attribute.
    pub fn attr_ints(&self, name: &str) -> Result<Vec<i64>, String> {
        self.attr_or(name, "ints", |v| {
            if let AttrValue::Ints(l) = v {
                Some(l.clone())
            } else {
                None
            }
        })
    }

    /// Dtype attribute.
    pub fn attr_type(&self, name: &str) -> Result<quant_core::DType, String> {
        self.attr_or(name, "type", |v| {
            if let AttrValue::Type(t) = v {
                Some(*t)
            } else {
                None
            }
        })
    }

    /// The variable that input `i` reads (for assignment ops).
    pub fn variable_input(&self, i: usize) -> Result<&str, String> {
        let outlet = self
            .node
            .inputs()
            .get(i)
            .ok_or_else(|| format!("missing input {i}"))?;
        let producer = self.graph.node(outlet.node);
        if !matches!(producer.op(), "Variable" | "VariableV2") {
            return Err(format!(
                "input {i} must be a variable, found {} '{}'",
                producer.op(),
                producer.name()
            ));
        }
        Ok(producer.name())
    }

    /// Records a variable update, applied when the node's level has finished.
    pub fn assign(&self, variable: &str, value: Value) {
        self.writes.borrow_mut().push((variable.to_string(), value));
    }

    /// The 2-D window of a conv or pool node (NHWC only).
    pub fn window(&self, kernel: [usize; 2], with_dilations: bool) -> Result<Window2d, String> {
        if self
            .attr_str("data_format")
            .unwrap_or_else(|_| "NHWC".into())
            != "NHWC"
        {
            return Err("only NHWC is supported".into());
        }
        let four = |name: &str| -> Result<[usize; 2], String> {
            let v = self.attr_ints(name)?;
            if v.len() != 4 || v.iter().any(|&x| x <= 0) {
                return Err(format!(
                    "attribute '{name}' must hold 4 positive values, found {v:?}"
                ));
            }
            Ok([v[1] as usize, v[2] as usize])
        };
        let padding = match self.attr_str("padding")?.as_str() {
            "SAME" => Padding::Same,
            "VALID" => Padding::Valid,
            "EXPLICIT" => {
                let p = self.attr_ints("explicit_paddings")?;
                if p.len() != 8 || p.iter().any(|&x| x < 0) {
                    return Err(format!(
                        "explicit_paddings must hold 8 non-negative values, found {p:?}"
                    ));
                }
                Padding::Explicit([
                    [p[2] as usize, p[3] as usize],
                    [p[4] as usize, p[5] as usize],
                ])
            }
            other => return Err(format!("unknown padding '{other}'")),
        };
        let dilations = if with_dilations {
            four("dilations")?
        } else {
            [1, 1]
        };
        Ok(Window2d {
            kernel,
            strides: four("strides")?,
            dilations,
            padding,
        })
    }
}

fn val(array: ArrayD<f32>) -> Value {
    Arc::new(Tensor::from_array(array))
}

/// One output of any dtype.
fn one(t: Tensor) -> Vec<Value> {
    vec![Arc::new(t)]
}

/// A broadcasting comparison; `Equal`/`NotEqual` honour `incompatible_shape_error`.
fn comparison(ctx: &KernelCtx<'_>, op: Comparison) -> Result<Vec<Value>, String> {
    let strict = ctx.attr_bool("incompatible_shape_error").unwrap_or(true);
    compare::compare(ctx.input(0)?, ctx.input(1)?, op, strict).map(one)
}

fn shape4(v: &[i64]) -> Result<[usize; 4], String> {
    if v.len() != 4 || v.iter().any(|&d| d < 0) {
        return Err(format!("expected a 4-D shape, found {v:?}"));
    }
    Ok([v[0] as usize, v[1] as usize, v[2] as usize, v[3] as usize])
}

/// A binary op over matching dtypes: f32 with `f`, i32/i64 with `i`.
fn binary(
    ctx: &KernelCtx<'_>,
    f: fn(f32, f32) -> f32,
    i: Option<fn(i64, i64) -> i64>,
) -> Result<Vec<Value>, String> {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    let out = match (a.data(), b.data(), i) {
        (TensorData::F32(x), TensorData::F32(y), _) => Tensor::from_array(ew::binary(x, y, f)?),
        (TensorData::I64(x), TensorData::I64(y), Some(g)) => {
            Tensor::from_array(ew::binary(x, y, g)?)
        }
        (TensorData::I32(x), TensorData::I32(y), Some(g)) => {
            Tensor::from_array(ew::binary(x, y, |p: i32, q: i32| {
                g(i64::from(p), i64::from(q)) as i32
            })?)
        }
        _ => {
            return Err(format!(
                "unsupported input dtypes {} and {}",
                a.dtype(),
                b.dtype()
            ));
        }
    };
    Ok(vec![Arc::new(out)])
}

fn unary(ctx: &KernelCtx<'_>, f: fn(f32) -> f32) -> Result<Vec<Value>, String> {
    Ok(vec![val(ew::unary(ctx.f32(0)?, f))])
}

/// A kernel of two same-shaped arrays (activation gradients).
type Grad2 = fn(&ArrayD<f32>, &ArrayD<f32>) -> Result<ArrayD<f32>, String>;

fn grad2(ctx: &KernelCtx<'_>, f: Grad2) -> Result<Vec<Value>, String> {
    Ok(vec![val(f(ctx.f32(0)?, ctx.f32(1)?)?)])
}

fn reduction(ctx: &KernelCtx<'_>, kind: reduce::Reduction) -> Result<Vec<Value>, String> {
    let x = ctx.f32(0)?;
    let axes = reduce::normalize_axes(&ctx.ints(1)?, x.ndim())?;
    Ok(vec![val(reduce::reduce(
        x,
        &axes,
        ctx.attr_bool("keep_dims")?,
        kind,
    ))])
}

fn reshape(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let x = ctx.input(0)?;
    let target = ctx.ints(1)?;
    let known: usize = target
        .iter()
        .filter(|&&d| d >= 0)
        .map(|&d| d as usize)
        .product();
    let dims: Vec<usize> = target
        .iter()
        .map(|&d| match d {
            -1 if known > 0 && x.len() % known == 0 => Ok(x.len() / known),
            d if d >= 0 => Ok(d as usize),
            _ => Err(format!("cannot reshape {:?} to {target:?}", x.shape())),
        })
        .collect::<Result<_, _>>()?;
    if dims.iter().product::<usize>() != x.len() {
        return Err(format!(
            "cannot reshape {:?} ({} elements) to {target:?}",
            x.shape(),
            x.len()
        ));
    }
    let bytes = x.to_le_bytes();
    Ok(vec![Arc::new(
        Tensor::from_le_bytes(x.dtype(), &dims, &bytes).map_err(|e| e.to_string())?,
    )])
}

/// `Squeeze`: drops the size-1 dims listed in `squeeze_dims` (every
/// size-1 dim if the list is empty).
fn squeeze(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let x = ctx.input(0)?;
    let shape = x.shape();
    let listed = reduce::normalize_axes(&ctx.attr_ints("squeeze_dims")?, shape.len())?;
    if let Some(&i) = listed.iter().find(|&&i| shape[i] != 1) {
        return Err(format!("cannot squeeze dim {i} of size {}", shape[i]));
    }
    let dims: Vec<usize> = (0..shape.len())
        .filter(|i| !(listed.contains(i) || listed.is_empty() && shape[*i] == 1))
        .map(|i| shape[i])
        .collect();
    let t = Tensor::from_le_bytes(x.dtype(), &dims, &x.to_le_bytes()).map_err(|e| e.to_string())?;
    Ok(one(t))
}

fn concat(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let n = ctx.node().inputs().len() - 1;
    let axis = *ctx.ints(n)?.first().ok_or("axis input is empty")?;
    let parts: Vec<&ArrayD<f32>> = (0..n).map(|i| ctx.f32(i)).collect::<Result<_, _>>()?;
    let rank = parts.first().map_or(0, |p| p.ndim());
    let axis = reduce::normalize_axes(&[axis], rank)?[0];
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    Ok(vec![val(
        ndarray::concatenate(ndarray::Axis(axis), &views).map_err(|e| e.to_string())?
    )])
}

fn pad(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let x = ctx.f32(0)?;
    let p = ctx.ints(1)?;
    if p.len() != 2 * x.ndim() || p.iter().any(|&v| v < 0) {
        return Err(format!("paddings {p:?} do not fit rank {}", x.ndim()));
    }
    let shape: Vec<usize> = x
        .shape()
        .iter()
        .enumerate()
        .map(|(i, &d)| d + (p[2 * i] + p[2 * i + 1]) as usize)
        .collect();
    let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
    let region: Vec<ndarray::SliceInfoElem> = x
        .shape()
        .iter()
        .enumerate()
        .map(|(i, &d)| ndarray::Slice::from(p[2 * i] as usize..p[2 * i] as usize + d).into())
        .collect();
    out.slice_mut(region.as_slice()).assign(x);
    Ok(vec![val(out)])
}

fn conv2d(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let (x, w) = (ctx.f32_4d(0)?, ctx.f32_4d(1)?);
    let window = ctx.window([w.shape()[0], w.shape()[1]], true)?;
    Ok(vec![val(conv::conv2d(x, w, &window)?.into_dyn())])
}

fn depthwise(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let (x, w) = (ctx.f32_4d(0)?, ctx.f32_4d(1)?);
    let window = ctx.window([w.shape()[0], w.shape()[1]], true)?;
    Ok(vec![val(
        depthwise::depthwise_conv2d(x, w, &window)?.into_dyn()
    )])
}

type BackpropInput = fn(
    [usize; 4],
    ArrayView4<'_, f32>,
    ArrayView4<'_, f32>,
    &Window2d,
) -> Result<Array4<f32>, String>;
type BackpropFilter = fn(
    ArrayView4<'_, f32>,
    [usize; 4],
    ArrayView4<'_, f32>,
    &Window2d,
) -> Result<Array4<f32>, String>;

fn backprop_input(ctx: &KernelCtx<'_>, f: BackpropInput) -> Result<Vec<Value>, String> {
    let (shape, w, dy) = (shape4(&ctx.ints(0)?)?, ctx.f32_4d(1)?, ctx.f32_4d(2)?);
    let window = ctx.window([w.shape()[0], w.shape()[1]], true)?;
    Ok(vec![val(f(shape, w, dy, &window)?.into_dyn())])
}

fn backprop_filter(ctx: &KernelCtx<'_>, f: BackpropFilter) -> Result<Vec<Value>, String> {
    let (x, shape, dy) = (ctx.f32_4d(0)?, shape4(&ctx.ints(1)?)?, ctx.f32_4d(2)?);
    let window = ctx.window([shape[0], shape[1]], true)?;
    Ok(vec![val(f(x, shape, dy, &window)?.into_dyn())])
}

fn pool_window(ctx: &KernelCtx<'_>) -> Result<Window2d, String> {
    let k = ctx.attr_ints("ksize")?;
    if k.len() != 4 || k[0] != 1 || k[3] != 1 || k.iter().any(|&v| v <= 0) {
        return Err(format!("ksize {k:?} must be [1, h, w, 1]"));
    }
    ctx.window([k[1] as usize, k[2] as usize], false)
}

fn matmul_kernel(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let two = |i: usize| -> Result<ndarray::ArrayView2<'_, f32>, String> {
        let a = ctx.f32(i)?;
        a.view()
            .into_dimensionality()
            .map_err(|_| format!("input {i} must be rank 2, found {:?}", a.shape()))
    };
    let (ta, tb) = (ctx.attr_bool("transpose_a")?, ctx.attr_bool("transpose_b")?);
    let (a, b) = (two(0)?, two(1)?);
    let inner = (
        if ta { a.nrows() } else { a.ncols() },
        if tb { b.ncols() } else { b.nrows() },
    );
    if inner.0 != inner.1 {
        return Err(format!(
            "inner dimensions differ: {:?} times {:?} (transpose_a={ta}, transpose_b={tb})",
            a.shape(),
            b.shape()
        ));
    }
    Ok(vec![val(matmul::matmul(a, b, ta, tb).into_dyn())])
}

fn bias_add(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let (x, b) = (ctx.f32(0)?, ctx.f32(1)?);
    if b.ndim() != 1 || x.shape().last() != Some(&b.len()) {
        return Err(format!(
            "bias {:?} does not match the last dimension of {:?}",
            b.shape(),
            x.shape()
        ));
    }
    Ok(vec![val(ew::binary(x, b, |p, q| p + q)?)])
}

fn bias_add_grad(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let g = ctx.f32(0)?;
    let axes: Vec<usize> = (0..g.ndim().saturating_sub(1)).collect();
    Ok(vec![val(reduce::reduce(
        g,
        &axes,
        false,
        reduce::Reduction::Sum,
    ))])
}

fn vec1(a: ndarray::Array1<f32>) -> Value {
    val(a.into_dyn())
}

fn fused_batch_norm(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let slice =
        |i: usize| -> Result<Vec<f32>, String> { Ok(ctx.f32(i)?.iter().copied().collect()) };
    let out = batch_norm::fused_batch_norm(
        ctx.f32(0)?,
        &slice(1)?,
        &slice(2)?,
        &slice(3)?,
        &slice(4)?,
        ctx.attr_float("epsilon")?,
        ctx.attr_float("exponential_avg_factor").unwrap_or(1.0),
        ctx.attr_bool("is_training")?,
    )?;
    let mut outputs = vec![
        val(out.y),
        vec1(out.batch_mean),
        vec1(out.batch_variance),
        vec1(out.saved_mean),
        vec1(out.saved_variance),
    ];
    if ctx.node().op() == "FusedBatchNormV3" {
        outputs.push(val(ArrayD::zeros(IxDyn(&[0]))));
    }
    Ok(outputs)
}

fn fused_batch_norm_grad(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let slice =
        |i: usize| -> Result<Vec<f32>, String> { Ok(ctx.f32(i)?.iter().copied().collect()) };
    let (dx, dscale, doffset) = batch_norm::fused_batch_norm_grad(
        ctx.f32(0)?,
        ctx.f32(1)?,
        &slice(2)?,
        &slice(3)?,
        &slice(4)?,
        ctx.attr_float("epsilon")?,
        ctx.attr_bool("is_training")?,
    )?;
    let empty = || val(ArrayD::zeros(IxDyn(&[0])));
    Ok(vec![val(dx), vec1(dscale), vec1(doffset), empty(), empty()])
}

fn fq_params(ctx: &KernelCtx<'_>) -> Result<fq::FakeQuantParams, String> {
    let bits = ctx.attr_int("num_bits")?;
    fq::FakeQuantParams::new(
        u32::try_from(bits)
            .map_err(|_| format!("num_bits must be between 2 and 16, inclusive; found {bits}"))?,
        ctx.attr_bool("narrow_range")?,
    )
    .map_err(|e| e.to_string())
}

fn scalar_f32(ctx: &KernelCtx<'_>, i: usize) -> Result<f32, String> {
    let a = ctx.f32(i)?;
    if a.len() != 1 {
        return Err(format!(
            "input {i} must be a scalar, found shape {:?}",
            a.shape()
        ));
    }
    Ok(a.iter().next().copied().unwrap_or_default())
}

fn contiguous(a: &ArrayD<f32>) -> std::borrow::Cow<'_, [f32]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

fn shaped(shape: &[usize], data: Vec<f32>) -> Result<Value, String> {
    Ok(val(
        ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| e.to_string())?
    ))
}

fn channels_of(ctx: &KernelCtx<'_>, x: &ArrayD<f32>) -> Result<(Vec<f32>, Vec<f32>), String> {
    let (mins, maxs) = (
        ctx.f32(if ctx.node().inputs().len() == 4 { 2 } else { 1 })?,
        ctx.f32(if ctx.node().inputs().len() == 4 { 3 } else { 2 })?,
    );
    let c = x.shape().last().copied().unwrap_or(0);
    if mins.len() != c || maxs.len() != c {
        return Err(format!(
            "min/max have {} and {} values for {c} channels",
            mins.len(),
            maxs.len()
        ));
    }
    Ok((
        mins.iter().copied().collect(),
        maxs.iter().copied().collect(),
    ))
}

fn fake_quant(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let x = ctx.f32(0)?;
    let p = fq_params(ctx)?;
    let xs = contiguous(x);
    let mut out = vec![0.0f32; xs.len()];
    match ctx.node().op() {
        "FakeQuantWithMinMaxVars" => {
            fq::fake_quant_vars(&xs, scalar_f32(ctx, 1)?, scalar_f32(ctx, 2)?, p, &mut out)
        }
        "FakeQuantWithMinMaxVarsPerChannel" => {
            let (mins, maxs) = channels_of(ctx, x)?;
            fq::fake_quant_per_channel(&xs, &mins, &maxs, p, &mut out)
        }
        _ => fq::fake_quant_args(
            &xs,
            ctx.attr_float("min")?,
            ctx.attr_float("max")?,
            p,
            &mut out,
        ),
    }
    Ok(vec![shaped(x.shape(), out)?])
}

fn fake_quant_grad(ctx: &KernelCtx<'_>) -> Result<Vec<Value>, String> {
    let (g, x) = (ctx.f32(0)?, ctx.f32(1)?);
    if g.shape() != x.shape() {
        return Err(format!(
            "gradients {:?} and inputs {:?} differ in shape",
            g.shape(),
            x.shape()
        ));
    }
    let p = fq_params(ctx)?;
    let (gs, xs) = (contiguous(g), contiguous(x));
    let mut dx = vec![0.0f32; xs.len()];
    match ctx.node().op() {
        "FakeQuantWithMinMaxVarsGradient" => {
            let (dmin, dmax) = fq::fake_quant_vars_grad(
                &gs,
                &xs,
                scalar_f32(ctx, 2)?,
                scalar_f32(ctx, 3)?,
                p,
                &mut dx,
            );
            Ok(vec![
                shaped(x.shape(), dx)?,
                Arc::new(Tensor::scalar(dmin)),
                Arc::new(Tensor::scalar(dmax)),
            ])
        }
        "FakeQuantWithMinMaxVarsPerChannelGradient" => {
            let (mins, maxs) = channels_of(ctx, x)?;
            let (mut dmin, mut dmax) = (vec![0.0f32; mins.len()], vec![0.0f32; maxs.len()]);
            fq::fake_quant_per_channel_grad(
                &gs, &xs, &mins, &maxs, p, &mut dx, &mut dmin, &mut dmax,
            );
            let c = [mins.len()];
            Ok(vec![
                shaped(x.shape(), dx)?,
                shaped(&c, dmin)?,
                shaped(&c, dmax)?,
            ])
        }
        _ => {
            fq::fake_quant_args_grad(
                &gs,
                &xs,
                ctx.attr_float("min")?,
                ctx.attr_float("max")?,
                p,
                &mut dx,
            );
            Ok(vec![shaped(x.shape(), dx)?])
        }
    }
}

fn assign(
    ctx: &KernelCtx<'_>,
    combine: fn(&Tensor, &Tensor) -> Result<Tensor, String>,
) -> Result<Vec<Value>, String> {
    let name = ctx.variable_input(0)?;
    let (old, value) = (ctx.input(0)?, ctx.input(1)?);
    if old.dtype() != value.dtype() || old.shape() != value.shape() {
        return Err(format!(
            "cannot assign a {} {:?} value to variable '{name}' of {} {:?}",
            value.dtype(),
            value.shape(),
            old.dtype(),
            old.shape()
        ));
    }
    let new = Arc::new(combine(old, value)?);
    ctx.assign(name, new.clone());
    Ok(vec![new])
}

/// An optimizer update: `update` gets the inputs and `use_nesterov` and
/// returns the updated variable and slots, which are written to the
/// variables at inputs `0..` in that order; output 0 is the updated variable.
fn apply_update(
    ctx: &KernelCtx<'_>,
    update: fn(&[&Tensor], bool) -> Result<Vec<Tensor>, String>,
) -> Result<Vec<Value>, String> {
    let inputs = (0..ctx.node().inputs().len())
        .map(|i| ctx.input(i))
        .collect::<Result<Vec<_>, _>>()?;
    let nesterov = matches!(ctx.attr("use_nesterov"), Some(AttrValue::Bool(true)));
    let mut outputs = Vec::with_capacity(1);
    for (i, value) in update(&inputs, nesterov)?.into_iter().enumerate() {
        let value = Arc::new(value);
        ctx.assign(ctx.variable_input(i)?, value.clone());
        if i == 0 {
            outputs.push(value);
        }
    }
    Ok(outputs)
}

fn add_tensors(a: &Tensor, b: &Tensor, sign: f32) -> Result<Tensor, String> {
    Ok(match (a.data(), b.data()) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            Tensor::from_array(ew::binary(x, y, move |p, q| p + sign * q)?)
        }
        (TensorData::I64(x), TensorData::I64(y)) => {
            Tensor::from_array(ew::binary(x, y, move |p, q| p + sign as i64 * q)?)
        }
        (TensorData::I32(x), TensorData::I32(y)) => {
            Tensor::from_array(ew::binary(x, y, move |p, q| p + sign as i32 * q)?)
        }
        _ => return Err(format!("unsupported dtype {}", a.dtype())),
    })
}

/// The kernels by op type.
#[derive(Clone, Default)]
pub struct KernelRegistry {
    kernels: HashMap<String, Kernel>,
}

static BUILTIN: LazyLock<KernelRegistry> = LazyLock::new(|| {
    let mut r = KernelRegistry::default();
    let mut add = |names: &[&str], k: fn(&KernelCtx<'_>) -> Result<Vec<Value>, String>| {
        for name in names {
            r.kernels.insert(name.to_string(), Arc::new(k));
        }
    };
    add(&["Const"], |ctx| {
        Ok(vec![Arc::new(
            ctx.node()
                .attr_tensor("value")
                .map_err(|e| e.to_string())?
                .clone(),
        )])
    });
    add(&["Identity"], |ctx| {
        Ok(vec![Arc::new(ctx.input(0)?.clone())])
    });
    add(&["NoOp"], |_| Ok(vec![]));
    add(&["Add", "AddV2"], |ctx| {
        binary(ctx, |a, b| a + b, Some(|a, b| a.wrapping_add(b)))
    });
    add(&["Sub"], |ctx| {
        binary(ctx, |a, b| a - b, Some(|a, b| a.wrapping_sub(b)))
    });
    add(&["Mul"], |ctx| {
        binary(ctx, |a, b| a * b, Some(|a, b| a.wrapping_mul(b)))
    });
    add(&["RealDiv"], |ctx| binary(ctx, |a, b| a / b, None));
    add(&["Maximum"], |ctx| binary(ctx, f32::max, Some(i64::max)));
    add(&["Minimum"], |ctx| binary(ctx, f32::min, Some(i64::min)));
    add(&["SquaredDifference"], |ctx| {
        binary(ctx, |a, b| (a - b) * (a - b), None)
    });
    add(&["Pow"], |ctx| binary(ctx, f32::powf, None));
    add(&["Relu"], |ctx| unary(ctx, |v| v.max(0.0)));
    add(&["Relu6"], |ctx| unary(ctx, |v| v.clamp(0.0, 6.0)));
    add(&["Rsqrt"], |ctx| unary(ctx, |v| 1.0 / v.sqrt()));
    add(&["Sqrt"], |ctx| unary(ctx, f32::sqrt));
    add(&["Sigmoid"], |ctx| unary(ctx, ew::sigmoid));
    add(&["Tanh"], |ctx| unary(ctx, f32::tanh));
    add(&["Neg"], |ctx| unary(ctx, |v| -v));
    add(&["Square"], |ctx| unary(ctx, |v| v * v));
    add(&["ReluGrad"], |ctx| grad2(ctx, ew::relu_grad));
    add(&["Relu6Grad"], |ctx| grad2(ctx, ew::relu6_grad));
    add(&["RsqrtGrad"], |ctx| grad2(ctx, ew::rsqrt_grad));
    add(&["SqrtGrad"], |ctx| grad2(ctx, ew::sqrt_grad));
    add(&["SigmoidGrad"], |ctx| grad2(ctx, ew::sigmoid_grad));
    add(&["TanhGrad"], |ctx| grad2(ctx, ew::tanh_grad));
    add(&["Softmax"], |ctx| {
        Ok(vec![val(softmax::softmax(ctx.f32(0)?)?)])
    });
    add(&["SparseSoftmaxCrossEntropyWithLogits"], |ctx| {
        let (loss, bp) = softmax::sparse_softmax_cross_entropy(ctx.f32(0)?, &ctx.ints(1)?)?;
        Ok(vec![vec1(loss), val(bp)])
    });
    add(&["SoftmaxCrossEntropyWithLogits"], |ctx| {
        let (loss, bp) = softmax::softmax_cross_entropy(ctx.f32(0)?, ctx.f32(1)?)?;
        Ok(vec![vec1(loss), val(bp)])
    });
    add(&["Sum"], |ctx| reduction(ctx, reduce::Reduction::Sum));
    add(&["Mean"], |ctx| reduction(ctx, reduce::Reduction::Mean));
    add(&["Max"], |ctx| reduction(ctx, reduce::Reduction::Max));
    add(&["Min"], |ctx| reduction(ctx, reduce::Reduction::Min));
    add(&["Reshape"], reshape);
    add(&["ConcatV2"], concat);
    add(&["Squeeze"], squeeze);
    add(&["SpaceToBatchND"], |ctx| {
        space_to_batch::space_to_batch_nd(ctx.input(0)?, &ctx.ints(1)?, &ctx.ints(2)?).map(one)
    });
    add(&["BatchToSpaceND"], |ctx| {
        space_to_batch::batch_to_space_nd(ctx.input(0)?, &ctx.ints(1)?, &ctx.ints(2)?).map(one)
    });
    add(&["Pad"], pad);
    add(&["MatMul"], matmul_kernel);
    add(&["BiasAdd"], bias_add);
    add(&["BiasAddGrad"], bias_add_grad);
    add(&["Conv2D"], conv2d);
    add(&["Conv2DBackpropInput"], |ctx| {
        backprop_input(ctx, conv::conv2d_backprop_input)
    });
    add(&["Conv2DBackpropFilter"], |ctx| {
        backprop_filter(ctx, conv::conv2d_backprop_filter)
    });
    add(&["DepthwiseConv2dNative"], depthwise);
    add(&["DepthwiseConv2dNativeBackpropInput"], |ctx| {
        backprop_input(ctx, depthwise::depthwise_conv2d_backprop_input)
    });
    add(&["DepthwiseConv2dNativeBackpropFilter"], |ctx| {
        backprop_filter(ctx, depthwise::depthwise_conv2d_backprop_filter)
    });
    add(&["MaxPool"], |ctx| {
        Ok(vec![val(pool::max_pool(
            ctx.f32_4d(0)?,
            &pool_window(ctx)?,
        )?
        .into_dyn())])
    });
    add(&["AvgPool"], |ctx| {
        Ok(vec![val(pool::avg_pool(
            ctx.f32_4d(0)?,
            &pool_window(ctx)?,
        )?
        .into_dyn())])
    });
    add(&["MaxPoolGrad"], |ctx| {
        Ok(vec![val(pool::max_pool_grad(
            ctx.f32_4d(0)?,
            ctx.f32_4d(1)?,
            ctx.f32_4d(2)?,
            &pool_window(ctx)?,
        )?
        .into_dyn())])
    });
    add(&["AvgPoolGrad"], |ctx| {
        Ok(vec![val(pool::avg_pool_grad(
            shape4(&ctx.ints(0)?)?,
            ctx.f32_4d(1)?,
            &pool_window(ctx)?,
        )?
        .into_dyn())])
    });
    add(&["FusedBatchNorm", "FusedBatchNormV3"], fused_batch_norm);
    add(&["FusedBatchNormGradV3"], fused_batch_norm_grad);
    add(
        &[
            "FakeQuantWithMinMaxVars",
            "FakeQuantWithMinMaxVarsPerChannel",
            "FakeQuantWithMinMaxArgs",
        ],
        fake_quant,
    );
    add(
        &[
            "FakeQuantWithMinMaxVarsGradient",
            "FakeQuantWithMinMaxVarsPerChannelGradient",
            "FakeQuantWithMinMaxArgsGradient",
        ],
        fake_quant_grad,
    );
    add(&["Assign"], |ctx| assign(ctx, |_, v| Ok(v.clone())));
    add(&["AssignAdd"], |ctx| {
        assign(ctx, |a, b| add_tensors(a, b, 1.0))
    });
    add(&["AssignSub"], |ctx| {
        assign(ctx, |a, b| add_tensors(a, b, -1.0))
    });
    add(&["ApplyGradientDescent"], |ctx| {
        apply_update(ctx, |inputs, _| optimizers::apply_gradient_descent(inputs))
    });
    add(&["ApplyMomentum"], |ctx| {
        apply_update(ctx, optimizers::apply_momentum)
    });
    add(&["ApplyAdam"], |ctx| {
        apply_update(ctx, optimizers::apply_adam)
    });
    add(&["Shape"], |ctx| {
        array::shape(ctx.input(0)?, ctx.attr_type("out_type")?).map(one)
    });
    add(&["Size"], |ctx| {
        array::size(ctx.input(0)?, ctx.attr_type("out_type")?).map(one)
    });
    add(&["Slice"], |ctx| {
        array::slice(ctx.input(0)?, &ctx.ints(1)?, &ctx.ints(2)?).map(one)
    });
    add(&["BroadcastTo"], |ctx| {
        array::broadcast_to(ctx.input(0)?, &ctx.ints(1)?).map(one)
    });
    add(&["ZerosLike"], |ctx| {
        array::zeros_like(ctx.input(0)?).map(one)
    });
    add(&["OnesLike"], |ctx| {
        Ok(one(array::ones_like(ctx.input(0)?)))
    });
    add(&["Fill"], |ctx| {
        array::fill(&ctx.ints(0)?, ctx.input(1)?).map(one)
    });
    add(&["Cast"], |ctx| {
        array::cast(ctx.input(0)?, ctx.attr_type("DstT")?).map(one)
    });
    add(&["StopGradient"], |ctx| {
        Ok(vec![Arc::new(ctx.input(0)?.clone())])
    });
    add(&["ExpandDims"], |ctx| {
        let axis = match ctx.ints(1)?.as_slice() {
            [a] => *a,
            other => return Err(format!("dim must hold one value, found {other:?}")),
        };
        array::expand_dims(ctx.input(0)?, axis).map(one)
    });
    add(&["Tile"], |ctx| {
        array::tile(ctx.input(0)?, &ctx.ints(1)?).map(one)
    });
    add(&["Greater"], |ctx| comparison(ctx, Comparison::Greater));
    add(&["GreaterEqual"], |ctx| {
        comparison(ctx, Comparison::GreaterEqual)
    });
    add(&["Less"], |ctx| comparison(ctx, Comparison::Less));
    add(&["LessEqual"], |ctx| comparison(ctx, Comparison::LessEqual));
    add(&["Equal"], |ctx| comparison(ctx, Comparison::Equal));
    add(&["NotEqual"], |ctx| comparison(ctx, Comparison::NotEqual));
    add(&["LogicalAnd"], |ctx| {
        compare::logical_and(ctx.input(0)?, ctx.input(1)?).map(one)
    });
    add(&["LogicalNot"], |ctx| {
        compare::logical_not(ctx.input(0)?).map(one)
    });
    add(&["Select"], |ctx| {
        compare::select(ctx.input(0)?, ctx.input(1)?, ctx.input(2)?).map(one)
    });
    add(&["SelectV2"], |ctx| {
        compare::select_v2(ctx.input(0)?, ctx.input(1)?, ctx.input(2)?).map(one)
    });
    add(&["ArgMax"], |ctx| {
        let axis = match (ctx.input(1)?.shape(), ctx.ints(1)?.as_slice()) {
            ([], [a]) => *a,
            (shape, _) => {
                return Err(format!("dimension must be a scalar, found shape {shape:?}"));
            }
        };
        compare::arg_max(ctx.input(0)?, axis, ctx.attr_type("output_type")?).map(one)
    });
    add(&["Reciprocal"], |ctx| unary(ctx, |v| 1.0 / v));
    add(&["Exp"], |ctx| unary(ctx, f32::exp));
    add(&["Log"], |ctx| unary(ctx, f32::ln));
    add(&["Abs"], |ctx| unary(ctx, f32::abs));
    add(&["Floor"], |ctx| unary(ctx, f32::floor));
    add(&["Cos"], |ctx| unary(ctx, f32::cos));
    r
});

impl KernelRegistry {
    /// The built-in kernels.
    pub fn builtin() -> KernelRegistry {
        BUILTIN.clone()
    }

    /// The kernel for `op`.
    pub fn get(&self, op: &str) -> Option<&Kernel> {
        self.kernels.get(op)
    }

    /// Adds or replaces the kernel for `op` (plugins register new op types this way).
    pub fn register(&mut self, op: &str, kernel: Kernel) {
        self.kernels.insert(op.to_string(), kernel);
    }

    /// The op types with kernels, sorted.
    pub fn op_types(&self) -> Vec<&str> {
        let mut ops: Vec<&str> = self.kernels.keys().map(String::as_str).collect();
        ops.sort_unstable();
        ops
    }
}
