//! The blocked, packed f32 GEMM around the [`avx2`](super::avx2)
//! micro-kernel, single-threaded (the caller splits C across threads).
//!
//! # Blocking
//!
//! ```text
//! for jc in 0..n step nc            B block: kc × nc, packed, stays in L2
//!   for pc in 0..k step kc          (later kc blocks accumulate: β = 1)
//!     pack B[pc.., jc..] into NR-column panels
//!     for ic in 0..m step mc        A block: packed into MR-row strips,
//!       for ir in 0..mc step MR       unless A has a unit stride (then
//!         for jr in 0..nc step NR     read in place, one strip in L1)
//!           micro-kernel: C[ir.., jr..] (MR × NR tile)
//! ```
//!
//! - `k` is cut into equal blocks of at most [`KC`] (`k = 400` runs as two
//!   of 200), so a B panel (`kc · NR` floats) and an A strip (`kc · MR`)
//!   share L1.
//! - `nc` keeps the packed B block within [`B_BLOCK`] floats (half the
//!   512 KiB L2), rounded to whole panels.
//! - Each MR-row strip of A sweeps every B panel of the block while the
//!   strip stays in L1, so an A with unit stride along either axis (im2col
//!   patches, or their transpose in the filter gradient) needs no packing:
//!   the kernel broadcasts straight from it. Only other layouts (and the
//!   last, partial strip) are packed, [`MC`] rows at a time.
//! - Edges: panels and strips are zero-padded to full tiles; the kernel
//!   writes only the valid rows and (by masked stores) columns of a partial
//!   tile. A column-major C is computed as `Cᵀ = Bᵀ·Aᵀ`; any other C with
//!   non-unit column stride goes through a scratch tile.
//! - Packing buffers are per thread, reused across calls, 64-byte aligned.
//! - [`gemm_gather`] (implicit GEMM) runs the same kernel on a gathered A:
//!   no A packing at all, each strip passes its six row pointers and the
//!   current reduction block's spans; B is packed once, whole.

use std::cell::Cell;

use ndarray::{ArrayView2, ArrayViewMut2, Axis, s};

use super::Gather;
use super::avx2::{Avx2Fma, GatherStrip, MR, NR, Strip};

/// Longest reduction block (`kc`).
pub const KC: usize = 256;
/// Rows of A packed at a time when A must be packed (a multiple of `MR`).
pub const MC: usize = 16 * MR;
/// Budget of a packed B block, in floats (256 KiB).
pub const B_BLOCK: usize = 1 << 16;

/// Per-thread packing buffers.
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::default();
}

/// True when [`gemm`] handles these operands: no empty dimension and no
/// negative stride.
pub(super) fn supports(a: &ArrayView2<f32>, b: &ArrayView2<f32>, c: &ArrayViewMut2<f32>) -> bool {
    !a.is_empty()
        && !b.is_empty()
        && a.strides().iter().chain(b.strides()).all(|&s| s >= 0)
        && c.strides().iter().all(|&s| s >= 0)
}

/// `C ← α·A·B + β·C` on the calling thread. Shapes must agree and satisfy
/// [`supports`].
pub(super) fn gemm(
    cpu: Avx2Fma,
    alpha: f32,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    beta: f32,
    mut c: ArrayViewMut2<f32>,
) {
    let ((m, k), n) = (a.dim(), b.ncols());
    debug_assert!(supports(&a, &b, &c) && b.nrows() == k && c.dim() == (m, n));
    if c.strides()[0] == 1 && c.strides()[1] != 1 && n > 1 {
        // Column-major C: compute Cᵀ = Bᵀ·Aᵀ instead, so that the kernel
        // stores whole rows of (row-major) Cᵀ.
        gemm(
            cpu,
            alpha,
            b.reversed_axes(),
            a.reversed_axes(),
            beta,
            c.reversed_axes(),
        );
        return;
    }
    let kc_max = k.div_ceil(k.div_ceil(KC));
    let nc_max = (B_BLOCK / kc_max).max(NR) / NR * NR;
    // A read in place (unit stride along k or along m), else packed.
    let in_place = match *a.strides() {
        [_, 1] => Some(false),
        [1, _] => Some(true),
        _ => None,
    };
    let direct = in_place.is_some();
    let mc_max = if direct { m } else { MC };
    // Taken out of the thread-local (not borrowed) so that a nested call on
    // this thread, should one ever happen, just starts with empty buffers.
    let mut scratch = SCRATCH.take();
    for jc in (0..n).step_by(nc_max) {
        let nc = nc_max.min(n - jc);
        for (q, pc) in (0..k).step_by(kc_max).enumerate() {
            let kc = kc_max.min(k - pc);
            let beta = if q == 0 { beta } else { 1.0 };
            let bp = aligned(&mut scratch.b, nc.div_ceil(NR) * NR * kc);
            pack_b(b.slice(s![pc..pc + kc, jc..jc + nc]), bp);
            for ic in (0..m).step_by(mc_max) {
                let mc = mc_max.min(m - ic);
                let ab = a.slice(s![ic..ic + mc, pc..pc + kc]);
                let strips = if direct { 1 } else { mc.div_ceil(MR) };
                let ap = aligned(&mut scratch.a, strips * MR * kc);
                if !direct {
                    pack_a(ab, ap);
                }
                for ir in (0..mc).step_by(MR) {
                    let mr = MR.min(mc - ir);
                    let strip = if let (Some(cols), MR) = (in_place, mr) {
                        // A[ic + ir, pc], an element of `a` (ir < mc).
                        let corner = ab.as_ptr().wrapping_offset(ir as isize * a.strides()[0]);
                        if cols {
                            Strip::Cols(corner, a.strides()[1] as usize)
                        } else {
                            Strip::Rows(corner, a.strides()[0] as usize)
                        }
                    } else {
                        let first = if direct { 0 } else { ir * kc };
                        let sp = &mut ap[first..first + MR * kc];
                        if direct {
                            pack_a(ab.slice(s![ir..ir + mr, ..]), sp);
                        }
                        Strip::Cols(sp.as_ptr(), MR)
                    };
                    for (jr, panel) in (0..nc).step_by(NR).zip(bp.chunks_exact(kc * NR)) {
                        let nr = NR.min(nc - jr);
                        let tile = Tile {
                            row: ic + ir,
                            col: jc + jr,
                            rows: mr,
                            cols: nr,
                        };
                        tile.run(cpu, kc, strip, panel, &mut c, alpha, beta);
                    }
                }
            }
        }
    }
    SCRATCH.set(scratch);
}

/// Longest reduction block of [`gemm_gather`].
pub const KC_GATHER: usize = 256;
/// Rows of C per [`gemm_gather`] block (C's block stays in cache while the
/// reduction blocks accumulate onto it).
pub const MC_GATHER: usize = 16 * MR;
/// Largest C (in floats, 64 KiB) that [`gemm_gather`] updates whole per
/// reduction block.
pub const C_WHOLE: usize = 1 << 14;

/// `C ← α·A·B + β·C` for a gathered A, on the calling thread. Shapes must
/// agree, `m, k, n > 0`, and no stride of B or C is negative.
///
/// The loops are [`gemm`]'s, except that A is never packed: each `MR`-row
/// strip hands the kernel its row pointers and the spans of the current
/// reduction block ([`Strip::Gather`]). Spans are cut to at most
/// [`KC_GATHER`] and grouped greedily into reduction blocks of at most that
/// length; B is packed once, whole.
pub(super) fn gemm_gather(
    cpu: Avx2Fma,
    alpha: f32,
    a: &Gather,
    b: ArrayView2<f32>,
    beta: f32,
    mut c: ArrayViewMut2<f32>,
) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    debug_assert!(m > 0 && k > 0 && n > 0 && b.nrows() == k && c.dim() == (m, n));
    // Spans of at most KC_GATHER, then reduction blocks: (first span, spans,
    // first row of B, kc).
    let mut spans = Vec::with_capacity(a.spans.len());
    for &(offset, len) in a.spans {
        for start in (0..len).step_by(KC_GATHER) {
            spans.push((offset + start * a.step, KC_GATHER.min(len - start)));
        }
    }
    let mut blocks: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut p0 = 0;
    for (i, &(_, len)) in spans.iter().enumerate() {
        match blocks.last_mut() {
            Some(b) if b.3 + len <= KC_GATHER => {
                b.1 += 1;
                b.3 += len;
            }
            _ => blocks.push((i, 1, p0, len)),
        }
        p0 += len;
    }
    let kc_max = blocks.iter().map(|b| b.3).max().unwrap_or(1);
    let nc_max = (B_BLOCK / kc_max).max(NR) / NR * NR;
    let mut scratch = SCRATCH.take();
    let bp = aligned(&mut scratch.b, n.div_ceil(NR) * NR * k);
    pack_b(b, bp);
    // A small C stays in cache whole: sweep it once per reduction block (a
    // long reduction, e.g. a filter gradient, then streams through A and B
    // once). A tall C is cut into row blocks that each see every reduction
    // block while they are in cache.
    let mc_max = if m * n <= C_WHOLE { m } else { MC_GATHER };
    let base = a.data.as_ptr();
    for jc in (0..n).step_by(nc_max) {
        let nc = nc_max.min(n - jc);
        for ic in (0..m).step_by(mc_max) {
            let mc = mc_max.min(m - ic);
            for (q, &(first, count, p0, kc)) in blocks.iter().enumerate() {
                let beta = if q == 0 { beta } else { 1.0 };
                let block = &spans[first..first + count];
                for ir in (0..mc).step_by(MR) {
                    let mr = MR.min(mc - ir);
                    let rows = &a.rows[ic + ir..ic + ir + mr];
                    // Rows past `mr` repeat row 0: read, never stored.
                    let ptrs = std::array::from_fn(|i| {
                        base.wrapping_add(rows.get(i).copied().unwrap_or(rows[0]))
                    });
                    let strip = Strip::Gather(GatherStrip {
                        rows: ptrs,
                        spans: block.as_ptr(),
                        nspans: block.len(),
                        step: a.step,
                    });
                    for jr in (0..nc).step_by(NR) {
                        let col = jc + jr;
                        let panel = &bp[(col / NR) * NR * k + p0 * NR..][..kc * NR];
                        let tile = Tile {
                            row: ic + ir,
                            col,
                            rows: mr,
                            cols: NR.min(nc - jr),
                        };
                        tile.run(cpu, kc, strip, panel, &mut c, alpha, beta);
                    }
                }
            }
        }
    }
    SCRATCH.set(scratch);
}

/// One micro-kernel tile of C: `rows × cols` (at most `MR × NR`) at
/// `(row, col)`.
struct Tile {
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
}

impl Tile {
    /// Runs the micro-kernel on `strip` (`MR × kc`, see [`Strip`]) and
    /// `panel` (`kc × NR`, packed) and updates this tile of `c`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn run(
        &self,
        cpu: Avx2Fma,
        kc: usize,
        strip: Strip,
        panel: &[f32],
        c: &mut ArrayViewMut2<f32>,
        alpha: f32,
        beta: f32,
    ) {
        assert!(panel.len() >= kc * NR);
        assert!(self.row + self.rows <= c.nrows() && self.col + self.cols <= c.ncols());
        let [rs, cs] = [c.strides()[0] as usize, c.strides()[1] as usize];
        let shape = [self.rows, self.cols];
        if cs == 1 || self.cols == 1 {
            let dst = c.as_mut_ptr().wrapping_add(self.row * rs + self.col * cs);
            // SAFETY: `strip` covers MR rows × kc of A (built by `gemm` from
            // in-bounds indices or a packed buffer of MR·kc floats, or by
            // `gemm_gather` from a `Gather`, whose constructor checked that
            // every row start + span element is inside its data); `panel`
            // holds kc·NR floats (asserted); the tile's rows × cols elements
            // lie inside `c` (asserted) with unit column stride (or a single
            // column) and row stride `rs`, and `c` is borrowed mutably, so
            // nothing aliases them.
            unsafe { cpu.tile(kc, strip, panel.as_ptr(), dst, rs, shape, alpha, beta) };
            return;
        }
        let mut t = [0.0f32; MR * NR];
        // SAFETY: as above for `strip` and `panel`; the destination is the
        // local MR × NR array `t` (row stride NR).
        unsafe {
            cpu.tile(
                kc,
                strip,
                panel.as_ptr(),
                t.as_mut_ptr(),
                NR,
                [MR, NR],
                1.0,
                0.0,
            )
        };
        for (i, trow) in t.chunks_exact(NR).take(self.rows).enumerate() {
            let mut crow = c.row_mut(self.row + i);
            for (j, &v) in trow[..self.cols].iter().enumerate() {
                let d = &mut crow[self.col + j];
                *d = if beta == 0.0 {
                    alpha * v
                } else {
                    alpha * v + beta * *d
                };
            }
        }
    }
}

/// Packs `a` (`mc × kc`) into `dst`: strip `s` holds rows `s·MR..`, as `kc`
/// groups of `MR` values (`A[s·MR + i, p]` at `s·MR·kc + p·MR + i`), rows
/// past `mc` zero.
fn pack_a(a: ArrayView2<f32>, dst: &mut [f32]) {
    let (mc, kc) = a.dim();
    let dst = &mut dst[..mc.div_ceil(MR) * MR * kc];
    if mc % MR != 0 {
        dst[(mc / MR) * MR * kc..].fill(0.0);
    }
    if a.strides()[0] == 1 || mc == 1 {
        // Columns are contiguous (a transposed row-major matrix).
        for (p, col) in a.axis_iter(Axis(1)).enumerate() {
            let col = col.to_slice().expect("unit row stride");
            let mut strips = dst.chunks_exact_mut(MR * kc);
            let mut rows = col.chunks_exact(MR);
            // Fixed-length copies (no memcpy call) for the full strips.
            // `rows` first: zip must not pull (and lose) the partial strip.
            for (rows, strip) in rows.by_ref().zip(strips.by_ref()) {
                strip[p * MR..][..MR].copy_from_slice(rows);
            }
            if let Some(strip) = strips.next() {
                let rest = rows.remainder();
                strip[p * MR..][..rest.len()].copy_from_slice(rest);
            }
        }
    } else if a.strides()[1] == 1 {
        for (i, row) in a.axis_iter(Axis(0)).enumerate() {
            let row = row.to_slice().expect("unit column stride");
            let strip = &mut dst[(i / MR) * MR * kc..][..MR * kc];
            for (d, &v) in strip[i % MR..].iter_mut().step_by(MR).zip(row) {
                *d = v;
            }
        }
    } else {
        for ((i, p), &v) in a.indexed_iter() {
            dst[(i / MR) * MR * kc + p * MR + i % MR] = v;
        }
    }
}

/// Packs `b` (`kc × nc`) into `dst`: panel `q` holds columns `q·NR..`, as
/// `kc` rows of `NR` values (`B[p, q·NR + j]` at `q·NR·kc + p·NR + j`),
/// columns past `nc` zero.
fn pack_b(b: ArrayView2<f32>, dst: &mut [f32]) {
    let (kc, nc) = b.dim();
    let dst = &mut dst[..nc.div_ceil(NR) * NR * kc];
    if nc % NR != 0 {
        dst[(nc / NR) * NR * kc..].fill(0.0);
    }
    if b.strides()[1] == 1 || nc == 1 {
        for (p, row) in b.axis_iter(Axis(0)).enumerate() {
            let row = row.to_slice().expect("unit column stride");
            let mut panels = dst.chunks_exact_mut(NR * kc);
            let mut cols = row.chunks_exact(NR);
            // Fixed-length copies (no memcpy call) for the full panels.
            // `cols` first: zip must not pull (and lose) the partial panel.
            for (cols, panel) in cols.by_ref().zip(panels.by_ref()) {
                panel[p * NR..][..NR].copy_from_slice(cols);
            }
            if let Some(panel) = panels.next() {
                let rest = cols.remainder();
                panel[p * NR..][..rest.len()].copy_from_slice(rest);
            }
        }
    } else if b.strides()[0] == 1 {
        // Columns are contiguous (a transposed row-major matrix): gather a
        // panel's columns so that the writes run sequentially.
        let cols: Vec<&[f32]> = b
            .axis_iter(Axis(1))
            .map(|col| col.to_slice().expect("unit row stride"))
            .collect();
        for (panel, cols) in dst.chunks_exact_mut(NR * kc).zip(cols.chunks(NR)) {
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (d, col) in row.iter_mut().zip(cols) {
                    *d = col[p];
                }
            }
        }
    } else {
        for ((p, j), &v) in b.indexed_iter() {
            dst[(j / NR) * NR * kc + p * NR + j % NR] = v;
        }
    }
}

/// `len` floats of `buf` starting on a 64-byte (cache-line) boundary,
/// growing `buf` as needed. The contents are unspecified.
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    const LINE: usize = 64 / size_of::<f32>();
    if buf.len() < len + LINE {
        buf.resize(len + LINE, 0.0);
    }
    let misalign = buf.as_ptr().addr() % 64 / size_of::<f32>();
    let off = (LINE - misalign) % LINE;
    &mut buf[off..off + len]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::testing::{Rng, assert_close, gemm_reference, to_f64};
    use ndarray::{Array2, ShapeBuilder};
    use proptest::prelude::*;

    /// How an operand is laid out in memory.
    #[derive(Clone, Copy, Debug)]
    enum Layout {
        RowMajor,
        /// A transposed row-major matrix (unit row stride).
        Transposed,
        /// Every other column of a wider row-major matrix (column stride 2).
        Strided,
        /// The middle of a larger row-major matrix (row stride > columns).
        Window,
    }

    const LAYOUTS: [Layout; 4] = [
        Layout::RowMajor,
        Layout::Transposed,
        Layout::Strided,
        Layout::Window,
    ];

    /// A random `rows × cols` matrix stored in `layout` (in `store`), and a
    /// view of it.
    fn operand(rng: &mut Rng, rows: usize, cols: usize, layout: Layout) -> Array2<f32> {
        match layout {
            Layout::RowMajor => rng.array((rows, cols)),
            Layout::Transposed => rng.array((rows, cols).f()),
            Layout::Strided | Layout::Window => rng.array((rows + 2, 2 * cols + 3)),
        }
    }

    fn view(store: &Array2<f32>, rows: usize, cols: usize, layout: Layout) -> ArrayView2<'_, f32> {
        match layout {
            Layout::RowMajor | Layout::Transposed => store.view(),
            Layout::Strided => store.slice(s![1..rows + 1, 1..2 * cols + 1;2]),
            Layout::Window => store.slice(s![2..rows + 2, 3..cols + 3]),
        }
    }

    /// Runs the packed GEMM on `m × k × n` with the given layouts (C in
    /// `lc`) and checks it against the f64 reference.
    fn check(m: usize, k: usize, n: usize, layouts: [Layout; 3], rng: &mut Rng) {
        let cpu = Avx2Fma::detect().expect("tests run on an AVX2 + FMA machine");
        let [la, lb, lc] = layouts;
        let (sa, sb, mut sc) = (
            operand(rng, m, k, la),
            operand(rng, k, n, lb),
            operand(rng, m, n, lc),
        );
        let (a, b) = (view(&sa, m, k, la), view(&sb, k, n, lb));
        let c0 = view(&sc, m, n, lc).to_owned();
        for beta in [0.0, rng.uniform()] {
            let alpha = 0.5 + rng.uniform();
            let want = gemm_reference(
                alpha.into(),
                &to_f64(&a),
                &to_f64(&b),
                beta.into(),
                &to_f64(&c0),
            );
            let mut c = match lc {
                Layout::RowMajor | Layout::Transposed => sc.view_mut(),
                Layout::Strided => sc.slice_mut(s![1..m + 1, 1..2 * n + 1;2]),
                Layout::Window => sc.slice_mut(s![2..m + 2, 3..n + 3]),
            };
            c.assign(&c0);
            if beta == 0.0 {
                // β = 0 must not read C.
                c.fill(f32::NAN);
            }
            assert!(supports(&a, &b, &c));
            gemm(cpu, alpha, a, b, beta, c.view_mut());
            assert_close(
                &c,
                &want,
                2e-5,
                &format!("{m}×{k}×{n} {layouts:?} β={beta}"),
            );
        }
    }

    #[test]
    fn matches_reference_on_tile_edges_and_all_layouts() {
        let mut rng = Rng::new(31);
        for m in [1, 5, 6, 7, 13] {
            for n in [1, 15, 16, 17, 33] {
                for k in [1, 2, 9] {
                    for la in LAYOUTS {
                        for lb in LAYOUTS {
                            for lc in LAYOUTS {
                                check(m, k, n, [la, lb, lc], &mut rng);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matches_reference_across_cache_blocks() {
        // k past one and two `KC` blocks, n past one `B_BLOCK` column block
        // (nc = 256 when kc = 256), m past one `MC` block of packed A.
        let mut rng = Rng::new(32);
        for (m, k, n) in [
            (13, KC - 1, 17),
            (13, KC, 17),
            (7, KC + 1, 33),
            (12, 2 * KC + 3, 16),
            (MC + 7, 40, 18),
            (25, KC, B_BLOCK / KC + 5),
            (6, 1, B_BLOCK + 1),
        ] {
            for la in LAYOUTS {
                for lb in [Layout::RowMajor, Layout::Transposed] {
                    check(m, k, n, [la, lb, Layout::RowMajor], &mut rng);
                }
            }
            check(
                m,
                k,
                n,
                [Layout::Window, Layout::Strided, Layout::Transposed],
                &mut rng,
            );
        }
    }

    #[test]
    fn the_conv_shapes_match_reference() {
        // MNIST conv2 at 3 images per group: forward (patches · W), input
        // gradient (dy · Wᵀ) and filter gradient (patchesᵀ · dy, β = 1).
        let mut rng = Rng::new(33);
        use Layout::*;
        check(588, 400, 32, [RowMajor, RowMajor, RowMajor], &mut rng);
        check(588, 32, 400, [RowMajor, Transposed, RowMajor], &mut rng);
        check(400, 588, 32, [Transposed, RowMajor, RowMajor], &mut rng);
        // conv1's tap-major patches: a transposed `[25, rows]` matrix.
        check(784, 25, 16, [Transposed, RowMajor, RowMajor], &mut rng);
    }

    #[test]
    fn broadcast_operands_are_read_correctly() {
        // Zero strides (broadcast views) are valid, non-negative strides.
        let cpu = Avx2Fma::detect().expect("tests run on an AVX2 + FMA machine");
        let mut rng = Rng::new(34);
        let row: ndarray::Array1<f32> = rng.array(20);
        let a = row.broadcast((9, 20)).unwrap();
        let b: Array2<f32> = rng.array((20, 18));
        let bt = row.slice(s![..18]).insert_axis(Axis(0)).to_owned();
        let bt = bt.broadcast((20, 18)).unwrap();
        for b in [b.view(), bt] {
            let want = gemm_reference(1.0, &to_f64(&a), &to_f64(&b), 0.0, &Array2::zeros((9, 18)));
            let mut c = Array2::zeros((9, 18));
            gemm(cpu, 1.0, a, b, 0.0, c.view_mut());
            assert_close(&c, &want, 1e-5, "broadcast");
        }
    }

    #[test]
    fn aligned_buffers_start_on_cache_lines() {
        let mut buf = Vec::new();
        for len in [1, 17, 1000] {
            let s = aligned(&mut buf, len);
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr().addr() % 64, 0);
        }
    }

    fn layout() -> impl Strategy<Value = Layout> {
        prop_oneof![
            Just(Layout::RowMajor),
            Just(Layout::Transposed),
            Just(Layout::Strided),
            Just(Layout::Window),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_products_match_reference(
            m in 1usize..40, k in 1usize..300, n in 1usize..40,
            la in layout(), lb in layout(), lc in layout(), seed in any::<u64>(),
        ) {
            check(m, k, n, [la, lb, lc], &mut Rng::new(seed));
        }
    }
}
