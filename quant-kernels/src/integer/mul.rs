//! MUL (§7.10.6): `M = float32(float32(S1·S2) / S_out)`, `(m, e) = QM(M)`,
//! `q = clamp_act(MBQM((q1 − Z1)(q2 − Z2), m, e) + Z_out)`. Shapes
//! broadcast as for ADD.

use quant_core::integer::{IntOpKind, TensorIndex};

use super::elementwise::run_binary;
use super::fixed_point::{activation_range, mbqm, quantize_multiplier};
use super::op::{Ctx, Inputs, Kernel, OpResult, fail};
use super::value::{QType, Value};

/// A prepared MUL.
pub(crate) struct Mul {
    inputs: [TensorIndex; 2],
    qtype: QType,
    zero_points: [i32; 2],
    multiplier: (i32, i32),
    out_zp: i32,
    act: (i32, i32),
}

impl Mul {
    /// Validates the op and precomputes its multiplier.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Mul> {
        let IntOpKind::Mul { activation } = ctx.op.kind else {
            return fail(None, "not a MUL");
        };
        ctx.expect_inputs(2, 2)?;
        let (a, b, out) = (ctx.input(0)?, ctx.input(1)?, ctx.output()?);
        let qtype = ctx.qtype(a)?;
        for t in [b, out] {
            if ctx.qtype(t)? != qtype {
                return fail(
                    Some(t),
                    format!("must have the first input's type {qtype:?}"),
                );
            }
        }
        let (pa, pb, po) = (ctx.affine(a)?, ctx.affine(b)?, ctx.affine(out)?);
        let real = (pa.scale * pb.scale) / po.scale;
        Ok(Mul {
            inputs: [a, b],
            qtype,
            zero_points: [pa.zero_point, pb.zero_point],
            multiplier: quantize_multiplier(f64::from(real)),
            out_zp: po.zero_point,
            act: activation_range(activation, qtype, po.scale, po.zero_point),
        })
    }

    fn element(&self, q1: i32, q2: i32) -> i32 {
        let (m, e) = self.multiplier;
        let p = (q1 - self.zero_points[0]) * (q2 - self.zero_points[1]);
        let y = i64::from(mbqm(p, m, e)) + i64::from(self.out_zp);
        y.clamp(i64::from(self.act.0), i64::from(self.act.1)) as i32
    }
}

impl Kernel for Mul {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        run_binary(inputs, self.inputs, self.qtype, |p, q| self.element(p, q))
    }
}
