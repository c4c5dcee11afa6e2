//! CONV_2D (§7.10.2): `acc = bias + Σ (q_w − Z_w)(q_in − Z_in)` over the
//! taps inside the input, `MBQM(acc, m[c], e[c]) + Z_out`, clamped.
//!
//! Two paths with identical integers: the scalar reference (direct loops,
//! the definition) and the fast path: per output row, the input rows under
//! the window are converted once to `q − Z_in` in i16 with zero columns for
//! the padding (out-of-image taps are 0 there, which equals skipping them),
//! copied into one im2col patch per output pixel and multiplied with the
//! pre-packed filter by the register-blocked [`gemm`](super::gemm).

use quant_core::integer::{IntOpKind, TensorIndex};
use rayon::prelude::*;

use super::KernelPath;
use super::fixed_point::quantize_multiplier;
use super::gemm::{PackedFilter, gemm};
use super::layer::{LayerKind, prepare_layer};
use super::op::{Ctx, Inputs, Kernel, OpResult, expect_q, fail, q_slice, q_value};
use super::requant::Requant;
use super::value::{Q8, QType, Value, with_q8};
use super::window::{Window, window};
use crate::kernels::window::Geometry;

/// Reusable buffers of the fast path (one set per rayon job).
#[derive(Default)]
struct Scratch {
    /// The `kh` input rows under an output row (see [`Conv::fill_band`]).
    band: Vec<i16>,
    /// One im2col patch per output pixel of the row.
    patches: Vec<i16>,
    /// The accumulators of the row, `[ow, out]`.
    acc: Vec<i32>,
}

/// A prepared CONV_2D.
pub(crate) struct Conv {
    input: TensorIndex,
    qtype: QType,
    win: Window,
    /// `[out, kh, kw, in]`.
    dims: [usize; 4],
    /// `q_w − Z_w`, OHWI.
    weights: Vec<i16>,
    /// The same filter packed for [`gemm`].
    packed: PackedFilter,
    requant: Requant,
    in_zp: i32,
    path: KernelPath,
}

impl Conv {
    /// Validates the op and precomputes its multipliers.
    pub(crate) fn prepare(ctx: &Ctx, path: KernelPath) -> OpResult<Conv> {
        let IntOpKind::Conv2D {
            padding,
            stride,
            dilation,
            activation,
        } = ctx.op.kind
        else {
            return fail(None, "not a CONV_2D");
        };
        ctx.expect_inputs(2, 3)?;
        let input = ctx.input(0)?;
        let filter = ctx.input(1)?;
        let shape = ctx.tensor(filter).shape.clone();
        let [o, kh, kw, i] = shape[..] else {
            return fail(
                Some(filter),
                format!("must be 4-D OHWI, has shape {shape:?}"),
            );
        };
        let per_out = kh * kw * i;
        let layer = prepare_layer(
            ctx,
            filter,
            ctx.opt_input(2),
            0,
            |e| e / per_out.max(1),
            LayerKind::Conv,
            activation,
        )?;
        let packed = PackedFilter::new(&layer.weights, o, per_out);
        let multipliers: Vec<(i32, i32)> = layer
            .real_multipliers
            .iter()
            .map(|&m| quantize_multiplier(m))
            .collect();
        Ok(Conv {
            input,
            qtype: layer.qtype,
            win: window(padding, stride, dilation, [kh, kw], filter)?,
            dims: [o, kh, kw, i],
            weights: layer.weights,
            packed,
            requant: Requant {
                bias: layer.bias,
                multiplier: multipliers.iter().map(|m| m.0).collect(),
                shift: multipliers.iter().map(|m| m.1).collect(),
                out_zp: layer.output.zero_point,
                act: layer.act,
            },
            in_zp: layer.input.zero_point,
            path,
        })
    }

    /// The width in pixels of a band row: the padded input extent the
    /// window reaches (input column `ix` is band column `ix + pad_before`).
    fn band_width(&self, w: usize, g: &Geometry) -> usize {
        let kw = self.dims[2];
        let reach = (g.w.out.max(1) - 1) * self.win.stride[1] + (kw - 1) * self.win.dilation[1] + 1;
        (g.w.pad_before + w).max(reach)
    }

    /// Writes the `kh` input rows under output row `oy` into `band` as
    /// `q − Z_in`, `band_w` pixels per row; padding columns and rows
    /// outside the image are 0.
    fn fill_band<T: Q8>(
        &self,
        image: &[T],
        (h, w): (usize, usize),
        g: &Geometry,
        oy: usize,
        band: &mut [i16],
    ) {
        let c = self.dims[3];
        band.fill(0);
        if c == 0 {
            return;
        }
        let band_row = band.len() / self.dims[1];
        for (ky, dst) in band.chunks_exact_mut(band_row).enumerate() {
            let Some(iy) = (oy * self.win.stride[0] + ky * self.win.dilation[0])
                .checked_sub(g.h.pad_before)
                .filter(|&iy| iy < h)
            else {
                continue;
            };
            let src = &image[iy * w * c..(iy + 1) * w * c];
            for (d, &q) in dst[g.w.pad_before * c..][..w * c].iter_mut().zip(src) {
                *d = q.level().wrapping_sub(self.in_zp) as i16;
            }
        }
    }

    /// Copies the patch of every output pixel of a row out of `band`
    /// (`(ky, kx, c)` order, one [`PackedFilter::patch_len`] row per pixel;
    /// a trailing padding element stays 0). Runs along a kernel row are one
    /// contiguous copy when the width dilation is 1.
    fn im2col_row(&self, band: &[i16], patches: &mut [i16]) {
        let [_, kh, kw, c] = self.dims;
        let kp = self.packed.patch_len();
        if c == 0 || kp == 0 {
            return;
        }
        let band_row = band.len() / kh;
        let run = kw * c;
        let [stride, dilation] = [self.win.stride[1], self.win.dilation[1]];
        for (ox, patch) in patches.chunks_exact_mut(kp).enumerate() {
            let x0 = ox * stride * c;
            for (ky, dst) in patch.chunks_exact_mut(run).take(kh).enumerate() {
                let row = &band[ky * band_row..][..band_row];
                if dilation == 1 {
                    dst.copy_from_slice(&row[x0..][..run]);
                } else {
                    for (kx, d) in dst.chunks_exact_mut(c).enumerate() {
                        d.copy_from_slice(&row[x0 + kx * dilation * c..][..c]);
                    }
                }
            }
        }
    }

    fn run_typed<T: Q8>(&self, x: &Value) -> OpResult<Value> {
        let data = q_slice::<T>(x, self.input)?;
        let [o, kh, kw, ci] = self.dims;
        let [n, h, w, c] = x.shape[..] else {
            return fail(
                Some(self.input),
                format!("must be 4-D NHWC, has shape {:?}", x.shape),
            );
        };
        if c != ci {
            return fail(
                Some(self.input),
                format!("has {c} channels, the filter expects {ci}"),
            );
        }
        let g = self.win.geometry(h, w, self.input)?;
        let (oh, ow) = (g.h.out, g.w.out);
        let mut out = vec![T::default(); n * oh * ow * o];
        if out.is_empty() {
            return Ok(q_value(vec![n, oh, ow, o], out));
        }
        let row_len = ow * o;
        let taps = |oy: usize, ox: usize, ky: usize, kx: usize| {
            self.win.tap(&g, (h, w), (oy, ox), (ky, kx))
        };
        let band_len = kh * self.band_width(w, &g) * c;
        let scratch = || match self.path {
            KernelPath::Reference => Scratch::default(),
            KernelPath::Fast => Scratch {
                band: vec![0; band_len],
                patches: vec![0; ow * self.packed.patch_len()],
                acc: vec![0; row_len],
            },
        };
        out.par_chunks_mut(row_len)
            .enumerate()
            .for_each_init(scratch, |scratch, (r, row)| {
                let (b, oy) = (r / oh, r % oh);
                let image = &data[b * h * w * c..(b + 1) * h * w * c];
                match self.path {
                    KernelPath::Reference => {
                        for ox in 0..ow {
                            for oc in 0..o {
                                let mut acc = 0i32;
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let Some((iy, ix)) = taps(oy, ox, ky, kx) else {
                                            continue;
                                        };
                                        let xs = &image[(iy * w + ix) * c..][..c];
                                        let ws =
                                            &self.weights[((oc * kh + ky) * kw + kx) * c..][..c];
                                        for (&q, &wv) in xs.iter().zip(ws) {
                                            acc = acc.wrapping_add(
                                                i32::from(wv) * (q.level() - self.in_zp),
                                            );
                                        }
                                    }
                                }
                                row[ox * o + oc] = T::from_level(self.requant.one(acc, oc));
                            }
                        }
                    }
                    KernelPath::Fast => {
                        self.fill_band(image, (h, w), &g, oy, &mut scratch.band);
                        self.im2col_row(&scratch.band, &mut scratch.patches);
                        gemm(&self.packed, &scratch.patches, &mut scratch.acc);
                        self.requant.block(&mut scratch.acc);
                        for (y, &a) in row.iter_mut().zip(&scratch.acc) {
                            *y = T::from_level(a);
                        }
                    }
                }
            });
        Ok(q_value(vec![n, oh, ow, o], out))
    }
}

impl Kernel for Conv {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let x = inputs.get(0)?;
        expect_q(x, self.qtype, self.input)?;
        with_q8!(self.qtype, run_typed(self, x))
    }
}

fn run_typed<T: Q8>(conv: &Conv, x: &Value) -> OpResult<Value> {
    conv.run_typed::<T>(x)
}
