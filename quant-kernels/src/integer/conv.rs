//! CONV_2D (§7.10.2): `acc = bias + Σ (q_w − Z_w)(q_in − Z_in)` over the
//! taps inside the input, `MBQM(acc, m[c], e[c]) + Z_out`, clamped.
//!
//! Two paths with identical integers: the scalar reference (direct loops,
//! the definition) and the fast path (one im2col row of patches per output
//! row, then [`dot`](super::dot) products against zero-padded filter rows;
//! out-of-image taps are 0 there, which equals skipping them).

use quant_core::integer::{IntOpKind, TensorIndex};
use rayon::prelude::*;

use super::KernelPath;
use super::dot::{dot, dot4, padded};
use super::fixed_point::quantize_multiplier;
use super::layer::{LayerKind, prepare_layer};
use super::op::{Ctx, Inputs, Kernel, OpResult, expect_q, fail, q_slice, q_value};
use super::requant::Requant;
use super::value::{Q8, QType, Value, with_q8};
use super::window::{Window, window};
use crate::kernels::window::Geometry;

/// A prepared CONV_2D.
pub(crate) struct Conv {
    input: TensorIndex,
    qtype: QType,
    win: Window,
    /// `[out, kh, kw, in]`.
    dims: [usize; 4],
    /// `q_w − Z_w`, OHWI.
    weights: Vec<i16>,
    /// The same rows zero-padded to `kp` elements.
    packed: Vec<i16>,
    kp: usize,
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
        let kp = padded(per_out);
        let mut packed = vec![0i16; o * kp];
        for (dst, src) in packed
            .chunks_exact_mut(kp.max(1))
            .zip(layer.weights.chunks_exact(per_out.max(1)))
        {
            dst[..per_out].copy_from_slice(src);
        }
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
            kp,
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

    /// Writes the `q − Z_in` patch of output pixel `(oy, ox)` into `patch`
    /// (`(ky, kx, c)` order; out-of-image taps stay 0). Runs along a kernel
    /// row are copied as one contiguous slice when the width dilation is 1.
    fn im2col<T: Q8>(
        &self,
        image: &[T],
        (h, w): (usize, usize),
        g: &Geometry,
        (oy, ox): (usize, usize),
        patch: &mut [i16],
    ) {
        let [_, kh, kw, c] = self.dims;
        let zp = self.in_zp;
        let convert = |dst: &mut [i16], src: &[T]| {
            for (d, &q) in dst.iter_mut().zip(src) {
                *d = (q.level() - zp) as i16;
            }
        };
        for ky in 0..kh {
            let Some(iy) = (oy * self.win.stride[0] + ky * self.win.dilation[0])
                .checked_sub(g.h.pad_before)
                .filter(|&iy| iy < h)
            else {
                continue;
            };
            if self.win.dilation[1] == 1 {
                // Input columns ix0 + kx for kx in [lo, hi).
                let ix0 = (ox * self.win.stride[1]) as isize - g.w.pad_before as isize;
                let lo = (-ix0).clamp(0, kw as isize) as usize;
                let hi = (w as isize - ix0).clamp(0, kw as isize) as usize;
                if lo < hi {
                    let start = (iy * w) as isize + ix0 + lo as isize;
                    let src = &image[start as usize * c..(start as usize + hi - lo) * c];
                    convert(&mut patch[(ky * kw + lo) * c..(ky * kw + hi) * c], src);
                }
            } else {
                for kx in 0..kw {
                    if let Some((iy, ix)) = self.win.tap(g, (h, w), (oy, ox), (ky, kx)) {
                        convert(
                            &mut patch[(ky * kw + kx) * c..][..c],
                            &image[(iy * w + ix) * c..][..c],
                        );
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
        out.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, row)| {
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
                        let kp = self.kp;
                        let mut patches = vec![0i16; ow * kp];
                        for (ox, patch) in patches.chunks_exact_mut(kp).enumerate() {
                            self.im2col(image, (h, w), &g, (oy, ox), patch);
                        }
                        let mut acc = vec![0i32; ow * o];
                        let mut oc = 0;
                        while oc + 4 <= o {
                            let rows = [0, 1, 2, 3]
                                .map(|j| &self.packed[(oc + j) * kp..(oc + j + 1) * kp]);
                            for (ox, patch) in patches.chunks_exact(kp).enumerate() {
                                let sums = dot4(patch, rows);
                                acc[ox * o + oc..ox * o + oc + 4].copy_from_slice(&sums);
                            }
                            oc += 4;
                        }
                        for oc in oc..o {
                            let filter = &self.packed[oc * kp..(oc + 1) * kp];
                            for (ox, patch) in patches.chunks_exact(kp).enumerate() {
                                acc[ox * o + oc] = dot(patch, filter);
                            }
                        }
                        self.requant.block(&mut acc);
                        for (y, &a) in row.iter_mut().zip(&acc) {
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
