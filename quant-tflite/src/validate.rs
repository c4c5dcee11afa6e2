//! Structural checks of an [`IntModel`]: what must hold before it can be
//! written as a TFLite file that loads, and what the reader guarantees of
//! the models it returns.

use quant_core::integer::{IntModel, IntOp, IntOpKind, IntTensor, TensorIndex};
use quant_core::{DType, QuantParams};

/// A structural problem in an [`IntModel`], naming the op or tensor at
/// fault (by index and name).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ModelError {
    /// A model input or output refers to a tensor that does not exist.
    #[error("model {role} {position} refers to tensor {index}, but the model has {count} tensors")]
    IoIndex {
        /// `input` or `output`.
        role: &'static str,
        /// Position in `IntModel::inputs`/`outputs`.
        position: usize,
        /// The bad tensor index.
        index: TensorIndex,
        /// Tensors in the model.
        count: usize,
    },
    /// An op operand refers to a tensor that does not exist.
    #[error("op {op} ({name}): {slot} refers to tensor {index}, but the model has {count} tensors")]
    OperandIndex {
        /// Op index.
        op: usize,
        /// TFLite op name.
        name: &'static str,
        /// `input K` or `output K`.
        slot: String,
        /// The bad tensor index.
        index: TensorIndex,
        /// Tensors in the model.
        count: usize,
    },
    /// An op has the wrong number of inputs or outputs.
    #[error("op {op} ({name}): expected {expected} {role}, found {found}")]
    Arity {
        /// Op index.
        op: usize,
        /// TFLite op name.
        name: &'static str,
        /// `inputs` or `outputs`.
        role: &'static str,
        /// What the op takes (`3`, `at least 1`).
        expected: String,
        /// What it has.
        found: usize,
    },
    /// A required input is omitted (`None`).
    #[error("op {op} ({name}): input {slot} is required but omitted")]
    MissingOperand {
        /// Op index.
        op: usize,
        /// TFLite op name.
        name: &'static str,
        /// Input position.
        slot: usize,
    },
    /// A tensor's dtype cannot be stored in a TFLite file.
    #[error("tensor {tensor} ('{name}'): dtype {dtype} cannot be stored in a TFLite file")]
    UnsupportedDType {
        /// Tensor index.
        tensor: TensorIndex,
        /// Tensor name.
        name: String,
        /// Its dtype.
        dtype: DType,
    },
    /// A dimension does not fit TFLite's int32 shapes.
    #[error("tensor {tensor} ('{name}'): dimension {dim} does not fit in int32")]
    DimTooLarge {
        /// Tensor index.
        tensor: TensorIndex,
        /// Tensor name.
        name: String,
        /// The dimension.
        dim: usize,
    },
    /// A uint8/int8 tensor, or a conv/depthwise/fully-connected bias, has no
    /// quantization parameters.
    #[error("tensor {tensor} ('{name}'): {dtype} tensor without quantization parameters")]
    MissingQuant {
        /// Tensor index.
        tensor: TensorIndex,
        /// Tensor name.
        name: String,
        /// Its dtype.
        dtype: DType,
    },
    /// Quantization parameters inconsistent with the tensor.
    #[error("tensor {tensor} ('{name}'): {reason}")]
    BadQuant {
        /// Tensor index.
        tensor: TensorIndex,
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A custom op without a name (its `custom_code` would be empty).
    #[error("op {op} (CUSTOM): the custom op has an empty name")]
    EmptyCustomName {
        /// Op index.
        op: usize,
    },
    /// A constant's data does not match the tensor's dtype or shape.
    #[error("tensor {tensor} ('{name}'): {reason}")]
    BadData {
        /// Tensor index.
        tensor: TensorIndex,
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// The number of inputs an op kind takes: (minimum, maximum).
fn input_arity(kind: &IntOpKind) -> (usize, usize) {
    match kind {
        IntOpKind::Conv2D { .. }
        | IntOpKind::DepthwiseConv2D { .. }
        | IntOpKind::FullyConnected { .. } => (3, 3),
        IntOpKind::Add { .. }
        | IntOpKind::Mul { .. }
        | IntOpKind::Mean { .. }
        | IntOpKind::Reshape
        | IntOpKind::Pad => (2, 2),
        IntOpKind::Concatenation { .. } | IntOpKind::Custom { .. } => (1, usize::MAX),
        IntOpKind::MaxPool2D { .. }
        | IntOpKind::AveragePool2D { .. }
        | IntOpKind::Softmax { .. }
        | IntOpKind::Logistic
        | IntOpKind::Quantize
        | IntOpKind::Dequantize => (1, 1),
    }
}

/// Whether input `slot` of `kind` may be omitted (only a fully-connected
/// bias).
fn optional_input(kind: &IntOpKind, slot: usize) -> bool {
    matches!(kind, IntOpKind::FullyConnected { .. }) && slot == 2
}

/// Whether input `slot` of `kind` is a bias (needs quantization).
pub(crate) fn is_bias(kind: &IntOpKind, slot: usize) -> bool {
    slot == 2
        && matches!(
            kind,
            IntOpKind::Conv2D { .. }
                | IntOpKind::DepthwiseConv2D { .. }
                | IntOpKind::FullyConnected { .. }
        )
}

fn check_op(model: &IntModel, index: usize, op: &IntOp) -> Result<(), ModelError> {
    let name = op.kind.tflite_name();
    if matches!(&op.kind, IntOpKind::Custom { name } if name.is_empty()) {
        return Err(ModelError::EmptyCustomName { op: index });
    }
    let count = model.tensors.len();
    let (min, max) = input_arity(&op.kind);
    if op.inputs.len() < min || op.inputs.len() > max {
        return Err(ModelError::Arity {
            op: index,
            name,
            role: "inputs",
            expected: if max == usize::MAX {
                format!("at least {min}")
            } else {
                min.to_string()
            },
            found: op.inputs.len(),
        });
    }
    if op.outputs.len() != 1 {
        return Err(ModelError::Arity {
            op: index,
            name,
            role: "outputs",
            expected: "1".into(),
            found: op.outputs.len(),
        });
    }
    for (slot, input) in op.inputs.iter().enumerate() {
        match input {
            None if !optional_input(&op.kind, slot) => {
                return Err(ModelError::MissingOperand {
                    op: index,
                    name,
                    slot,
                });
            }
            Some(t) if *t >= count => {
                return Err(ModelError::OperandIndex {
                    op: index,
                    name,
                    slot: format!("input {slot}"),
                    index: *t,
                    count,
                });
            }
            Some(t) if is_bias(&op.kind, slot) && model.tensors[*t].quant.is_none() => {
                let tensor = &model.tensors[*t];
                return Err(ModelError::MissingQuant {
                    tensor: *t,
                    name: tensor.name.clone(),
                    dtype: tensor.dtype,
                });
            }
            _ => {}
        }
    }
    for (slot, &t) in op.outputs.iter().enumerate() {
        if t >= count {
            return Err(ModelError::OperandIndex {
                op: index,
                name,
                slot: format!("output {slot}"),
                index: t,
                count,
            });
        }
    }
    Ok(())
}

fn check_quant(index: TensorIndex, t: &IntTensor, q: &QuantParams) -> Result<(), ModelError> {
    let bad = |reason: String| ModelError::BadQuant {
        tensor: index,
        name: t.name.clone(),
        reason,
    };
    if q.scales.is_empty() {
        return Err(bad("quantization parameters have no scale".into()));
    }
    if q.scales.len() != q.zero_points.len() {
        return Err(bad(format!(
            "{} scales but {} zero points",
            q.scales.len(),
            q.zero_points.len()
        )));
    }
    if let Some(s) = q.scales.iter().find(|s| !s.is_finite() || **s < 0.0) {
        return Err(bad(format!(
            "scale {s} is not a finite non-negative number"
        )));
    }
    let expected = match q.axis {
        None => 1,
        Some(axis) => *t.shape.get(axis).ok_or_else(|| {
            bad(format!(
                "quantized dimension {axis} is out of range for shape {:?}",
                t.shape
            ))
        })?,
    };
    if q.scales.len() != expected {
        return Err(bad(format!(
            "{} scales, but shape {:?} with quantized dimension {} needs {expected}",
            q.scales.len(),
            t.shape,
            q.axis.map_or_else(|| "none".to_string(), |a| a.to_string())
        )));
    }
    Ok(())
}

fn check_tensor(index: TensorIndex, t: &IntTensor) -> Result<(), ModelError> {
    if crate::codes::tensor_type(t.dtype).is_none() {
        return Err(ModelError::UnsupportedDType {
            tensor: index,
            name: t.name.clone(),
            dtype: t.dtype,
        });
    }
    if let Some(&dim) = t.shape.iter().find(|&&d| i32::try_from(d).is_err()) {
        return Err(ModelError::DimTooLarge {
            tensor: index,
            name: t.name.clone(),
            dim,
        });
    }
    match &t.quant {
        Some(q) => check_quant(index, t, q)?,
        None if matches!(t.dtype, DType::U8 | DType::I8) => {
            return Err(ModelError::MissingQuant {
                tensor: index,
                name: t.name.clone(),
                dtype: t.dtype,
            });
        }
        None => {}
    }
    if let Some(data) = &t.data {
        let bad = |reason: String| ModelError::BadData {
            tensor: index,
            name: t.name.clone(),
            reason,
        };
        if data.dtype() != t.dtype {
            return Err(bad(format!(
                "the tensor is {} but its data is {}",
                t.dtype,
                data.dtype()
            )));
        }
        if data.shape() != t.shape.as_slice() {
            return Err(bad(format!(
                "the tensor has shape {:?} but its data has shape {:?}",
                t.shape,
                data.shape()
            )));
        }
    }
    Ok(())
}

/// Checks the structure of a model: indices in range, op arities, required
/// operands present, dtypes TFLite can store, quantization parameters on
/// every uint8/int8 tensor and bias and consistent with the shape, and
/// constant data matching its tensor.
pub fn validate(model: &IntModel) -> Result<(), ModelError> {
    let count = model.tensors.len();
    for (role, list) in [("input", &model.inputs), ("output", &model.outputs)] {
        if let Some((position, &index)) = list.iter().enumerate().find(|(_, t)| **t >= count) {
            return Err(ModelError::IoIndex {
                role,
                position,
                index,
                count,
            });
        }
    }
    for (index, t) in model.tensors.iter().enumerate() {
        check_tensor(index, t)?;
    }
    for (index, op) in model.ops.iter().enumerate() {
        check_op(model, index, op)?;
    }
    Ok(())
}
