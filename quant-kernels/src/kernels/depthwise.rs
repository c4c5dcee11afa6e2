//! DepthwiseConv2dNative forward and backward with TensorFlow's semantics:
//! `x [n, h, w, in]`, `filter [kh, kw, in, multiplier]`, output channel
//! `in_index · multiplier + m`.
//!
//! # Design note
//!
//! Direct loops; no gemm (each output channel sees one input channel, so
//! there is no reduction dimension worth packing). The innermost loop runs
//! over the channels of one pixel, where x, the filter tap and y are all
//! contiguous, so it auto-vectorises; with `multiplier = 1` it is a plain
//! element-wise multiply-add over `in` lanes.
//!
//! - **Forward** is parallel over output rows `(image, oy)`; each task writes
//!   its own row.
//! - **Backprop input** gathers rather than scatters: each task owns one
//!   input row `(image, iy)` and finds the output positions whose windows
//!   read it (`oy·stride + ky·dilation − pad = iy`), so tasks never collide.
//! - **Backprop filter** folds over output rows with one
//!   `kh·kw·in·multiplier` accumulator per rayon fold, then sums them.
//! - The filter's shape decides the kernel size: `window.kernel` is ignored.

use ndarray::{Array1, Array4, ArrayView4};
use rayon::prelude::*;

use super::conv::Resolved;
use super::layout::{dims, slice};
use super::window::Window2d;

/// Minimum output rows per rayon task.
const MIN_ROWS_PER_TASK: usize = 4;
/// Parts the filter gradient's reduction is cut into (fixed, so the sum's
/// order never depends on thread timing).
const PARTS: usize = 16;

/// Shapes shared by the three ops, checked.
struct Depthwise {
    r: Resolved,
    n: usize,
    c: usize,
    m: usize,
}

impl Depthwise {
    fn new(x: [usize; 4], filter: [usize; 4], window: &Window2d) -> Result<Self, String> {
        let [n, h, w, c] = x;
        let [kh, kw, fc, m] = filter;
        if fc != c {
            return Err(format!(
                "depthwise_conv2d: input has {c} channels but the filter {filter:?} expects {fc}"
            ));
        }
        Ok(Depthwise {
            r: Resolved::new(window, [kh, kw], h, w)?,
            n,
            c,
            m,
        })
    }

    fn out_shape(&self) -> [usize; 4] {
        [self.n, self.r.out[0], self.r.out[1], self.c * self.m]
    }

    fn check_dy(&self, dy: &[usize]) -> Result<(), String> {
        if dy != self.out_shape() {
            return Err(format!(
                "depthwise_conv2d: dy has shape {dy:?}, the output shape is {:?}",
                self.out_shape()
            ));
        }
        Ok(())
    }
}

/// TF `DepthwiseConv2dNative`: `y[n, oy, ox, c·M + m] =
/// Σ_{ky,kx} x[n, iy, ix, c] · filter[ky, kx, c, m]`.
pub fn depthwise_conv2d(
    x: ArrayView4<f32>,
    filter: ArrayView4<f32>,
    window: &Window2d,
) -> Result<Array4<f32>, String> {
    let d = Depthwise::new(dims(&x), dims(&filter), window)?;
    let mut y = Array4::zeros(d.out_shape());
    if y.is_empty() {
        return Ok(y);
    }
    let (x, filter) = (x.as_standard_layout(), filter.as_standard_layout());
    let (xs, fs) = (slice(&x), slice(&filter));
    let ([h, w], [_, kw], [oh, ow], c, m) = (d.r.input, d.r.kernel, d.r.out, d.c, d.m);
    let cm = c * m;
    let [dh, dw] = d.r.dilations;
    let rows = y
        .as_slice_mut()
        .expect("fresh array")
        .par_chunks_mut(ow * cm)
        .with_min_len(MIN_ROWS_PER_TASK);
    rows.enumerate().for_each(|(row, yrow)| {
        let (b, oy) = (row / oh, row % oh);
        let (ylo, yhi, iy0) = d.r.taps(0, oy);
        for (ox, out) in yrow.chunks_exact_mut(cm).enumerate() {
            let (xlo, xhi, ix0) = d.r.taps(1, ox);
            for ky in ylo..yhi {
                let iy = iy0 + (ky - ylo) * dh;
                for kx in xlo..xhi {
                    let ix = ix0 + (kx - xlo) * dw;
                    let xpix = &xs[((b * h + iy) * w + ix) * c..][..c];
                    let tap = &fs[(ky * kw + kx) * cm..][..cm];
                    outer_add(out, xpix, tap, m);
                }
            }
        }
    });
    Ok(y)
}

/// TF `DepthwiseConv2dNativeBackpropInput`: the gradient of
/// [`depthwise_conv2d`] with respect to its input of shape `input_shape`.
pub fn depthwise_conv2d_backprop_input(
    input_shape: [usize; 4],
    filter: ArrayView4<f32>,
    dy: ArrayView4<f32>,
    window: &Window2d,
) -> Result<Array4<f32>, String> {
    let d = Depthwise::new(input_shape, dims(&filter), window)?;
    d.check_dy(dy.shape())?;
    let mut dx = Array4::zeros(input_shape);
    if dx.is_empty() || dy.is_empty() {
        return Ok(dx);
    }
    let (dy, filter) = (dy.as_standard_layout(), filter.as_standard_layout());
    let (dys, fs) = (slice(&dy), slice(&filter));
    let ([h, w], [kh, kw], [oh, ow], c, m) = (d.r.input, d.r.kernel, d.r.out, d.c, d.m);
    let cm = c * m;
    let ([sh, sw], [dh, dw], [ph, pw]) = (d.r.strides, d.r.dilations, d.r.pad);
    // The output index whose tap `k` reads input index `i`, if any.
    let source =
        |i: usize, k: usize, stride: usize, dil: usize, pad: usize, out: usize| -> Option<usize> {
            let t = (i + pad).checked_sub(k * dil)?;
            (t % stride == 0 && t / stride < out).then_some(t / stride)
        };
    let rows = dx
        .as_slice_mut()
        .expect("fresh array")
        .par_chunks_mut(w * c)
        .with_min_len(MIN_ROWS_PER_TASK);
    rows.enumerate().for_each(|(row, dxrow)| {
        let (b, iy) = (row / h, row % h);
        for ky in 0..kh {
            let Some(oy) = source(iy, ky, sh, dh, ph, oh) else {
                continue;
            };
            let dyrow = &dys[(b * oh + oy) * ow * cm..][..ow * cm];
            for (ix, dst) in dxrow.chunks_exact_mut(c).enumerate() {
                for kx in 0..kw {
                    let Some(ox) = source(ix, kx, sw, dw, pw, ow) else {
                        continue;
                    };
                    let tap = &fs[(ky * kw + kx) * cm..][..cm];
                    inner_add(dst, &dyrow[ox * cm..][..cm], tap, m);
                }
            }
        }
    });
    Ok(dx)
}

/// TF `DepthwiseConv2dNativeBackpropFilter`: the gradient of
/// [`depthwise_conv2d`] with respect to its filter of shape `filter_shape`.
pub fn depthwise_conv2d_backprop_filter(
    x: ArrayView4<f32>,
    filter_shape: [usize; 4],
    dy: ArrayView4<f32>,
    window: &Window2d,
) -> Result<Array4<f32>, String> {
    let d = Depthwise::new(dims(&x), filter_shape, window)?;
    d.check_dy(dy.shape())?;
    let len: usize = filter_shape.iter().product();
    if len == 0 || dy.is_empty() {
        return Ok(Array4::zeros(filter_shape));
    }
    let (x, dy) = (x.as_standard_layout(), dy.as_standard_layout());
    let (xs, dys) = (slice(&x), slice(&dy));
    let ([h, w], [_, kw], [oh, ow], c, m) = (d.r.input, d.r.kernel, d.r.out, d.c, d.m);
    let cm = c * m;
    let [dh, dw] = d.r.dilations;
    // Fixed parts summed in order: the result does not depend on which
    // thread ran what (a resumed training run must repeat bit for bit).
    let rows = dys.len() / (ow * cm);
    let part = rows.div_ceil(PARTS).max(MIN_ROWS_PER_TASK);
    let partials: Vec<Vec<f32>> = dys
        .par_chunks(part * ow * cm)
        .enumerate()
        .map(|(p, dypart)| {
            let mut acc = vec![0.0f32; len];
            for (r, dyrow) in dypart.chunks_exact(ow * cm).enumerate() {
                let row = p * part + r;
                let (b, oy) = (row / oh, row % oh);
                let (ylo, yhi, iy0) = d.r.taps(0, oy);
                for (ox, g) in dyrow.chunks_exact(cm).enumerate() {
                    let (xlo, xhi, ix0) = d.r.taps(1, ox);
                    for ky in ylo..yhi {
                        let iy = iy0 + (ky - ylo) * dh;
                        for kx in xlo..xhi {
                            let ix = ix0 + (kx - xlo) * dw;
                            let xpix = &xs[((b * h + iy) * w + ix) * c..][..c];
                            outer_add(&mut acc[(ky * kw + kx) * cm..][..cm], xpix, g, m);
                        }
                    }
                }
            }
            acc
        })
        .collect();
    let mut df = vec![0.0f32; len];
    for partial in partials {
        df.iter_mut().zip(&partial).for_each(|(a, b)| *a += b);
    }
    Ok(Array1::from_vec(df)
        .into_shape_with_order(filter_shape)
        .expect("filter shape"))
}

/// `out[c·M + j] += x[c] · v[c·M + j]`.
#[inline]
fn outer_add(out: &mut [f32], x: &[f32], v: &[f32], m: usize) {
    if m == 1 {
        for ((o, &x), &v) in out.iter_mut().zip(x).zip(v) {
            *o += x * v;
        }
    } else {
        for ((o, &x), v) in out.chunks_exact_mut(m).zip(x).zip(v.chunks_exact(m)) {
            for (o, &v) in o.iter_mut().zip(v) {
                *o += x * v;
            }
        }
    }
}

/// `dst[c] += Σ_j g[c·M + j] · f[c·M + j]`.
#[inline]
fn inner_add(dst: &mut [f32], g: &[f32], f: &[f32], m: usize) {
    if m == 1 {
        for ((d, &g), &f) in dst.iter_mut().zip(g).zip(f) {
            *d += g * f;
        }
    } else {
        for ((d, g), f) in dst.iter_mut().zip(g.chunks_exact(m)).zip(f.chunks_exact(m)) {
            *d += g.iter().zip(f).map(|(g, f)| g * f).sum::<f32>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::testing::{Rng, assert_close, assert_scalar_close, dot, to_f64};
    use crate::kernels::window::Padding;
    use proptest::prelude::*;

    /// Plain nested loops in f64.
    fn reference(x: &Array4<f64>, f: &Array4<f64>, win: &Window2d) -> Array4<f64> {
        let (n, h, w, c) = x.dim();
        let (kh, kw, _, m) = f.dim();
        let win = Window2d {
            kernel: [kh, kw],
            ..*win
        };
        let g = win.geometry(h, w).unwrap();
        let ([sh, sw], [dh, dw]) = (win.strides, win.dilations);
        Array4::from_shape_fn((n, g.h.out, g.w.out, c * m), |(b, oy, ox, oc)| {
            let (ic, j) = (oc / m, oc % m);
            let mut s = 0.0;
            for ky in 0..kh {
                for kx in 0..kw {
                    let iy = (oy * sh + ky * dh) as isize - g.h.pad_before as isize;
                    let ix = (ox * sw + kx * dw) as isize - g.w.pad_before as isize;
                    if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                        s += x[[b, iy as usize, ix as usize, ic]] * f[[ky, kx, ic, j]];
                    }
                }
            }
            s
        })
    }

    fn win(strides: [usize; 2], dilations: [usize; 2], padding: Padding) -> Window2d {
        Window2d {
            kernel: [0, 0],
            strides,
            dilations,
            padding,
        }
    }

    fn cases() -> Vec<([usize; 4], [usize; 4], Window2d)> {
        use Padding::*;
        let one = [1, 1];
        vec![
            ([2, 5, 4, 3], [1, 1, 3, 1], win(one, one, Same)),
            ([1, 7, 6, 1], [3, 3, 1, 1], win(one, one, Valid)), // batch 1, channel 1
            ([2, 8, 7, 3], [3, 3, 3, 2], win([2, 2], one, Same)), // asymmetric SAME, M = 2
            ([2, 6, 7, 2], [4, 4, 2, 3], win([2, 2], one, Same)), // even kernel, M = 3
            ([2, 7, 8, 2], [3, 3, 2, 1], win(one, [2, 2], Same)), // dilation 2
            ([1, 9, 8, 2], [2, 3, 2, 2], win([1, 3], [2, 1], Valid)),
            (
                [2, 6, 5, 2],
                [3, 2, 2, 2],
                win([2, 1], one, Explicit([[1, 2], [0, 3]])),
            ),
            ([0, 5, 5, 2], [3, 3, 2, 2], win(one, one, Same)), // empty batch
            ([1, 2, 3, 2], [5, 5, 2, 1], win(one, one, Same)), // kernel > input
            ([2, 9, 9, 17], [3, 3, 17, 1], win(one, one, Same)), // channels = 2 vectors + 1
            ([2, 5, 5, 16], [3, 3, 16, 1], win([2, 2], one, Same)), // channels = vector multiple
        ]
    }

    #[test]
    fn forward_matches_reference() {
        let mut rng = Rng::new(30);
        for (xs, fs, w) in cases() {
            let (x, f): (Array4<f32>, Array4<f32>) = (rng.array(xs), rng.array(fs));
            let y = depthwise_conv2d(x.view(), f.view(), &w).unwrap();
            assert_close(
                &y,
                &reference(&to_f64(&x), &to_f64(&f), &w),
                1e-5,
                &format!("{xs:?} {fs:?} {w:?}"),
            );
        }
    }

    fn finite_differences(t: &Array4<f64>, eval: impl Fn(&Array4<f64>) -> f64) -> Array4<f64> {
        let eps = 1e-3;
        let mut t = t.clone();
        let mut g = Array4::zeros(t.raw_dim());
        for ix in ndarray::indices(t.raw_dim()) {
            let v = t[ix];
            t[ix] = v + eps;
            let plus = eval(&t);
            t[ix] = v - eps;
            let minus = eval(&t);
            t[ix] = v;
            g[ix] = (plus - minus) / (2.0 * eps);
        }
        g
    }

    #[test]
    fn backward_matches_finite_differences_and_adjoint_identity() {
        let mut rng = Rng::new(31);
        for (xs, fs, w) in cases() {
            let (x, f): (Array4<f32>, Array4<f32>) = (rng.array(xs), rng.array(fs));
            let y = depthwise_conv2d(x.view(), f.view(), &w).unwrap();
            let dy: Array4<f32> = rng.array(y.raw_dim());
            let what = format!("{xs:?} {fs:?} {w:?}");
            let dx = depthwise_conv2d_backprop_input(xs, f.view(), dy.view(), &w).unwrap();
            let df = depthwise_conv2d_backprop_filter(x.view(), fs, dy.view(), &w).unwrap();
            let (x64, f64_, dy64) = (to_f64(&x), to_f64(&f), to_f64(&dy));
            let loss = |x: &Array4<f64>, f: &Array4<f64>| (&reference(x, f, &w) * &dy64).sum();
            assert_close(
                &dx,
                &finite_differences(&x64, |t| loss(t, &f64_)),
                1e-4,
                &format!("dx {what}"),
            );
            assert_close(
                &df,
                &finite_differences(&f64_, |t| loss(&x64, t)),
                1e-4,
                &format!("df {what}"),
            );
            let lhs = dot(&y, &dy);
            assert_scalar_close(dot(&x, &dx), lhs, 1e-4, &format!("<x, dx> {what}"));
            assert_scalar_close(dot(&f, &df), lhs, 1e-4, &format!("<w, dw> {what}"));
        }
    }

    #[test]
    fn shape_errors_are_returned() {
        let x = Array4::<f32>::zeros([1, 4, 4, 3]);
        let w = win([1, 1], [1, 1], Padding::Valid);
        let f = Array4::<f32>::zeros([3, 3, 2, 1]);
        assert!(
            depthwise_conv2d(x.view(), f.view(), &w)
                .unwrap_err()
                .contains("channels")
        );
        let f = Array4::<f32>::zeros([3, 3, 3, 2]);
        let bad = Array4::<f32>::zeros([1, 2, 2, 3]);
        assert!(
            depthwise_conv2d_backprop_input([1, 4, 4, 3], f.view(), bad.view(), &w)
                .unwrap_err()
                .contains("dy")
        );
        assert!(
            depthwise_conv2d_backprop_filter(x.view(), [3, 3, 3, 2], bad.view(), &w)
                .unwrap_err()
                .contains("dy")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_shapes_match_reference(
            n in 0usize..3, h in 1usize..9, w in 1usize..9, c in 1usize..5, m in 1usize..4,
            kh in 1usize..4, kw in 1usize..4, sh in 1usize..3, sw in 1usize..3,
            dh in 1usize..3, dw in 1usize..3, same in any::<bool>(), seed in any::<u64>(),
        ) {
            let padding = if same { Padding::Same } else { Padding::Valid };
            let win = Window2d { kernel: [kh, kw], strides: [sh, sw], dilations: [dh, dw], padding };
            prop_assume!(win.geometry(h, w).is_ok());
            let mut rng = Rng::new(seed);
            let (x, f): (Array4<f32>, Array4<f32>) = (rng.array([n, h, w, c]), rng.array([kh, kw, c, m]));
            let y = depthwise_conv2d(x.view(), f.view(), &win).unwrap();
            assert_close(&y, &reference(&to_f64(&x), &to_f64(&f), &win), 1e-5, "forward");
            let dy: Array4<f32> = rng.array(y.raw_dim());
            let dx = depthwise_conv2d_backprop_input([n, h, w, c], f.view(), dy.view(), &win).unwrap();
            let df = depthwise_conv2d_backprop_filter(x.view(), [kh, kw, c, m], dy.view(), &win).unwrap();
            let lhs = dot(&y, &dy);
            prop_assert!((dot(&x, &dx) - lhs).abs() <= 1e-4 * lhs.abs().max(1.0));
            prop_assert!((dot(&f, &df) - lhs).abs() <= 1e-4 * lhs.abs().max(1.0));
        }
    }
}
