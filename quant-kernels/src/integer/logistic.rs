//! LOGISTIC (§7.10.11): a 256-entry table over the input levels,
//! `f = S_in·(v − Z_in)`, `g = 1/(1 + expf(−f))`,
//! `q = clamp_t(trunc(float32(RHA(g·(1/S_out)) + Z_out)))`, all float32.
//!
//! `expf` is Rust's `f32::exp` (the platform libm's `expf` on Linux, as in
//! LiteRT's build); an `expf` differing in the last bit could change rare
//! table entries. The output scale must be exactly 1/256.

use quant_core::integer::TensorIndex;

use super::op::{Ctx, Inputs, Kernel, OpResult, expect_q, fail, q_slice, q_value};
use super::value::{Q8, QType, Value, with_q8};

/// A prepared LOGISTIC: the output level per input level.
pub(crate) struct Logistic {
    input: TensorIndex,
    qtype: QType,
    /// Indexed by `level − tmin`.
    table: Vec<i32>,
}

impl Logistic {
    /// Validates the op and builds its table.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Logistic> {
        ctx.expect_inputs(1, 1)?;
        let (input, out) = (ctx.input(0)?, ctx.output()?);
        let qtype = ctx.qtype(input)?;
        if ctx.qtype(out)? != qtype {
            return fail(Some(out), format!("must have the input's type {qtype:?}"));
        }
        let (pi, po) = (ctx.affine(input)?, ctx.affine(out)?);
        if f64::from(po.scale) != 1.0 / 256.0 {
            return fail(
                Some(out),
                format!("output scale must be 1/256, is {}", po.scale),
            );
        }
        let inverse = 1.0f32 / po.scale;
        let table = (qtype.min()..=qtype.max())
            .map(|v| {
                let f = pi.scale * (v - pi.zero_point) as f32;
                let g = 1.0f32 / (1.0f32 + (-f).exp());
                let q = ((g * inverse).round() + po.zero_point as f32) as i32;
                q.clamp(qtype.min(), qtype.max())
            })
            .collect();
        Ok(Logistic {
            input,
            qtype,
            table,
        })
    }
}

fn run_typed<T: Q8>(op: &Logistic, x: &Value) -> OpResult<Value> {
    let data = q_slice::<T>(x, op.input)?;
    let tmin = T::QTYPE.min();
    let out = data
        .iter()
        .map(|q| T::from_level(op.table[(q.level() - tmin) as usize]))
        .collect();
    Ok(q_value(x.shape.clone(), out))
}

impl Kernel for Logistic {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let x = inputs.get(0)?;
        expect_q(x, self.qtype, self.input)?;
        with_q8!(self.qtype, run_typed(self, x))
    }
}
