//! Elementwise kernels: broadcasting binary ops, unary activations and
//! their gradients. Large inputs are split across rayon's pool.

use ndarray::{ArrayD, IxDyn, Zip};

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
    use ndarray::array;

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
