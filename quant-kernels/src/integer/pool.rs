//! MAX_POOL_2D (§7.10.8) and AVERAGE_POOL_2D (§7.10.7) on the stored
//! integers. Only taps inside the input count. The average rounds the raw
//! sum half away from zero (`(acc ± n div 2) div n`, Z not subtracted);
//! both clamp to the fused-activation range of the output parameters, and
//! neither requantizes (the output parameters should equal the input's).

use quant_core::integer::{IntOpKind, TensorIndex};
use rayon::prelude::*;

use super::fixed_point::activation_range;
use super::op::{Ctx, Inputs, Kernel, OpResult, expect_q, fail, q_slice, q_value};
use super::value::{Q8, QType, Value, with_q8};
use super::window::{Window, window};

/// A prepared pool.
pub(crate) struct Pool {
    input: TensorIndex,
    qtype: QType,
    win: Window,
    kernel: [usize; 2],
    max: bool,
    act: (i32, i32),
}

impl Pool {
    /// Validates a MAX_POOL_2D or AVERAGE_POOL_2D.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Pool> {
        let (padding, stride, filter, activation, max) = match ctx.op.kind {
            IntOpKind::MaxPool2D {
                padding,
                stride,
                filter,
                activation,
            } => (padding, stride, filter, activation, true),
            IntOpKind::AveragePool2D {
                padding,
                stride,
                filter,
                activation,
            } => (padding, stride, filter, activation, false),
            _ => return fail(None, "not a pool"),
        };
        ctx.expect_inputs(1, 1)?;
        let (input, out) = (ctx.input(0)?, ctx.output()?);
        let qtype = ctx.qtype(input)?;
        if ctx.qtype(out)? != qtype {
            return fail(Some(out), format!("must have the input's type {qtype:?}"));
        }
        ctx.affine(input)?;
        let po = ctx.affine(out)?;
        Ok(Pool {
            input,
            qtype,
            win: window(
                padding,
                stride,
                quant_core::integer::Hw::ONE,
                [filter.h, filter.w],
                input,
            )?,
            kernel: [filter.h, filter.w],
            max,
            act: activation_range(activation, qtype, po.scale, po.zero_point),
        })
    }

    fn run_typed<T: Q8>(&self, x: &Value) -> OpResult<Value> {
        let data = q_slice::<T>(x, self.input)?;
        let [n, h, w, c] = x.shape[..] else {
            return fail(
                Some(self.input),
                format!("must be 4-D NHWC, has shape {:?}", x.shape),
            );
        };
        let g = self.win.geometry(h, w, self.input)?;
        let (oh, ow) = (g.h.out, g.w.out);
        let mut out = vec![T::default(); n * oh * ow * c];
        if out.is_empty() {
            return Ok(q_value(vec![n, oh, ow, c], out));
        }
        out.par_chunks_mut(ow * c).enumerate().for_each(|(r, row)| {
            let (b, oy) = (r / oh, r % oh);
            let image = &data[b * h * w * c..(b + 1) * h * w * c];
            let mut acc = vec![0i32; c];
            for ox in 0..ow {
                acc.fill(if self.max { T::QTYPE.min() } else { 0 });
                let mut count = 0i32;
                for ky in 0..self.kernel[0] {
                    for kx in 0..self.kernel[1] {
                        let Some((iy, ix)) = self.win.tap(&g, (h, w), (oy, ox), (ky, kx)) else {
                            continue;
                        };
                        count += 1;
                        let xs = &image[(iy * w + ix) * c..][..c];
                        for (a, &q) in acc.iter_mut().zip(xs) {
                            *a = if self.max {
                                (*a).max(q.level())
                            } else {
                                *a + q.level()
                            };
                        }
                    }
                }
                for (ch, &a) in acc.iter().enumerate() {
                    let v = if self.max || count == 0 {
                        a
                    } else if a > 0 {
                        (a + count / 2) / count
                    } else {
                        (a - count / 2) / count
                    };
                    row[ox * c + ch] = T::from_level(v.clamp(self.act.0, self.act.1));
                }
            }
        });
        Ok(q_value(vec![n, oh, ow, c], out))
    }
}

impl Kernel for Pool {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let x = inputs.get(0)?;
        expect_q(x, self.qtype, self.input)?;
        with_q8!(self.qtype, run_typed(self, x))
    }
}

fn run_typed<T: Q8>(op: &Pool, x: &Value) -> OpResult<Value> {
    op.run_typed::<T>(x)
}
