//! Fake-quant kernels with TensorFlow 2.x's exact float32 arithmetic, and
//! their straight-through gradients.
//!
//! The three TensorFlow ops are covered: `FakeQuantWithMinMaxVars`
//! ([`fake_quant_vars`]), `FakeQuantWithMinMaxVarsPerChannel`
//! ([`fake_quant_per_channel`]) and `FakeQuantWithMinMaxArgs`
//! ([`fake_quant_args`]), each with its gradient op. Every output value and
//! every `dx` is bit-identical to TensorFlow 2.21 (checked against the
//! TensorFlow-generated vectors in `fixtures/tf/fake_quant_vectors`); `dmin`
//! and `dmax` are sums and differ from TensorFlow only by summation order.
//!
//! # Arithmetic (reference-semantics §5.2, §5.3b, §5.4)
//!
//! All variants share one float32 nudging ([`nudge`]). With
//! `c = clamp(x, nudged_min, nudged_max)` (upper bound first), the forward is
//!
//! ```text
//! vars:               y = floor((c - nudged_min) / scale     - quant_zero + 0.5) * scale
//! args, per-channel:  y = floor((c - nudged_min) * inv_scale - quant_zero + 0.5) * scale
//! ```
//!
//! evaluated left to right, each operation rounded to float32, with
//! `inv_scale = (qmax - qmin) / (max - min)` (a division of its own, not
//! `1 / scale`) and `quant_zero = floor(-nudged_min * inv_scale + 0.5)`.
//! Division and multiplication by `inv_scale` give different levels for
//! some inputs near ties, so each op uses exactly TensorFlow's choice. The
//! `vars` and per-channel ops (forward and gradient) treat a `[0, 0]` range
//! specially: `y = 0`, `dx = g`, `dmin = dmax = 0`; the `args` op requires
//! `min < max` ([`validate_args_range`]) and has no special case.
//!
//! The gradient mask is TensorFlow's: `dx = g * (nudged_min <= x <= nudged_max
//! ? 1.0 : 0.0)`, a multiplication, so a negative `g` outside the range gives
//! `-0.0` exactly as TensorFlow does.
//!
//! # Design note (tiling, dispatch, threads)
//!
//! * **Reference.** [`reference`](mod@reference) holds a plain scalar
//!   transcription of every op. The fast paths are tested against it on
//!   awkward lengths; both are tested against TensorFlow's vectors.
//! * **Dispatch.** Each inner loop is one `#[inline(always)]` body written
//!   so that LLVM auto-vectorizes it (branch-free selects that lower to
//!   `minps`/`maxps`/`blendvps`, no bounds checks, `floor` as `roundps`). The
//!   body is instantiated once per instruction set (`Isa`): AVX2, SSE4.1
//!   and a generic build (without SSE4.1 `floor` is a library call and does
//!   not vectorize). The best available set is detected at run time. FMA is
//!   never enabled on purpose: Rust does not contract `a * b + c`, and a
//!   contraction would change the results.
//! * **Streaming stores.** Outputs of at least [`STREAM_MIN_LEN`] elements
//!   go through AVX2 kernels written with intrinsics (`streaming`): the same
//!   float32 operations in the same order, but every aligned group of 8
//!   results goes from a register straight to memory with a non-temporal
//!   store, which skips reading each destination line before overwriting it
//!   (a third of a forward's memory traffic). Computing into a cache-resident
//!   buffer and streaming that out was measured and does not help. Without
//!   AVX2, large outputs use ordinary stores.
//! * **Per-channel tiling.** The channel of element `i` is `i % C`. The
//!   per-channel parameters (nudged range, scales, zero point, a keep mask
//!   for `[0, 0]` channels) are repeated into tables of width
//!   `L = lcm(C, 16)` (or `L = C` when that would exceed 1024), so the input
//!   is processed as rows of `L` elements whose inner loop runs over
//!   contiguous parameter arrays and vectorizes fully for any `C`. The
//!   tables hold two copies of their `L` columns so that the streaming
//!   kernels can start a group of 8 at any column.
//! * **Fused gradient.** One pass writes `dx` and accumulates `dmin`/`dmax`
//!   in 16 float32 lanes (per-channel: one accumulator per table column).
//!   Lanes are folded per chunk and chunks are added in float64 in chunk
//!   order, so the result does not depend on the number of threads.
//! * **Threads.** Inputs longer than [`PAR_CHUNK`] are split into chunks of
//!   about that many elements (a multiple of `L` for per-channel ops) and run
//!   on rayon's global pool; shorter inputs run on the calling thread.
//! * **Subnormals.** TensorFlow's CPU kernels run with denormals-are-zero;
//!   these kernels do not change the float mode, so subnormal inputs (which
//!   never occur in the TensorFlow vectors) may behave differently.

use rayon::prelude::*;
use thiserror::Error;

/// Elements per parallel task. Inputs of at most this many elements run
/// serially on the calling thread.
pub const PAR_CHUNK: usize = 1 << 16;

/// Accumulator lanes of the fused per-tensor gradient.
const LANES: usize = 16;

/// Largest per-channel table width built from `lcm(C, 16)`.
const MAX_TABLE_WIDTH: usize = 1024;

/// Outputs of at least this many elements (32 MiB, the size of a large
/// last-level cache) are written with non-temporal stores: they would not
/// stay in cache anyway, and streaming stores skip reading the destination
/// lines before overwriting them.
pub const STREAM_MIN_LEN: usize = 1 << 23;

/// Invalid fake-quant attributes.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FakeQuantError {
    /// `num_bits` outside `2..=16`.
    #[error("num_bits must be between 2 and 16, inclusive")]
    NumBits(u32),
    /// `FakeQuantWithMinMaxArgs` requires `min < max`.
    #[error("min has to be smaller than max, was: min = {min}, max = {max}")]
    ArgsRange {
        /// The `min` attribute.
        min: f32,
        /// The `max` attribute.
        max: f32,
    },
}

/// The `num_bits` and `narrow_range` attributes shared by all fake-quant ops.
///
/// Build it with [`FakeQuantParams::new`], which validates `num_bits`; the
/// kernels assume a validated value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FakeQuantParams {
    /// Bit width of the integer grid, `2..=16`.
    pub num_bits: u32,
    /// Use `[1, 2^num_bits - 1]` instead of `[0, 2^num_bits - 1]`.
    pub narrow_range: bool,
}

impl Default for FakeQuantParams {
    /// TensorFlow's defaults: 8 bits, full range.
    fn default() -> Self {
        Self {
            num_bits: 8,
            narrow_range: false,
        }
    }
}

impl FakeQuantParams {
    /// Validated attributes; fails like TensorFlow's kernel construction
    /// when `num_bits` is outside `2..=16`.
    pub fn new(num_bits: u32, narrow_range: bool) -> Result<Self, FakeQuantError> {
        if !(2..=16).contains(&num_bits) {
            return Err(FakeQuantError::NumBits(num_bits));
        }
        Ok(Self {
            num_bits,
            narrow_range,
        })
    }

    /// Smallest integer level: 1 with `narrow_range`, else 0.
    pub fn quant_min(self) -> i64 {
        i64::from(self.narrow_range)
    }

    /// Largest integer level, `2^num_bits - 1`.
    pub fn quant_max(self) -> i64 {
        debug_assert!((2..=16).contains(&self.num_bits), "unvalidated num_bits");
        (1i64 << self.num_bits.min(32)) - 1
    }
}

/// Checks the `FakeQuantWithMinMaxArgs` attribute constraint `min < max`.
pub fn validate_args_range(min: f32, max: f32) -> Result<(), FakeQuantError> {
    if min < max {
        Ok(())
    } else {
        Err(FakeQuantError::ArgsRange { min, max })
    }
}

/// A range nudged so that real 0 lies exactly on the integer grid
/// (TensorFlow's `Nudge`, reference-semantics §5.2), with the derived
/// constants the kernels use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nudged {
    /// Lower end of the nudged range, `(quant_min - zero_point) * scale`.
    pub nudged_min: f32,
    /// Upper end of the nudged range, `(quant_max - zero_point) * scale`.
    pub nudged_max: f32,
    /// Step size, `(max - min) / (quant_max - quant_min)`.
    pub scale: f32,
    /// `(quant_max - quant_min) / (max - min)`: a division of its own, not
    /// the reciprocal of `scale`; the `args` and per-channel ops multiply by it.
    pub inv_scale: f32,
    /// The integer zero point, in `[quant_min, quant_max]`.
    pub zero_point: i64,
    /// `floor(-nudged_min * inv_scale + 0.5)`: the zero point relative to
    /// `quant_min`, as TensorFlow computes it in float32.
    pub quant_zero: f32,
}

/// TensorFlow's float32 nudging of `[min, max]`, the same for every variant.
///
/// Every step is rounded to float32 as in TensorFlow: `[-1, 1]` with 8 bits
/// gives a float zero point of 127.49999 and hence `zero_point = 127`. The
/// zero point rounds half away from zero and is clamped to
/// `[quant_min, quant_max]`, so a range that excludes 0 keeps its span and
/// moves to touch 0. With `min >= max` the result is meaningless (`scale`
/// is not positive), as in TensorFlow; the ops treat `[0, 0]` specially
/// before nudging.
pub fn nudge(min: f32, max: f32, p: FakeQuantParams) -> Nudged {
    let quant_min = p.quant_min();
    let quant_max = p.quant_max();
    let qmin_f = quant_min as f32;
    let qmax_f = quant_max as f32;
    let scale = (max - min) / (qmax_f - qmin_f);
    let inv_scale = (qmax_f - qmin_f) / (max - min);
    let zero_point_from_min = qmin_f - min / scale;
    let zero_point = if zero_point_from_min < qmin_f {
        quant_min
    } else if zero_point_from_min > qmax_f {
        quant_max
    } else {
        // Non-negative here, so half away from zero is half up. A NaN (from a
        // degenerate range) casts to 0.
        zero_point_from_min.round() as i64
    };
    let zp_f = zero_point as f32;
    let nudged_min = (qmin_f - zp_f) * scale;
    let nudged_max = (qmax_f - zp_f) * scale;
    let quant_zero = (-nudged_min * inv_scale + 0.5).floor();
    Nudged {
        nudged_min,
        nudged_max,
        scale,
        inv_scale,
        zero_point,
        quant_zero,
    }
}

// ---------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------

/// `FakeQuantWithMinMaxVars`: fake-quantizes `x` into `out` with one range.
///
/// A `[0, 0]` range gives all zeros.
///
/// # Panics
/// If `x` and `out` differ in length.
pub fn fake_quant_vars(x: &[f32], min: f32, max: f32, p: FakeQuantParams, out: &mut [f32]) {
    assert_eq!(
        x.len(),
        out.len(),
        "fake_quant_vars: x and out lengths differ"
    );
    if min == 0.0 && max == 0.0 {
        par_fill_zero(out);
        return;
    }
    let k = ScalarConsts::new(&nudge(min, max, p));
    let (isa, stream) = (Isa::detect(), out.len() >= STREAM_MIN_LEN);
    par_map(x, out, |x, out| forward_div(isa, x, out, &k, stream));
}

/// `FakeQuantWithMinMaxArgs`: like [`fake_quant_vars`] with attribute
/// `min`/`max`, multiplying by `inv_scale` instead of dividing by `scale`.
///
/// TensorFlow requires `min < max` ([`validate_args_range`]); other ranges
/// give meaningless results and are not special-cased.
///
/// # Panics
/// If `x` and `out` differ in length.
pub fn fake_quant_args(x: &[f32], min: f32, max: f32, p: FakeQuantParams, out: &mut [f32]) {
    assert_eq!(
        x.len(),
        out.len(),
        "fake_quant_args: x and out lengths differ"
    );
    let k = ScalarConsts::new(&nudge(min, max, p));
    let (isa, stream) = (Isa::detect(), out.len() >= STREAM_MIN_LEN);
    par_map(x, out, |x, out| forward_mul(isa, x, out, &k, stream));
}

/// `FakeQuantWithMinMaxVarsPerChannel`: element `i` uses the range
/// `mins[i % C]`, `maxs[i % C]` with `C = mins.len()`, i.e. the channel is
/// the last dimension of a row-major tensor. A `[0, 0]` channel gives zeros.
///
/// # Panics
/// If `x` and `out` differ in length, `mins` and `maxs` differ in length,
/// or a non-empty `x` is not a whole number of rows of `C` channels.
pub fn fake_quant_per_channel(
    x: &[f32],
    mins: &[f32],
    maxs: &[f32],
    p: FakeQuantParams,
    out: &mut [f32],
) {
    assert_eq!(
        x.len(),
        out.len(),
        "fake_quant_per_channel: x and out lengths differ"
    );
    check_channels(x.len(), mins, maxs);
    if x.is_empty() {
        return;
    }
    let t = ForwardTable::new(mins, maxs, p);
    let (isa, stream) = (Isa::detect(), out.len() >= STREAM_MIN_LEN);
    par_map_rows(x, out, t.width, |x, out| {
        if t.has_zero {
            forward_channels::<true>(isa, x, out, &t, stream);
        } else {
            forward_channels::<false>(isa, x, out, &t, stream);
        }
    });
}

/// `FakeQuantWithMinMaxVarsGradient`, fused into one pass: writes
/// `dx = g` where `nudged_min <= x <= nudged_max` (else `g * 0`) and returns
/// `(dmin, dmax)`, the sums of `g` over `x < nudged_min` and over
/// `x > nudged_max`. A `[0, 0]` range gives `dx = g` and `(0, 0)`.
///
/// # Panics
/// If `g`, `x` and `dx` differ in length.
pub fn fake_quant_vars_grad(
    g: &[f32],
    x: &[f32],
    min: f32,
    max: f32,
    p: FakeQuantParams,
    dx: &mut [f32],
) -> (f32, f32) {
    assert_eq!(
        g.len(),
        x.len(),
        "fake_quant_vars_grad: g and x lengths differ"
    );
    assert_eq!(
        x.len(),
        dx.len(),
        "fake_quant_vars_grad: x and dx lengths differ"
    );
    if min == 0.0 && max == 0.0 {
        par_copy(g, dx);
        return (0.0, 0.0);
    }
    let n = nudge(min, max, p);
    let (lo, hi) = (n.nudged_min, n.nudged_max);
    let (isa, stream) = (Isa::detect(), dx.len() >= STREAM_MIN_LEN);
    let partials: Vec<(f32, f32)> = if x.len() <= PAR_CHUNK {
        vec![grad_sums(isa, g, x, dx, lo, hi, stream)]
    } else {
        g.par_chunks(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .zip(dx.par_chunks_mut(PAR_CHUNK))
            .map(|((g, x), dx)| grad_sums(isa, g, x, dx, lo, hi, stream))
            .collect()
    };
    let (dmin, dmax) = partials.iter().fold((0f64, 0f64), |(a, b), &(c, d)| {
        (a + f64::from(c), b + f64::from(d))
    });
    (dmin as f32, dmax as f32)
}

/// `FakeQuantWithMinMaxArgsGradient`: `dx = g` where
/// `nudged_min <= x <= nudged_max`, else `g * 0`.
///
/// # Panics
/// If `g`, `x` and `dx` differ in length.
pub fn fake_quant_args_grad(
    g: &[f32],
    x: &[f32],
    min: f32,
    max: f32,
    p: FakeQuantParams,
    dx: &mut [f32],
) {
    assert_eq!(
        g.len(),
        x.len(),
        "fake_quant_args_grad: g and x lengths differ"
    );
    assert_eq!(
        x.len(),
        dx.len(),
        "fake_quant_args_grad: x and dx lengths differ"
    );
    let n = nudge(min, max, p);
    let (lo, hi) = (n.nudged_min, n.nudged_max);
    let (isa, stream) = (Isa::detect(), dx.len() >= STREAM_MIN_LEN);
    if x.len() <= PAR_CHUNK {
        grad_mask(isa, g, x, dx, lo, hi, stream);
    } else {
        g.par_chunks(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .zip(dx.par_chunks_mut(PAR_CHUNK))
            .for_each(|((g, x), dx)| grad_mask(isa, g, x, dx, lo, hi, stream));
    }
}

/// `FakeQuantWithMinMaxVarsPerChannelGradient`, fused into one pass, with
/// channel `i % C` as in [`fake_quant_per_channel`]: writes `dx` and the
/// per-channel sums `dmin[c]`, `dmax[c]` (overwritten, not accumulated).
/// A `[0, 0]` channel gives `dx = g` and zero sums.
///
/// # Panics
/// If `g`, `x` and `dx` differ in length, `mins`, `maxs`, `dmin` and `dmax`
/// differ in length, or a non-empty `x` is not a whole number of rows.
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the TensorFlow op: three inputs, two ranges, attributes, three outputs"
)]
pub fn fake_quant_per_channel_grad(
    g: &[f32],
    x: &[f32],
    mins: &[f32],
    maxs: &[f32],
    p: FakeQuantParams,
    dx: &mut [f32],
    dmin: &mut [f32],
    dmax: &mut [f32],
) {
    assert_eq!(
        g.len(),
        x.len(),
        "fake_quant_per_channel_grad: g and x lengths differ"
    );
    assert_eq!(
        x.len(),
        dx.len(),
        "fake_quant_per_channel_grad: x and dx lengths differ"
    );
    assert_eq!(
        dmin.len(),
        mins.len(),
        "fake_quant_per_channel_grad: dmin length"
    );
    assert_eq!(
        dmax.len(),
        mins.len(),
        "fake_quant_per_channel_grad: dmax length"
    );
    check_channels(x.len(), mins, maxs);
    dmin.fill(0.0);
    dmax.fill(0.0);
    if x.is_empty() {
        return;
    }
    let t = GradTable::new(mins, maxs, p);
    let (isa, stream) = (Isa::detect(), dx.len() >= STREAM_MIN_LEN);
    let w = t.width;
    let rows = rows_per_chunk(w);
    let run = |g: &[f32], x: &[f32], dx: &mut [f32]| {
        let mut acc = (vec![0f32; w], vec![0f32; w]);
        if t.has_zero {
            grad_channels::<true>(isa, g, x, dx, &t, (&mut acc.0, &mut acc.1), stream);
        } else {
            grad_channels::<false>(isa, g, x, dx, &t, (&mut acc.0, &mut acc.1), stream);
        }
        acc
    };
    let partials: Vec<(Vec<f32>, Vec<f32>)> = if x.len() <= rows {
        vec![run(g, x, dx)]
    } else {
        g.par_chunks(rows)
            .zip(x.par_chunks(rows))
            .zip(dx.par_chunks_mut(rows))
            .map(|((g, x), dx)| run(g, x, dx))
            .collect()
    };
    let channels = mins.len();
    let mut sum_min = vec![0f64; channels];
    let mut sum_max = vec![0f64; channels];
    for (amin, amax) in &partials {
        for (j, (&a, &b)) in amin.iter().zip(amax).enumerate() {
            sum_min[j % channels] += f64::from(a);
            sum_max[j % channels] += f64::from(b);
        }
    }
    for c in 0..channels {
        let zero = mins[c] == 0.0 && maxs[c] == 0.0;
        dmin[c] = if zero { 0.0 } else { sum_min[c] as f32 };
        dmax[c] = if zero { 0.0 } else { sum_max[c] as f32 };
    }
}

// ---------------------------------------------------------------------------
// Scalar reference
// ---------------------------------------------------------------------------

/// Plain scalar transcriptions of TensorFlow 2.x's fake-quant functors, one
/// element at a time. The fast paths are tested against these; sums are
/// accumulated in float64 in index order.
pub mod reference {
    use super::{FakeQuantParams, nudge};

    fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
        // Eigen's cwiseMin(hi).cwiseMax(lo), std::min/std::max semantics.
        let c = if hi < x { hi } else { x };
        if c < lo { lo } else { c }
    }

    fn is_zero_range(min: f32, max: f32) -> bool {
        min == 0.0 && max == 0.0
    }

    fn mask(b: bool) -> f32 {
        if b { 1.0 } else { 0.0 }
    }

    /// Reference `FakeQuantWithMinMaxVars` (division by `scale`).
    pub fn fake_quant_vars(x: &[f32], min: f32, max: f32, p: FakeQuantParams, out: &mut [f32]) {
        assert_eq!(x.len(), out.len());
        if is_zero_range(min, max) {
            out.fill(0.0);
            return;
        }
        let n = nudge(min, max, p);
        for (o, &v) in out.iter_mut().zip(x) {
            let shifted = clamp(v, n.nudged_min, n.nudged_max) - n.nudged_min;
            *o = (shifted / n.scale - n.quant_zero + 0.5).floor() * n.scale;
        }
    }

    /// Reference `FakeQuantWithMinMaxArgs` (multiplication by `inv_scale`).
    pub fn fake_quant_args(x: &[f32], min: f32, max: f32, p: FakeQuantParams, out: &mut [f32]) {
        assert_eq!(x.len(), out.len());
        let n = nudge(min, max, p);
        for (o, &v) in out.iter_mut().zip(x) {
            let shifted = clamp(v, n.nudged_min, n.nudged_max) - n.nudged_min;
            *o = (shifted * n.inv_scale - n.quant_zero + 0.5).floor() * n.scale;
        }
    }

    /// Reference `FakeQuantWithMinMaxVarsPerChannel` (channel `i % C`,
    /// multiplication by `inv_scale`).
    pub fn fake_quant_per_channel(
        x: &[f32],
        mins: &[f32],
        maxs: &[f32],
        p: FakeQuantParams,
        out: &mut [f32],
    ) {
        assert_eq!(x.len(), out.len());
        assert_eq!(mins.len(), maxs.len());
        for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            let c = i % mins.len();
            if is_zero_range(mins[c], maxs[c]) {
                *o = 0.0;
                continue;
            }
            let n = nudge(mins[c], maxs[c], p);
            let shifted = clamp(v, n.nudged_min, n.nudged_max) - n.nudged_min;
            *o = (shifted * n.inv_scale - n.quant_zero + 0.5).floor() * n.scale;
        }
    }

    /// Reference `FakeQuantWithMinMaxVarsGradient`; returns `(dmin, dmax)`.
    pub fn fake_quant_vars_grad(
        g: &[f32],
        x: &[f32],
        min: f32,
        max: f32,
        p: FakeQuantParams,
        dx: &mut [f32],
    ) -> (f32, f32) {
        assert_eq!(g.len(), x.len());
        assert_eq!(x.len(), dx.len());
        if is_zero_range(min, max) {
            dx.copy_from_slice(g);
            return (0.0, 0.0);
        }
        let n = nudge(min, max, p);
        let (mut dmin, mut dmax) = (0f64, 0f64);
        for ((d, &gv), &xv) in dx.iter_mut().zip(g).zip(x) {
            *d = gv * mask(xv >= n.nudged_min && xv <= n.nudged_max);
            dmin += f64::from(gv * mask(xv < n.nudged_min));
            dmax += f64::from(gv * mask(xv > n.nudged_max));
        }
        (dmin as f32, dmax as f32)
    }

    /// Reference `FakeQuantWithMinMaxArgsGradient`.
    pub fn fake_quant_args_grad(
        g: &[f32],
        x: &[f32],
        min: f32,
        max: f32,
        p: FakeQuantParams,
        dx: &mut [f32],
    ) {
        assert_eq!(g.len(), x.len());
        assert_eq!(x.len(), dx.len());
        let n = nudge(min, max, p);
        for ((d, &gv), &xv) in dx.iter_mut().zip(g).zip(x) {
            *d = gv * mask(xv >= n.nudged_min && xv <= n.nudged_max);
        }
    }

    /// Reference `FakeQuantWithMinMaxVarsPerChannelGradient`.
    #[expect(clippy::too_many_arguments, reason = "same signature as the fast path")]
    pub fn fake_quant_per_channel_grad(
        g: &[f32],
        x: &[f32],
        mins: &[f32],
        maxs: &[f32],
        p: FakeQuantParams,
        dx: &mut [f32],
        dmin: &mut [f32],
        dmax: &mut [f32],
    ) {
        assert_eq!(g.len(), x.len());
        assert_eq!(x.len(), dx.len());
        let channels = mins.len();
        assert!(maxs.len() == channels && dmin.len() == channels && dmax.len() == channels);
        let mut smin = vec![0f64; channels];
        let mut smax = vec![0f64; channels];
        for (i, ((d, &gv), &xv)) in dx.iter_mut().zip(g).zip(x).enumerate() {
            let c = i % channels;
            if is_zero_range(mins[c], maxs[c]) {
                *d = gv;
                continue;
            }
            let n = nudge(mins[c], maxs[c], p);
            *d = gv * mask(xv >= n.nudged_min && xv <= n.nudged_max);
            smin[c] += f64::from(gv * mask(xv < n.nudged_min));
            smax[c] += f64::from(gv * mask(xv > n.nudged_max));
        }
        for c in 0..channels {
            dmin[c] = smin[c] as f32;
            dmax[c] = smax[c] as f32;
        }
    }
}

// ---------------------------------------------------------------------------
// Threading helpers
// ---------------------------------------------------------------------------

fn check_channels(len: usize, mins: &[f32], maxs: &[f32]) {
    assert_eq!(
        mins.len(),
        maxs.len(),
        "per-channel min and max lengths differ"
    );
    if len > 0 {
        assert!(
            !mins.is_empty() && len.is_multiple_of(mins.len()),
            "input length {len} is not a multiple of the channel count {}",
            mins.len()
        );
    }
}

/// Elements per parallel task for rows of `width` elements.
fn rows_per_chunk(width: usize) -> usize {
    (PAR_CHUNK / width).max(1) * width
}

fn par_map(x: &[f32], out: &mut [f32], f: impl Fn(&[f32], &mut [f32]) + Sync) {
    if x.len() <= PAR_CHUNK {
        f(x, out);
    } else {
        x.par_chunks(PAR_CHUNK)
            .zip(out.par_chunks_mut(PAR_CHUNK))
            .for_each(|(x, out)| f(x, out));
    }
}

/// Like [`par_map`], with every chunk starting at a multiple of `width`.
fn par_map_rows(x: &[f32], out: &mut [f32], width: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) {
    let rows = rows_per_chunk(width);
    if x.len() <= rows {
        f(x, out);
    } else {
        x.par_chunks(rows)
            .zip(out.par_chunks_mut(rows))
            .for_each(|(x, out)| f(x, out));
    }
}

fn par_fill_zero(out: &mut [f32]) {
    if out.len() <= PAR_CHUNK {
        out.fill(0.0);
    } else {
        out.par_chunks_mut(PAR_CHUNK).for_each(|o| o.fill(0.0));
    }
}

fn par_copy(src: &[f32], dst: &mut [f32]) {
    par_map(src, dst, |s, d| d.copy_from_slice(s));
}

// ---------------------------------------------------------------------------
// Runtime dispatch
// ---------------------------------------------------------------------------

/// The instruction sets the inner loops are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// No extra target features (`floor` is a library call on x86-64).
    Generic,
    /// SSE4.1 (`roundps`), 4 lanes.
    #[cfg(target_arch = "x86_64")]
    Sse41,
    /// AVX2, 8 lanes; large outputs use the non-temporal kernels of
    /// `streaming`.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The best instruction set of this CPU.
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
            if std::arch::is_x86_feature_detected!("sse4.1") {
                return Isa::Sse41;
            }
        }
        Isa::Generic
    }

    /// Every instruction set this CPU can run (for tests).
    #[cfg(test)]
    fn available() -> Vec<Self> {
        let mut v = vec![Isa::Generic];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("sse4.1") {
                v.push(Isa::Sse41);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(Isa::Avx2);
            }
        }
        v
    }
}

/// Defines `$name(isa, args.., stream)`: the `#[inline(always)]` body
/// `$body(args..)` compiled for the instruction set `isa`, or with AVX2 and
/// `stream` the non-temporal kernel `streaming::$name(args..)`.
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        fn $name:ident $(<const $c:ident: bool>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
            => $body:ident
    ) => {
        $(#[$meta])*
        fn $name $(<const $c: bool>)? (isa: Isa, $($arg: $ty,)* stream: bool) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2 $(<const $c: bool>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body $(::<$c>)? ($($arg),*)
                }
                #[target_feature(enable = "sse4.1")]
                fn sse41 $(<const $c: bool>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body $(::<$c>)? ($($arg),*)
                }
                match isa {
                    // SAFETY (all three): `Isa::Avx2` is only produced after
                    // detecting AVX2, `Isa::Sse41` after detecting SSE4.1.
                    Isa::Avx2 if stream => {
                        return unsafe { streaming::$name $(::<$c>)? ($($arg),*) };
                    }
                    Isa::Avx2 => return unsafe { avx2 $(::<$c>)? ($($arg),*) },
                    Isa::Sse41 => return unsafe { sse41 $(::<$c>)? ($($arg),*) },
                    Isa::Generic => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (isa, stream);
            $body $(::<$c>)? ($($arg),*)
        }
    };
}

multiversion! {
    /// Per-tensor forward with division (`vars`).
    fn forward_div(x: &[f32], out: &mut [f32], k: &ScalarConsts) => forward_div_body
}
multiversion! {
    /// Per-tensor forward with multiplication by `inv_scale` (`args`).
    fn forward_mul(x: &[f32], out: &mut [f32], k: &ScalarConsts) => forward_mul_body
}
multiversion! {
    /// Per-channel forward; `x` starts at a row boundary of the table.
    fn forward_channels<const ZERO: bool>(x: &[f32], out: &mut [f32], t: &ForwardTable)
        => forward_channels_body
}
multiversion! {
    /// Fused per-tensor gradient; returns this chunk's `(dmin, dmax)`.
    fn grad_sums(g: &[f32], x: &[f32], dx: &mut [f32], lo: f32, hi: f32) -> (f32, f32)
        => grad_sums_body
}
multiversion! {
    /// Gradient mask only (`args`).
    fn grad_mask(g: &[f32], x: &[f32], dx: &mut [f32], lo: f32, hi: f32) => grad_mask_body
}
multiversion! {
    /// Fused per-channel gradient; `x` starts at a row boundary of the
    /// table. Adds into the column sums `acc` (below, above), `width` long.
    fn grad_channels<const ZERO: bool>(
        g: &[f32],
        x: &[f32],
        dx: &mut [f32],
        t: &GradTable,
        acc: (&mut [f32], &mut [f32]),
    ) => grad_channels_body
}

// ---------------------------------------------------------------------------
// Inner loops (auto-vectorized)
// ---------------------------------------------------------------------------

/// Per-tensor constants of the forward.
struct ScalarConsts {
    lo: f32,
    hi: f32,
    scale: f32,
    inv_scale: f32,
    quant_zero: f32,
}

impl ScalarConsts {
    fn new(n: &Nudged) -> Self {
        Self {
            lo: n.nudged_min,
            hi: n.nudged_max,
            scale: n.scale,
            inv_scale: n.inv_scale,
            quant_zero: n.quant_zero,
        }
    }
}

/// Eigen's `cwiseMin(hi).cwiseMax(lo)`; lowers to `minps` then `maxps` and
/// propagates NaN like TensorFlow.
#[inline(always)]
fn clamp_tf(x: f32, lo: f32, hi: f32) -> f32 {
    let c = if hi < x { hi } else { x };
    if c < lo { lo } else { c }
}

#[inline(always)]
fn mask(b: bool) -> f32 {
    if b { 1.0 } else { 0.0 }
}

/// One `vars` output: division by `s`.
#[inline(always)]
fn fq_div(x: f32, lo: f32, hi: f32, s: f32, qz: f32) -> f32 {
    ((clamp_tf(x, lo, hi) - lo) / s - qz + 0.5).floor() * s
}

/// One `args` / per-channel output: multiplication by `inv`.
#[inline(always)]
fn fq_mul(x: f32, lo: f32, hi: f32, inv: f32, qz: f32, s: f32) -> f32 {
    ((clamp_tf(x, lo, hi) - lo) * inv - qz + 0.5).floor() * s
}

#[inline(always)]
fn forward_div_body(x: &[f32], out: &mut [f32], k: &ScalarConsts) {
    let (lo, hi, s, qz) = (k.lo, k.hi, k.scale, k.quant_zero);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = fq_div(v, lo, hi, s, qz);
    }
}

#[inline(always)]
fn forward_mul_body(x: &[f32], out: &mut [f32], k: &ScalarConsts) {
    let (lo, hi, s, inv, qz) = (k.lo, k.hi, k.scale, k.inv_scale, k.quant_zero);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = fq_mul(v, lo, hi, inv, qz, s);
    }
}

#[inline(always)]
fn forward_channels_body<const ZERO: bool>(x: &[f32], out: &mut [f32], t: &ForwardTable) {
    for (x, out) in x.chunks(t.width).zip(out.chunks_mut(t.width)) {
        let n = x.len();
        let out = &mut out[..n];
        let (lo, hi, inv) = (&t.lo[..n], &t.hi[..n], &t.inv_scale[..n]);
        let (qz, s, keep) = (&t.quant_zero[..n], &t.scale[..n], &t.keep[..n]);
        for j in 0..n {
            let y = fq_mul(x[j], lo[j], hi[j], inv[j], qz[j], s[j]);
            // A [0, 0] channel is exactly 0, even for NaN inputs.
            out[j] = if ZERO {
                f32::from_bits(y.to_bits() & keep[j])
            } else {
                y
            };
        }
    }
}

#[inline(always)]
fn grad_mask_body(g: &[f32], x: &[f32], dx: &mut [f32], lo: f32, hi: f32) {
    for ((d, &gv), &xv) in dx.iter_mut().zip(g).zip(x) {
        *d = gv * mask(xv >= lo && xv <= hi);
    }
}

#[inline(always)]
fn grad_sums_body(g: &[f32], x: &[f32], dx: &mut [f32], lo: f32, hi: f32) -> (f32, f32) {
    let mut amin = [0f32; LANES];
    let mut amax = [0f32; LANES];
    let mut gc = g.chunks_exact(LANES);
    let mut xc = x.chunks_exact(LANES);
    let mut dc = dx.chunks_exact_mut(LANES);
    for ((gb, xb), db) in (&mut gc).zip(&mut xc).zip(&mut dc) {
        for j in 0..LANES {
            let (gv, xv) = (gb[j], xb[j]);
            db[j] = gv * mask(xv >= lo && xv <= hi);
            amin[j] += if xv < lo { gv } else { 0.0 };
            amax[j] += if xv > hi { gv } else { 0.0 };
        }
    }
    let (gt, xt, dt) = (gc.remainder(), xc.remainder(), dc.into_remainder());
    for j in 0..dt.len() {
        let (gv, xv) = (gt[j], xt[j]);
        dt[j] = gv * mask(xv >= lo && xv <= hi);
        amin[j] += if xv < lo { gv } else { 0.0 };
        amax[j] += if xv > hi { gv } else { 0.0 };
    }
    (fold_lanes(amin), fold_lanes(amax))
}

/// Pairwise sum of accumulator lanes.
#[inline(always)]
fn fold_lanes<const N: usize>(mut a: [f32; N]) -> f32 {
    let mut w = N / 2;
    while w > 0 {
        for j in 0..w {
            a[j] += a[j + w];
        }
        w /= 2;
    }
    a[0]
}

/// One per-channel gradient element at table column `j`: returns `dx` and
/// adds into the column sums.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn grad_channel_elem<const ZERO: bool>(
    (gv, xv): (f32, f32),
    t: &GradTable,
    j: usize,
    (amin, amax): (&mut f32, &mut f32),
) -> f32 {
    let inside = xv >= t.lo[j] && xv <= t.hi[j];
    // A [0, 0] channel has an infinite range and passes 1.0, so its mask is
    // 1 even for NaN inputs.
    let m = if ZERO {
        if inside { 1.0 } else { t.pass[j] }
    } else {
        mask(inside)
    };
    *amin += if xv < t.lo[j] { gv } else { 0.0 };
    *amax += if xv > t.hi[j] { gv } else { 0.0 };
    gv * m
}

#[inline(always)]
fn grad_channels_body<const ZERO: bool>(
    g: &[f32],
    x: &[f32],
    dx: &mut [f32],
    t: &GradTable,
    (acc_min, acc_max): (&mut [f32], &mut [f32]),
) {
    let rows = g
        .chunks(t.width)
        .zip(x.chunks(t.width))
        .zip(dx.chunks_mut(t.width));
    for ((g, x), dx) in rows {
        let n = x.len();
        let (g, dx) = (&g[..n], &mut dx[..n]);
        let (lo, hi, pass) = (&t.lo[..n], &t.hi[..n], &t.pass[..n]);
        let (amin, amax) = (&mut acc_min[..n], &mut acc_max[..n]);
        for j in 0..n {
            let (gv, xv) = (g[j], x[j]);
            let inside = xv >= lo[j] && xv <= hi[j];
            let m = if ZERO {
                if inside { 1.0 } else { pass[j] }
            } else {
                mask(inside)
            };
            dx[j] = gv * m;
            amin[j] += if xv < lo[j] { gv } else { 0.0 };
            amax[j] += if xv > hi[j] { gv } else { 0.0 };
        }
    }
}

// ---------------------------------------------------------------------------
// Streaming AVX2 kernels
// ---------------------------------------------------------------------------

/// AVX2 kernels for outputs of at least [`STREAM_MIN_LEN`] elements. They
/// compute exactly the float32 operations of the auto-vectorized bodies,
/// written with intrinsics so that every aligned group of 8 outputs goes
/// straight from a register to memory with a non-temporal store (computing
/// into a buffer and streaming that out does not help). Unaligned heads
/// and the tails use the scalar element functions.
#[cfg(target_arch = "x86_64")]
mod streaming {
    use std::arch::x86_64::*;

    use super::{ForwardTable, GradTable, ScalarConsts, fold_lanes, fq_div, fq_mul, mask};

    /// Loads 8 floats from `p`.
    ///
    /// # Safety
    /// `p..p + 8` must be readable; AVX must be enabled.
    #[inline(always)]
    unsafe fn ld(p: *const f32) -> __m256 {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm256_loadu_ps(p) }
    }

    /// Writes `out[i] = scalar(i)` for the elements before `out` is 32-byte
    /// aligned and after the last whole group of 8, and streams
    /// `vector(i)` into `out[i..i + 8]` for the aligned groups in between,
    /// in increasing `i` (so `i + 8 <= out.len()` in every `vector(i)`).
    /// Ends with a store fence.
    #[inline(always)]
    fn drive(
        out: &mut [f32],
        mut scalar: impl FnMut(usize) -> f32,
        mut vector: impl FnMut(usize) -> __m256,
    ) {
        let n = out.len();
        let head = out.as_ptr().align_offset(32).min(n);
        for (i, o) in out[..head].iter_mut().enumerate() {
            *o = scalar(i);
        }
        let mut i = head;
        while i + 8 <= n {
            let v = vector(i);
            // SAFETY: `i + 8 <= n`; `out + i` is 32-byte aligned (aligned at
            // `head`, then steps of 32 bytes); AVX is enabled in every caller.
            unsafe { _mm256_stream_ps(out.as_mut_ptr().add(i), v) };
            i += 8;
        }
        for (j, o) in out[i..].iter_mut().enumerate() {
            *o = scalar(i + j);
        }
        // SAFETY: SSE is part of x86-64. The fence orders the streamed
        // stores before the chunk is handed back to other threads.
        unsafe { _mm_sfence() };
    }

    /// `clamp(x, lo, hi) - lo` as in [`super::clamp_tf`]: `minps(hi, x)` is
    /// `hi < x ? hi : x` and `maxps(lo, c)` is `lo > c ? lo : c`, so a NaN
    /// `x` passes through both as in the scalar code.
    #[inline(always)]
    fn shifted(x: __m256, lo: __m256, hi: __m256) -> __m256 {
        // SAFETY: AVX is enabled in every caller.
        unsafe { _mm256_sub_ps(_mm256_max_ps(lo, _mm256_min_ps(hi, x)), lo) }
    }

    /// `floor(v - qz + 0.5) * s`.
    #[inline(always)]
    fn level(v: __m256, qz: __m256, s: __m256) -> __m256 {
        // SAFETY: AVX is enabled in every caller.
        unsafe {
            let t = _mm256_add_ps(_mm256_sub_ps(v, qz), _mm256_set1_ps(0.5));
            _mm256_mul_ps(_mm256_floor_ps(t), s)
        }
    }

    /// The masks `lo <= x <= hi`, `x < lo` and `x > hi` (false for NaN).
    #[inline(always)]
    fn masks(x: __m256, lo: __m256, hi: __m256) -> (__m256, __m256, __m256) {
        // SAFETY: AVX is enabled in every caller.
        unsafe {
            let inside = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GE_OQ>(x, lo),
                _mm256_cmp_ps::<_CMP_LE_OQ>(x, hi),
            );
            (
                inside,
                _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo),
                _mm256_cmp_ps::<_CMP_GT_OQ>(x, hi),
            )
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn forward_div(x: &[f32], out: &mut [f32], k: &ScalarConsts) {
        assert_eq!(x.len(), out.len());
        let (lo, hi, s, qz) = (k.lo, k.hi, k.scale, k.quant_zero);
        let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let (vs, vqz) = (_mm256_set1_ps(s), _mm256_set1_ps(qz));
        let xp = x.as_ptr();
        let vector = |i: usize| {
            // SAFETY: `drive` passes `i + 8 <= out.len() == x.len()`.
            let v = unsafe { ld(xp.add(i)) };
            level(_mm256_div_ps(shifted(v, vlo, vhi), vs), vqz, vs)
        };
        drive(out, |i| fq_div(x[i], lo, hi, s, qz), vector);
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn forward_mul(x: &[f32], out: &mut [f32], k: &ScalarConsts) {
        assert_eq!(x.len(), out.len());
        let (lo, hi, s, inv, qz) = (k.lo, k.hi, k.scale, k.inv_scale, k.quant_zero);
        let (vlo, vhi, vinv) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi), _mm256_set1_ps(inv));
        let (vs, vqz) = (_mm256_set1_ps(s), _mm256_set1_ps(qz));
        let xp = x.as_ptr();
        let vector = |i: usize| {
            // SAFETY: `drive` passes `i + 8 <= out.len() == x.len()`.
            let v = unsafe { ld(xp.add(i)) };
            level(_mm256_mul_ps(shifted(v, vlo, vhi), vinv), vqz, vs)
        };
        drive(out, |i| fq_mul(x[i], lo, hi, inv, qz, s), vector);
    }

    /// Column of the doubled table for the group starting at `i`, stepped
    /// along with `drive`'s calls. Invariant: `column < width`, so a group
    /// of 8 columns ends within the doubled table (`width >= 8`).
    struct Phase {
        column: usize,
        width: usize,
    }

    impl Phase {
        /// `out` starts at column 0; the first group starts at `drive`'s
        /// `head`.
        fn new(out: &[f32], width: usize) -> Self {
            assert!(width >= 8, "table narrower than a vector");
            let head = out.as_ptr().align_offset(32).min(out.len());
            Self {
                column: head % width,
                width,
            }
        }

        /// The column for this group, then steps to the next group.
        #[inline(always)]
        fn next(&mut self, i: usize) -> usize {
            let c = self.column;
            debug_assert_eq!(c, i % self.width);
            self.column += 8;
            if self.column >= self.width {
                self.column -= self.width;
            }
            c
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn forward_channels<const ZERO: bool>(x: &[f32], out: &mut [f32], t: &ForwardTable) {
        assert_eq!(x.len(), out.len());
        let w = t.width;
        let columns = [&t.lo, &t.hi, &t.inv_scale, &t.quant_zero, &t.scale];
        assert!(columns.iter().all(|c| c.len() == 2 * w) && t.keep.len() == 2 * w);
        let [lo, hi, inv, qz, s] = columns.map(|c| c.as_ptr());
        let (keep, xp) = (t.keep.as_ptr().cast::<f32>(), x.as_ptr());
        let mut phase = Phase::new(out, w);
        let scalar = |i: usize| {
            let j = i % w;
            let y = fq_mul(
                x[i],
                t.lo[j],
                t.hi[j],
                t.inv_scale[j],
                t.quant_zero[j],
                t.scale[j],
            );
            if ZERO {
                f32::from_bits(y.to_bits() & t.keep[j])
            } else {
                y
            }
        };
        let vector = |i: usize| {
            let j = phase.next(i);
            // SAFETY: `drive` passes `i + 8 <= out.len() == x.len()`; `j < w`
            // (`Phase`) and every column holds `2 * w >= j + 8` entries.
            unsafe {
                let v = _mm256_mul_ps(
                    shifted(ld(xp.add(i)), ld(lo.add(j)), ld(hi.add(j))),
                    ld(inv.add(j)),
                );
                let y = level(v, ld(qz.add(j)), ld(s.add(j)));
                if ZERO {
                    _mm256_and_ps(y, ld(keep.add(j)))
                } else {
                    y
                }
            }
        };
        drive(out, scalar, vector);
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn grad_mask(g: &[f32], x: &[f32], dx: &mut [f32], lo: f32, hi: f32) {
        assert!(g.len() == dx.len() && x.len() == dx.len());
        let (vlo, vhi, one) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi), _mm256_set1_ps(1.0));
        let (gp, xp) = (g.as_ptr(), x.as_ptr());
        let vector = |i: usize| {
            // SAFETY: `drive` passes `i + 8 <= dx.len()`, the length of `g` and `x`.
            let (gv, xv) = unsafe { (ld(gp.add(i)), ld(xp.add(i))) };
            let (inside, _, _) = masks(xv, vlo, vhi);
            _mm256_mul_ps(gv, _mm256_and_ps(inside, one))
        };
        drive(dx, |i| g[i] * mask(x[i] >= lo && x[i] <= hi), vector);
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn grad_sums(g: &[f32], x: &[f32], dx: &mut [f32], lo: f32, hi: f32) -> (f32, f32) {
        assert!(g.len() == dx.len() && x.len() == dx.len());
        let (vlo, vhi, one) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi), _mm256_set1_ps(1.0));
        let (gp, xp) = (g.as_ptr(), x.as_ptr());
        let (mut smin, mut smax) = (0f32, 0f32);
        let (mut vmin, mut vmax) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let scalar = |i: usize| {
            let (gv, xv) = (g[i], x[i]);
            smin += if xv < lo { gv } else { 0.0 };
            smax += if xv > hi { gv } else { 0.0 };
            gv * mask(xv >= lo && xv <= hi)
        };
        let vector = |i: usize| {
            // SAFETY: `drive` passes `i + 8 <= dx.len()`, the length of `g` and `x`.
            let (gv, xv) = unsafe { (ld(gp.add(i)), ld(xp.add(i))) };
            let (inside, below, above) = masks(xv, vlo, vhi);
            vmin = _mm256_add_ps(vmin, _mm256_and_ps(below, gv));
            vmax = _mm256_add_ps(vmax, _mm256_and_ps(above, gv));
            _mm256_mul_ps(gv, _mm256_and_ps(inside, one))
        };
        drive(dx, scalar, vector);
        let lanes = |v: __m256| {
            let mut a = [0f32; 8];
            // SAFETY: `a` holds 8 floats.
            unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
            a
        };
        (
            fold_lanes(lanes(vmin)) + smin,
            fold_lanes(lanes(vmax)) + smax,
        )
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn grad_channels<const ZERO: bool>(
        g: &[f32],
        x: &[f32],
        dx: &mut [f32],
        t: &GradTable,
        (acc_min, acc_max): (&mut [f32], &mut [f32]),
    ) {
        assert!(g.len() == dx.len() && x.len() == dx.len());
        let w = t.width;
        assert!(t.lo.len() == 2 * w && t.hi.len() == 2 * w && t.pass.len() == 2 * w);
        // Vector sums by doubled-table column, folded into `acc` at the end.
        let (mut vmin, mut vmax) = (vec![0f32; 2 * w], vec![0f32; 2 * w]);
        let (vminp, vmaxp) = (vmin.as_mut_ptr(), vmax.as_mut_ptr());
        let (lo, hi, pass) = (t.lo.as_ptr(), t.hi.as_ptr(), t.pass.as_ptr());
        let (gp, xp) = (g.as_ptr(), x.as_ptr());
        let one = _mm256_set1_ps(1.0);
        let mut phase = Phase::new(dx, w);
        let scalar = |i: usize| {
            let j = i % w;
            super::grad_channel_elem::<ZERO>((g[i], x[i]), t, j, (&mut acc_min[j], &mut acc_max[j]))
        };
        let vector = |i: usize| {
            let j = phase.next(i);
            // SAFETY: `drive` passes `i + 8 <= dx.len()`, the length of `g`
            // and `x`; `j < w` (`Phase`) and the table columns and `vmin`,
            // `vmax` hold `2 * w >= j + 8` entries.
            unsafe {
                let (gv, xv) = (ld(gp.add(i)), ld(xp.add(i)));
                let (inside, below, above) = masks(xv, ld(lo.add(j)), ld(hi.add(j)));
                let m = if ZERO {
                    _mm256_blendv_ps(ld(pass.add(j)), one, inside)
                } else {
                    _mm256_and_ps(inside, one)
                };
                let (pmin, pmax) = (vminp.add(j), vmaxp.add(j));
                _mm256_storeu_ps(pmin, _mm256_add_ps(ld(pmin), _mm256_and_ps(below, gv)));
                _mm256_storeu_ps(pmax, _mm256_add_ps(ld(pmax), _mm256_and_ps(above, gv)));
                _mm256_mul_ps(gv, m)
            }
        };
        drive(dx, scalar, vector);
        for j in 0..w {
            acc_min[j] += vmin[j] + vmin[j + w];
            acc_max[j] += vmax[j] + vmax[j + w];
        }
    }
}

// ---------------------------------------------------------------------------
// Per-channel tables
// ---------------------------------------------------------------------------

/// Width of a per-channel table: `lcm(C, 16)` when small, else `C`.
fn table_width(channels: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let lcm = channels / gcd(channels, LANES) * LANES;
    if lcm <= MAX_TABLE_WIDTH {
        lcm
    } else {
        channels
    }
}

/// Per-channel forward constants for `2 * width` columns (column `j` is
/// channel `j % C`; the second copy lets a group of 8 start at any column).
struct ForwardTable {
    width: usize,
    has_zero: bool,
    lo: Vec<f32>,
    hi: Vec<f32>,
    scale: Vec<f32>,
    inv_scale: Vec<f32>,
    quant_zero: Vec<f32>,
    /// All ones, or 0 for a `[0, 0]` channel.
    keep: Vec<u32>,
}

impl ForwardTable {
    fn new(mins: &[f32], maxs: &[f32], p: FakeQuantParams) -> Self {
        let width = table_width(mins.len());
        let mut t = Self {
            width,
            has_zero: false,
            lo: Vec::with_capacity(2 * width),
            hi: Vec::with_capacity(2 * width),
            scale: Vec::with_capacity(2 * width),
            inv_scale: Vec::with_capacity(2 * width),
            quant_zero: Vec::with_capacity(2 * width),
            keep: Vec::with_capacity(2 * width),
        };
        for j in 0..2 * width {
            let (min, max) = (mins[j % mins.len()], maxs[j % mins.len()]);
            if min == 0.0 && max == 0.0 {
                t.has_zero = true;
                t.lo.push(0.0);
                t.hi.push(0.0);
                t.scale.push(0.0);
                t.inv_scale.push(0.0);
                t.quant_zero.push(0.0);
                t.keep.push(0);
            } else {
                let n = nudge(min, max, p);
                t.lo.push(n.nudged_min);
                t.hi.push(n.nudged_max);
                t.scale.push(n.scale);
                t.inv_scale.push(n.inv_scale);
                t.quant_zero.push(n.quant_zero);
                t.keep.push(u32::MAX);
            }
        }
        t
    }
}

/// Per-channel gradient constants for `2 * width` columns, as
/// [`ForwardTable`].
struct GradTable {
    width: usize,
    has_zero: bool,
    lo: Vec<f32>,
    hi: Vec<f32>,
    /// 1.0 for a `[0, 0]` channel (gradient always passes), else 0.0.
    pass: Vec<f32>,
}

impl GradTable {
    fn new(mins: &[f32], maxs: &[f32], p: FakeQuantParams) -> Self {
        let width = table_width(mins.len());
        let mut t = Self {
            width,
            has_zero: false,
            lo: Vec::with_capacity(2 * width),
            hi: Vec::with_capacity(2 * width),
            pass: Vec::with_capacity(2 * width),
        };
        for j in 0..2 * width {
            let (min, max) = (mins[j % mins.len()], maxs[j % mins.len()]);
            if min == 0.0 && max == 0.0 {
                t.has_zero = true;
                t.lo.push(f32::NEG_INFINITY);
                t.hi.push(f32::INFINITY);
                t.pass.push(1.0);
            } else {
                let n = nudge(min, max, p);
                t.lo.push(n.nudged_min);
                t.hi.push(n.nudged_max);
                t.pass.push(0.0);
            }
        }
        t
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn p(bits: u32, narrow: bool) -> FakeQuantParams {
        FakeQuantParams::new(bits, narrow).unwrap()
    }

    fn vars(x: &[f32], min: f32, max: f32, bits: u32, narrow: bool) -> Vec<f32> {
        let mut out = vec![f32::NAN; x.len()];
        fake_quant_vars(x, min, max, p(bits, narrow), &mut out);
        out
    }

    fn assert_bits(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "index {i}: got {g:e}, want {w:e}");
        }
    }

    /// Deterministic inputs spanning beyond `[lo, hi]`, with grid points and
    /// ties mixed in (xorshift; no external RNG needed).
    fn inputs(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        let span = hi - lo;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                match i % 5 {
                    // A tie on a 1/255-ish grid, snapped in float32.
                    0 => lo + ((u * 255.0).floor() + 0.5) * (span / 255.0),
                    _ => lo - 0.3 * span + u * 1.6 * span,
                }
            })
            .collect()
    }

    #[test]
    fn num_bits_is_validated() {
        for bits in [0, 1, 17, 32] {
            let err = FakeQuantParams::new(bits, false).unwrap_err();
            assert_eq!(err, FakeQuantError::NumBits(bits));
            assert_eq!(
                err.to_string(),
                "num_bits must be between 2 and 16, inclusive"
            );
        }
        for bits in 2..=16 {
            let q = FakeQuantParams::new(bits, true).unwrap();
            assert_eq!((q.quant_min(), q.quant_max()), (1, (1 << bits) - 1));
        }
        assert_eq!(FakeQuantParams::default(), p(8, false));
    }

    #[test]
    fn args_range_is_validated() {
        assert!(validate_args_range(-1.0, 1.0).is_ok());
        let err = validate_args_range(1.0, 1.0).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("min has to be smaller than max")
        );
    }

    #[test]
    fn nudging_is_float32() {
        // §5.2: zp_f = 127.49999 in float32, so the zero point is 127.
        let n = nudge(-1.0, 1.0, p(8, false));
        assert_eq!(n.zero_point, 127);
        assert_eq!(n.scale, 2.0 / 255.0);
        assert_eq!(n.nudged_min, -127.0 * n.scale);
        assert_eq!(n.nudged_max, 128.0 * n.scale);
        assert_eq!(n.quant_zero, 127.0);
        // Ranges that exclude 0 keep their span and move to touch 0.
        let n = nudge(0.5, 2.0, p(8, false));
        assert_eq!((n.zero_point, n.nudged_min, n.nudged_max), (0, 0.0, 1.5));
        let n = nudge(-2.0, -0.5, p(4, true));
        assert_eq!((n.zero_point, n.nudged_min, n.nudged_max), (15, -1.5, 0.0));
        // Symmetric narrow weights: zero point 128, levels 1..255.
        let n = nudge(-0.5, 0.5, p(8, true));
        assert_eq!((n.zero_point, n.nudged_min, n.nudged_max), (128, -0.5, 0.5));
    }

    /// Reference-semantics §5.5. Expected values are TensorFlow 2.21's
    /// (`tf.quantization.fake_quant_with_min_max_vars`). Rows 1 and 4 differ
    /// from the table, which was computed with TF 1.15's formula: TF 2.21
    /// gives 0.50196081 (not 0.50196075) and 0.2992126 (not 0.29921257).
    /// One worked example: inputs, min, max, bits, narrow, expected bits.
    type Row = (&'static [f32], f32, f32, u32, bool, &'static [u32]);

    #[test]
    fn worked_examples() {
        let rows: &[Row] = &[
            (&[0.5], -1.0, 1.0, 8, false, &[0x3f00_8081]),
            (&[3.0], 0.0, 6.0, 8, false, &[0x4040_c0c1]),
            (&[6.1, -0.2], 0.0, 6.0, 8, false, &[0x40c0_0000, 0]),
            (&[0.3], -0.5, 0.5, 8, true, &[0x3e99_3265]),
            (
                &[-0.75, -0.25, -0.26],
                -1.0,
                0.5,
                2,
                false,
                &[0xbf00_0000, 0, 0xbf00_0000],
            ),
            (&[1.8, 1.0], 0.5, 2.0, 8, false, &[0x3fc0_0000, 0x3f80_0000]),
            (&[3.26], -0.4, 7.1, 4, false, &[0x4060_0000]),
            (&[5.0], 0.0, 0.0, 8, false, &[0]),
            (
                &[0.1, -0.8],
                -0.8,
                0.79375,
                8,
                false,
                &[0x3dcc_cccd, 0xbf4c_cccd],
            ),
            (&[0.499_999_97], 0.0, 255.0, 8, false, &[0x3f80_0000]),
            (&[0.7], -0.1, 63.65, 8, false, &[0x3f40_0000]),
        ];
        for &(x, min, max, bits, narrow, want) in rows {
            let want: Vec<f32> = want.iter().map(|&b| f32::from_bits(b)).collect();
            assert_bits(&vars(x, min, max, bits, narrow), &want);
            let mut r = vec![0.0; x.len()];
            reference::fake_quant_vars(x, min, max, p(bits, narrow), &mut r);
            assert_bits(&r, &want);
        }
        assert_eq!(vars(&[0.5], -1.0, 1.0, 8, false), [0.501_960_8]);
    }

    /// §5.5 per-channel example; TF 2.21 gives 0.40000004 where the table
    /// (TF 1.15 form) has 0.39999998.
    #[test]
    fn per_channel_worked_example() {
        let x = [-0.9, 3.0, 0.4, 7.0];
        let mut y = [0.0; 4];
        fake_quant_per_channel(&x, &[-1.0, 0.0], &[1.0, 6.0], p(8, false), &mut y);
        let want = [0xbf66_e6e8, 0x4040_c0c1, 0x3ecc_ccce, 0x40c0_0000].map(f32::from_bits);
        assert_bits(&y, &want);
    }

    #[test]
    fn gradient_example() {
        let g = [1.0, 2.0, 3.0, 4.0];
        let x = [-1.2, 0.3, 1.002, 1.01];
        let mut dx = [f32::NAN; 4];
        let (dmin, dmax) = fake_quant_vars_grad(&g, &x, -1.0, 1.0, p(8, false), &mut dx);
        assert_eq!(dx, [0.0, 2.0, 3.0, 0.0]);
        assert_eq!((dmin, dmax), (1.0, 4.0));
        // Masked negative gradients are -0.0, as TensorFlow's g * 0.0.
        let (dmin, dmax) =
            fake_quant_vars_grad(&g.map(|v| -v), &x, -1.0, 1.0, p(8, false), &mut dx);
        assert_bits(&dx, &[-0.0, -2.0, -3.0, -0.0]);
        assert_eq!((dmin, dmax), (-1.0, -4.0));
        fake_quant_args_grad(&g, &x, -1.0, 1.0, p(8, false), &mut dx);
        assert_eq!(dx, [0.0, 2.0, 3.0, 0.0]);
        let (mut cmin, mut cmax) = ([f32::NAN; 2], [f32::NAN; 2]);
        fake_quant_per_channel_grad(
            &g,
            &x,
            &[-1.0, -1.0],
            &[1.0, 1.0],
            p(8, false),
            &mut dx,
            &mut cmin,
            &mut cmax,
        );
        assert_eq!(dx, [0.0, 2.0, 3.0, 0.0]);
        assert_eq!((cmin, cmax), ([1.0, 0.0], [0.0, 4.0]));
    }

    #[test]
    fn zero_range() {
        let x = [5.0, -3.0, 0.0, f32::NAN, f32::INFINITY];
        let g = [1.0, -2.0, 3.0, 4.0, 5.0];
        assert_bits(&vars(&x, 0.0, 0.0, 8, false), &[0.0; 5]);
        let mut dx = [0.0; 5];
        let sums = fake_quant_vars_grad(&g, &x, 0.0, 0.0, p(8, false), &mut dx);
        assert_eq!((dx, sums), (g, (0.0, 0.0)));
        // Per channel: channel 1 is [0, 0]; NaN there still gives 0 and g.
        let x = [0.3, f32::NAN, 9.0, 9.0];
        let mut y = [f32::NAN; 4];
        fake_quant_per_channel(&x, &[-1.0, 0.0], &[1.0, 0.0], p(8, false), &mut y);
        assert_eq!(y[1].to_bits(), 0);
        assert_eq!(y[3].to_bits(), 0);
        let (mut cmin, mut cmax) = ([f32::NAN; 2], [f32::NAN; 2]);
        let g = [1.0, 2.0, 3.0, 4.0];
        let mut dx = [f32::NAN; 4];
        fake_quant_per_channel_grad(
            &g,
            &x,
            &[-1.0, 0.0],
            &[1.0, 0.0],
            p(8, false),
            &mut dx,
            &mut cmin,
            &mut cmax,
        );
        assert_eq!(dx, [1.0, 2.0, 0.0, 4.0]);
        assert_eq!((cmin, cmax), ([0.0, 0.0], [3.0, 0.0]));
    }

    #[test]
    fn nan_propagates_like_tensorflow() {
        let y = vars(
            &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY],
            -1.0,
            1.0,
            8,
            false,
        );
        assert!(y[0].is_nan());
        assert_eq!(
            &y[1..],
            &[
                nudge(-1.0, 1.0, p(8, false)).nudged_max,
                -127.0 * (2.0 / 255.0)
            ]
        );
    }

    #[test]
    fn table_widths() {
        assert_eq!(table_width(1001), 1001);
        assert_eq!(table_width(1), 16);
        assert_eq!(table_width(3), 48);
        assert_eq!(table_width(64), 64);
        assert_eq!(table_width(600), 600);
        assert_eq!(table_width(24), 48);
    }

    const LENGTHS: &[usize] = &[0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, PAR_CHUNK + 1];
    const RANGES: &[(f32, f32, u32, bool)] = &[
        (-1.0, 1.0, 8, false),
        (0.0, 6.0, 8, true),
        (-0.4, 7.1, 2, false),
        (-3.3, 1.7, 7, true),
        (0.5, 2.0, 16, false),
        (-0.0137, 0.2113, 5, false),
    ];

    /// Every instruction set's inner loops against the scalar reference.
    #[test]
    fn each_isa_matches_reference() {
        for isa in Isa::available() {
            for &(min, max, bits, narrow) in RANGES {
                let q = p(bits, narrow);
                let n = nudge(min, max, q);
                let k = ScalarConsts::new(&n);
                for (&len, stream) in LENGTHS.iter().flat_map(|l| [(l, false), (l, true)]) {
                    let x = inputs(len, min, max, len as u64 + 1);
                    let g = inputs(len, -1.0, 1.0, len as u64 + 7);
                    let ctx =
                        format!("{isa:?} [{min}, {max}] {bits} bits len {len} stream {stream}");
                    let mut want = vec![0.0; len];
                    // One element of offset makes the output misaligned.
                    let mut buf = vec![f32::NAN; len + 1];
                    let got = &mut buf[1..];

                    forward_div(isa, &x, got, &k, stream);
                    reference::fake_quant_vars(&x, min, max, q, &mut want);
                    assert_bits_ctx(got, &want, &x, &ctx);

                    forward_mul(isa, &x, got, &k, stream);
                    reference::fake_quant_args(&x, min, max, q, &mut want);
                    assert_bits_ctx(got, &want, &x, &ctx);

                    let (lo, hi) = (n.nudged_min, n.nudged_max);
                    let sums = grad_sums(isa, &g, &x, got, lo, hi, stream);
                    let want_sums = reference::fake_quant_vars_grad(&g, &x, min, max, q, &mut want);
                    assert_bits_ctx(got, &want, &x, &ctx);
                    assert_close(sums.0, want_sums.0, &g, &ctx);
                    assert_close(sums.1, want_sums.1, &g, &ctx);

                    got.fill(f32::NAN);
                    grad_mask(isa, &g, &x, got, lo, hi, stream);
                    assert_bits_ctx(got, &want, &x, &ctx);
                }
            }
        }
    }

    #[test]
    fn each_isa_matches_reference_per_channel() {
        // Fixed ranges (one of them [0, 0]), then generated ones.
        let fixed = [
            (-1.0, 1.0),
            (0.0, 6.0),
            (0.5, 2.0),
            (-2.0, -0.5),
            (0.0, 0.0),
        ];
        let fixed = fixed.into_iter().chain([(-0.123, 0.987), (-6.0, 6.0)]);
        let generated = (0..1001).map(|c| (-((c % 11) as f32) * 0.3, 0.2 + (c % 5) as f32));
        let (mins, maxs): (Vec<f32>, Vec<f32>) = fixed.chain(generated).unzip();
        for isa in Isa::available() {
            // Tables of width lcm(C, 16) (1 to 112) and of width C (600, 1001).
            for channels in [1, 3, 4, 5, 7, 600, 1001] {
                let (mins, maxs) = (&mins[..channels], &maxs[..channels]);
                let q = p(8, channels % 2 == 0);
                let ft = ForwardTable::new(mins, maxs, q);
                let gt = GradTable::new(mins, maxs, q);
                let row_counts: &[usize] = if channels > 100 {
                    &[0, 1, 3]
                } else {
                    &[0, 1, 2, 5, 17, 100, 700]
                };
                let cases = row_counts.iter().copied();
                for (rows, stream) in cases.flat_map(|r| [(r, false), (r, true)]) {
                    let len = rows * channels;
                    let x = inputs(len, -7.0, 7.0, len as u64 + 3);
                    let g = inputs(len, -1.0, 1.0, len as u64 + 5);
                    let ctx = format!("{isa:?} {channels} channels len {len} stream {stream}");
                    let mut want = vec![0.0; len];
                    let mut buf = vec![f32::NAN; len + 3];
                    let got = &mut buf[3..];
                    reference::fake_quant_per_channel(&x, mins, maxs, q, &mut want);
                    if ft.has_zero {
                        forward_channels::<true>(isa, &x, got, &ft, stream);
                    } else {
                        forward_channels::<false>(isa, &x, got, &ft, stream);
                    }
                    assert_bits_ctx(got, &want, &x, &ctx);

                    let (mut amin, mut amax) = (vec![0.0; gt.width], vec![0.0; gt.width]);
                    let (a, b) = (&mut amin, &mut amax);
                    if gt.has_zero {
                        grad_channels::<true>(isa, &g, &x, got, &gt, (a, b), stream);
                    } else {
                        grad_channels::<false>(isa, &g, &x, got, &gt, (a, b), stream);
                    }
                    let (mut rmin, mut rmax) = (vec![0.0; channels], vec![0.0; channels]);
                    reference::fake_quant_per_channel_grad(
                        &g, &x, mins, maxs, q, &mut want, &mut rmin, &mut rmax,
                    );
                    assert_bits_ctx(got, &want, &x, &ctx);
                    for c in 0..channels {
                        let zero = mins[c] == 0.0 && maxs[c] == 0.0;
                        let fold = |a: &[f32]| -> f32 { a.iter().skip(c).step_by(channels).sum() };
                        let (smin, smax) = if zero {
                            (0.0, 0.0)
                        } else {
                            (fold(&amin), fold(&amax))
                        };
                        let gc: Vec<f32> = g.iter().skip(c).step_by(channels).copied().collect();
                        assert_close(smin, rmin[c], &gc, &ctx);
                        assert_close(smax, rmax[c], &gc, &ctx);
                    }
                }
            }
        }
    }

    /// The public, threaded entry points against the reference on awkward
    /// lengths, including more than one million elements.
    #[test]
    fn public_entry_points_match_reference() {
        let lengths = [0, 1, 7, 8, 9, 63, 64, 65, 3 * PAR_CHUNK - 5, (1 << 20) + 3];
        for len in lengths.into_iter().chain([STREAM_MIN_LEN + 5]) {
            let (min, max, q) = (-0.4, 7.1, p(8, false));
            let x = inputs(len, min, max, 11);
            let g = inputs(len, -1.0, 1.0, 13);
            let ctx = format!("len {len}");
            let (mut got, mut want) = (vec![0.0; len], vec![0.0; len]);

            fake_quant_vars(&x, min, max, q, &mut got);
            reference::fake_quant_vars(&x, min, max, q, &mut want);
            assert_bits_ctx(&got, &want, &x, &ctx);

            fake_quant_args(&x, min, max, q, &mut got);
            reference::fake_quant_args(&x, min, max, q, &mut want);
            assert_bits_ctx(&got, &want, &x, &ctx);

            let sums = fake_quant_vars_grad(&g, &x, min, max, q, &mut got);
            let want_sums = reference::fake_quant_vars_grad(&g, &x, min, max, q, &mut want);
            assert_bits_ctx(&got, &want, &x, &ctx);
            assert_close(sums.0, want_sums.0, &g, &ctx);
            assert_close(sums.1, want_sums.1, &g, &ctx);

            got.fill(f32::NAN);
            fake_quant_args_grad(&g, &x, min, max, q, &mut got);
            assert_bits_ctx(&got, &want, &x, &ctx);
        }
    }

    #[test]
    fn public_per_channel_matches_reference() {
        let all_mins: Vec<f32> = (0..600).map(|c| -((c % 13) as f32) * 0.37).collect();
        let all_maxs: Vec<f32> = (0..600).map(|c| 0.1 + (c % 7) as f32 * 0.91).collect();
        let streamed = (64, STREAM_MIN_LEN / 64 + 1);
        let shapes = [
            (1, 70_001),
            (3, 40_000),
            (64, 1 << 14),
            (600, 300),
            (600, 1),
            streamed,
        ];
        for (channels, rows) in shapes {
            let (mins, maxs) = (&all_mins[..channels], &all_maxs[..channels]);
            let q = p(7, true);
            let len = channels * rows;
            let x = inputs(len, -6.0, 7.0, 17);
            let g = inputs(len, -1.0, 1.0, 19);
            let ctx = format!("{channels} channels, {rows} rows");
            let (mut got, mut want) = (vec![0.0; len], vec![0.0; len]);
            fake_quant_per_channel(&x, mins, maxs, q, &mut got);
            reference::fake_quant_per_channel(&x, mins, maxs, q, &mut want);
            assert_bits_ctx(&got, &want, &x, &ctx);

            let (mut dmin, mut dmax) = (vec![0.0; channels], vec![0.0; channels]);
            let (mut rmin, mut rmax) = (vec![0.0; channels], vec![0.0; channels]);
            fake_quant_per_channel_grad(&g, &x, mins, maxs, q, &mut got, &mut dmin, &mut dmax);
            reference::fake_quant_per_channel_grad(
                &g, &x, mins, maxs, q, &mut want, &mut rmin, &mut rmax,
            );
            assert_bits_ctx(&got, &want, &x, &ctx);
            for c in 0..channels {
                let gc: Vec<f32> = g.iter().skip(c).step_by(channels).copied().collect();
                assert_close(dmin[c], rmin[c], &gc, &ctx);
                assert_close(dmax[c], rmax[c], &gc, &ctx);
            }
        }
    }

    fn assert_bits_ctx(got: &[f32], want: &[f32], x: &[f32], ctx: &str) {
        assert_eq!(got.len(), want.len(), "{ctx}");
        if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            panic!(
                "{ctx}: first mismatch at {i}: x = {:e}, want {:e}, got {:e}",
                x[i], want[i], got[i]
            );
        }
    }

    /// Sums agree to 1e-5 of the sum of magnitudes (summation order differs).
    fn assert_close(got: f32, want: f32, g: &[f32], ctx: &str) {
        let scale: f64 = g.iter().map(|v| f64::from(v.abs())).sum();
        let tol = 1e-5 * scale + 1e-6;
        assert!(
            (f64::from(got) - f64::from(want)).abs() <= tol,
            "{ctx}: sum {got} vs {want} (tolerance {tol})"
        );
    }
}
