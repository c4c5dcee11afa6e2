//! Implicit-GEMM convolutions: the three products of the parent module's
//! table without an im2col matrix.
//!
//! Each group of images is first copied into a zero-padded NHWC buffer
//! (small: the images themselves plus a border), so that every kernel tap
//! of every output pixel lands inside it. A row of the patch matrix is then
//! a few contiguous runs of that buffer — one run of `kw·in` floats per
//! kernel row when `dilation_w = 1` — and [`gemm_gather`] reads them in
//! place ([`Gather`]: a start offset per row plus the runs' offsets).
//!
//! | op              | gathered A (rows × runs)                          | B                   |
//! |-----------------|---------------------------------------------------|---------------------|
//! | forward         | output pixels × kernel rows of padded `x`         | `W[K, out]`         |
//! | backprop input  | input pixels × kernel rows of padded `dy`         | flipped `W'[K', in]`|
//! | backprop filter | taps `(ky, kx, ci)` × output rows of padded `x`   | `dy[pixels, out]`   |
//!
//! - **Input gradient** (stride 1 only): `dx` is the correlation of `dy`,
//!   padded by `(k − 1)·d − pad_before` in front, with the filter flipped in
//!   both spatial axes and its channel axes swapped:
//!   `W'[ky', kx', o, i] = W[kh−1−ky', kw−1−kx', i, o]`. This replaces the
//!   `dcols = dy·Wᵀ` product (20 MB for MNIST conv2 at batch 64) and the
//!   col2im scatter by one forward-style product with `K = kh·kw·out`.
//! - **Filter gradient**: `dW = colsᵀ·dy`, A's rows being the taps: tap
//!   `(ky, kx, ci)` of output row `(image, oy)` is a run of `ow` floats
//!   `stride_w·in` apart. Each group sums into its own partial `dW`; the
//!   partials are added in group order.
//! - Groups keep their padded buffer near [`GROUP_TARGET`] floats (in L2)
//!   and run in parallel on rayon's pool, at least one per thread.
//! - The parent falls back to im2col when [`implicit_available`] is false
//!   (no AVX2 + FMA, or another backend forced) or the runs would be short
//!   (fewer than [`MIN_RUN`] floats): the per-run overhead would dominate.

use ndarray::{Array2, ArrayView2, ArrayView4, ArrayViewMut4, Axis};
use rayon::prelude::*;

use super::{Conv, matrix, rows_mut};
use crate::gemm::{Gather, gemm_gather, implicit_available};
use crate::kernels::layout::slice;

/// Shortest contiguous run (in floats) the implicit paths accept.
pub const MIN_RUN: usize = 16;

/// Target size (in f32s) of one group's padded buffer: 256 KiB.
pub const GROUP_TARGET: usize = 1 << 16;

/// Where images of `src` (`[h, w, c]` each) sit in a zero-padded copy of
/// `[ph, pw, c]` each: source pixel `(y, x)` goes to `(y + top, x + left)`;
/// source pixels falling outside the copy are dropped (never read).
#[derive(Clone, Copy, Debug)]
struct Padded {
    src: [usize; 2],
    dims: [usize; 2],
    top: usize,
    left: usize,
    c: usize,
}

impl Padded {
    /// Floats per padded image.
    fn image(&self) -> usize {
        self.dims[0] * self.dims[1] * self.c
    }

    /// Floats per padded row.
    fn row(&self) -> usize {
        self.dims[1] * self.c
    }

    /// Copies the images in `src` (contiguous) into `dst`, zero-filled
    /// around them; returns the filled part of `dst`.
    fn fill<'b>(&self, src: &[f32], dst: &'b mut Vec<f32>) -> &'b [f32] {
        let ([sh, sw], [ph, pw], c) = (self.src, self.dims, self.c);
        let image = sh * sw * c;
        let images = src.len().checked_div(image).unwrap_or(0);
        dst.clear();
        dst.resize(images * self.image(), 0.0);
        let cols = pw.saturating_sub(self.left).min(sw);
        if cols == 0 {
            return dst;
        }
        for (s, d) in src
            .chunks_exact(image.max(1))
            .zip(dst.chunks_exact_mut(self.image().max(1)))
        {
            for y in 0..sh.min(ph.saturating_sub(self.top)) {
                let from = &s[y * sw * c..][..cols * c];
                d[((y + self.top) * pw + self.left) * c..][..cols * c].copy_from_slice(from);
            }
        }
        dst
    }
}

impl Conv {
    /// Length of one contiguous run of a patch row over a `c`-channel
    /// buffer: a whole kernel row when `dilation_w = 1`, else one tap.
    fn run_len(&self, c: usize) -> usize {
        if self.r.dilations[1] == 1 {
            self.r.kernel[1] * c
        } else {
            c
        }
    }

    /// `x` padded so that every tap of every output pixel is inside.
    fn padded_input(&self) -> Padded {
        let r = &self.r;
        let dim = |a: usize| (r.out[a] - 1) * r.strides[a] + (r.kernel[a] - 1) * r.dilations[a] + 1;
        Padded {
            src: r.input,
            dims: [dim(0), dim(1)],
            top: r.pad[0],
            left: r.pad[1],
            c: self.c,
        }
    }

    /// The runs of one patch row of the padded buffer `p` (of `x`, or of
    /// `dy` for the flipped kernel), as offsets from the window's top-left
    /// corner.
    fn runs(&self, p: &Padded) -> Vec<(usize, usize)> {
        let ([kh, kw], [dh, dw]) = (self.r.kernel, self.r.dilations);
        let len = self.run_len(p.c);
        let mut runs = Vec::new();
        for ky in 0..kh {
            if dw == 1 {
                runs.push((ky * dh * p.row(), len));
            } else {
                runs.extend((0..kw).map(|kx| (ky * dh * p.row() + kx * dw * p.c, len)));
            }
        }
        runs
    }

    /// Images per group when one padded image is `image` floats.
    fn implicit_group(&self, image: usize) -> usize {
        let threads = rayon::current_num_threads();
        let by_memory = (GROUP_TARGET / image.max(1)).max(1);
        let groups = self
            .n
            .div_ceil(by_memory)
            .max(threads)
            .next_multiple_of(threads);
        self.n.div_ceil(groups).max(1)
    }

    /// Whether [`forward`] (and [`backprop_filter`]) apply.
    pub(super) fn implicit_forward(&self) -> bool {
        self.k() > 0 && implicit_available() && !self.tap_major() && self.run_len(self.c) >= MIN_RUN
    }

    /// Whether [`backprop_input`] applies: stride 1 and padding in front no
    /// larger than the dilated kernel minus one (so the padded `dy` only
    /// grows).
    pub(super) fn implicit_backprop_input(&self) -> bool {
        let r = &self.r;
        self.k() > 0
            && implicit_available()
            && !self.tap_major()
            && r.strides == [1, 1]
            && (0..2).all(|a| r.pad[a] <= (r.kernel[a] - 1) * r.dilations[a])
            && self.run_len(self.o) >= MIN_RUN
    }

    /// Whether [`backprop_filter`] applies: as [`Self::implicit_forward`],
    /// and output rows of at least [`MIN_RUN`] / 2 pixels (the runs).
    pub(super) fn implicit_backprop_filter(&self) -> bool {
        self.implicit_forward() && 2 * self.r.out[1] >= MIN_RUN
    }
}

/// The offset of the window of every pixel of an `[images, out]` grid
/// sliding over padded images `p` with `strides`.
fn window_starts(
    p: &Padded,
    images: usize,
    [oh, ow]: [usize; 2],
    [sh, sw]: [usize; 2],
) -> Vec<usize> {
    let mut rows = Vec::with_capacity(images * oh * ow);
    for n in 0..images {
        for oy in 0..oh {
            let start = n * p.image() + oy * sh * p.row();
            rows.extend((0..ow).map(|ox| start + ox * sw * p.c));
        }
    }
    rows
}

/// `y = conv(x, w)` (`w` as `[K, out]`), `y` zero-sized in no dimension.
pub(super) fn forward(cv: &Conv, x: ArrayView4<f32>, w: ArrayView2<f32>, y: ArrayViewMut4<f32>) {
    let (pad, p, o) = (cv.padded_input(), cv.pixels_out(), cv.o);
    let g = cv.implicit_group(pad.image());
    let runs = cv.runs(&pad);
    let starts = window_starts(&pad, g, cv.r.out, cv.r.strides);
    let mut y = y;
    let groups = y
        .axis_chunks_iter_mut(Axis(0), g)
        .into_par_iter()
        .zip(x.axis_chunks_iter(Axis(0), g));
    groups.for_each_init(Vec::new, |buf, (mut yg, xg)| {
        let rows = yg.len_of(Axis(0)) * p;
        let data = pad.fill(slice(&xg), buf);
        let a = Gather::new(data, &starts[..rows], &runs, 1).expect("windows inside the padding");
        gemm_gather(1.0, &a, w, 0.0, rows_mut(&mut yg, rows, o));
    });
}

/// `dx` of [`forward`] for stride 1 (see [`Conv::implicit_backprop_input`]).
pub(super) fn backprop_input(
    cv: &Conv,
    w: ArrayView2<f32>,
    dy: ArrayView4<f32>,
    dx: ArrayViewMut4<f32>,
) {
    let r = &cv.r;
    let ([kh, kw], [dh, dw], [ih, iw], (c, o)) = (r.kernel, r.dilations, r.input, (cv.c, cv.o));
    let pad = Padded {
        src: r.out,
        dims: [ih + (kh - 1) * dh, iw + (kw - 1) * dw],
        top: (kh - 1) * dh - r.pad[0],
        left: (kw - 1) * dw - r.pad[1],
        c: o,
    };
    // W'[(ky', kx', o), i] = W[(kh-1-ky', kw-1-kx', i), o].
    let flipped = Array2::from_shape_fn((kh * kw * o, c), |(k, i)| {
        let (tap, oc) = (k / o, k % o);
        let (ky, kx) = (kh - 1 - tap / kw, kw - 1 - tap % kw);
        w[[(ky * kw + kx) * c + i, oc]]
    });
    let g = cv.implicit_group(pad.image());
    let runs = cv.runs(&pad);
    let starts = window_starts(&pad, g, r.input, [1, 1]);
    let mut dx = dx;
    let groups = dx
        .axis_chunks_iter_mut(Axis(0), g)
        .into_par_iter()
        .zip(dy.axis_chunks_iter(Axis(0), g));
    groups.for_each_init(Vec::new, |buf, (mut dxg, dyg)| {
        let rows = dxg.len_of(Axis(0)) * ih * iw;
        let data = pad.fill(slice(&dyg), buf);
        let a = Gather::new(data, &starts[..rows], &runs, 1).expect("windows inside the padding");
        gemm_gather(1.0, &a, flipped.view(), 0.0, rows_mut(&mut dxg, rows, c));
    });
}

/// `dW[K, out]` of [`forward`] (see [`Conv::implicit_backprop_filter`]).
pub(super) fn backprop_filter(cv: &Conv, x: ArrayView4<f32>, dy: ArrayView4<f32>) -> Array2<f32> {
    let r = &cv.r;
    let ([kh, kw], [dh, dw], [oh, ow], [sh, sw]) = (r.kernel, r.dilations, r.out, r.strides);
    let (pad, p, k, o, c) = (cv.padded_input(), cv.pixels_out(), cv.k(), cv.o, cv.c);
    let g = cv.implicit_group(pad.image());
    // A's rows: the taps, as offsets from an output pixel's window corner.
    let mut taps = Vec::with_capacity(k);
    for ky in 0..kh {
        for kx in 0..kw {
            let tap = ky * dh * pad.row() + kx * dw * c;
            taps.extend(tap..tap + c);
        }
    }
    // The reduction runs: one output row of one image each.
    let runs: Vec<(usize, usize)> = (0..g)
        .flat_map(|n| (0..oh).map(move |oy| (n * pad.image() + oy * sh * pad.row(), ow)))
        .collect();
    let partials: Vec<Array2<f32>> = x
        .axis_chunks_iter(Axis(0), g)
        .into_par_iter()
        .zip(dy.axis_chunks_iter(Axis(0), g))
        .map_init(Vec::new, |buf, (xg, dyg)| {
            let images = xg.len_of(Axis(0));
            let data = pad.fill(slice(&xg), buf);
            let a = Gather::new(data, &taps, &runs[..images * oh], sw * c)
                .expect("windows inside the padding");
            let mut acc = Array2::zeros((k, o));
            gemm_gather(1.0, &a, matrix(&dyg, images * p, o), 0.0, acc.view_mut());
            acc
        })
        .collect();
    partials
        .into_iter()
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| Array2::zeros((k, o)))
}
