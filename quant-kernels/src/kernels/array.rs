//! Data-movement kernels over tensors of any dtype: Shape, Size, Slice,
//! BroadcastTo, ExpandDims, Tile, Fill, ZerosLike/OnesLike and Cast.
//!
//! Each kernel first checks its arguments without looking at the element
//! type, then runs one generic copy (ndarray views, slices and broadcasts,
//! collected in row-major order). Elementwise conversions split large
//! tensors across rayon's pool.

use super::elementwise::PARALLEL_THRESHOLD;
use ndarray::{ArrayD, Axis, IxDyn, SliceInfoElem, Zip};
use quant_core::tensor::checked_len;
use quant_core::{DType, Element, Tensor, TensorData};

/// Applies `$body` (an `ArrayD` expression over the array `$a`) to any
/// [`TensorData`] variant and wraps the result in a [`Tensor`].
macro_rules! map_any {
    ($data:expr, $a:ident => $body:expr) => {
        match $data {
            TensorData::F32($a) => Tensor::from_array($body),
            TensorData::F64($a) => Tensor::from_array($body),
            TensorData::I32($a) => Tensor::from_array($body),
            TensorData::I64($a) => Tensor::from_array($body),
            TensorData::U8($a) => Tensor::from_array($body),
            TensorData::I8($a) => Tensor::from_array($body),
            TensorData::Bool($a) => Tensor::from_array($body),
        }
    };
}

/// A vector of dims or a count as a tensor of `dtype` (i32 or i64).
fn index_tensor(shape: &[usize], values: &[usize], dtype: DType) -> Result<Tensor, String> {
    let shape = IxDyn(shape);
    let too_big = |v: &usize| format!("value {v} does not fit {dtype}");
    match dtype {
        DType::I32 => {
            let v = values
                .iter()
                .map(|v| i32::try_from(*v).map_err(|_| too_big(v)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Tensor::from_array(
                ArrayD::from_shape_vec(shape, v).map_err(|e| e.to_string())?,
            ))
        }
        DType::I64 => {
            let v = values
                .iter()
                .map(|v| i64::try_from(*v).map_err(|_| too_big(v)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Tensor::from_array(
                ArrayD::from_shape_vec(shape, v).map_err(|e| e.to_string())?,
            ))
        }
        other => Err(format!("index dtype must be i32 or i64, found {other}")),
    }
}

/// `Shape`: the dims of `x` as a vector of `out_type` (i32 or i64).
pub fn shape(x: &Tensor, out_type: DType) -> Result<Tensor, String> {
    index_tensor(&[x.shape().len()], x.shape(), out_type)
}

/// `Size`: the element count of `x` as a scalar of `out_type` (i32 or i64).
pub fn size(x: &Tensor, out_type: DType) -> Result<Tensor, String> {
    index_tensor(&[], &[x.len()], out_type)
}

/// Non-negative dims from an integer shape input.
fn dims_of(what: &str, v: &[i64]) -> Result<Vec<usize>, String> {
    v.iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("{what} {v:?} has a negative value")))
        .collect()
}

/// `Slice`: the block starting at `begin` with extent `size` per dimension;
/// a size of −1 takes the rest of the dimension.
pub fn slice(x: &Tensor, begin: &[i64], size: &[i64]) -> Result<Tensor, String> {
    let shape = x.shape();
    if begin.len() != shape.len() || size.len() != shape.len() {
        return Err(format!(
            "begin {begin:?} and size {size:?} must each have {} values for input shape {shape:?}",
            shape.len()
        ));
    }
    let mut region = Vec::with_capacity(shape.len());
    for (d, ((&b, &s), &n)) in begin.iter().zip(size).zip(shape).enumerate() {
        let b = usize::try_from(b)
            .ok()
            .filter(|&b| b <= n)
            .ok_or_else(|| format!("dimension {d}: begin {b} is out of range for size {n}"))?;
        let s = match s {
            -1 => n - b,
            s => usize::try_from(s)
                .ok()
                .filter(|&s| s <= n - b)
                .ok_or_else(|| {
                    format!("dimension {d}: begin {b} + size {s} is out of range for size {n}")
                })?,
        };
        region.push(SliceInfoElem::from(ndarray::Slice::from(b..b + s)));
    }
    Ok(map_any!(x.data(), a => a.slice(region.as_slice()).to_owned()))
}

/// `BroadcastTo`: `x` repeated along its size-1 (and missing leading)
/// dimensions to `target`.
pub fn broadcast_to(x: &Tensor, target: &[i64]) -> Result<Tensor, String> {
    let target = dims_of("shape", target)?;
    let shape = x.shape();
    let offset = target.len().checked_sub(shape.len()).ok_or_else(|| {
        format!("rank of input {shape:?} must be no greater than the rank of the target {target:?}")
    })?;
    if shape
        .iter()
        .enumerate()
        .any(|(i, &d)| d != 1 && d != target[i + offset])
    {
        return Err(format!("cannot broadcast {shape:?} to {target:?}"));
    }
    checked_len(&target, x.dtype().size_of().unwrap_or(1)).map_err(|e| e.to_string())?;
    let dim = IxDyn(&target);
    Ok(map_any!(x.data(), a => a
        .broadcast(dim.clone())
        .ok_or_else(|| format!("cannot broadcast {shape:?} to {target:?}"))?
        .to_owned()))
}

/// `ExpandDims`: `x` with a size-1 dimension inserted at `axis`
/// (−rank−1 ≤ axis ≤ rank).
pub fn expand_dims(x: &Tensor, axis: i64) -> Result<Tensor, String> {
    let rank = x.shape().len() as i64;
    if axis < -rank - 1 || axis > rank {
        return Err(format!(
            "dim {axis} is out of range for an input of rank {rank} (expected {} to {rank})",
            -rank - 1
        ));
    }
    let axis = Axis(if axis < 0 { axis + rank + 1 } else { axis } as usize);
    Ok(map_any!(x.data(), a => a.clone().insert_axis(axis)))
}

/// `Tile`: `x` repeated `multiples[i]` times along dimension `i`.
pub fn tile(x: &Tensor, multiples: &[i64]) -> Result<Tensor, String> {
    let shape = x.shape();
    let m = dims_of("multiples", multiples)?;
    if m.len() != shape.len() {
        return Err(format!(
            "multiples {multiples:?} must have {} values for input shape {shape:?}",
            shape.len()
        ));
    }
    // View x as [1, d0, 1, d1, ...], broadcast to [m0, d0, m1, d1, ...] and
    // merge each pair: one row-major copy.
    let interleaved_in: Vec<usize> = shape.iter().flat_map(|&d| [1, d]).collect();
    let interleaved_out: Vec<usize> = shape.iter().zip(&m).flat_map(|(&d, &k)| [k, d]).collect();
    let out: Vec<usize> = shape.iter().zip(&m).map(|(&d, &k)| d * k).collect();
    checked_len(&interleaved_out, x.dtype().size_of().unwrap_or(1)).map_err(|e| e.to_string())?;
    fn run<T: Clone>(a: &ArrayD<T>, inner: &[usize], outer: &[usize], out: &[usize]) -> ArrayD<T> {
        let standard = a.as_standard_layout();
        let spread = standard
            .view()
            .into_shape_with_order(IxDyn(inner))
            .expect("inserting size-1 axes keeps the element count");
        let copied = spread
            .broadcast(IxDyn(outer))
            .expect("size-1 axes broadcast to any size")
            .to_owned();
        copied
            .into_shape_with_order(IxDyn(out))
            .expect("merging adjacent axes of a row-major array keeps the element count")
    }
    Ok(map_any!(x.data(), a => run(a, &interleaved_in, &interleaved_out, &out)))
}

/// `Fill`: a tensor of shape `dims` holding `value` (a scalar) everywhere.
pub fn fill(dims: &[i64], value: &Tensor) -> Result<Tensor, String> {
    let dims = dims_of("dims", dims)?;
    if !value.shape().is_empty() {
        return Err(format!(
            "value must be a scalar, found shape {:?}",
            value.shape()
        ));
    }
    checked_len(&dims, value.dtype().size_of().unwrap_or(1)).map_err(|e| e.to_string())?;
    let dim = IxDyn(&dims);
    Ok(map_any!(value.data(), a => ArrayD::from_elem(dim.clone(), a[IxDyn(&[])])))
}

/// `ZerosLike`: zeros (false) of `x`'s dtype and shape.
pub fn zeros_like(x: &Tensor) -> Result<Tensor, String> {
    Tensor::zeros(x.dtype(), x.shape()).map_err(|e| e.to_string())
}

/// `OnesLike`: ones (true) of `x`'s dtype and shape.
pub fn ones_like(x: &Tensor) -> Tensor {
    fn ones<T: CastElem>(a: &ArrayD<T>) -> ArrayD<T> {
        ArrayD::from_elem(a.raw_dim(), T::from_i64(1))
    }
    map_any!(x.data(), a => ones(a))
}

/// An element type `Cast` can produce, with TensorFlow's (C++
/// `static_cast`, x86) conversion from each source kind.
trait CastElem: Element + Send + Sync {
    /// From a float: truncation toward zero for integers.
    fn from_f32(v: f32) -> Self;
    /// From a double: truncation toward zero for integers.
    fn from_f64(v: f64) -> Self;
    /// From any integer or bool (widened to i64): wrap-around for narrower
    /// integers, round to nearest for floats, `v != 0` for bool.
    fn from_i64(v: i64) -> Self;
}

/// Float to i64 as x86's `cvttsd2si` does it: truncation toward zero, and
/// `i64::MIN` (the "integer indefinite" value) for NaN and out-of-range
/// values.
fn trunc_i64(v: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if v.is_nan() || !(-LIMIT..LIMIT).contains(&v) {
        i64::MIN
    } else {
        v as i64
    }
}

impl CastElem for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn from_i64(v: i64) -> Self {
        v as f32
    }
}

impl CastElem for f64 {
    fn from_f32(v: f32) -> Self {
        f64::from(v)
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn from_i64(v: i64) -> Self {
        v as f64
    }
}

impl CastElem for i32 {
    /// `i32::MIN` for NaN and values outside the i32 range (`cvttss2si`).
    fn from_f32(v: f32) -> Self {
        Self::from_f64(f64::from(v))
    }
    fn from_f64(v: f64) -> Self {
        const LIMIT: f64 = 2_147_483_648.0; // 2^31
        if v.is_nan() || !(-LIMIT..LIMIT).contains(&v) {
            i32::MIN
        } else {
            v as i32
        }
    }
    fn from_i64(v: i64) -> Self {
        v as i32
    }
}

impl CastElem for i64 {
    fn from_f32(v: f32) -> Self {
        trunc_i64(f64::from(v))
    }
    fn from_f64(v: f64) -> Self {
        trunc_i64(v)
    }
    fn from_i64(v: i64) -> Self {
        v
    }
}

/// Narrow integers from floats: truncated to i64, then wrapped, as
/// TensorFlow's scalar code path does. (C++ leaves out-of-range results
/// undefined; TensorFlow's vectorised path saturates differently, so only
/// in-range values are portable.)
macro_rules! narrow_int {
    ($t:ty) => {
        impl CastElem for $t {
            fn from_f32(v: f32) -> Self {
                trunc_i64(f64::from(v)) as $t
            }
            fn from_f64(v: f64) -> Self {
                trunc_i64(v) as $t
            }
            fn from_i64(v: i64) -> Self {
                v as $t
            }
        }
    };
}
narrow_int!(u8);
narrow_int!(i8);

impl CastElem for bool {
    fn from_f32(v: f32) -> Self {
        v != 0.0
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
}

/// `f` over every element, on rayon's pool for large inputs.
fn map_elements<S, D, F>(a: &ArrayD<S>, f: F) -> ArrayD<D>
where
    S: Copy + Sync,
    D: Send,
    F: Fn(S) -> D + Sync + Send,
{
    let zip = Zip::from(a);
    if a.len() >= PARALLEL_THRESHOLD {
        zip.par_map_collect(|&v| f(v))
    } else {
        zip.map_collect(|&v| f(v))
    }
}

fn cast_to<D: CastElem>(x: &Tensor) -> ArrayD<D> {
    match x.data() {
        TensorData::F32(a) => map_elements(a, D::from_f32),
        TensorData::F64(a) => map_elements(a, D::from_f64),
        TensorData::I32(a) => map_elements(a, |v| D::from_i64(i64::from(v))),
        TensorData::I64(a) => map_elements(a, D::from_i64),
        TensorData::U8(a) => map_elements(a, |v| D::from_i64(i64::from(v))),
        TensorData::I8(a) => map_elements(a, |v| D::from_i64(i64::from(v))),
        TensorData::Bool(a) => map_elements(a, |v| D::from_i64(i64::from(v))),
    }
}

/// `Cast` to `dst` with TensorFlow's CPU semantics: floats to integers
/// truncate toward zero (NaN and out-of-range values give the type's
/// minimum for i32 and i64), integers to narrower integers wrap around,
/// anything to bool is `x != 0`, bool to numbers is 0 or 1. (TensorFlow's
/// `Truncate` attribute only affects casts to half-precision types, which
/// quant does not have.)
pub fn cast(x: &Tensor, dst: DType) -> Result<Tensor, String> {
    Ok(match dst {
        DType::F32 => Tensor::from_array(cast_to::<f32>(x)),
        DType::F64 => Tensor::from_array(cast_to::<f64>(x)),
        DType::I32 => Tensor::from_array(cast_to::<i32>(x)),
        DType::I64 => Tensor::from_array(cast_to::<i64>(x)),
        DType::U8 => Tensor::from_array(cast_to::<u8>(x)),
        DType::I8 => Tensor::from_array(cast_to::<i8>(x)),
        DType::Bool => Tensor::from_array(cast_to::<bool>(x)),
        other => return Err(format!("cannot cast to {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    #[test]
    fn slice_takes_the_rest_with_minus_one_and_refuses_overruns() {
        let x = t(&[2, 3], vec![0., 1., 2., 3., 4., 5.]);
        let y = slice(&x, &[1, 1], &[-1, -1]).unwrap();
        assert_eq!(y, t(&[1, 2], vec![4., 5.]));
        let err = slice(&x, &[1, 1], &[1, 3]).unwrap_err();
        assert!(err.contains("dimension 1"), "{err}");
        assert!(slice(&x, &[0, 4], &[1, -1]).is_err());
        assert_eq!(slice(&x, &[0, 3], &[2, -1]).unwrap().shape(), [2, 0]);
    }

    #[test]
    fn tile_and_broadcast_repeat_in_row_major_order() {
        let x = t(&[2, 1], vec![1., 2.]);
        assert_eq!(
            tile(&x, &[2, 3]).unwrap(),
            t(
                &[4, 3],
                vec![1., 1., 1., 2., 2., 2., 1., 1., 1., 2., 2., 2.]
            )
        );
        assert_eq!(tile(&x, &[0, 1]).unwrap().shape(), [0, 1]);
        assert_eq!(
            broadcast_to(&x, &[2, 2, 2]).unwrap(),
            t(&[2, 2, 2], vec![1., 1., 2., 2., 1., 1., 2., 2.])
        );
        assert!(broadcast_to(&x, &[3, 2]).is_err());
        assert!(broadcast_to(&x, &[2]).is_err());
    }

    #[test]
    fn float_to_int_casts_follow_x86_truncation() {
        let x = t(&[5], vec![3.7, -3.7, f32::NAN, 3e9, -0.5]);
        let y = cast(&x, DType::I32).unwrap();
        assert_eq!(
            y.array::<i32>().unwrap().as_slice().unwrap(),
            [3, -3, i32::MIN, i32::MIN, 0]
        );
        let b = cast(&x, DType::Bool).unwrap();
        assert_eq!(
            b.array::<bool>().unwrap().as_slice().unwrap(),
            [true, true, true, true, true]
        );
        let big = Tensor::from_vec(&[2], vec![300i64, -1]).unwrap();
        let u = cast(&big, DType::U8).unwrap();
        assert_eq!(u.array::<u8>().unwrap().as_slice().unwrap(), [44, 255]);
    }
}
