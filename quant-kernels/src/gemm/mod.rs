//! The one f32 matrix-multiply entry point: `C ← α·A·B + β·C`.
//!
//! Every convolution and matmul in the crate goes through [`gemm`], so the
//! backend choice and the threading policy live here and nowhere else.
//!
//! # Design note
//!
//! - **Backends, dispatched at run time.** On x86-64 with AVX2 and FMA
//!   (`is_x86_feature_detected!`), each block runs our packed GEMM
//!   (`packed.rs`: B packed into 16-column panels, A into 6-row strips or
//!   read in place when row-major, `kc ≤ 256` reduction blocks sized for a
//!   32 KiB L1 / 512 KiB L2) around a 6 × 16 micro-kernel with twelve ymm
//!   FMA accumulators (`avx2.rs`). Everywhere else, and for negative
//!   strides, the portable path is ndarray's `general_mat_mul`, i.e.
//!   `matrixmultiply::sgemm`, which also takes the products with a
//!   transposed operand (the backward passes), where it measured faster.
//!   Both accept arbitrary row and column strides,
//!   so transposed views (`a.t()`) cost nothing here: the transpose is
//!   absorbed by the packing step. [`set_backend`] forces the portable path
//!   (benchmarks compare the two).
//! - **Threading.** rayon's global pool is the only owner of threads (ndarray's
//!   `matrixmultiply-threading` stays off). A product big enough to pay for a
//!   fork is cut into at most `current_num_threads()` blocks along the longer
//!   side of C — rows of A and C when `m ≥ n`, else columns of B and C — with
//!   block edges on multiples of [`ROW_ALIGN`] / [`COL_ALIGN`] (the
//!   micro-kernel tile), so each block runs full tiles except the last.
//!   Blocks are independent; no reduction is needed. Calls made from inside a
//!   rayon task nest naturally (work stealing), so convolutions may also
//!   parallelise over the batch.
//! - **Implicit GEMM.** [`gemm_gather`] multiplies a [`Gather`] operand —
//!   rows assembled from spans of a flat buffer, e.g. convolution patches
//!   read from the image — without materialising it, on the calling thread
//!   (callers parallelise). [`implicit_available`] tells callers whether it
//!   runs in place; elsewhere it copies row blocks out and uses [`gemm`]'s
//!   path. [`Backend::Explicit`] forces the copying (benchmarks compare).
//! - **Small products** (fewer than [`MIN_BLOCK_MACS`] multiply-adds per
//!   block) run on the calling thread.
//! - **Semantics.** As BLAS: when `β = 0` the old contents of C are not read
//!   (NaN in C does not leak); `k = 0` gives `C ← β·C`.

use std::sync::atomic::{AtomicU8, Ordering};

use ndarray::{ArrayView2, ArrayViewMut2, Axis, linalg::general_mat_mul, s};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod packed;

/// Row blocks start on multiples of this (the micro-kernel's 6 rows).
pub const ROW_ALIGN: usize = 6;

/// Column blocks start on multiples of this (the micro-kernel's 16 columns).
pub const COL_ALIGN: usize = 16;

/// A block must have at least this many multiply-adds to be worth a task.
pub const MIN_BLOCK_MACS: usize = 1 << 17;

/// Which implementation [`gemm`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The fastest path the CPU supports (the packed AVX2 + FMA GEMM when
    /// available, else [`Backend::Portable`]). The default.
    Auto,
    /// ndarray's `general_mat_mul` (matrixmultiply) on every CPU.
    Portable,
    /// As [`Backend::Auto`] for [`gemm`], but [`gemm_gather`] copies its
    /// gathered operand out before multiplying, and [`implicit_available`]
    /// is false (so convolutions take their im2col path).
    Explicit,
}

/// The selected [`Backend`], as its index in `BACKENDS`.
static BACKEND: AtomicU8 = AtomicU8::new(0);

const BACKENDS: [Backend; 3] = [Backend::Auto, Backend::Portable, Backend::Explicit];

/// Selects the backend of every later [`gemm`] call in the process (all
/// give the same results up to rounding; meant for benchmarks).
pub fn set_backend(backend: Backend) {
    let index = BACKENDS.iter().position(|&b| b == backend).unwrap_or(0);
    BACKEND.store(index as u8, Ordering::Relaxed);
}

/// The backend selected by [`set_backend`] ([`Backend::Auto`] by default).
pub fn backend() -> Backend {
    BACKENDS[usize::from(BACKEND.load(Ordering::Relaxed)) % BACKENDS.len()]
}

/// True when [`gemm_gather`] multiplies in place, without copying its
/// gathered operand (the implicit GEMM): the [`Backend::Auto`] backend on an
/// AVX2 + FMA CPU. Callers choose between implicit and explicit
/// (im2col-style) algorithms with this.
pub fn implicit_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    if backend() == Backend::Auto && avx2::Avx2Fma::detect().is_some() {
        return true;
    }
    false
}

/// A matrix `A` (`m × k`) whose rows are read straight out of a flat buffer
/// (the operand of an implicit GEMM, e.g. convolution patches read from the
/// image itself).
///
/// Row `i` starts at `data[rows[i]]`; its `k` elements are the spans
/// `(offset, len)` taken in order, span element `p < len` being
/// `data[rows[i] + offset + p·step]`. So `k = Σ len`, and every row uses the
/// same spans.
#[derive(Clone, Copy, Debug)]
pub struct Gather<'a> {
    data: &'a [f32],
    rows: &'a [usize],
    spans: &'a [(usize, usize)],
    step: usize,
}

impl<'a> Gather<'a> {
    /// The gathered matrix, or `None` when some element would lie outside
    /// `data` or `step` is 0.
    pub fn new(
        data: &'a [f32],
        rows: &'a [usize],
        spans: &'a [(usize, usize)],
        step: usize,
    ) -> Option<Self> {
        if step == 0 {
            return None;
        }
        let last_row = rows.iter().copied().max().unwrap_or(0);
        for &(offset, len) in spans.iter().filter(|s| s.1 > 0) {
            let end = (len - 1)
                .checked_mul(step)
                .and_then(|e| e.checked_add(offset))
                .and_then(|e| e.checked_add(last_row))?;
            if end >= data.len() {
                return None;
            }
        }
        Some(Gather {
            data,
            rows,
            spans,
            step,
        })
    }

    /// Rows (`m`).
    pub fn nrows(&self) -> usize {
        self.rows.len()
    }

    /// Columns (`k`, the total length of the spans).
    pub fn ncols(&self) -> usize {
        self.spans.iter().map(|s| s.1).sum()
    }

    /// Copies rows `range` into `dst` as a row-major `range.len() × k`
    /// matrix.
    fn copy_rows(&self, range: std::ops::Range<usize>, dst: &mut [f32]) {
        let k = self.ncols();
        for (&row, out) in self.rows[range].iter().zip(dst.chunks_exact_mut(k.max(1))) {
            let mut out = out.iter_mut();
            for &(offset, len) in self.spans.iter().filter(|s| s.1 > 0) {
                let src = self.data[row + offset..].iter().step_by(self.step);
                out.by_ref().zip(src.take(len)).for_each(|(d, &v)| *d = v);
            }
        }
    }
}

/// Rows of a [`Gather`] operand copied out at a time by the explicit path.
const GATHER_ROWS: usize = 256;

/// `C ← α·A·B + β·C` for a gathered `A` (`m × k`), `B: k×n`, `C: m×n`, on
/// the calling thread (callers parallelise over independent products).
///
/// With [`implicit_available`], A is never copied out: the packed kernel
/// broadcasts its elements straight from the gathered buffer. Otherwise
/// blocks of rows are copied into a dense matrix and go through [`gemm`]'s
/// per-block path.
///
/// # Panics
///
/// If the shapes do not agree.
pub fn gemm_gather(alpha: f32, a: &Gather, b: ArrayView2<f32>, beta: f32, c: ArrayViewMut2<f32>) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    assert!(
        b.nrows() == k && c.dim() == (m, n),
        "gemm_gather: A is {m}×{k}, B is {:?}, C is {:?}",
        b.dim(),
        c.dim()
    );
    #[cfg(target_arch = "x86_64")]
    if implicit_available()
        && let Some(cpu) = avx2::Avx2Fma::detect()
        && m > 0
        && k > 0
        && n > 0
        && b.strides().iter().chain(c.strides()).all(|&s| s >= 0)
    {
        packed::gemm_gather(cpu, alpha, a, b, beta, c);
        return;
    }
    gemm_gather_explicit(alpha, a, b, beta, c);
}

/// [`gemm_gather`] by copying blocks of A's rows out and multiplying them
/// with [`gemm_block`].
fn gemm_gather_explicit(
    alpha: f32,
    a: &Gather,
    b: ArrayView2<f32>,
    beta: f32,
    mut c: ArrayViewMut2<f32>,
) {
    let (m, k) = (a.nrows(), a.ncols());
    let mut buf = vec![0.0; GATHER_ROWS.min(m) * k];
    for start in (0..m).step_by(GATHER_ROWS) {
        let end = (start + GATHER_ROWS).min(m);
        let dense = &mut buf[..(end - start) * k];
        a.copy_rows(start..end, dense);
        let dense = ArrayView2::from_shape((end - start, k), dense).expect("buffer");
        gemm_block(alpha, dense, b, beta, c.slice_mut(s![start..end, ..]));
    }
}

/// `C ← α·A·B + β·C` for `A: m×k`, `B: k×n`, `C: m×n`, any strides.
///
/// Runs in parallel on rayon's global pool when the product is large enough
/// (see the module's design note).
///
/// # Panics
///
/// If the shapes do not agree; callers validate user-facing shapes first.
pub fn gemm(
    alpha: f32,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    beta: f32,
    mut c: ArrayViewMut2<f32>,
) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(
        k == k2 && c.dim() == (m, n),
        "gemm: A is {m}×{k}, B is {k2}×{n}, C is {:?}",
        c.dim()
    );
    let by_rows = m >= n;
    let (long, align) = if by_rows {
        (m, ROW_ALIGN)
    } else {
        (n, COL_ALIGN)
    };
    let blocks = block_count(long, align, m * n * k);
    if blocks <= 1 {
        gemm_block(alpha, a, b, beta, c);
        return;
    }
    let len = long.div_ceil(blocks).next_multiple_of(align);
    if by_rows {
        let parts: Vec<_> = a
            .axis_chunks_iter(Axis(0), len)
            .zip(c.axis_chunks_iter_mut(Axis(0), len))
            .collect();
        parts
            .into_par_iter()
            .for_each(|(a, c)| gemm_block(alpha, a, b, beta, c));
    } else {
        let parts: Vec<_> = b
            .axis_chunks_iter(Axis(1), len)
            .zip(c.axis_chunks_iter_mut(Axis(1), len))
            .collect();
        parts
            .into_par_iter()
            .for_each(|(b, c)| gemm_block(alpha, a, b, beta, c));
    }
}

/// One block of [`gemm`] on the calling thread, on the selected backend.
fn gemm_block(
    alpha: f32,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    beta: f32,
    mut c: ArrayViewMut2<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if backend() != Backend::Portable
        && row_major(&a)
        && row_major(&b)
        && let Some(cpu) = avx2::Avx2Fma::detect()
        && packed::supports(&a, &b, &c)
    {
        packed::gemm(cpu, alpha, a, b, beta, c);
        return;
    }
    general_mat_mul(alpha, &a, &b, beta, &mut c);
}

/// Whether `m`'s rows are contiguous. The packed GEMM wins on row-major
/// operands (the forward convolution: 2.74 vs 3.43 ms for conv2 at batch
/// 64); on the transposed operands of the backward passes matrixmultiply's
/// packing is faster (conv2 input gradient 2.96 vs 3.17 ms, filter gradient
/// 3.01 vs 3.25 ms; `cargo bench -p quant-kernels --bench conv`), so those
/// go to the portable path.
fn row_major(m: &ArrayView2<f32>) -> bool {
    m.ncols() <= 1 || m.strides()[1] == 1
}

/// `A·B` into a new standard-layout array.
pub fn matmul_new(a: ArrayView2<f32>, b: ArrayView2<f32>) -> ndarray::Array2<f32> {
    let mut c = ndarray::Array2::zeros((a.nrows(), b.ncols()));
    gemm(1.0, a, b, 0.0, c.view_mut());
    c
}

/// How many blocks to cut the longer side (`long`, in tiles of `align`)
/// of C into.
fn block_count(long: usize, align: usize, macs: usize) -> usize {
    let by_work = macs / MIN_BLOCK_MACS;
    let by_tiles = long.div_ceil(align);
    rayon::current_num_threads()
        .min(by_work)
        .min(by_tiles)
        .max(1)
}

/// Helpers shared by the kernel tests of this crate: a seeded generator,
/// f64 conversions and closeness checks.
#[cfg(test)]
pub(crate) mod testing {
    use ndarray::{Array, Array2, ArrayBase, Data, Dimension, ShapeBuilder};

    /// A small deterministic generator (xorshift64*), so tests need no `rand`.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform in `[-1, 1)`.
        pub fn uniform(&mut self) -> f32 {
            (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }

        pub fn array<D: Dimension, Sh: ShapeBuilder<Dim = D>>(
            &mut self,
            shape: Sh,
        ) -> Array<f32, D> {
            Array::from_shape_simple_fn(shape, || self.uniform())
        }
    }

    pub fn to_f64<S: Data<Elem = f32>, D: Dimension>(a: &ArrayBase<S, D>) -> Array<f64, D> {
        a.mapv(f64::from)
    }

    /// Asserts `max |got − want| ≤ rtol · max(max |want|, 1e-30)`.
    #[track_caller]
    pub fn assert_close<S1, S2, D>(
        got: &ArrayBase<S1, D>,
        want: &ArrayBase<S2, D>,
        rtol: f64,
        what: &str,
    ) where
        S1: Data<Elem = f32>,
        S2: Data<Elem = f64>,
        D: Dimension,
    {
        assert_eq!(got.shape(), want.shape(), "{what}: shape");
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
        let err = got
            .iter()
            .zip(want)
            .fold(0.0f64, |m, (g, w)| m.max((f64::from(*g) - w).abs()));
        assert!(
            err <= rtol * scale,
            "{what}: max error {err:e} > {rtol:e} · {scale:e}"
        );
    }

    /// `Σ a·b` in f64.
    pub fn dot<S1, S2, D>(a: &ArrayBase<S1, D>, b: &ArrayBase<S2, D>) -> f64
    where
        S1: Data<Elem = f32>,
        S2: Data<Elem = f32>,
        D: Dimension,
    {
        assert_eq!(a.shape(), b.shape());
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    /// `α·A·B + β·C` by naive loops in f64 (the reference every GEMM path is
    /// tested against).
    pub fn gemm_reference(
        alpha: f64,
        a: &Array2<f64>,
        b: &Array2<f64>,
        beta: f64,
        c: &Array2<f64>,
    ) -> Array2<f64> {
        let (m, k) = a.dim();
        let n = b.ncols();
        Array2::from_shape_fn((m, n), |(i, j)| {
            alpha * (0..k).map(|p| a[[i, p]] * b[[p, j]]).sum::<f64>() + beta * c[[i, j]]
        })
    }

    /// Asserts two f64 scalars agree to `rtol` relative to the larger.
    #[track_caller]
    pub fn assert_scalar_close(got: f64, want: f64, rtol: f64, what: &str) {
        let scale = got.abs().max(want.abs()).max(1e-30);
        assert!(
            (got - want).abs() <= rtol * scale,
            "{what}: {got} vs {want}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Rng, assert_close, gemm_reference as reference, to_f64};
    use super::*;
    use ndarray::{Array2, ShapeBuilder};

    fn check(m: usize, k: usize, n: usize, rng: &mut Rng) {
        for (ta, tb, fc) in [
            (false, false, false),
            (true, false, false),
            (false, true, true),
            (true, true, false),
        ] {
            let a = if ta {
                rng.array((k, m)).reversed_axes()
            } else {
                rng.array((m, k))
            };
            let b = if tb {
                rng.array((n, k)).reversed_axes()
            } else {
                rng.array((k, n))
            };
            let c0: Array2<f32> = rng.array((m, n).set_f(fc));
            let (alpha, beta) = (0.5 + rng.uniform(), rng.uniform());
            let want = reference(
                alpha.into(),
                &to_f64(&a),
                &to_f64(&b),
                beta.into(),
                &to_f64(&c0),
            );
            let mut c = c0.clone();
            gemm(alpha, a.view(), b.view(), beta, c.view_mut());
            assert_close(
                &c,
                &want,
                1e-5,
                &format!("{m}×{k}×{n} ta={ta} tb={tb} fc={fc}"),
            );
        }
    }

    #[test]
    fn matches_reference_on_awkward_shapes() {
        let mut rng = Rng::new(1);
        for m in [0, 1, 7, 8, 9, 63, 64, 65] {
            for n in [0, 1, 7, 8, 9, 17] {
                for k in [0, 1, 9, 33] {
                    check(m, k, n, &mut rng);
                }
            }
        }
    }

    #[test]
    fn parallel_blocks_match_reference_around_block_edges() {
        // Large enough that the product is split; m and n straddle tile and
        // block boundaries so the last block is partial (or exactly full).
        let mut rng = Rng::new(2);
        for (m, k, n) in [
            (255, 300, 9),
            (256, 300, 8),
            (257, 300, 7),
            (9, 300, 257),
            (8, 512, 512),
            (129, 260, 127),
        ] {
            assert!(m * n * k >= 2 * MIN_BLOCK_MACS || m.max(n) < 2 * ROW_ALIGN);
            check(m, k, n, &mut rng);
        }
    }

    #[test]
    fn beta_zero_ignores_nan_in_c() {
        let a = Array2::<f32>::ones((3, 2));
        let b = Array2::<f32>::ones((2, 4));
        let mut c = Array2::from_elem((3, 4), f32::NAN);
        gemm(1.0, a.view(), b.view(), 0.0, c.view_mut());
        assert!(c.iter().all(|&v| v == 2.0));
        // k = 0: C ← β·C.
        let mut c = Array2::from_elem((3, 4), 3.0f32);
        gemm(
            1.0,
            Array2::zeros((3, 0)).view(),
            Array2::zeros((0, 4)).view(),
            0.5,
            c.view_mut(),
        );
        assert!(c.iter().all(|&v| v == 1.5));
    }

    /// A random gathered `m × k` matrix over `data`: `runs` spans of random
    /// lengths (some past `KC_GATHER`, some empty) `step` apart, rows at
    /// random offsets. Returns the data, row offsets and spans.
    fn random_gather(
        rng: &mut Rng,
        m: usize,
        lens: &[usize],
        step: usize,
    ) -> (Vec<f32>, Vec<usize>, Vec<(usize, usize)>) {
        let mut spans = Vec::new();
        let mut end = 0;
        for &len in lens {
            let offset = rng.below(50);
            end = end.max(offset + len.saturating_sub(1) * step + 1);
            spans.push((offset, len));
        }
        let rows: Vec<usize> = (0..m).map(|_| rng.below(40)).collect();
        let data = (0..end + 40).map(|_| rng.uniform()).collect();
        (data, rows, spans)
    }

    /// The gathered matrix written out by its definition.
    fn dense(data: &[f32], rows: &[usize], spans: &[(usize, usize)], step: usize) -> Array2<f32> {
        let k: usize = spans.iter().map(|s| s.1).sum();
        let mut a = Array2::zeros((rows.len(), k));
        for (i, &row) in rows.iter().enumerate() {
            let mut col = 0;
            for &(offset, len) in spans {
                for p in 0..len {
                    a[[i, col]] = data[row + offset + p * step];
                    col += 1;
                }
            }
        }
        a
    }

    #[test]
    fn gathered_products_match_reference() {
        let mut rng = Rng::new(3);
        let kc = packed::KC_GATHER;
        let shapes: [(usize, &[usize], usize); 8] = [
            (1, &[1], 1),
            (5, &[3, 0, 7], 1),
            (6, &[80, 80, 80, 80, 80], 1),
            (13, &[14; 20], 48),
            (97, &[kc - 1, 2], 3),
            (7, &[kc, kc + 1], 1),
            (200, &[2 * kc + 5], 2),
            (3, &[], 1),
        ];
        for (m, lens, step) in shapes {
            for n in [1, 16, 17, 32, 40] {
                let (data, rows, spans) = random_gather(&mut rng, m, lens, step);
                let a = Gather::new(&data, &rows, &spans, step).expect("in bounds");
                let dense = dense(&data, &rows, &spans, step);
                let b: Array2<f32> = rng.array((dense.ncols(), n));
                for fc in [false, true] {
                    let c0: Array2<f32> = rng.array((m, n).set_f(fc));
                    let (alpha, beta) = (0.5 + rng.uniform(), rng.uniform());
                    let want = reference(
                        alpha.into(),
                        &to_f64(&dense),
                        &to_f64(&b),
                        beta.into(),
                        &to_f64(&c0),
                    );
                    let what = format!("{m}×{lens:?}×{n} step {step} fc={fc}");
                    let mut c = c0.clone();
                    gemm_gather(alpha, &a, b.view(), beta, c.view_mut());
                    assert_close(&c, &want, 2e-5, &what);
                    let mut c = c0.clone();
                    gemm_gather_explicit(alpha, &a, b.view(), beta, c.view_mut());
                    assert_close(&c, &want, 2e-5, &format!("explicit {what}"));
                }
            }
        }
    }

    #[test]
    fn gather_rejects_out_of_bounds_elements() {
        let data = [0.0f32; 10];
        assert!(Gather::new(&data, &[0, 2], &[(3, 3)], 2).is_some()); // last: 2+3+4 = 9
        assert!(Gather::new(&data, &[0, 3], &[(3, 3)], 2).is_none());
        assert!(Gather::new(&data, &[0], &[(3, 2)], 0).is_none());
        assert!(Gather::new(&data, &[9], &[(usize::MAX, 2)], 1).is_none());
        assert!(Gather::new(&data, &[100], &[(0, 0)], 1).is_some()); // nothing read
    }

    #[test]
    fn block_count_respects_work_and_tiles() {
        assert_eq!(block_count(1000, ROW_ALIGN, MIN_BLOCK_MACS - 1), 1);
        assert_eq!(block_count(16, COL_ALIGN, usize::MAX / 2), 1);
        assert!(block_count(1 << 12, ROW_ALIGN, 1 << 30) <= rayon::current_num_threads());
    }
}
