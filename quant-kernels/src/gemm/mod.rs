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
//! - **Small products** (fewer than [`MIN_BLOCK_MACS`] multiply-adds per
//!   block) run on the calling thread.
//! - **Semantics.** As BLAS: when `β = 0` the old contents of C are not read
//!   (NaN in C does not leak); `k = 0` gives `C ← β·C`.

use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::{ArrayView2, ArrayViewMut2, Axis, linalg::general_mat_mul};
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
}

static FORCE_PORTABLE: AtomicBool = AtomicBool::new(false);

/// Selects the backend of every later [`gemm`] call in the process (both
/// give the same results up to rounding; meant for benchmarks).
pub fn set_backend(backend: Backend) {
    FORCE_PORTABLE.store(backend == Backend::Portable, Ordering::Relaxed);
}

/// The backend selected by [`set_backend`] ([`Backend::Auto`] by default).
pub fn backend() -> Backend {
    if FORCE_PORTABLE.load(Ordering::Relaxed) {
        Backend::Portable
    } else {
        Backend::Auto
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
    if backend() == Backend::Auto
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

    #[test]
    fn block_count_respects_work_and_tiles() {
        assert_eq!(block_count(1000, ROW_ALIGN, MIN_BLOCK_MACS - 1), 1);
        assert_eq!(block_count(16, COL_ALIGN, usize::MAX / 2), 1);
        assert!(block_count(1 << 12, ROW_ALIGN, 1 << 30) <= rayon::current_num_threads());
    }
}
