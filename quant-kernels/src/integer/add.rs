//! ADD (§7.7, §7.10.5): both inputs rescaled to a common scale with 20
//! extra bits, summed, rescaled to the output:
//!
//! ```text
//! a' = MBQM((q1 − Z1)·2^20, m1, e1);  b' = MBQM((q2 − Z2)·2^20, m2, e2)
//! q  = clamp_act(MBQM(a' + b', m_out, e_out) + Z_out)
//! ```
//!
//! with `twice_max = 2·max(S1, S2)` and `2^20·S_out` exact float32
//! products and the three quotients in double. Shapes broadcast (NumPy
//! rules; LiteRT's broadcast routines use the same per-element formula).

use quant_core::integer::{IntOpKind, TensorIndex};

use super::elementwise::run_binary;
use super::fixed_point::{activation_range, mbqm, quantize_multiplier};
use super::op::{Ctx, Inputs, Kernel, OpResult, fail};
use super::value::{QType, Value};

/// A prepared ADD.
pub(crate) struct Add {
    inputs: [TensorIndex; 2],
    qtype: QType,
    zero_points: [i32; 2],
    multipliers: [(i32, i32); 2],
    out_multiplier: (i32, i32),
    out_zp: i32,
    act: (i32, i32),
}

/// Left shift applied to both inputs before rescaling.
const LEFT_SHIFT: u32 = 20;

impl Add {
    /// Validates the op and precomputes its multipliers.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Add> {
        let IntOpKind::Add { activation } = ctx.op.kind else {
            return fail(None, "not an ADD");
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
        let twice_max = 2.0 * pa.scale.max(pb.scale);
        let out_real = f64::from(twice_max) / f64::from((1u32 << LEFT_SHIFT) as f32 * po.scale);
        if out_real >= 1.0 {
            // LiteRT 2.3 aborts the process here (§7.7).
            return fail(
                Some(out),
                format!("output multiplier 2·max(S1,S2)/(2^20·S_out) = {out_real} must be < 1"),
            );
        }
        Ok(Add {
            inputs: [a, b],
            qtype,
            zero_points: [pa.zero_point, pb.zero_point],
            multipliers: [
                quantize_multiplier(f64::from(pa.scale) / f64::from(twice_max)),
                quantize_multiplier(f64::from(pb.scale) / f64::from(twice_max)),
            ],
            out_multiplier: quantize_multiplier(out_real),
            out_zp: po.zero_point,
            act: activation_range(activation, qtype, po.scale, po.zero_point),
        })
    }

    /// The output level of one input pair.
    pub(crate) fn element(&self, q1: i32, q2: i32) -> i32 {
        let [(m1, e1), (m2, e2)] = self.multipliers;
        let a = mbqm((q1 - self.zero_points[0]) << LEFT_SHIFT, m1, e1);
        let b = mbqm((q2 - self.zero_points[1]) << LEFT_SHIFT, m2, e2);
        let (mo, eo) = self.out_multiplier;
        let y = i64::from(mbqm(a.wrapping_add(b), mo, eo)) + i64::from(self.out_zp);
        y.clamp(i64::from(self.act.0), i64::from(self.act.1)) as i32
    }
}

impl Kernel for Add {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        run_binary(inputs, self.inputs, self.qtype, |p, q| self.element(p, q))
    }
}
