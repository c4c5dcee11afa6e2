//! Elementwise kernels: broadcasting binary ops, unary activations and
//! their gradients. Large inputs are split across rayon's pool.

use ndarray::{ArrayD, IxDyn, Zip};
use rayon::prelude::*;

/// Below this many elements, elementwise work runs on the calling thread.
pub const PARALLEL_THRESHOLD: usize = 1 << 15;

/// The numpy-style broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i < rank - s.len() {
            1
        } else {
            s[i - (rank - s.len())]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            (x, y) => Err(format!(
                "shapes {a:?} and {b:?} cannot be broadcast (dimension {i}: {x} vs {y})"
            )),
        })
        .collect()
}

/// `f(a, b)` elementwise with numpy broadcasting.
pub fn binary<T, F>(a: &ArrayD<T>, b: &ArrayD<T>, f: F) -> Result<ArrayD<T>, String>
where
    T: Copy + Default + Send + Sync,
    F: Fn(T, T) -> T + Send + Sync,
{
    let shape = broadcast_shape(a.shape(), b.shape())?;
    if let Some(out) = binary_contiguous(a, b, &shape, &f) {
        return Ok(out);
    }
    let dim = IxDyn(&shape);
    let av = a.broadcast(dim.clone()).ok_or("broadcast failed")?;
    let bv = b.broadcast(dim.clone()).ok_or("broadcast failed")?;
    let mut out = ArrayD::<T>::default(dim);
    let zip = Zip::from(&mut out).and(&av).and(&bv);
    if out_len(&shape) >= PARALLEL_THRESHOLD {
        zip.par_for_each(|o, &x, &y| *o = f(x, y));
    } else {
        zip.for_each(|o, &x, &y| *o = f(x, y));
    }
    Ok(out)
}

/// Whether `small` (left-padded with ones) equals the trailing dimensions
/// of `big`, so that `small` repeats along `big`'s leading axes.
fn is_suffix(small: &[usize], big: &[usize]) -> bool {
    let small: &[usize] = {
        let ones = small.iter().take_while(|&&d| d == 1).count();
        &small[ones..]
    };
    small.len() <= big.len() && big[big.len() - small.len()..] == *small
}

/// The fast paths of [`binary`] on contiguous inputs: equal shapes, and one
/// operand repeating along the other's leading axes (a scalar, or a
/// per-channel vector against NHWC data). `None` for anything else.
fn binary_contiguous<T, F>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    shape: &[usize],
    f: &F,
) -> Option<ArrayD<T>>
where
    T: Copy + Default + Send + Sync,
    F: Fn(T, T) -> T + Send + Sync,
{
    let (xs, ys) = (a.as_slice()?, b.as_slice()?);
    let len = out_len(shape);
    #[derive(Clone, Copy)]
    enum Mode {
        Same,
        /// The shorter operand repeats every `row` outputs.
        RepeatB,
        RepeatA,
    }
    let (mode, row) = if xs.len() == len && ys.len() == len {
        (Mode::Same, 1)
    } else if xs.len() == len && is_suffix(b.shape(), shape) {
        (Mode::RepeatB, ys.len().max(1))
    } else if ys.len() == len && is_suffix(a.shape(), shape) {
        (Mode::RepeatA, xs.len().max(1))
    } else {
        return None;
    };
    let fill = |o: &mut [T], start: usize| {
        let end = start + o.len();
        match mode {
            Mode::Same => o
                .iter_mut()
                .zip(xs[start..end].iter().zip(&ys[start..end]))
                .for_each(|(o, (&x, &y))| *o = f(x, y)),
            Mode::RepeatB if ys.len() == 1 => o
                .iter_mut()
                .zip(&xs[start..end])
                .for_each(|(o, &x)| *o = f(x, ys[0])),
            Mode::RepeatA if xs.len() == 1 => o
                .iter_mut()
                .zip(&ys[start..end])
                .for_each(|(o, &y)| *o = f(xs[0], y)),
            Mode::RepeatB => {
                for (o, x) in o.chunks_mut(row).zip(xs[start..end].chunks(row)) {
                    o.iter_mut()
                        .zip(x.iter().zip(ys))
                        .for_each(|(o, (&x, &y))| *o = f(x, y));
                }
            }
            Mode::RepeatA => {
                for (o, y) in o.chunks_mut(row).zip(ys[start..end].chunks(row)) {
                    o.iter_mut()
                        .zip(xs.iter().zip(y))
                        .for_each(|(o, (&x, &y))| *o = f(x, y));
                }
            }
        }
    };
    let mut out = vec![T::default(); len];
    if len >= PARALLEL_THRESHOLD {
        // Parts of whole rows, so each part starts where the repeated operand does.
        let part = (PARALLEL_THRESHOLD / row).max(1) * row;
        out.par_chunks_mut(part)
            .enumerate()
            .for_each(|(i, o)| fill(o, i * part));
    } else {
        fill(&mut out, 0);
    }
    ArrayD::from_shape_vec(IxDyn(shape), out).ok()
}

fn out_len(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `f(x)` elementwise.
pub fn unary<F>(x: &ArrayD<f32>, f: F) -> ArrayD<f32>
where
    F: Fn(f32) -> f32 + Send + Sync,
{
    let mut out = ArrayD::<f32>::zeros(x.raw_dim());
    let zip = Zip::from(&mut out).and(x);
    if x.len() >= PARALLEL_THRESHOLD {
        zip.par_for_each(|o, &v| *o = f(v));
    } else {
        zip.for_each(|o, &v| *o = f(v));
    }
    out
}

/// `f(a, b)` over two arrays of the same shape.
pub fn zip_same<F>(a: &ArrayD<f32>, b: &ArrayD<f32>, f: F) -> Result<ArrayD<f32>, String>
where
    F: Fn(f32, f32) -> f32 + Send + Sync,
{
    if a.shape() != b.shape() {
        return Err(format!(
            "inputs have different shapes {:?} and {:?}",
            a.shape(),
            b.shape()
        ));
    }
    binary(a, b, f)
}

/// `ReluGrad(gradients, features)`: the gradient where the feature is positive.
pub fn relu_grad(g: &ArrayD<f32>, features: &ArrayD<f32>) -> Result<ArrayD<f32>, String> {
    zip_same(g, features, |g, x| if x > 0.0 { g } else { 0.0 })
}

/// `Relu6Grad(gradients, features)`: the gradient where `0 < feature < 6`.
pub fn relu6_grad(g: &ArrayD<f32>, features: &ArrayD<f32>) -> Result<ArrayD<f32>, String> {
    zip_same(g, features, |g, x| if x > 0.0 && x < 6.0 { g } else { 0.0 })
}

/// `RsqrtGrad(y, dy)` = `dy · (−½) · y³`.
pub fn rsqrt_grad(y: &ArrayD<f32>, dy: &ArrayD<f32>) -> Result<ArrayD<f32>, String> {
    zip_same(y, dy, |y, dy| dy * (-0.5 * y * y * y))
}

/// `SqrtGrad(y, dy)` = `dy · ½ / y`.
pub fn sqrt_grad(y: &ArrayD<f32>, dy: &ArrayD<f32>) -> Result<ArrayD<f32>, String> {
    zip_same(y, dy, |y, dy| dy * 0.5 / y)
}

/// `SigmoidGrad(y, dy)` = `dy · y · (1 − y)`.
pub fn sigmoid_grad(y: &ArrayD<f32>, dy: &ArrayD<f32>) -> Result<ArrayD<f32>, String> {
    zip_same(y, dy, |y, dy| dy * y * (1.0 - y))
}

/// `TanhGrad(y, dy)` = `dy · (1 − y²)`.
pub fn tanh_grad(y: &ArrayD<f32>, dy: &ArrayD<f32>) -> Result<ArrayD<f32>, String> {
    zip_same(y, dy, |y, dy| dy * (1.0 - y * y))
}

/// The logistic function, computed as TensorFlow does for f32 (`1 / (1 + e^−x)`).
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Dimension, array};

    /// `a - b` by explicit index arithmetic (numpy broadcasting).
    fn reference_sub(a: &ArrayD<f32>, b: &ArrayD<f32>) -> ArrayD<f32> {
        let shape = broadcast_shape(a.shape(), b.shape()).unwrap();
        let at = |x: &ArrayD<f32>, idx: &[usize]| {
            let off = shape.len() - x.ndim();
            let i: Vec<usize> = (0..x.ndim())
                .map(|d| if x.shape()[d] == 1 { 0 } else { idx[off + d] })
                .collect();
            x[IxDyn(&i)]
        };
        ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
            let idx = idx.slice().to_vec();
            at(a, &idx) - at(b, &idx)
        })
    }

    #[test]
    fn the_contiguous_fast_paths_agree_with_broadcasting() {
        let fill = |shape: &[usize], k: f32| {
            ArrayD::from_shape_fn(IxDyn(shape), |i| {
                i.slice().iter().fold(k, |acc, &v| acc * 1.7 + v as f32)
            })
        };
        let cases: [(&[usize], &[usize]); 9] = [
            (&[2, 3, 4], &[2, 3, 4]),
            (&[2, 3, 4], &[4]),
            (&[4], &[2, 3, 4]),
            (&[2, 3, 4], &[]),
            (&[], &[2, 3, 4]),
            (&[2, 3, 4], &[1, 1, 4]),
            (&[2, 3, 4], &[3, 4]),
            (&[2, 3, 4], &[3, 1]),
            (&[64, 28, 28, 16], &[16]),
        ];
        for (sa, sb) in cases {
            let (a, b) = (fill(sa, 0.5), fill(sb, -1.25));
            let got = binary(&a, &b, |x, y| x - y).unwrap();
            assert_eq!(got, reference_sub(&a, &b), "{sa:?} - {sb:?}");
            let got = binary(&b, &a, |x, y| x - y).unwrap();
            assert_eq!(got, reference_sub(&b, &a), "{sb:?} - {sa:?}");
        }
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shape(&[2, 3, 4], &[4]).unwrap(), [2, 3, 4]);
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]).unwrap(), [2, 3, 4]);
        assert!(broadcast_shape(&[2, 3], &[4]).is_err());
        let a = array![[1.0f32, 2.0], [3.0, 4.0]].into_dyn();
        let b = array![10.0f32, 20.0].into_dyn();
        assert_eq!(
            binary(&a, &b, |x, y| x + y).unwrap(),
            array![[11.0f32, 22.0], [13.0, 24.0]].into_dyn()
        );
    }

    #[test]
    fn activation_gradients_mask_at_the_boundaries() {
        let x = array![-1.0f32, 0.0, 3.0, 6.0, 7.0].into_dyn();
        let g = ArrayD::from_elem(x.raw_dim(), 2.0f32);
        assert_eq!(
            relu_grad(&g, &x).unwrap(),
            array![0.0f32, 0.0, 2.0, 2.0, 2.0].into_dyn()
        );
        assert_eq!(
            relu6_grad(&g, &x).unwrap(),
            array![0.0f32, 0.0, 2.0, 0.0, 0.0].into_dyn()
        );
    }
}
