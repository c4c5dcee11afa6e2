//! SOFTMAX along the last axis (§7.10.10, rule R: gemmlowp-style fixed
//! point). The result is in units of 1/256 with zero point `tmin`, whatever
//! the output tensor declares (int8 outputs must declare (1/256, −128)).

use quant_core::integer::{IntOpKind, TensorIndex};

use super::fixed_point::{quantize_multiplier, rdbpot, srdhm};
use super::op::{Ctx, Inputs, Kernel, OpResult, expect_q, fail, q_slice, q_value};
use super::value::{Q8, QType, Value, with_q8};

/// Integer bits of the scaled input differences (Q5.26).
const DIFF_INTEGER_BITS: i32 = 5;
/// Integer bits of the sum of exponentials (Q12.19).
const ACCUM_INTEGER_BITS: i32 = 12;

/// A prepared SOFTMAX.
pub(crate) struct Softmax {
    input: TensorIndex,
    qtype: QType,
    multiplier: i32,
    left_shift: i32,
    diff_min: i32,
}

impl Softmax {
    /// Validates the op and precomputes the input multiplier.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Softmax> {
        let IntOpKind::Softmax { beta } = ctx.op.kind else {
            return fail(None, "not a SOFTMAX");
        };
        ctx.expect_inputs(1, 1)?;
        let (input, out) = (ctx.input(0)?, ctx.output()?);
        let qtype = ctx.qtype(input)?;
        if ctx.qtype(out)? != qtype {
            return fail(Some(out), format!("must have the input's type {qtype:?}"));
        }
        let (pi, po) = (ctx.affine(input)?, ctx.affine(out)?);
        if qtype == QType::I8
            && (po.zero_point != -128 || (f64::from(po.scale) - 1.0 / 256.0).abs() > 0.001 / 256.0)
        {
            return fail(Some(out), "int8 SOFTMAX output must be (1/256, -128)");
        }
        let real =
            (f64::from(beta) * f64::from(pi.scale) * f64::from(1i32 << (31 - DIFF_INTEGER_BITS)))
                .min(f64::from(i32::MAX));
        let (multiplier, left_shift) = quantize_multiplier(real);
        if real <= 1.0 || left_shift < 0 {
            return fail(
                Some(input),
                format!("beta·S_in·2^26 = {real} must be greater than 1"),
            );
        }
        let radius = f64::from((1i32 << DIFF_INTEGER_BITS) - 1)
            * (1i64 << (31 - DIFF_INTEGER_BITS)) as f64
            / (1i64 << left_shift) as f64;
        Ok(Softmax {
            input,
            qtype,
            multiplier,
            left_shift,
            diff_min: -(radius.floor() as i32),
        })
    }

    fn run_typed<T: Q8>(&self, x: &Value) -> OpResult<Value> {
        let data = q_slice::<T>(x, self.input)?;
        let depth = x.shape.last().copied().unwrap_or(1);
        let mut out = vec![T::default(); data.len()];
        if depth == 0 {
            return Ok(q_value(x.shape.clone(), out));
        }
        let tmin = T::QTYPE.min();
        let mut exps = vec![0i32; depth];
        for (xs, ys) in data.chunks_exact(depth).zip(out.chunks_exact_mut(depth)) {
            let max = xs.iter().map(|q| q.level()).max().unwrap_or(tmin);
            let mut sum = 0i32;
            for (e, q) in exps.iter_mut().zip(xs) {
                let d = q.level() - max;
                *e = if d >= self.diff_min {
                    let v = srdhm(d << self.left_shift, self.multiplier);
                    let e = exp_on_negative_values(v);
                    sum = sum.wrapping_add(rdbpot(e, ACCUM_INTEGER_BITS as u32));
                    e
                } else {
                    -1
                };
            }
            let headroom = (sum as u32).leading_zeros() as i32;
            let shifted =
                ((sum as u32).wrapping_shl(headroom as u32)).wrapping_sub(1u32 << 31) as i32;
            let recip = one_over_one_plus_x(shifted);
            let exponent = (ACCUM_INTEGER_BITS - headroom) + 31 - 8;
            for (y, &e) in ys.iter_mut().zip(&exps) {
                let v = if e < 0 {
                    tmin
                } else {
                    rdbpot(srdhm(recip, e), exponent.max(0) as u32) + tmin
                };
                *y = T::saturate(v);
            }
        }
        Ok(q_value(x.shape.clone(), out))
    }
}

/// `x·K` saturated to the int32 range (`SaturatingRoundingMultiplyByPOT`
/// with a positive exponent).
fn saturating_mul(x: i32, k: i64) -> i32 {
    (i64::from(x) * k).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// `exp(v)` for `v ≤ 0` in Q5.26, result in Q0.31 (`EXP` of §7.10.10).
pub fn exp_on_negative_values(v: i32) -> i32 {
    const QUARTER: i32 = 1 << 24;
    let r = (v & (QUARTER - 1)) - QUARTER;
    let remainder = r.wrapping_sub(v);
    let x = (r << 5) + (1 << 28);
    let x2 = srdhm(x, x);
    let x3 = srdhm(x2, x);
    let x4 = srdhm(x2, x2);
    let poly = rdbpot(
        srdhm(rdbpot(x4, 2).wrapping_add(x3), 715_827_883).wrapping_add(x2),
        1,
    );
    const EXP_MINUS_ONE_EIGHTH: i32 = 1_895_147_668;
    let mut e =
        EXP_MINUS_ONE_EIGHTH.wrapping_add(srdhm(EXP_MINUS_ONE_EIGHTH, x.wrapping_add(poly)));
    const K: [i32; 7] = [
        1_672_461_947,
        1_302_514_674,
        790_015_084,
        290_630_308,
        39_332_535,
        720_401,
        242,
    ];
    for (j, &k) in K.iter().enumerate() {
        if remainder & (1 << (24 + j)) != 0 {
            e = srdhm(e, k);
        }
    }
    if v == 0 { i32::MAX } else { e }
}

/// `1 / (1 + x)` for `x ∈ [0, 1)` in Q0.31 (`RECIP` of §7.10.10).
pub fn one_over_one_plus_x(x: i32) -> i32 {
    let sum = i64::from(x) + i64::from(i32::MAX);
    let half = ((sum + if sum >= 0 { 1 } else { -1 }) / 2) as i32;
    let mut y = 1_515_870_810i32.wrapping_add(srdhm(half, -1_010_580_540));
    for _ in 0..3 {
        let t = (1i32 << 29).wrapping_sub(srdhm(half, y));
        y = y.wrapping_add(saturating_mul(srdhm(y, t), 4));
    }
    saturating_mul(y, 2)
}

impl Kernel for Softmax {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let x = inputs.get(0)?;
        expect_q(x, self.qtype, self.input)?;
        with_q8!(self.qtype, run_typed(self, x))
    }
}

fn run_typed<T: Q8>(op: &Softmax, x: &Value) -> OpResult<Value> {
    op.run_typed::<T>(x)
}
