//! Comparison and selection kernels: the broadcasting comparisons (bool
//! outputs), LogicalAnd/LogicalNot, Select (TensorFlow 1 rules), SelectV2
//! (broadcasting) and ArgMax.
//!
//! Every kernel is one `Zip` over broadcast views, collected in row-major
//! order on the calling thread, or on rayon's pool for large outputs.

use super::elementwise::{PARALLEL_THRESHOLD, broadcast_shape};
use ndarray::{ArrayD, ArrayView1, ArrayViewD, Axis, IxDyn, Zip};
use quant_core::{DType, Tensor, TensorData};

/// Runs `$body` on the arrays of two tensors holding the same dtype, and
/// wraps the resulting array; any other pair returns `$err` from the
/// enclosing function.
macro_rules! same_dtype {
    ($a:expr, $b:expr, $x:ident, $y:ident => $body:expr, $err:expr) => {
        match ($a.data(), $b.data()) {
            (TensorData::F32($x), TensorData::F32($y)) => Tensor::from_array($body),
            (TensorData::F64($x), TensorData::F64($y)) => Tensor::from_array($body),
            (TensorData::I32($x), TensorData::I32($y)) => Tensor::from_array($body),
            (TensorData::I64($x), TensorData::I64($y)) => Tensor::from_array($body),
            (TensorData::U8($x), TensorData::U8($y)) => Tensor::from_array($body),
            (TensorData::I8($x), TensorData::I8($y)) => Tensor::from_array($body),
            (TensorData::Bool($x), TensorData::Bool($y)) => Tensor::from_array($body),
            _ => return Err($err),
        }
    };
}

/// `f(a, b)` over the numpy broadcast of two arrays.
pub fn zip_broadcast<A, B, O, F>(a: &ArrayD<A>, b: &ArrayD<B>, f: F) -> Result<ArrayD<O>, String>
where
    A: Copy + Sync,
    B: Copy + Sync,
    O: Send,
    F: Fn(A, B) -> O + Sync + Send,
{
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let dim = IxDyn(&shape);
    let av = a.broadcast(dim.clone()).ok_or("broadcast failed")?;
    let bv = b.broadcast(dim).ok_or("broadcast failed")?;
    let zip = Zip::from(&av).and(&bv);
    Ok(if av.len() >= PARALLEL_THRESHOLD {
        zip.par_map_collect(|&x, &y| f(x, y))
    } else {
        zip.map_collect(|&x, &y| f(x, y))
    })
}

/// Which comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// `a > b`.
    Greater,
    /// `a >= b`.
    GreaterEqual,
    /// `a < b`.
    Less,
    /// `a <= b`.
    LessEqual,
    /// `a == b`.
    Equal,
    /// `a != b`.
    NotEqual,
}

impl Comparison {
    /// Whether the comparison orders its operands (and so rejects bools).
    fn is_ordered(self) -> bool {
        !matches!(self, Comparison::Equal | Comparison::NotEqual)
    }
}

fn compare_arrays<T: PartialOrd + Copy + Sync>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    op: Comparison,
) -> Result<ArrayD<bool>, String> {
    match op {
        Comparison::Greater => zip_broadcast(a, b, |x, y| x > y),
        Comparison::GreaterEqual => zip_broadcast(a, b, |x, y| x >= y),
        Comparison::Less => zip_broadcast(a, b, |x, y| x < y),
        Comparison::LessEqual => zip_broadcast(a, b, |x, y| x <= y),
        Comparison::Equal => zip_broadcast(a, b, |x, y| x == y),
        Comparison::NotEqual => zip_broadcast(a, b, |x, y| x != y),
    }
}

/// `op(a, b)` elementwise with broadcasting, as a bool tensor. With
/// `incompatible_shape_error` false (an attribute of `Equal`/`NotEqual`),
/// shapes that do not broadcast give a scalar `false` (`true` for
/// `NotEqual`) instead of an error.
pub fn compare(
    a: &Tensor,
    b: &Tensor,
    op: Comparison,
    incompatible_shape_error: bool,
) -> Result<Tensor, String> {
    if !incompatible_shape_error && broadcast_shape(a.shape(), b.shape()).is_err() {
        return Ok(Tensor::scalar(op == Comparison::NotEqual));
    }
    if op.is_ordered() && a.dtype() == DType::Bool {
        return Err(format!("{op:?} does not accept bool inputs"));
    }
    Ok(same_dtype!(a, b, x, y => compare_arrays(x, y, op)?,
        format!("inputs have different dtypes ({} and {})", a.dtype(), b.dtype())))
}

fn bools<'a>(t: &'a Tensor, what: &str) -> Result<&'a ArrayD<bool>, String> {
    t.array::<bool>()
        .map_err(|_| format!("{what} must be bool, found {}", t.dtype()))
}

/// `LogicalAnd(x, y)` with broadcasting.
pub fn logical_and(x: &Tensor, y: &Tensor) -> Result<Tensor, String> {
    Ok(Tensor::from_array(zip_broadcast(
        bools(x, "x")?,
        bools(y, "y")?,
        |p, q| p && q,
    )?))
}

/// `LogicalNot(x)`.
pub fn logical_not(x: &Tensor) -> Result<Tensor, String> {
    let x = bools(x, "x")?;
    let zip = Zip::from(x);
    Ok(Tensor::from_array(if x.len() >= PARALLEL_THRESHOLD {
        zip.par_map_collect(|&v| !v)
    } else {
        zip.map_collect(|&v| !v)
    }))
}

/// `cond ? t : e` with the three views broadcast to `shape`.
fn select_arrays<T: Copy + Send + Sync>(
    cond: ArrayViewD<'_, bool>,
    t: &ArrayD<T>,
    e: &ArrayD<T>,
    shape: &[usize],
) -> Result<ArrayD<T>, String> {
    let dim = IxDyn(shape);
    let fail = || format!("cannot broadcast the inputs to {shape:?}");
    let cv = cond.broadcast(dim.clone()).ok_or_else(fail)?;
    let tv = t.broadcast(dim.clone()).ok_or_else(fail)?;
    let ev = e.broadcast(dim).ok_or_else(fail)?;
    let zip = Zip::from(&cv).and(&tv).and(&ev);
    let pick = |&c: &bool, &a: &T, &b: &T| if c { a } else { b };
    Ok(if cv.len() >= PARALLEL_THRESHOLD {
        zip.par_map_collect(pick)
    } else {
        zip.map_collect(pick)
    })
}

fn select_any(
    cond: ArrayViewD<'_, bool>,
    t: &Tensor,
    e: &Tensor,
    shape: &[usize],
) -> Result<Tensor, String> {
    Ok(
        same_dtype!(t, e, a, b => select_arrays(cond.view(), a, b, shape)?,
        format!("t and e have different dtypes ({} and {})", t.dtype(), e.dtype())),
    )
}

/// TensorFlow 1's `Select(condition, t, e)`: `t` and `e` have one shape;
/// the condition has that shape too (elementwise choice), or is a vector
/// over the first dimension (choosing whole rows), or is a scalar.
pub fn select(cond: &Tensor, t: &Tensor, e: &Tensor) -> Result<Tensor, String> {
    let c = bools(cond, "condition")?;
    let shape = t.shape();
    if shape != e.shape() {
        return Err(format!(
            "t {shape:?} and e {:?} must have the same shape",
            e.shape()
        ));
    }
    let rows = c.ndim() == 1 && shape.len() > 1 && c.len() == shape[0];
    if c.ndim() != 0 && c.shape() != shape && !rows {
        return Err(format!(
            "condition {:?} must be a scalar, have the shape {shape:?} of t and e, or be a vector over their first dimension",
            c.shape()
        ));
    }
    let standard = c.as_standard_layout();
    let view = if rows {
        let mut column = vec![1; shape.len()];
        column[0] = shape[0];
        standard
            .view()
            .into_shape_with_order(IxDyn(&column))
            .map_err(|e| e.to_string())?
    } else {
        standard.view()
    };
    select_any(view, t, e, shape)
}

/// `SelectV2(condition, t, e)`: the three inputs broadcast together.
pub fn select_v2(cond: &Tensor, t: &Tensor, e: &Tensor) -> Result<Tensor, String> {
    let c = bools(cond, "condition")?;
    let shape = broadcast_shape(&broadcast_shape(c.shape(), t.shape())?, e.shape())?;
    select_any(c.view(), t, e, &shape)
}

/// The index of the first largest element of a lane (ties go to the
/// lowest index; a NaN is never larger than anything).
fn first_max<T: PartialOrd + Copy>(lane: ArrayView1<'_, T>) -> usize {
    let mut best = 0;
    let mut best_value = lane[0];
    for (i, &v) in lane.iter().enumerate().skip(1) {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best
}

fn arg_max_array<T: PartialOrd + Copy + Sync>(a: &ArrayD<T>, axis: Axis) -> ArrayD<usize> {
    let zip = Zip::from(a.lanes(axis));
    if a.len() >= PARALLEL_THRESHOLD {
        zip.par_map_collect(|lane| first_max(lane))
    } else {
        zip.map_collect(|lane| first_max(lane))
    }
}

/// `ArgMax(input, dimension)`: the index of the first largest element along
/// `axis`, as `out` (i32 or i64).
pub fn arg_max(x: &Tensor, axis: i64, out: DType) -> Result<Tensor, String> {
    let rank = x.shape().len() as i64;
    if axis < -rank || axis >= rank {
        return Err(format!(
            "dimension {axis} is out of range for an input of rank {rank}"
        ));
    }
    let axis = if axis < 0 { axis + rank } else { axis } as usize;
    if x.shape()[axis] == 0 {
        return Err(format!(
            "cannot take the argmax over the empty dimension {axis} of {:?}",
            x.shape()
        ));
    }
    let a = Axis(axis);
    let index = match x.data() {
        TensorData::F32(v) => arg_max_array(v, a),
        TensorData::F64(v) => arg_max_array(v, a),
        TensorData::I32(v) => arg_max_array(v, a),
        TensorData::I64(v) => arg_max_array(v, a),
        TensorData::U8(v) => arg_max_array(v, a),
        TensorData::I8(v) => arg_max_array(v, a),
        TensorData::Bool(v) => arg_max_array(v, a),
    };
    // Indices are below the axis length, which fits i64; i32 is checked.
    match out {
        DType::I64 => Ok(Tensor::from_array(index.mapv(|i| i as i64))),
        DType::I32 if x.shape()[axis] <= i32::MAX as usize => {
            Ok(Tensor::from_array(index.mapv(|i| i as i32)))
        }
        DType::I32 => Err(format!(
            "dimension {axis} has {} elements, too many for i32 indices",
            x.shape()[axis]
        )),
        other => Err(format!("output_type must be i32 or i64, found {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    fn b(shape: &[usize], v: Vec<bool>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    #[test]
    fn select_takes_rows_for_a_vector_condition() {
        let t = f(&[2, 2], vec![1., 2., 3., 4.]);
        let e = f(&[2, 2], vec![5., 6., 7., 8.]);
        let rows = b(&[2], vec![false, true]);
        assert_eq!(
            select(&rows, &t, &e).unwrap(),
            f(&[2, 2], vec![5., 6., 3., 4.])
        );
        assert_eq!(select(&Tensor::scalar(true), &t, &e).unwrap(), t.clone());
        assert!(select(&b(&[2], vec![true, true]), &t, &f(&[2], vec![0., 0.])).is_err());
        assert!(select(&b(&[3], vec![true; 3]), &t, &e).is_err());
    }

    #[test]
    fn incompatible_equal_is_a_scalar_when_allowed() {
        let (x, y) = (f(&[2], vec![1., 2.]), f(&[3], vec![1., 2., 3.]));
        assert!(compare(&x, &y, Comparison::Equal, true).is_err());
        assert_eq!(
            compare(&x, &y, Comparison::NotEqual, false).unwrap(),
            Tensor::scalar(true)
        );
    }

    #[test]
    fn arg_max_breaks_ties_toward_the_first_index() {
        let x = f(&[2, 3], vec![1., 3., 3., 2., 2., 1.]);
        let got = arg_max(&x, 1, DType::I64).unwrap();
        assert_eq!(got, Tensor::from_vec(&[2], vec![1i64, 0]).unwrap());
        assert!(arg_max(&f(&[2, 0], vec![]), 1, DType::I64).is_err());
    }
}
