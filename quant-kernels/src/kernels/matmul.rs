//! MatMul with TensorFlow's semantics: `Y = op(A)·op(B)`, where `op`
//! transposes when the matching flag is set.
//!
//! # Backward
//!
//! The gradients are matmuls themselves (as TF's `_MatMulGrad`), so no
//! separate kernel exists; with `dY` the gradient of `Y`:
//!
//! | forward            | `dA`                               | `dB`                               |
//! |--------------------|------------------------------------|------------------------------------|
//! | `Y = A·B`          | `dY·Bᵀ` = `matmul(dY, B, F, T)`    | `Aᵀ·dY` = `matmul(A, dY, T, F)`    |
//! | `Y = Aᵀ·B`         | `B·dYᵀ` = `matmul(B, dY, F, T)`    | `A·dY` = `matmul(A, dY, F, F)`     |
//! | `Y = A·Bᵀ`         | `dY·B` = `matmul(dY, B, F, F)`     | `dYᵀ·A` = `matmul(dY, A, T, F)`    |
//! | `Y = Aᵀ·Bᵀ`        | `Bᵀ·dYᵀ` = `matmul(B, dY, T, T)`   | `dYᵀ·Aᵀ` = `matmul(dY, A, T, T)`   |
//!
//! Transposes are strided views handed to [`crate::gemm::gemm`]; nothing is
//! copied.

use ndarray::{Array2, ArrayView2};

use crate::gemm::matmul_new;

/// `op(a)·op(b)` where `op` transposes when `transpose_a` / `transpose_b` is
/// set (TF `MatMul`'s `transpose_a` / `transpose_b` attributes).
///
/// # Panics
///
/// If the inner dimensions of `op(a)` and `op(b)` differ.
pub fn matmul(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    transpose_a: bool,
    transpose_b: bool,
) -> Array2<f32> {
    let a = if transpose_a { a.reversed_axes() } else { a };
    let b = if transpose_b { b.reversed_axes() } else { b };
    assert_eq!(
        a.ncols(),
        b.nrows(),
        "matmul: inner dimensions differ ({:?} · {:?})",
        a.dim(),
        b.dim()
    );
    matmul_new(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::testing::{Rng, assert_close, dot, to_f64};
    use ndarray::Array2;

    fn reference(a: &Array2<f32>, b: &Array2<f32>, ta: bool, tb: bool) -> Array2<f64> {
        let (a, b) = (to_f64(a), to_f64(b));
        let a = if ta { a.reversed_axes() } else { a };
        let b = if tb { b.reversed_axes() } else { b };
        Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
            (0..a.ncols()).map(|p| a[[i, p]] * b[[p, j]]).sum()
        })
    }

    fn shape(rows: usize, cols: usize, t: bool) -> (usize, usize) {
        if t { (cols, rows) } else { (rows, cols) }
    }

    const FLAGS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

    #[test]
    fn forward_matches_reference() {
        let mut rng = Rng::new(10);
        for (m, k, n) in [
            (0, 3, 2),
            (1, 1, 1),
            (3, 0, 2),
            (5, 7, 3),
            (64, 157, 10),
            (9, 65, 17),
        ] {
            for (ta, tb) in FLAGS {
                let a = rng.array(shape(m, k, ta));
                let b = rng.array(shape(k, n, tb));
                let y = matmul(a.view(), b.view(), ta, tb);
                assert_close(
                    &y,
                    &reference(&a, &b, ta, tb),
                    1e-5,
                    &format!("{m}×{k}×{n} {ta} {tb}"),
                );
            }
        }
    }

    /// The documented gradient formulas against central differences of the
    /// f64 reference of `L = <Y, dY>`.
    #[test]
    fn documented_gradients_match_finite_differences() {
        let mut rng = Rng::new(11);
        let (m, k, n) = (3, 4, 5);
        for (ta, tb) in FLAGS {
            let a = rng.array(shape(m, k, ta));
            let b = rng.array(shape(k, n, tb));
            let dy: Array2<f32> = rng.array((m, n));
            let (da, db) = match (ta, tb) {
                (false, false) => (
                    matmul(dy.view(), b.view(), false, true),
                    matmul(a.view(), dy.view(), true, false),
                ),
                (true, false) => (
                    matmul(b.view(), dy.view(), false, true),
                    matmul(a.view(), dy.view(), false, false),
                ),
                (false, true) => (
                    matmul(dy.view(), b.view(), false, false),
                    matmul(dy.view(), a.view(), true, false),
                ),
                (true, true) => (
                    matmul(b.view(), dy.view(), true, true),
                    matmul(dy.view(), a.view(), true, true),
                ),
            };
            let loss = |a: &Array2<f32>, b: &Array2<f32>| -> f64 {
                (&reference(a, b, ta, tb) * &to_f64(&dy)).sum()
            };
            let eps = 1e-2f32;
            let fd = |which: usize| -> Array2<f64> {
                let target = if which == 0 { &a } else { &b };
                Array2::from_shape_fn(target.dim(), |ix| {
                    let (mut p, mut q) = (a.clone(), b.clone());
                    let (mut pm, mut qm) = (a.clone(), b.clone());
                    if which == 0 {
                        p[ix] += eps;
                        pm[ix] -= eps;
                    } else {
                        q[ix] += eps;
                        qm[ix] -= eps;
                    }
                    let plus = loss(&p, &q);
                    let minus = loss(&pm, &qm);
                    let h = f64::from(if which == 0 {
                        p[ix] - pm[ix]
                    } else {
                        q[ix] - qm[ix]
                    });
                    (plus - minus) / h
                })
            };
            assert_close(&da, &fd(0), 1e-4, &format!("dA {ta} {tb}"));
            assert_close(&db, &fd(1), 1e-4, &format!("dB {ta} {tb}"));
            // Adjoint identity: <A·B, dY> = <A, dA> = <B, dB> for the bilinear form.
            let y = matmul(a.view(), b.view(), ta, tb);
            let lhs = dot(&y, &dy);
            assert!((lhs - dot(&a, &da)).abs() <= 1e-4 * lhs.abs().max(1.0));
            assert!((lhs - dot(&b, &db)).abs() <= 1e-4 * lhs.abs().max(1.0));
        }
    }

    #[test]
    fn transposed_inputs_are_views_not_copies_of_the_wrong_shape() {
        let a = Array2::from_shape_vec((2, 3), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        // aᵀ·a is 3×3 and symmetric.
        let y = matmul(a.view(), a.view(), true, false);
        assert_eq!(y.dim(), (3, 3));
        assert_eq!(y[[0, 2]], 1.0 * 3.0 + 4.0 * 6.0);
        assert_eq!(y, y.t());
    }
}
