//! [`IntExecutor`]: validates an [`IntModel`] once, then runs it on any
//! batch size with LiteRT's reference integer arithmetic.

use quant_core::integer::{IntModel, IntOpKind, TensorIndex};
use quant_core::{DType, Tensor, TensorData};

use super::KernelPath;
use super::add::Add;
use super::concatenation::Concat;
use super::conv::Conv;
use super::custom::{Custom, CustomKernels};
use super::depthwise::Depthwise;
use super::fully_connected::FullyConnected;
use super::logistic::Logistic;
use super::mean::Mean;
use super::mul::Mul;
use super::op::{Ctx, Inputs, Kernel, OpError};
use super::pad::Pad;
use super::pool::Pool;
use super::quantize::{Dequantize, Quantize};
use super::reshape::Reshape;
use super::softmax::Softmax;
use super::value::{Buf, Value};

/// An error of the integer executor, naming the op and tensor at fault.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum IntError {
    /// An op is invalid or failed at run time.
    #[error("op {op} ({op_name}){}: {message}", tensor.as_ref().map(|t| format!(", tensor '{t}'")).unwrap_or_default())]
    Op {
        /// Index of the op in [`IntModel::ops`].
        op: usize,
        /// Its TFLite name (`CONV_2D`, ...).
        op_name: &'static str,
        /// The tensor at fault, if one is.
        tensor: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A CUSTOM op whose op type has no registered integer kernel.
    #[error(
        "op {op} (CUSTOM `{name}`): no integer kernel is registered for custom op `{name}` (load the plugin that provides it)"
    )]
    UnknownCustomOp {
        /// Index of the op in [`IntModel::ops`].
        op: usize,
        /// The custom op type.
        name: String,
    },
    /// A model input or output is invalid, or a fed value does not fit.
    #[error("model {role} {index} ('{tensor}'): {message}")]
    Io {
        /// `input` or `output`.
        role: &'static str,
        /// Position in [`IntModel::inputs`] / [`IntModel::outputs`].
        index: usize,
        /// The tensor's name (empty if the index is invalid).
        tensor: String,
        /// What is wrong.
        message: String,
    },
}

/// One prepared op.
struct Step {
    kind_name: &'static str,
    kernel: Box<dyn Kernel>,
}

/// Runs an [`IntModel`] with the integer arithmetic of LiteRT 2.3's
/// reference kernels (reference semantics §7.10, set R), bit for bit.
///
/// Construction validates every op (tensor indices, dtypes and quantization
/// parameters, constant weights, biases, shapes, axes and paddings) and
/// precomputes the multipliers; [`IntExecutor::run`] accepts any batch size
/// in dimension 0 and frees each intermediate value after its last use.
/// Convolutions, depthwise convolutions, fully-connected layers and pools
/// are parallel over output rows on rayon's global pool.
pub struct IntExecutor {
    model: IntModel,
    steps: Vec<Step>,
    /// Constant tensors as values (by tensor index).
    constants: Vec<Option<Value>>,
    /// The last op reading each tensor (`None`: never read, or a model output).
    last_use: Vec<Option<usize>>,
}

impl std::fmt::Debug for IntExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntExecutor")
            .field(
                "ops",
                &self.steps.iter().map(|s| s.kind_name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The value of a constant tensor, if its dtype is one the kernels read.
fn constant_value(t: &Tensor) -> Option<Value> {
    let shape = t.shape().to_vec();
    // Row-major elements (a plain copy for the usual standard layout).
    fn elements<T: Clone>(a: &ndarray::ArrayD<T>) -> Vec<T> {
        a.as_slice()
            .map_or_else(|| a.iter().cloned().collect(), <[T]>::to_vec)
    }
    let buf = match t.data() {
        TensorData::U8(a) => Buf::U8(elements(a)),
        TensorData::I8(a) => Buf::I8(elements(a)),
        TensorData::F32(a) => Buf::F32(elements(a)),
        TensorData::I32(a) => Buf::I32(elements(a)),
        _ => return None,
    };
    Some(Value { shape, buf })
}

impl IntExecutor {
    /// Validates `model` and prepares every op with the fast kernels.
    pub fn new(model: &IntModel) -> Result<IntExecutor, IntError> {
        IntExecutor::with_kernels(model, KernelPath::Fast)
    }

    /// As [`IntExecutor::new`], choosing the CONV_2D / FULLY_CONNECTED
    /// kernels (both compute the same integers).
    pub fn with_kernels(model: &IntModel, path: KernelPath) -> Result<IntExecutor, IntError> {
        IntExecutor::with_custom_kernels(model, path, &CustomKernels::new())
    }

    /// As [`IntExecutor::with_kernels`], running CUSTOM ops with the
    /// kernels in `custom` (by op type); a CUSTOM op without one is
    /// [`IntError::UnknownCustomOp`].
    pub fn with_custom_kernels(
        model: &IntModel,
        path: KernelPath,
        custom: &CustomKernels,
    ) -> Result<IntExecutor, IntError> {
        let n = model.tensors.len();
        let io_err = |role, index, t: Option<TensorIndex>, message: String| IntError::Io {
            role,
            index,
            tensor: t
                .and_then(|t| model.tensors.get(t))
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            message,
        };
        for (role, list) in [("input", &model.inputs), ("output", &model.outputs)] {
            for (i, &t) in list.iter().enumerate() {
                if t >= n {
                    return Err(io_err(
                        role,
                        i,
                        None,
                        format!("tensor index {t} is out of range ({n} tensors)"),
                    ));
                }
                let dtype = model.tensors[t].dtype;
                if !matches!(dtype, DType::U8 | DType::I8 | DType::F32) {
                    return Err(io_err(
                        role,
                        i,
                        Some(t),
                        format!("dtype {dtype} is not u8, i8 or f32"),
                    ));
                }
                if matches!(dtype, DType::U8 | DType::I8) && model.tensors[t].quant.is_none() {
                    return Err(io_err(
                        role,
                        i,
                        Some(t),
                        "has no quantization parameters".into(),
                    ));
                }
            }
        }
        let mut available: Vec<bool> = model.tensors.iter().map(|t| t.data.is_some()).collect();
        for &t in &model.inputs {
            available[t] = true;
        }
        let mut steps = Vec::with_capacity(model.ops.len());
        let mut last_use = vec![None; n];
        for (index, op) in model.ops.iter().enumerate() {
            let op_name = op.kind.tflite_name();
            let err = |e: OpError| IntError::Op {
                op: index,
                op_name,
                tensor: e
                    .tensor
                    .and_then(|t| model.tensors.get(t))
                    .map(|t| t.name.clone()),
                message: e.message,
            };
            for &t in op.inputs.iter().flatten().chain(&op.outputs) {
                if t >= n {
                    return Err(err(OpError {
                        tensor: None,
                        message: format!("tensor index {t} is out of range ({n} tensors)"),
                    }));
                }
            }
            for &t in op.inputs.iter().flatten() {
                if !available[t] {
                    return Err(err(OpError {
                        tensor: Some(t),
                        message: "is read before any op computes it".into(),
                    }));
                }
                last_use[t] = Some(index);
            }
            let ctx = Ctx { model, op };
            let kernel: Box<dyn Kernel> = match &op.kind {
                IntOpKind::Conv2D { .. } => Box::new(Conv::prepare(&ctx, path).map_err(err)?),
                IntOpKind::DepthwiseConv2D { .. } => {
                    Box::new(Depthwise::prepare(&ctx).map_err(err)?)
                }
                IntOpKind::FullyConnected { .. } => {
                    Box::new(FullyConnected::prepare(&ctx, path).map_err(err)?)
                }
                IntOpKind::Add { .. } => Box::new(Add::prepare(&ctx).map_err(err)?),
                IntOpKind::Mul { .. } => Box::new(Mul::prepare(&ctx).map_err(err)?),
                IntOpKind::MaxPool2D { .. } | IntOpKind::AveragePool2D { .. } => {
                    Box::new(Pool::prepare(&ctx).map_err(err)?)
                }
                IntOpKind::Mean { .. } => Box::new(Mean::prepare(&ctx).map_err(err)?),
                IntOpKind::Reshape => Box::new(Reshape::prepare(&ctx).map_err(err)?),
                IntOpKind::Concatenation { .. } => Box::new(Concat::prepare(&ctx).map_err(err)?),
                IntOpKind::Softmax { .. } => Box::new(Softmax::prepare(&ctx).map_err(err)?),
                IntOpKind::Logistic => Box::new(Logistic::prepare(&ctx).map_err(err)?),
                IntOpKind::Pad => Box::new(Pad::prepare(&ctx).map_err(err)?),
                IntOpKind::Quantize => Box::new(Quantize::prepare(&ctx).map_err(err)?),
                IntOpKind::Dequantize => Box::new(Dequantize::prepare(&ctx).map_err(err)?),
                IntOpKind::Custom { name } => {
                    let kernel =
                        custom
                            .get(name)
                            .cloned()
                            .ok_or_else(|| IntError::UnknownCustomOp {
                                op: index,
                                name: name.clone(),
                            })?;
                    Box::new(Custom::prepare(&ctx, name, kernel).map_err(err)?)
                }
            };
            for &t in &op.outputs {
                if model.tensors[t].data.is_some() {
                    return Err(err(OpError {
                        tensor: Some(t),
                        message: "is a constant but written by the op".into(),
                    }));
                }
                available[t] = true;
            }
            steps.push(Step {
                kind_name: op_name,
                kernel,
            });
        }
        for (i, &t) in model.outputs.iter().enumerate() {
            if !available[t] {
                return Err(io_err("output", i, Some(t), "is never computed".into()));
            }
            last_use[t] = None;
        }
        let constants = model
            .tensors
            .iter()
            .map(|t| t.data.as_ref().and_then(constant_value))
            .collect();
        Ok(IntExecutor {
            model: model.clone(),
            steps,
            constants,
            last_use,
        })
    }

    /// The model being run.
    pub fn model(&self) -> &IntModel {
        &self.model
    }

    /// Runs the model on `inputs` (in [`IntModel::inputs`] order, any batch
    /// size in dimension 0; `F32` for float inputs, `U8`/`I8` for quantized
    /// ones, whose quantization parameters are taken from the model) and
    /// returns the outputs in [`IntModel::outputs`] order, 8-bit outputs
    /// carrying their [`QuantParams`](quant_core::QuantParams).
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, IntError> {
        let model = &self.model;
        let io_err = |role, index: usize, t: TensorIndex, message: String| IntError::Io {
            role,
            index,
            tensor: model.tensors[t].name.clone(),
            message,
        };
        if inputs.len() != model.inputs.len() {
            return Err(IntError::Io {
                role: "input",
                index: inputs.len().min(model.inputs.len()),
                tensor: String::new(),
                message: format!(
                    "expected {} inputs, got {}",
                    model.inputs.len(),
                    inputs.len()
                ),
            });
        }
        let mut values: Vec<Option<Value>> = vec![None; model.tensors.len()];
        for (i, (&t, x)) in model.inputs.iter().zip(inputs).enumerate() {
            let declared = &model.tensors[t];
            if x.dtype() != declared.dtype {
                return Err(io_err(
                    "input",
                    i,
                    t,
                    format!("expected {}, got {}", declared.dtype, x.dtype()),
                ));
            }
            let shape = x.shape();
            if shape.len() != declared.shape.len()
                || shape
                    .iter()
                    .zip(&declared.shape)
                    .skip(1)
                    .any(|(a, b)| a != b)
            {
                return Err(io_err(
                    "input",
                    i,
                    t,
                    format!(
                        "shape {shape:?} does not match the declared {:?} (batch may differ)",
                        declared.shape
                    ),
                ));
            }
            let value = constant_value(x)
                .ok_or_else(|| io_err("input", i, t, format!("unsupported dtype {}", x.dtype())))?;
            values[t] = Some(value);
        }
        for (index, (op, step)) in model.ops.iter().zip(&self.steps).enumerate() {
            let out = {
                let gathered: Vec<Option<&Value>> = op
                    .inputs
                    .iter()
                    .map(|t| t.and_then(|t| values[t].as_ref().or(self.constants[t].as_ref())))
                    .collect();
                let inputs = Inputs {
                    tensors: &op.inputs,
                    values: gathered,
                };
                step.kernel.run(&inputs).map_err(|e| IntError::Op {
                    op: index,
                    op_name: step.kind_name,
                    tensor: e.tensor.map(|t| model.tensors[t].name.clone()),
                    message: e.message,
                })?
            };
            let t = op.outputs[0];
            if out.buf.dtype() != model.tensors[t].dtype {
                return Err(IntError::Op {
                    op: index,
                    op_name: step.kind_name,
                    tensor: Some(model.tensors[t].name.clone()),
                    message: format!(
                        "computed {}, declared {}",
                        out.buf.dtype(),
                        model.tensors[t].dtype
                    ),
                });
            }
            values[t] = Some(out);
            for &u in op.inputs.iter().flatten() {
                if self.last_use[u] == Some(index) {
                    values[u] = None;
                }
            }
        }
        model
            .outputs
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let value = values[t]
                    .clone()
                    .or_else(|| self.constants[t].clone())
                    .ok_or_else(|| io_err("output", i, t, "has no value".into()))?;
                let tensor = match value.buf {
                    Buf::U8(v) => Tensor::from_vec(&value.shape, v),
                    Buf::I8(v) => Tensor::from_vec(&value.shape, v),
                    Buf::F32(v) => Tensor::from_vec(&value.shape, v),
                    Buf::I32(v) => Tensor::from_vec(&value.shape, v),
                }
                .map_err(|e| io_err("output", i, t, e.to_string()))?;
                match (&model.tensors[t].quant, tensor.dtype()) {
                    (Some(q), DType::U8 | DType::I8) => tensor
                        .with_quant(q.clone())
                        .map_err(|e| io_err("output", i, t, e.to_string())),
                    _ => Ok(tensor),
                }
            })
            .collect()
    }
}
