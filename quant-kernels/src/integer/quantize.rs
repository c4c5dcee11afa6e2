//! QUANTIZE (§7.10.14) and DEQUANTIZE (§7.10.15), rule R:
//!
//! - float → 8 bit: `q = clamp_t(RHA(float32(x / S)) + Z)`;
//! - 8 bit → 8 bit: `(m, e) = QM(double(S_in)/double(S_out))`,
//!   `q = clamp_t(MBQM(q_in − Z_in, m, e) + Z_out)`;
//! - 8 bit → float: `r = float32(double(S)·(q − Z))`.

use quant_core::DType;
use quant_core::integer::TensorIndex;

use super::fixed_point::{mbqm, quantize_multiplier};
use super::op::{Affine, Ctx, Inputs, Kernel, OpResult, expect_q, f32_slice, q_slice};
use super::value::{Buf, Q8, QType, Value, with_q8};

/// A prepared QUANTIZE.
pub(crate) struct Quantize {
    input: TensorIndex,
    out_type: QType,
    out: Affine,
    /// `None` for float input; the input type, zero point and `(m, e)` for
    /// a requantization.
    requantize: Option<(QType, i32, (i32, i32))>,
}

impl Quantize {
    /// Validates the op and precomputes a requantization multiplier.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Quantize> {
        ctx.expect_inputs(1, 1)?;
        let (input, out_t) = (ctx.input(0)?, ctx.output()?);
        let out_type = ctx.qtype(out_t)?;
        let out = ctx.affine(out_t)?;
        let requantize = match ctx.tensor(input).dtype {
            DType::F32 => None,
            _ => {
                let in_type = ctx.qtype(input)?;
                let pi = ctx.affine(input)?;
                let m = quantize_multiplier(f64::from(pi.scale) / f64::from(out.scale));
                Some((in_type, pi.zero_point, m))
            }
        };
        Ok(Quantize {
            input,
            out_type,
            out,
            requantize,
        })
    }
}

fn from_float<T: Q8>(op: &Quantize, x: &[f32]) -> Buf {
    let out: Vec<T> = x
        .iter()
        .map(|&v| {
            // `round` is half away from zero; `as i32` saturates (C: undefined).
            let q = (v / op.out.scale).round() as i32;
            T::saturate(q.saturating_add(op.out.zero_point))
        })
        .collect();
    T::into_buf(out)
}

fn requantize<I: Q8, O: Q8>(x: &[I], in_zp: i32, (m, e): (i32, i32), out_zp: i32) -> Buf {
    let out: Vec<O> = x
        .iter()
        .map(|q| {
            let y = i64::from(mbqm(q.level() - in_zp, m, e)) + i64::from(out_zp);
            O::saturate(y.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
        })
        .collect();
    O::into_buf(out)
}

fn requantize_from<I: Q8>(op: &Quantize, x: &Value, in_zp: i32, m: (i32, i32)) -> OpResult<Buf> {
    let data = q_slice::<I>(x, op.input)?;
    let zp = op.out.zero_point;
    Ok(match op.out_type {
        QType::U8 => requantize::<I, u8>(data, in_zp, m, zp),
        QType::I8 => requantize::<I, i8>(data, in_zp, m, zp),
    })
}

impl Kernel for Quantize {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let x = inputs.get(0)?;
        let buf = match self.requantize {
            None => {
                let data = f32_slice(x, self.input)?;
                with_q8!(self.out_type, from_float(self, data))
            }
            Some((in_type, in_zp, m)) => {
                expect_q(x, in_type, self.input)?;
                with_q8!(in_type, requantize_from(self, x, in_zp, m))?
            }
        };
        Ok(Value {
            shape: x.shape.clone(),
            buf,
        })
    }
}

/// A prepared DEQUANTIZE.
pub(crate) struct Dequantize {
    input: TensorIndex,
    qtype: QType,
    scale: f64,
    zero_point: i32,
}

impl Dequantize {
    /// Validates the op.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Dequantize> {
        ctx.expect_inputs(1, 1)?;
        let (input, out) = (ctx.input(0)?, ctx.output()?);
        ctx.expect_dtype(out, DType::F32)?;
        let qtype = ctx.qtype(input)?;
        let p = ctx.affine(input)?;
        Ok(Dequantize {
            input,
            qtype,
            scale: f64::from(p.scale),
            zero_point: p.zero_point,
        })
    }
}

fn dequantize<T: Q8>(op: &Dequantize, x: &Value) -> OpResult<Vec<f32>> {
    let data = q_slice::<T>(x, op.input)?;
    Ok(data
        .iter()
        .map(|q| (op.scale * f64::from(q.level() - op.zero_point)) as f32)
        .collect())
}

impl Kernel for Dequantize {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let x = inputs.get(0)?;
        expect_q(x, self.qtype, self.input)?;
        let out = with_q8!(self.qtype, dequantize(self, x))?;
        Ok(Value {
            shape: x.shape.clone(),
            buf: Buf::F32(out),
        })
    }
}
