//! MEAN (§7.10.9, rule R): with `(m, e) = QM(double(S_in)/double(S_out))`
//! and `n` reduced elements, `k = min(floor(log2 n), 32, 31 + e)`,
//! `m' = (m·2^k) div n`, `q = clamp_t(MBQM(Σq − Z_in·n, m', e − k) + Z_out)`.
//! No fused activation.

use quant_core::integer::{IntOpKind, TensorIndex};

use super::fixed_point::{mbqm, quantize_multiplier};
use super::op::{Ctx, Inputs, Kernel, OpResult, expect_q, fail, q_slice, q_value};
use super::value::{Q8, QType, Value, with_q8};

/// A prepared MEAN.
pub(crate) struct Mean {
    input: TensorIndex,
    qtype: QType,
    axes: Vec<i32>,
    axes_t: TensorIndex,
    keep_dims: bool,
    multiplier: (i32, i32),
    in_zp: i32,
    out_zp: i32,
}

impl Mean {
    /// Validates the op and precomputes its multiplier.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Mean> {
        let IntOpKind::Mean { keep_dims } = ctx.op.kind else {
            return fail(None, "not a MEAN");
        };
        ctx.expect_inputs(2, 2)?;
        let (input, axes_t, out) = (ctx.input(0)?, ctx.input(1)?, ctx.output()?);
        let qtype = ctx.qtype(input)?;
        if ctx.qtype(out)? != qtype {
            return fail(Some(out), format!("must have the input's type {qtype:?}"));
        }
        let (pi, po) = (ctx.affine(input)?, ctx.affine(out)?);
        Ok(Mean {
            input,
            qtype,
            axes: ctx.const_i32(axes_t)?,
            axes_t,
            keep_dims,
            multiplier: quantize_multiplier(f64::from(pi.scale) / f64::from(po.scale)),
            in_zp: pi.zero_point,
            out_zp: po.zero_point,
        })
    }

    fn run_typed<T: Q8>(&self, x: &Value) -> OpResult<Value> {
        let data = q_slice::<T>(x, self.input)?;
        let rank = x.shape.len();
        let mut reduced = vec![false; rank];
        for &a in &self.axes {
            let r = rank as i64;
            let a = i64::from(a);
            if a < -r || a >= r {
                return fail(
                    Some(self.axes_t),
                    format!("axis {a} is out of range for rank {rank}"),
                );
            }
            reduced[a.rem_euclid(r.max(1)) as usize] = true;
        }
        let n: usize = x
            .shape
            .iter()
            .zip(&reduced)
            .filter(|(_, r)| **r)
            .map(|(d, _)| d)
            .product();
        let mut out_shape = Vec::with_capacity(rank);
        for (&d, &r) in x.shape.iter().zip(&reduced) {
            if !r {
                out_shape.push(d);
            } else if self.keep_dims {
                out_shape.push(1);
            }
        }
        let out_len: usize = x
            .shape
            .iter()
            .zip(&reduced)
            .filter(|(_, r)| !**r)
            .map(|(d, _)| d)
            .product();
        if n == 0 && out_len > 0 {
            return fail(Some(self.input), "MEAN over an empty axis");
        }
        // Output strides per input dimension (0 on reduced axes).
        let mut strides = vec![0usize; rank];
        let mut s = 1;
        for d in (0..rank).rev() {
            if !reduced[d] {
                strides[d] = s;
                s *= x.shape[d];
            }
        }
        let mut sums = vec![0i32; out_len];
        let mut index = vec![0usize; rank];
        let mut o = 0usize;
        for &q in data {
            sums[o] = sums[o].wrapping_add(q.level());
            for d in (0..rank).rev() {
                index[d] += 1;
                o += strides[d];
                if index[d] < x.shape[d] {
                    break;
                }
                o -= strides[d] * x.shape[d];
                index[d] = 0;
            }
        }
        let (m, e) = self.multiplier;
        let log2n = (usize::BITS - 1 - n.max(1).leading_zeros()) as i32;
        let k = log2n.min(32).min(31 + e).max(0);
        let m2 = ((i64::from(m) << k) / n.max(1) as i64) as i32;
        let n32 = n as i32;
        let out: Vec<T> = sums
            .iter()
            .map(|&s| {
                let v = mbqm(s.wrapping_sub(self.in_zp.wrapping_mul(n32)), m2, e - k);
                T::saturate(
                    (i64::from(v) + i64::from(self.out_zp)).clamp(i32::MIN.into(), i32::MAX.into())
                        as i32,
                )
            })
            .collect();
        Ok(q_value(out_shape, out))
    }
}

impl Kernel for Mean {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let x = inputs.get(0)?;
        expect_q(x, self.qtype, self.input)?;
        with_q8!(self.qtype, run_typed(self, x))
    }
}

fn run_typed<T: Q8>(op: &Mean, x: &Value) -> OpResult<Value> {
    op.run_typed::<T>(x)
}
