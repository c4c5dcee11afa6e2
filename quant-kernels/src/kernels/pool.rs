//! MaxPool, AvgPool and their gradients (NHWC) with TensorFlow's CPU
//! semantics.
//!
//! - **MaxPool** takes the maximum over the in-bounds window elements;
//!   padding never wins. A window with no in-bounds element (only possible
//!   with explicit padding) yields `f32::MIN`, TF's initial value.
//! - **MaxPoolGrad** routes each `dy` to the *first* maximum of its window
//!   in row-major (y, then x) order, exactly like TF's CPU kernel
//!   (`SpatialMaxPoolWithArgMaxHelper`: the first element visited is taken,
//!   later ones only when strictly greater, so ties go to the first and a
//!   NaN wins only when it comes first). Like TF's CPU kernel it recomputes
//!   the argmax from `x`; `y` is only checked for shape.
//! - **AvgPool** divides by the number of in-bounds elements of each window,
//!   not by the window size; **AvgPoolGrad** spreads `dy · (1 / count)`
//!   evenly over those elements.
//!
//! # Design note
//!
//! Direct loops with the channel loop innermost (contiguous in NHWC, so it
//! vectorises). Forward ops are parallel over output rows `(image, oy)`;
//! the gradients scatter into overlapping windows, so they are parallel over
//! images, each task owning one image of `dx`.

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::conv::Resolved;
use super::layout::{dims, slice};
use super::window::Window2d;

/// Minimum output rows per rayon task in the forward ops.
const MIN_ROWS_PER_TASK: usize = 4;

/// TF `MaxPool` over the `window.kernel` window.
pub fn max_pool(x: ArrayView4<f32>, window: &Window2d) -> Result<Array4<f32>, String> {
    pool_forward(x, window, Reduce::Max)
}

/// TF `AvgPool` over the `window.kernel` window (mean of the in-bounds
/// elements).
pub fn avg_pool(x: ArrayView4<f32>, window: &Window2d) -> Result<Array4<f32>, String> {
    pool_forward(x, window, Reduce::Mean)
}

/// TF `MaxPoolGrad`: the gradient of [`max_pool`] with respect to `x`, given
/// the forward output `y` (shape-checked only) and its gradient `dy`.
pub fn max_pool_grad(
    x: ArrayView4<f32>,
    y: ArrayView4<f32>,
    dy: ArrayView4<f32>,
    window: &Window2d,
) -> Result<Array4<f32>, String> {
    let p = Pool::new(dims(&x), window)?;
    p.check("y", y.shape())?;
    p.check("dy", dy.shape())?;
    let mut dx = Array4::zeros(dims(&x));
    if dx.is_empty() || dy.is_empty() {
        return Ok(dx);
    }
    let (x, dy) = (x.as_standard_layout(), dy.as_standard_layout());
    let (xs, dys) = (slice(&x), slice(&dy));
    let ([h, w], [oh, ow], c) = (p.r.input, p.r.out, p.c);
    let [dh, dw] = p.r.dilations;
    let dx_images = dx
        .as_slice_mut()
        .expect("fresh array")
        .par_chunks_mut(h * w * c);
    dx_images.enumerate().for_each(|(b, dxi)| {
        let xi = &xs[b * h * w * c..][..h * w * c];
        let (mut best, mut arg) = (vec![0.0f32; c], vec![usize::MAX; c]);
        for oy in 0..oh {
            let (ylo, yhi, iy0) = p.r.taps(0, oy);
            for ox in 0..ow {
                let (xlo, xhi, ix0) = p.r.taps(1, ox);
                arg.fill(usize::MAX);
                for ky in 0..yhi - ylo {
                    for kx in 0..xhi - xlo {
                        let pixel = (iy0 + ky * dh) * w + ix0 + kx * dw;
                        let v = &xi[pixel * c..][..c];
                        for ch in 0..c {
                            if arg[ch] == usize::MAX || best[ch] < v[ch] {
                                best[ch] = v[ch];
                                arg[ch] = pixel;
                            }
                        }
                    }
                }
                let g = &dys[((b * oh + oy) * ow + ox) * c..][..c];
                for (ch, (&a, &g)) in arg.iter().zip(g).enumerate() {
                    if a != usize::MAX {
                        dxi[a * c + ch] += g;
                    }
                }
            }
        }
    });
    Ok(dx)
}

/// TF `AvgPoolGrad`: the gradient of [`avg_pool`] with respect to its input
/// of shape `input_shape`, given `dy`.
pub fn avg_pool_grad(
    input_shape: [usize; 4],
    dy: ArrayView4<f32>,
    window: &Window2d,
) -> Result<Array4<f32>, String> {
    let p = Pool::new(input_shape, window)?;
    p.check("dy", dy.shape())?;
    let mut dx = Array4::zeros(input_shape);
    if dx.is_empty() || dy.is_empty() {
        return Ok(dx);
    }
    let dy = dy.as_standard_layout();
    let dys = slice(&dy);
    let ([h, w], [oh, ow], c) = (p.r.input, p.r.out, p.c);
    let [dh, dw] = p.r.dilations;
    let dx_images = dx
        .as_slice_mut()
        .expect("fresh array")
        .par_chunks_mut(h * w * c);
    dx_images.enumerate().for_each(|(b, dxi)| {
        for oy in 0..oh {
            let (ylo, yhi, iy0) = p.r.taps(0, oy);
            for ox in 0..ow {
                let (xlo, xhi, ix0) = p.r.taps(1, ox);
                let count = (yhi - ylo) * (xhi - xlo);
                if count == 0 {
                    continue;
                }
                let scale = 1.0 / count as f32;
                let g = &dys[((b * oh + oy) * ow + ox) * c..][..c];
                for ky in 0..yhi - ylo {
                    for kx in 0..xhi - xlo {
                        let pixel = (iy0 + ky * dh) * w + ix0 + kx * dw;
                        for (d, &g) in dxi[pixel * c..][..c].iter_mut().zip(g) {
                            *d += g * scale;
                        }
                    }
                }
            }
        }
    });
    Ok(dx)
}

#[derive(Clone, Copy)]
enum Reduce {
    Max,
    Mean,
}

struct Pool {
    r: Resolved,
    n: usize,
    c: usize,
}

impl Pool {
    fn new(x: [usize; 4], window: &Window2d) -> Result<Self, String> {
        let [n, h, w, c] = x;
        Ok(Pool {
            r: Resolved::new(window, window.kernel, h, w)?,
            n,
            c,
        })
    }

    fn out_shape(&self) -> [usize; 4] {
        [self.n, self.r.out[0], self.r.out[1], self.c]
    }

    fn check(&self, what: &str, shape: &[usize]) -> Result<(), String> {
        if shape != self.out_shape() {
            return Err(format!(
                "pool: {what} has shape {shape:?}, the output shape is {:?}",
                self.out_shape()
            ));
        }
        Ok(())
    }
}

fn pool_forward(
    x: ArrayView4<f32>,
    window: &Window2d,
    reduce: Reduce,
) -> Result<Array4<f32>, String> {
    let p = Pool::new(dims(&x), window)?;
    let mut y = Array4::zeros(p.out_shape());
    if y.is_empty() {
        return Ok(y);
    }
    let x = x.as_standard_layout();
    let xs = slice(&x);
    let ([h, w], [oh, ow], c) = (p.r.input, p.r.out, p.c);
    let [dh, dw] = p.r.dilations;
    let rows = y
        .as_slice_mut()
        .expect("fresh array")
        .par_chunks_mut(ow * c)
        .with_min_len(MIN_ROWS_PER_TASK);
    rows.enumerate().for_each(|(row, yrow)| {
        let (b, oy) = (row / oh, row % oh);
        let (ylo, yhi, iy0) = p.r.taps(0, oy);
        for (ox, out) in yrow.chunks_exact_mut(c).enumerate() {
            let (xlo, xhi, ix0) = p.r.taps(1, ox);
            let count = (yhi - ylo) * (xhi - xlo);
            out.fill(match reduce {
                Reduce::Max => f32::MIN,
                Reduce::Mean => 0.0,
            });
            for ky in 0..yhi - ylo {
                for kx in 0..xhi - xlo {
                    let pixel = (b * h + iy0 + ky * dh) * w + ix0 + kx * dw;
                    let v = &xs[pixel * c..][..c];
                    match reduce {
                        Reduce::Max if ky == 0 && kx == 0 => out.copy_from_slice(v),
                        Reduce::Max => out
                            .iter_mut()
                            .zip(v)
                            .for_each(|(o, &v)| *o = if *o < v { v } else { *o }),
                        Reduce::Mean => out.iter_mut().zip(v).for_each(|(o, &v)| *o += v),
                    }
                }
            }
            if let Reduce::Mean = reduce
                && count > 0
            {
                let n = count as f32;
                out.iter_mut().for_each(|o| *o /= n);
            }
        }
    });
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::testing::{Rng, assert_close, assert_scalar_close, dot, to_f64};
    use crate::kernels::window::Padding;
    use proptest::prelude::*;

    /// The in-bounds input positions of output `(oy, ox)`, row-major.
    fn window_positions(
        win: &Window2d,
        h: usize,
        w: usize,
        oy: usize,
        ox: usize,
    ) -> Vec<(usize, usize)> {
        let g = win.geometry(h, w).unwrap();
        let mut v = Vec::new();
        for ky in 0..win.kernel[0] {
            for kx in 0..win.kernel[1] {
                let iy = (oy * win.strides[0] + ky * win.dilations[0]) as isize
                    - g.h.pad_before as isize;
                let ix = (ox * win.strides[1] + kx * win.dilations[1]) as isize
                    - g.w.pad_before as isize;
                if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                    v.push((iy as usize, ix as usize));
                }
            }
        }
        v
    }

    /// Plain loops in f64: `(max, first argmax, mean)` per output element.
    fn reference(
        x: &Array4<f64>,
        win: &Window2d,
    ) -> (Array4<f64>, Array4<(usize, usize)>, Array4<f64>) {
        let (n, h, w, c) = x.dim();
        let g = win.geometry(h, w).unwrap();
        let shape = (n, g.h.out, g.w.out, c);
        let mut max = Array4::zeros(shape);
        let mut arg = Array4::from_elem(shape, (0, 0));
        let mut mean = Array4::zeros(shape);
        for ((b, oy, ox, ch), m) in max.indexed_iter_mut() {
            let pos = window_positions(win, h, w, oy, ox);
            let mut best = (f64::NEG_INFINITY, (0, 0));
            for &(iy, ix) in &pos {
                if x[[b, iy, ix, ch]] > best.0 {
                    best = (x[[b, iy, ix, ch]], (iy, ix));
                }
            }
            *m = best.0;
            arg[[b, oy, ox, ch]] = best.1;
            mean[[b, oy, ox, ch]] =
                pos.iter().map(|&(iy, ix)| x[[b, iy, ix, ch]]).sum::<f64>() / pos.len() as f64;
        }
        (max, arg, mean)
    }

    fn win(kernel: [usize; 2], strides: [usize; 2], padding: Padding) -> Window2d {
        Window2d {
            kernel,
            strides,
            dilations: [1, 1],
            padding,
        }
    }

    fn cases() -> Vec<([usize; 4], Window2d)> {
        use Padding::*;
        vec![
            ([2, 28, 28, 16], win([2, 2], [2, 2], Same)), // MNIST pools
            ([1, 7, 7, 1], win([2, 2], [2, 2], Same)),    // odd size: padded last row/col
            ([2, 8, 7, 3], win([3, 3], [2, 2], Same)),    // asymmetric padding
            ([2, 6, 5, 2], win([3, 3], [1, 1], Same)),    // overlapping windows
            ([1, 5, 6, 3], win([2, 3], [1, 2], Valid)),
            ([1, 4, 4, 2], win([1, 1], [1, 1], Valid)), // 1x1
            ([0, 4, 4, 2], win([2, 2], [2, 2], Same)),  // empty batch
            ([1, 3, 2, 17], win([5, 5], [1, 1], Same)), // window > input
            (
                [2, 5, 5, 2],
                win([2, 2], [2, 2], Explicit([[1, 0], [0, 2]])),
            ),
        ]
    }

    #[test]
    fn forward_matches_reference() {
        let mut rng = Rng::new(40);
        for (xs, w) in cases() {
            let x: Array4<f32> = rng.array(xs);
            let (max, _, mean) = reference(&to_f64(&x), &w);
            assert_close(
                &max_pool(x.view(), &w).unwrap(),
                &max,
                0.0,
                &format!("max {xs:?} {w:?}"),
            );
            assert_close(
                &avg_pool(x.view(), &w).unwrap(),
                &mean,
                1e-6,
                &format!("avg {xs:?} {w:?}"),
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences_and_adjoint_identity() {
        let mut rng = Rng::new(41);
        for (xs, w) in cases()
            .into_iter()
            .filter(|(xs, _)| xs.iter().product::<usize>() <= 200)
        {
            let x: Array4<f32> = rng.array(xs);
            let y = max_pool(x.view(), &w).unwrap();
            let dy: Array4<f32> = rng.array(y.raw_dim());
            let what = format!("{xs:?} {w:?}");
            let dmax = max_pool_grad(x.view(), y.view(), dy.view(), &w).unwrap();
            let davg = avg_pool_grad(xs, dy.view(), &w).unwrap();
            // Random inputs have distinct values, so max pool is locally
            // linear and central differences with a small step are exact.
            let x64 = to_f64(&x);
            let dy64 = to_f64(&dy);
            let (fd_max, fd_avg) = {
                let eps = 1e-6;
                let (mut gm, mut ga) = (Array4::zeros(x64.raw_dim()), Array4::zeros(x64.raw_dim()));
                let mut t = x64.clone();
                for ix in ndarray::indices(t.raw_dim()) {
                    let v = t[ix];
                    t[ix] = v + eps;
                    let (mp, _, ap) = reference(&t, &w);
                    t[ix] = v - eps;
                    let (mm, _, am) = reference(&t, &w);
                    t[ix] = v;
                    gm[ix] = ((&mp - &mm) * &dy64).sum() / (2.0 * eps);
                    ga[ix] = ((&ap - &am) * &dy64).sum() / (2.0 * eps);
                }
                (gm, ga)
            };
            assert_close(&dmax, &fd_max, 1e-4, &format!("max grad {what}"));
            assert_close(&davg, &fd_avg, 1e-4, &format!("avg grad {what}"));
            // AvgPool is linear: <avg(x), dy> = <x, avg_grad(dy)>.
            let avg = avg_pool(x.view(), &w).unwrap();
            assert_scalar_close(
                dot(&x, &davg),
                dot(&avg, &dy),
                1e-5,
                &format!("avg adjoint {what}"),
            );
        }
    }

    #[test]
    fn max_pool_grad_goes_to_the_first_max_in_row_major_order() {
        // Every window of the 2×2 / stride 1 pool over this 3×3 input is all
        // ties; TF gives each window's gradient to its top-left element.
        let x = Array4::<f32>::ones((1, 3, 3, 1));
        let w = win([2, 2], [1, 1], Padding::Valid);
        let y = max_pool(x.view(), &w).unwrap();
        let dy = Array4::from_shape_vec((1, 2, 2, 1), vec![1.0, 10.0, 100.0, 1000.0]).unwrap();
        let dx = max_pool_grad(x.view(), y.view(), dy.view(), &w).unwrap();
        let want = [1.0, 10.0, 0.0, 100.0, 1000.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(dx.as_slice().unwrap(), want);
        // A tie between (0, 1) and (1, 0): (0, 1) comes first in row-major order.
        let x = Array4::from_shape_vec((1, 2, 2, 1), vec![0.0, 5.0, 5.0, 1.0]).unwrap();
        let w = win([2, 2], [2, 2], Padding::Valid);
        let y = max_pool(x.view(), &w).unwrap();
        let dx = max_pool_grad(x.view(), y.view(), Array4::ones((1, 1, 1, 1)).view(), &w).unwrap();
        assert_eq!(dx.as_slice().unwrap(), [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn max_pool_grad_matches_reference_argmax_with_many_ties() {
        let mut rng = Rng::new(42);
        for (xs, w) in cases() {
            // Values from a tiny set so windows are full of ties.
            let x = Array4::from_shape_simple_fn(xs, || rng.below(3) as f32);
            let y = max_pool(x.view(), &w).unwrap();
            let dy: Array4<f32> = rng.array(y.raw_dim());
            let dx = max_pool_grad(x.view(), y.view(), dy.view(), &w).unwrap();
            let (_, arg, _) = reference(&to_f64(&x), &w);
            let mut want = Array4::<f64>::zeros(x.raw_dim());
            for ((b, oy, ox, ch), &(iy, ix)) in arg.indexed_iter() {
                want[[b, iy, ix, ch]] += f64::from(dy[[b, oy, ox, ch]]);
            }
            assert_close(&dx, &want, 1e-6, &format!("{xs:?} {w:?}"));
        }
    }

    #[test]
    fn avg_pool_divides_by_the_in_bounds_count() {
        // 3×3 SAME over a 2×2 input of ones: each window holds 4 ones → 1,
        // not 4/9.
        let x = Array4::<f32>::ones((1, 2, 2, 1));
        let y = avg_pool(x.view(), &win([3, 3], [1, 1], Padding::Same)).unwrap();
        assert!(y.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn shape_errors_are_returned() {
        let x = Array4::<f32>::zeros([1, 4, 4, 2]);
        let w = win([2, 2], [2, 2], Padding::Valid);
        let bad = Array4::<f32>::zeros([1, 3, 2, 2]);
        let y = Array4::<f32>::zeros([1, 2, 2, 2]);
        assert!(
            max_pool_grad(x.view(), bad.view(), y.view(), &w)
                .unwrap_err()
                .contains("y has shape")
        );
        assert!(
            max_pool_grad(x.view(), y.view(), bad.view(), &w)
                .unwrap_err()
                .contains("dy")
        );
        assert!(
            avg_pool_grad([1, 4, 4, 2], bad.view(), &w)
                .unwrap_err()
                .contains("dy")
        );
        assert!(max_pool(x.view(), &win([5, 5], [1, 1], Padding::Valid)).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_shapes_match_reference(
            n in 0usize..3, h in 1usize..9, w in 1usize..9, c in 1usize..5,
            kh in 1usize..4, kw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
            same in any::<bool>(), seed in any::<u64>(),
        ) {
            let padding = if same { Padding::Same } else { Padding::Valid };
            let win = Window2d { kernel: [kh, kw], strides: [sh, sw], dilations: [1, 1], padding };
            prop_assume!(win.geometry(h, w).is_ok());
            let mut rng = Rng::new(seed);
            let x: Array4<f32> = rng.array([n, h, w, c]);
            let (max, _, mean) = reference(&to_f64(&x), &win);
            assert_close(&max_pool(x.view(), &win).unwrap(), &max, 0.0, "max");
            assert_close(&avg_pool(x.view(), &win).unwrap(), &mean, 1e-6, "avg");
            let dy: Array4<f32> = rng.array(max.raw_dim());
            let davg = avg_pool_grad([n, h, w, c], dy.view(), &win).unwrap();
            let avg = avg_pool(x.view(), &win).unwrap();
            let (lhs, rhs) = (dot(&avg, &dy), dot(&x, &davg));
            prop_assert!((lhs - rhs).abs() <= 1e-5 * lhs.abs().max(1.0));
        }
    }
}
