//! CUSTOM ops: op types the integer IR names but quant does not implement
//! (plugin op types, [`IntOpKind::Custom`](quant_core::integer::IntOpKind::Custom)).
//! The caller registers a kernel per op type ([`CustomKernels`]); the
//! executor hands it the quantized inputs with their parameters and the
//! parameters the lowering chose for the output.

use std::collections::BTreeMap;
use std::sync::Arc;

use quant_core::DType;
use quant_core::integer::TensorIndex;

use super::op::{Affine, Ctx, Inputs, Kernel, OpResult, fail};
use super::value::{Buf, Value};

/// The elements of a quantized tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QData<'a> {
    /// uint8 levels.
    U8(&'a [u8]),
    /// int8 levels.
    I8(&'a [i8]),
    /// int32 values.
    I32(&'a [i32]),
}

/// One input of a custom op: `real = scale · (q − zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QTensor<'a> {
    /// The run-time shape.
    pub shape: &'a [usize],
    /// The elements, row-major.
    pub data: QData<'a>,
    /// The scale (0 for an int32 tensor without quantization parameters).
    pub scale: f32,
    /// The zero point.
    pub zero_point: i32,
}

/// What the output of a custom op must be: its element type and the
/// parameters the lowering chose (from the fake quant that follows the op
/// in the eval graph).
#[derive(Clone, Debug, PartialEq)]
pub struct QOutputSpec {
    /// `U8` or `I8`.
    pub dtype: DType,
    /// The shape the model declares (the batch may differ at run time).
    pub shape: Vec<usize>,
    /// The output scale.
    pub scale: f32,
    /// The output zero point.
    pub zero_point: i32,
}

/// The elements a custom kernel computed.
#[derive(Clone, Debug, PartialEq)]
pub enum QBuffer {
    /// uint8 levels.
    U8(Vec<u8>),
    /// int8 levels.
    I8(Vec<i8>),
    /// int32 values.
    I32(Vec<i32>),
}

/// The output of a custom kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct QOutput {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its elements (of the spec's type), row-major.
    pub data: QBuffer,
}

/// An integer kernel for a custom op type: inputs in the op's order, the
/// output's spec; an `Err` is reported as the op's error.
pub type CustomKernel =
    Arc<dyn Fn(&[QTensor<'_>], &QOutputSpec) -> Result<QOutput, String> + Send + Sync>;

/// Integer kernels for custom op types, by op type.
pub type CustomKernels = BTreeMap<String, CustomKernel>;

/// A prepared CUSTOM op.
pub(crate) struct Custom {
    name: String,
    kernel: CustomKernel,
    inputs: Vec<(TensorIndex, Affine)>,
    spec: QOutputSpec,
    output: TensorIndex,
}

impl Custom {
    /// Validates the op's tensors (every input u8, i8 or i32, 8-bit ones
    /// with per-tensor parameters; one u8 or i8 output with per-tensor
    /// parameters).
    pub(crate) fn prepare(ctx: &Ctx, name: &str, kernel: CustomKernel) -> OpResult<Custom> {
        let output = ctx.output()?;
        let out = ctx.affine(output)?;
        let mut inputs = Vec::with_capacity(ctx.op.inputs.len());
        for i in 0..ctx.op.inputs.len() {
            let t = ctx.input(i)?;
            let affine = match ctx.tensor(t).dtype {
                DType::U8 | DType::I8 => ctx.affine(t)?,
                DType::I32 => match &ctx.tensor(t).quant {
                    Some(_) => {
                        let (scales, zps) = ctx.scales(t)?;
                        if scales.len() != 1 {
                            return fail(Some(t), "needs per-tensor quantization");
                        }
                        Affine {
                            scale: scales[0],
                            zero_point: i32::try_from(zps[0]).or_else(|_| {
                                fail(Some(t), format!("zero point {} is not an int32", zps[0]))
                            })?,
                        }
                    }
                    None => Affine {
                        scale: 0.0,
                        zero_point: 0,
                    },
                },
                other => {
                    return fail(
                        Some(t),
                        format!("a custom op reads u8, i8 or i32 tensors, not {other}"),
                    );
                }
            };
            inputs.push((t, affine));
        }
        let tensor = ctx.tensor(output);
        Ok(Custom {
            name: name.to_string(),
            kernel,
            inputs,
            spec: QOutputSpec {
                dtype: tensor.dtype,
                shape: tensor.shape.clone(),
                scale: out.scale,
                zero_point: out.zero_point,
            },
            output,
        })
    }
}

impl Kernel for Custom {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let mut views = Vec::with_capacity(self.inputs.len());
        for (i, &(t, affine)) in self.inputs.iter().enumerate() {
            let v = inputs.get(i)?;
            let data = match &v.buf {
                Buf::U8(d) => QData::U8(d),
                Buf::I8(d) => QData::I8(d),
                Buf::I32(d) => QData::I32(d),
                Buf::F32(_) => return fail(Some(t), "is float32, a custom op reads integers"),
            };
            views.push(QTensor {
                shape: &v.shape,
                data,
                scale: affine.scale,
                zero_point: affine.zero_point,
            });
        }
        let out = (self.kernel)(&views, &self.spec)
            .or_else(|m| fail(Some(self.output), format!("custom op `{}`: {m}", self.name)))?;
        let (len, buf) = match out.data {
            QBuffer::U8(v) => (v.len(), Buf::U8(v)),
            QBuffer::I8(v) => (v.len(), Buf::I8(v)),
            QBuffer::I32(v) => (v.len(), Buf::I32(v)),
        };
        let expected = out.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if expected != Some(len) {
            return fail(
                Some(self.output),
                format!(
                    "custom op `{}` returned {len} elements for shape {:?}",
                    self.name, out.shape
                ),
            );
        }
        Ok(Value {
            shape: out.shape,
            buf,
        })
    }
}
