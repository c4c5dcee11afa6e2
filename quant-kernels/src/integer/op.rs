//! What every integer op shares: the prepare-time view of its place in the
//! model ([`Ctx`]), the run-time inputs ([`Inputs`]), the kernel trait and
//! the op-local error the executor turns into an [`IntError`](super::IntError).

use quant_core::integer::{IntModel, IntOp, IntTensor, TensorIndex};
use quant_core::{DType, Tensor};

use super::value::{Buf, QType, Value};

/// A failure inside one op, optionally blaming one of its tensors.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OpError {
    /// The tensor at fault, if one is.
    pub tensor: Option<TensorIndex>,
    /// What is wrong.
    pub message: String,
}

/// Result of op-local work.
pub(crate) type OpResult<T> = Result<T, OpError>;

/// An [`OpError`] blaming `tensor`.
pub(crate) fn fail<T>(tensor: Option<TensorIndex>, message: impl Into<String>) -> OpResult<T> {
    Err(OpError {
        tensor,
        message: message.into(),
    })
}

/// A prepared op: validated parameters and precomputed multipliers.
pub(crate) trait Kernel: Send + Sync {
    /// Computes the op's one output from its inputs.
    fn run(&self, inputs: &Inputs) -> OpResult<Value>;
}

/// The run-time inputs of one op, in the op's input order (`None` for an
/// omitted optional input).
pub(crate) struct Inputs<'a> {
    /// The tensor indices.
    pub tensors: &'a [Option<TensorIndex>],
    /// Their values.
    pub values: Vec<Option<&'a Value>>,
}

impl<'a> Inputs<'a> {
    /// Input `i`, which must be present.
    pub(crate) fn get(&self, i: usize) -> OpResult<&'a Value> {
        match self.values.get(i).copied().flatten() {
            Some(v) => Ok(v),
            None => fail(
                self.tensors.get(i).copied().flatten(),
                format!("input {i} has no value"),
            ),
        }
    }
}

/// An op's place in the model, for validation at prepare time.
pub(crate) struct Ctx<'a> {
    /// The model.
    pub model: &'a IntModel,
    /// The op.
    pub op: &'a IntOp,
}

/// Per-tensor quantization parameters as the kernels read them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Affine {
    /// Scale (float32, positive and finite).
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
}

impl<'a> Ctx<'a> {
    /// The tensor at `index` (indices are validated before prepare).
    pub(crate) fn tensor(&self, index: TensorIndex) -> &'a IntTensor {
        &self.model.tensors[index]
    }

    /// Required input `i`.
    pub(crate) fn input(&self, i: usize) -> OpResult<TensorIndex> {
        match self.op.inputs.get(i) {
            Some(Some(t)) => Ok(*t),
            Some(None) => fail(None, format!("input {i} is required but omitted")),
            None => fail(
                None,
                format!("needs input {i}, has {} inputs", self.op.inputs.len()),
            ),
        }
    }

    /// Optional input `i` (absent or omitted gives `None`).
    pub(crate) fn opt_input(&self, i: usize) -> Option<TensorIndex> {
        self.op.inputs.get(i).copied().flatten()
    }

    /// Checks the number of inputs lies in `range`.
    pub(crate) fn expect_inputs(&self, min: usize, max: usize) -> OpResult<()> {
        let n = self.op.inputs.len();
        if n < min || n > max {
            return fail(None, format!("expects {min}..={max} inputs, has {n}"));
        }
        Ok(())
    }

    /// The one output.
    pub(crate) fn output(&self) -> OpResult<TensorIndex> {
        match self.op.outputs.as_slice() {
            [t] => Ok(*t),
            other => fail(None, format!("expects 1 output, has {}", other.len())),
        }
    }

    /// The 8-bit type of tensor `t`.
    pub(crate) fn qtype(&self, t: TensorIndex) -> OpResult<QType> {
        let dtype = self.tensor(t).dtype;
        QType::of(dtype).map_or_else(
            || fail(Some(t), format!("must be uint8 or int8, is {dtype}")),
            Ok,
        )
    }

    /// Checks tensor `t` has `dtype`.
    pub(crate) fn expect_dtype(&self, t: TensorIndex, dtype: DType) -> OpResult<()> {
        let found = self.tensor(t).dtype;
        if found != dtype {
            return fail(Some(t), format!("must be {dtype}, is {found}"));
        }
        Ok(())
    }

    /// Per-tensor quantization parameters of 8-bit tensor `t`.
    pub(crate) fn affine(&self, t: TensorIndex) -> OpResult<Affine> {
        let qtype = self.qtype(t)?;
        let (scales, zps) = self.scales(t)?;
        if scales.len() != 1 {
            return fail(
                Some(t),
                format!("needs per-tensor quantization, has {} scales", scales.len()),
            );
        }
        let zero_point = zps[0];
        if zero_point < i64::from(qtype.min()) || zero_point > i64::from(qtype.max()) {
            return fail(
                Some(t),
                format!("zero point {zero_point} is outside the {qtype:?} range"),
            );
        }
        Ok(Affine {
            scale: scales[0],
            zero_point: zero_point as i32,
        })
    }

    /// Scales (positive, finite) and zero points of tensor `t`, which must
    /// be quantized.
    pub(crate) fn scales(&self, t: TensorIndex) -> OpResult<(&'a [f32], &'a [i64])> {
        let Some(q) = &self.tensor(t).quant else {
            return fail(Some(t), "has no quantization parameters");
        };
        if q.scales.is_empty() || q.scales.len() != q.zero_points.len() {
            return fail(
                Some(t),
                format!(
                    "has {} scales and {} zero points",
                    q.scales.len(),
                    q.zero_points.len()
                ),
            );
        }
        if let Some(s) = q.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return fail(Some(t), format!("scale {s} is not positive and finite"));
        }
        Ok((&q.scales, &q.zero_points))
    }

    /// The constant data of tensor `t`.
    pub(crate) fn constant(&self, t: TensorIndex) -> OpResult<&'a Tensor> {
        match &self.tensor(t).data {
            Some(data) => Ok(data),
            None => fail(Some(t), "must be a constant (has no data)"),
        }
    }

    /// The constant int32 elements of tensor `t`.
    pub(crate) fn const_i32(&self, t: TensorIndex) -> OpResult<Vec<i32>> {
        let data = self.constant(t)?;
        let values = data
            .to_i64_vec()
            .or_else(|e| fail(Some(t), e.to_string()))?;
        values
            .into_iter()
            .map(|v| i32::try_from(v).or_else(|_| fail(Some(t), format!("{v} is not an int32"))))
            .collect()
    }

    /// The constant 8-bit levels of tensor `t` as i32.
    pub(crate) fn const_levels(&self, t: TensorIndex) -> OpResult<Vec<i32>> {
        self.qtype(t)?;
        let data = self.constant(t)?;
        if data.dtype() != self.tensor(t).dtype {
            return fail(
                Some(t),
                format!(
                    "data is {}, declared {}",
                    data.dtype(),
                    self.tensor(t).dtype
                ),
            );
        }
        Ok(data
            .to_i64_vec()
            .or_else(|e| fail(Some(t), e.to_string()))?
            .into_iter()
            .map(|v| v as i32)
            .collect())
    }
}

/// Checks that a run-time 8-bit value has the type the kernel was prepared for.
pub(crate) fn expect_q(value: &Value, qtype: QType, t: TensorIndex) -> OpResult<()> {
    if value.qtype() != Some(qtype) {
        return fail(
            Some(t),
            format!("value is {}, expected {qtype:?}", value.buf.dtype()),
        );
    }
    Ok(())
}

/// Elements of `shape`, refusing overflow and tensors over
/// [`MAX_TENSOR_BYTES`](quant_core::tensor::MAX_TENSOR_BYTES).
pub(crate) fn numel(shape: &[usize], t: TensorIndex) -> OpResult<usize> {
    quant_core::tensor::checked_len(shape, 1).or_else(|e| fail(Some(t), e.to_string()))
}

/// A value of the 8-bit type `T`.
pub(crate) fn q_value<T: super::value::Q8>(shape: Vec<usize>, data: Vec<T>) -> Value {
    Value {
        shape,
        buf: T::into_buf(data),
    }
}

/// The elements of an 8-bit value of type `T` (the caller checked the type).
pub(crate) fn q_slice<T: super::value::Q8>(value: &Value, t: TensorIndex) -> OpResult<&[T]> {
    T::slice(&value.buf).map_or_else(
        || {
            fail(
                Some(t),
                format!("value is {}, expected {:?}", value.buf.dtype(), T::QTYPE),
            )
        },
        Ok,
    )
}

/// The float32 elements of a value.
pub(crate) fn f32_slice(value: &Value, t: TensorIndex) -> OpResult<&[f32]> {
    match &value.buf {
        Buf::F32(v) => Ok(v),
        other => fail(Some(t), format!("value is {}, expected f32", other.dtype())),
    }
}
