//! The AVX2 + FMA micro-kernel: one `MR × NR` = 6 × 16 tile of C.
//!
//! Twelve ymm accumulators (6 rows × 2 halves of 16 columns) stay in
//! registers for the whole `kc` loop; each step loads one 16-wide row of the
//! packed B panel (two ymm), broadcasts the six A values of that step and
//! issues twelve FMAs. Two of the sixteen ymm registers are left for the B
//! row and one for the broadcast.
//!
//! A is read in place through two strides, one of them 1: a packed strip
//! (`kc` groups of `MR` values, the layout [`super::packed`] writes) is
//! [`Strip::Cols`] with `lda = MR`, a row-major matrix is [`Strip::Rows`],
//! a transposed row-major matrix is [`Strip::Cols`]. The kernel only
//! broadcasts single A values, so reading A in place costs nothing extra and
//! spares a copy of the (large) im2col matrix. [`Strip::Gather`] goes one
//! step further (implicit GEMM): six independent row pointers and a list of
//! `(offset, len)` spans, so a convolution's patch rows are read straight
//! from the (padded) image.

use std::arch::x86_64::{
    __m256, __m256i, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256,
    _mm256_maskload_ps, _mm256_maskstore_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps,
    _mm256_storeu_ps,
};

/// Rows of C per micro-kernel tile.
pub(super) const MR: usize = 6;
/// Columns of C per micro-kernel tile (two ymm registers).
pub(super) const NR: usize = 16;

/// Proof that the running CPU has AVX2 and FMA: only [`Avx2Fma::detect`]
/// makes one.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2Fma(());

/// Where the `MR` rows of A for one tile live.
#[derive(Clone, Copy, Debug)]
pub(super) enum Strip {
    /// Unit column stride: `A[i, p]` at `ptr + i·lda + p`.
    Rows(*const f32, usize),
    /// Unit row stride: `A[i, p]` at `ptr + p·lda + i` (a packed strip has
    /// `lda = MR`).
    Cols(*const f32, usize),
    /// Rows gathered from anywhere (implicit GEMM): the reduction runs over
    /// `spans` in order, and within span `(off, len)` step `p < len` reads
    /// `A[i, ·]` at `rows[i] + off + p·step`.
    Gather(GatherStrip),
}

/// The `MR` rows of a [`Strip::Gather`].
#[derive(Clone, Copy, Debug)]
pub(super) struct GatherStrip {
    /// Where each row's spans are measured from.
    pub rows: [*const f32; MR],
    /// `(offset, len)` pairs, `nspans` of them.
    pub spans: *const (usize, usize),
    pub nspans: usize,
    /// Distance between consecutive elements of a span.
    pub step: usize,
}

impl Avx2Fma {
    /// `Some` when the CPU supports AVX2 and FMA (the result is cached by
    /// `std`, so this is cheap to call per product).
    pub(super) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2Fma(()))
    }

    /// `C ← α·(A·B) + β·C` for the top-left `mr × nr` corner (`mr ≤ MR`,
    /// `nr ≤ NR`) of one 6 × 16 tile, `A` the strip `a` (`MR × kc`) and `B`
    /// the packed panel `b` (`kc` rows of `NR` floats). C has unit column
    /// stride and row stride `ldc`; when `β = 0` it is only written.
    ///
    /// # Safety
    ///
    /// - `a` is readable at every `A[i, p]`, `i < MR`, `p < kc`, per its layout;
    /// - `b` is readable for `kc · NR` floats;
    /// - `c + i·ldc + j` is writable (and readable when `β ≠ 0`) for
    ///   `i < mr`, `j < nr`, and no other live reference aliases those
    ///   floats.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        self,
        kc: usize,
        a: Strip,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        [mr, nr]: [usize; 2],
        alpha: f32,
        beta: f32,
    ) {
        debug_assert!(mr <= MR && nr <= NR);
        let c = Out {
            ptr: c,
            ldc,
            mr,
            nr,
        };
        // SAFETY: `self` proves AVX2 and FMA are available; the pointer
        // contracts are the caller's, passed through unchanged.
        unsafe {
            match a {
                Strip::Rows(a, lda) => kernel::<false>(kc, a, lda, b, c, alpha, beta),
                Strip::Cols(a, lda) => kernel::<true>(kc, a, lda, b, c, alpha, beta),
                Strip::Gather(g) if g.step == 1 => kernel_gather::<true>(g, b, c, alpha, beta),
                Strip::Gather(g) => kernel_gather::<false>(g, b, c, alpha, beta),
            }
        }
    }
}

/// The part of C a kernel call writes: `mr × nr` floats, rows `ldc` apart.
struct Out {
    ptr: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
}

/// `MASK[8 - r..][..8]` selects the first `r` lanes of a ymm register.
static MASK: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// Writes `α·acc + β·C` to the `mr × nr` corner of C (`acc` the kernel's
/// accumulators, `c` its [`Out`]). A macro rather than a function so that it
/// is always inlined into the kernels: a call would keep the accumulators in
/// memory during the loop. Expands to code that must run inside an
/// `unsafe` AVX2 + FMA function whose caller's C contract holds.
macro_rules! store {
    ($acc:expr, $c:expr, $alpha:expr, $beta:expr) => {{
        let (acc, c, alpha, beta): (&[[__m256; 2]; MR], Out, f32, f32) = (&$acc, $c, $alpha, $beta);
        let (va, vb) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
        if c.nr == NR {
            for row in acc.iter().take(c.mr).enumerate() {
                let (i, &[v0, v1]) = row;
                // SAFETY: i < mr and columns 0..NR: inside the caller's C block.
                unsafe {
                    let dst = c.ptr.add(i * c.ldc);
                    for (dst, v) in [(dst, v0), (dst.add(8), v1)] {
                        let mut r = _mm256_mul_ps(va, v);
                        if beta != 0.0 {
                            r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(dst), r);
                        }
                        _mm256_storeu_ps(dst, r);
                    }
                }
            }
        } else {
            // Partial columns: masked loads and stores, lanes past `nr` untouched.
            for (i, row) in acc.iter().take(c.mr).enumerate() {
                for (h, &v) in row.iter().enumerate() {
                    let lanes = c.nr.saturating_sub(h * 8).min(8);
                    if lanes == 0 {
                        break;
                    }
                    // SAFETY: `MASK[8 - lanes..]` has 8 elements; the masked lanes
                    // j = h·8 + l < nr of row i < mr are inside the caller's C block,
                    // and masked-off lanes are neither read nor written.
                    unsafe {
                        let mask: __m256i = _mm256_loadu_si256(MASK[8 - lanes..].as_ptr().cast());
                        let dst = c.ptr.add(i * c.ldc + h * 8);
                        let mut r = _mm256_mul_ps(va, v);
                        if beta != 0.0 {
                            r = _mm256_fmadd_ps(vb, _mm256_maskload_ps(dst, mask), r);
                        }
                        _mm256_maskstore_ps(dst, mask, r);
                    }
                }
            }
        }
    }};
}

/// The 6 × 16 kernel; `COLS` selects A's layout (see [`Strip`]), so one
/// stride is the constant 1.
///
/// # Safety
///
/// As [`Avx2Fma::tile`], and the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const COLS: bool>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: Out,
    alpha: f32,
    beta: f32,
) {
    let (rs, cs) = if COLS { (1, lda) } else { (lda, 1) };
    let mut acc: [[__m256; 2]; MR] = [[_mm256_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // SAFETY: step p < kc reads A[i, p] (i < MR) and B row p, inside the
        // caller's ranges.
        unsafe {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(i * rs));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(cs);
            b = b.add(NR);
        }
    }
    store!(acc, c, alpha, beta);
}

/// The gathered 6 × 16 kernel; `UNIT` says `step == 1` (the compiler then
/// needs no multiply).
///
/// # Safety
///
/// As [`Avx2Fma::tile`] (with `kc` the total length of the spans, every
/// `rows[i] + off + p·step` readable), and the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_gather<const UNIT: bool>(
    g: GatherStrip,
    b: *const f32,
    c: Out,
    alpha: f32,
    beta: f32,
) {
    let mut acc: [[__m256; 2]; MR] = [[_mm256_setzero_ps(); 2]; MR];
    let mut b = b;
    let step = if UNIT { 1 } else { g.step };
    for s in 0..g.nspans {
        // SAFETY: s < nspans, inside the caller's span table; every element
        // read below is one the caller vouches for (row i, span s, p < len),
        // and B advances one NR-row per step within its kc rows.
        unsafe {
            let (off, len) = *g.spans.add(s);
            let a = g.rows.map(|r| r.add(off));
            for p in 0..len {
                let q = p * step;
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for (row, &ai) in acc.iter_mut().zip(&a) {
                    let ai = _mm256_broadcast_ss(&*ai.add(q));
                    row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
                }
                b = b.add(NR);
            }
        }
    }
    store!(acc, c, alpha, beta);
}
