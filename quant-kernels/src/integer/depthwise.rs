//! DEPTHWISE_CONV_2D (§7.10.3): output channel `o = i·mult + j` reads input
//! channel `i` and filter column `o` of `[1, kh, kw, C·mult]`; otherwise as
//! CONV_2D (int8 weight zero points are ignored). The multiplier comes from
//! the filter and input channel counts (LiteRT ignores the option's value).

use quant_core::integer::{IntOpKind, TensorIndex};
use rayon::prelude::*;

use super::fixed_point::quantize_multiplier;
use super::layer::{LayerKind, prepare_layer};
use super::op::{Ctx, Inputs, Kernel, OpResult, expect_q, fail, q_slice, q_value};
use super::requant::Requant;
use super::value::{Q8, QType, Value, with_q8};
use super::window::{Window, window};

/// A prepared DEPTHWISE_CONV_2D.
pub(crate) struct Depthwise {
    input: TensorIndex,
    qtype: QType,
    win: Window,
    /// `[kh, kw, out_channels]`.
    dims: [usize; 3],
    /// `q_w − Z_w`, `[kh, kw, out_channels]`.
    weights: Vec<i16>,
    requant: Requant,
    in_zp: i32,
}

impl Depthwise {
    /// Validates the op and precomputes its multipliers.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Depthwise> {
        let IntOpKind::DepthwiseConv2D {
            padding,
            stride,
            dilation,
            activation,
            ..
        } = ctx.op.kind
        else {
            return fail(None, "not a DEPTHWISE_CONV_2D");
        };
        ctx.expect_inputs(2, 3)?;
        let input = ctx.input(0)?;
        let filter = ctx.input(1)?;
        let shape = ctx.tensor(filter).shape.clone();
        let [1, kh, kw, oc] = shape[..] else {
            return fail(
                Some(filter),
                format!("must be [1, kh, kw, C·mult], has shape {shape:?}"),
            );
        };
        let layer = prepare_layer(
            ctx,
            filter,
            ctx.opt_input(2),
            3,
            |e| e % oc.max(1),
            LayerKind::Depthwise,
            activation,
        )?;
        let multipliers: Vec<(i32, i32)> = layer
            .real_multipliers
            .iter()
            .map(|&m| quantize_multiplier(m))
            .collect();
        Ok(Depthwise {
            input,
            qtype: layer.qtype,
            win: window(padding, stride, dilation, [kh, kw], filter)?,
            dims: [kh, kw, oc],
            weights: layer.weights,
            requant: Requant {
                bias: layer.bias,
                multiplier: multipliers.iter().map(|m| m.0).collect(),
                shift: multipliers.iter().map(|m| m.1).collect(),
                out_zp: layer.output.zero_point,
                act: layer.act,
            },
            in_zp: layer.input.zero_point,
        })
    }

    fn run_typed<T: Q8>(&self, x: &Value) -> OpResult<Value> {
        let data = q_slice::<T>(x, self.input)?;
        let [kh, kw, o] = self.dims;
        let [n, h, w, c] = x.shape[..] else {
            return fail(
                Some(self.input),
                format!("must be 4-D NHWC, has shape {:?}", x.shape),
            );
        };
        if c == 0 || !o.is_multiple_of(c) {
            return fail(
                Some(self.input),
                format!("has {c} channels, the filter's {o} outputs are not a multiple"),
            );
        }
        let mult = o / c;
        let g = self.win.geometry(h, w, self.input)?;
        let (oh, ow) = (g.h.out, g.w.out);
        let mut out = vec![T::default(); n * oh * ow * o];
        if out.is_empty() {
            return Ok(q_value(vec![n, oh, ow, o], out));
        }
        out.par_chunks_mut(ow * o).enumerate().for_each(|(r, row)| {
            let (b, oy) = (r / oh, r % oh);
            let image = &data[b * h * w * c..(b + 1) * h * w * c];
            let mut acc = vec![0i32; o];
            for ox in 0..ow {
                acc.fill(0);
                for ky in 0..kh {
                    for kx in 0..kw {
                        let Some((iy, ix)) = self.win.tap(&g, (h, w), (oy, ox), (ky, kx)) else {
                            continue;
                        };
                        let xs = &image[(iy * w + ix) * c..][..c];
                        let ws = &self.weights[(ky * kw + kx) * o..][..o];
                        for (oc, a) in acc.iter_mut().enumerate() {
                            let xv = xs[oc / mult].level() - self.in_zp;
                            *a = a.wrapping_add(i32::from(ws[oc]) * xv);
                        }
                    }
                }
                self.requant.block(&mut acc);
                for (y, &a) in row[ox * o..(ox + 1) * o].iter_mut().zip(&acc) {
                    *y = T::from_level(a);
                }
            }
        });
        Ok(q_value(vec![n, oh, ow, o], out))
    }
}

impl Kernel for Depthwise {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let x = inputs.get(0)?;
        expect_q(x, self.qtype, self.input)?;
        with_q8!(self.qtype, run_typed(self, x))
    }
}

fn run_typed<T: Q8>(op: &Depthwise, x: &Value) -> OpResult<Value> {
    op.run_typed::<T>(x)
}
