//! Tensors: ndarray-backed values with optional quantization parameters.

use crate::dtype::DType;
use crate::error::TensorError;
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

/// Affine quantization parameters: `real = scale · (q − zero_point)`.
///
/// Per-tensor parameters have one scale and one zero point and no axis;
/// per-channel parameters have one of each per index of `axis`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantParams {
    /// One scale per tensor or per channel.
    pub scales: Vec<f32>,
    /// One zero point per tensor or per channel (same length as `scales`).
    pub zero_points: Vec<i64>,
    /// The channel axis for per-channel parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub axis: Option<usize>,
}

/// The typed element storage of a [`Tensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `f32` elements.
    F32(ArrayD<f32>),
    /// `f64` elements.
    F64(ArrayD<f64>),
    /// `i32` elements.
    I32(ArrayD<i32>),
    /// `i64` elements.
    I64(ArrayD<i64>),
    /// `u8` elements.
    U8(ArrayD<u8>),
    /// `i8` elements.
    I8(ArrayD<i8>),
    /// `bool` elements.
    Bool(ArrayD<bool>),
}

/// Applies `$body` to the array inside any [`TensorData`] variant.
macro_rules! with_array {
    ($data:expr, $a:ident => $body:expr) => {
        match $data {
            TensorData::F32($a) => $body,
            TensorData::F64($a) => $body,
            TensorData::I32($a) => $body,
            TensorData::I64($a) => $body,
            TensorData::U8($a) => $body,
            TensorData::I8($a) => $body,
            TensorData::Bool($a) => $body,
        }
    };
}

/// A dense n-dimensional value.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    data: TensorData,
    /// Boxed: most tensors (every variable's and constant's value in a
    /// graph) have none, and inline they would add 56 bytes to each.
    quant: Option<Box<QuantParams>>,
}

/// Element types a [`Tensor`] can hold.
pub trait Element: Copy + 'static {
    /// The dtype of this element type.
    const DTYPE: DType;
    /// Wraps an array of this element type.
    fn wrap(array: ArrayD<Self>) -> TensorData;
    /// Borrows the array if `data` holds this element type.
    fn view(data: &TensorData) -> Option<&ArrayD<Self>>;
    /// Mutably borrows the array if `data` holds this element type.
    fn view_mut(data: &mut TensorData) -> Option<&mut ArrayD<Self>>;
    /// Decodes one element from little-endian bytes (`bytes.len()` = size of the type).
    fn from_le(bytes: &[u8]) -> Self;
    /// Appends the little-endian bytes of this element.
    fn push_le(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $variant:ident, $n:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(array: ArrayD<Self>) -> TensorData {
                TensorData::$variant(array)
            }
            fn view(data: &TensorData) -> Option<&ArrayD<Self>> {
                match data {
                    TensorData::$variant(a) => Some(a),
                    _ => None,
                }
            }
            fn view_mut(data: &mut TensorData) -> Option<&mut ArrayD<Self>> {
                match data {
                    TensorData::$variant(a) => Some(a),
                    _ => None,
                }
            }
            fn from_le(bytes: &[u8]) -> Self {
                let mut b = [0u8; $n];
                b.copy_from_slice(bytes);
                <$t>::from_le_bytes(b)
            }
            fn push_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}

element!(f32, F32, 4);
element!(f64, F64, 8);
element!(i32, I32, 4);
element!(i64, I64, 8);
element!(u8, U8, 1);
element!(i8, I8, 1);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn wrap(array: ArrayD<Self>) -> TensorData {
        TensorData::Bool(array)
    }
    fn view(data: &TensorData) -> Option<&ArrayD<Self>> {
        match data {
            TensorData::Bool(a) => Some(a),
            _ => None,
        }
    }
    fn view_mut(data: &mut TensorData) -> Option<&mut ArrayD<Self>> {
        match data {
            TensorData::Bool(a) => Some(a),
            _ => None,
        }
    }
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn push_le(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
}

/// The largest tensor quant allocates from a description (a shape read
/// from a file): 4 GiB. Larger claims are refused instead of aborting on
/// allocation failure.
pub const MAX_TENSOR_BYTES: usize = 1 << 32;

/// The element count of `shape`, refusing overflow and tensors larger than
/// [`MAX_TENSOR_BYTES`] at `elem_size` bytes per element.
pub fn checked_len(shape: &[usize], elem_size: usize) -> Result<usize, TensorError> {
    let too_big = || {
        TensorError::Invalid(format!(
            "shape {shape:?} is too large (over {MAX_TENSOR_BYTES} bytes)"
        ))
    };
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_big)?;
    if n.checked_mul(elem_size.max(1))
        .is_none_or(|bytes| bytes > MAX_TENSOR_BYTES)
    {
        return Err(too_big());
    }
    Ok(n)
}

impl Tensor {
    /// Wraps typed data.
    pub fn new(data: TensorData) -> Tensor {
        Tensor { data, quant: None }
    }

    /// A tensor from an ndarray.
    pub fn from_array<T: Element>(array: ArrayD<T>) -> Tensor {
        Tensor::new(T::wrap(array))
    }

    /// A tensor of the given shape from row-major values; the value count must match the shape.
    pub fn from_vec<T: Element>(shape: &[usize], values: Vec<T>) -> Result<Tensor, TensorError> {
        let expected = checked_len(shape, std::mem::size_of::<T>())?;
        if values.len() != expected {
            return Err(TensorError::LengthMismatch {
                shape: shape.to_vec(),
                expected,
                found: values.len(),
            });
        }
        let array = ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| {
            TensorError::Invalid(format!("cannot build array of shape {shape:?}: {e}"))
        })?;
        Ok(Tensor::from_array(array))
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor::from_array(ArrayD::from_elem(IxDyn(&[]), value))
    }

    /// A tensor of zeros (false for bool) of the given dtype and shape.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor, TensorError> {
        checked_len(shape, dtype.size_of().unwrap_or(1))?;
        let s = IxDyn(shape);
        Ok(Tensor::new(match dtype {
            DType::F32 => TensorData::F32(ArrayD::zeros(s)),
            DType::F64 => TensorData::F64(ArrayD::zeros(s)),
            DType::I32 => TensorData::I32(ArrayD::zeros(s)),
            DType::I64 => TensorData::I64(ArrayD::zeros(s)),
            DType::U8 => TensorData::U8(ArrayD::zeros(s)),
            DType::I8 => TensorData::I8(ArrayD::zeros(s)),
            DType::Bool => TensorData::Bool(ArrayD::from_elem(s, false)),
            DType::String | DType::Resource => return Err(TensorError::UnsupportedDType(dtype)),
        }))
    }

    /// Decodes row-major little-endian bytes; the byte count must match the shape.
    pub fn from_le_bytes(
        dtype: DType,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<Tensor, TensorError> {
        fn decode<T: Element>(
            shape: &[usize],
            bytes: &[u8],
            size: usize,
        ) -> Result<Tensor, TensorError> {
            let values = bytes.chunks_exact(size).map(T::from_le).collect();
            Tensor::from_vec(shape, values)
        }
        let size = dtype
            .size_of()
            .ok_or(TensorError::UnsupportedDType(dtype))?;
        let expected = checked_len(shape, size)? * size;
        if bytes.len() != expected {
            return Err(TensorError::ByteLengthMismatch {
                dtype,
                shape: shape.to_vec(),
                expected,
                found: bytes.len(),
            });
        }
        match dtype {
            DType::F32 => decode::<f32>(shape, bytes, size),
            DType::F64 => decode::<f64>(shape, bytes, size),
            DType::I32 => decode::<i32>(shape, bytes, size),
            DType::I64 => decode::<i64>(shape, bytes, size),
            DType::U8 => decode::<u8>(shape, bytes, size),
            DType::I8 => decode::<i8>(shape, bytes, size),
            DType::Bool => decode::<bool>(shape, bytes, size),
            DType::String | DType::Resource => Err(TensorError::UnsupportedDType(dtype)),
        }
    }

    /// Row-major little-endian bytes of the elements.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dtype().size_of().unwrap_or(1));
        with_array!(&self.data, a => a.iter().for_each(|v| v.push_le(&mut out)));
        out
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match &self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::U8(_) => DType::U8,
            TensorData::I8(_) => DType::I8,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        with_array!(&self.data, a => a.shape())
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        with_array!(&self.data, a => a.len())
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The typed storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The typed storage, mutably.
    pub fn data_mut(&mut self) -> &mut TensorData {
        &mut self.data
    }

    /// Consumes the tensor, returning its storage.
    pub fn into_data(self) -> TensorData {
        self.data
    }

    /// The array, if the tensor holds elements of type `T`.
    pub fn array<T: Element>(&self) -> Result<&ArrayD<T>, TensorError> {
        T::view(&self.data).ok_or(TensorError::WrongDType {
            expected: T::DTYPE,
            found: self.dtype(),
        })
    }

    /// The array, mutably, if the tensor holds elements of type `T`.
    pub fn array_mut<T: Element>(&mut self) -> Result<&mut ArrayD<T>, TensorError> {
        let found = self.dtype();
        T::view_mut(&mut self.data).ok_or(TensorError::WrongDType {
            expected: T::DTYPE,
            found,
        })
    }

    /// Every element converted to `f64` (bools as 0 and 1), in row-major order.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(a) => a.iter().map(|&v| f64::from(v)).collect(),
            TensorData::F64(a) => a.iter().copied().collect(),
            TensorData::I32(a) => a.iter().map(|&v| f64::from(v)).collect(),
            TensorData::I64(a) => a.iter().map(|&v| v as f64).collect(),
            TensorData::U8(a) => a.iter().map(|&v| f64::from(v)).collect(),
            TensorData::I8(a) => a.iter().map(|&v| f64::from(v)).collect(),
            TensorData::Bool(a) => a.iter().map(|&v| f64::from(u8::from(v))).collect(),
        }
    }

    /// Integer elements as `i64`, for shape- and axis-like tensors (`i32`/`i64`/`u8`/`i8`).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, TensorError> {
        Ok(match &self.data {
            TensorData::I32(a) => a.iter().map(|&v| i64::from(v)).collect(),
            TensorData::I64(a) => a.iter().copied().collect(),
            TensorData::U8(a) => a.iter().map(|&v| i64::from(v)).collect(),
            TensorData::I8(a) => a.iter().map(|&v| i64::from(v)).collect(),
            _ => {
                return Err(TensorError::WrongDType {
                    expected: DType::I64,
                    found: self.dtype(),
                });
            }
        })
    }

    /// The quantization parameters, if any.
    pub fn quant(&self) -> Option<&QuantParams> {
        self.quant.as_deref()
    }

    /// Sets or clears the quantization parameters, checking their consistency with the shape.
    pub fn set_quant(&mut self, quant: Option<QuantParams>) -> Result<(), TensorError> {
        if let Some(q) = &quant {
            if q.scales.len() != q.zero_points.len() {
                return Err(TensorError::Invalid(format!(
                    "quantization has {} scales but {} zero points",
                    q.scales.len(),
                    q.zero_points.len()
                )));
            }
            let expected = match q.axis {
                None => 1,
                Some(axis) => *self.shape().get(axis).ok_or_else(|| {
                    TensorError::Invalid(format!(
                        "quantization axis {axis} is out of range for shape {:?}",
                        self.shape()
                    ))
                })?,
            };
            if q.scales.len() != expected {
                return Err(TensorError::Invalid(format!(
                    "quantization needs {expected} scales for shape {:?}, found {}",
                    self.shape(),
                    q.scales.len()
                )));
            }
        }
        self.quant = quant.map(Box::new);
        Ok(())
    }

    /// Builder form of [`Tensor::set_quant`].
    pub fn with_quant(mut self, quant: QuantParams) -> Result<Tensor, TensorError> {
        self.set_quant(Some(quant))?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_bytes_round_trip_for_every_dtype() {
        for dtype in DType::ALL {
            let Some(size) = dtype.size_of() else {
                continue;
            };
            let bytes: Vec<u8> = (0..6 * size)
                .map(|i| {
                    if dtype == DType::Bool {
                        (i % 2) as u8
                    } else {
                        (i * 37 % 251) as u8
                    }
                })
                .collect();
            let t = Tensor::from_le_bytes(dtype, &[2, 3], &bytes).unwrap();
            assert_eq!(t.dtype(), dtype);
            assert_eq!(t.shape(), &[2, 3]);
            assert_eq!(t.to_le_bytes(), bytes);
        }
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let err = Tensor::from_vec(&[2, 2], vec![1.0f32; 3]).unwrap_err();
        assert!(err.to_string().contains("expects 4 values"), "{err}");
        let err = Tensor::from_le_bytes(DType::F32, &[2], &[0; 7]).unwrap_err();
        assert!(err.to_string().contains("8 bytes"), "{err}");
    }

    #[test]
    fn quant_params_must_fit_the_shape() {
        let t = Tensor::from_vec(&[2, 3], vec![0u8; 6]).unwrap();
        let ok = QuantParams {
            scales: vec![0.1; 3],
            zero_points: vec![0; 3],
            axis: Some(1),
        };
        assert!(t.clone().with_quant(ok).is_ok());
        let bad = QuantParams {
            scales: vec![0.1; 2],
            zero_points: vec![0; 2],
            axis: Some(1),
        };
        assert!(t.clone().with_quant(bad).is_err());
        let bad_axis = QuantParams {
            scales: vec![0.1],
            zero_points: vec![0],
            axis: Some(2),
        };
        assert!(t.with_quant(bad_axis).is_err());
    }
}
