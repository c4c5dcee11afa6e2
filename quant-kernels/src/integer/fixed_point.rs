//! The fixed-point primitives of LiteRT's integer kernels (reference
//! semantics §7.3, §7.4, §7.6), bit for bit.
//!
//! Every function here is total: inputs the C code leaves undefined (a
//! left shift that overflows, a float outside the int32 range) get the
//! two's-complement wrap or Rust's saturating cast, documented per function.

use quant_core::integer::Activation;

use super::value::QType;

/// `frexp`: `x = q · 2^e` with `|q| ∈ [0.5, 1)`, for finite non-zero `x`.
fn frexp(x: f64) -> (f64, i32) {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if exp == 0 {
        // Subnormal: scale into the normal range first.
        let (q, e) = frexp(x * 2f64.powi(64));
        return (q, e - 64);
    }
    let q = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (q, exp - 1022)
}

/// `QuantizeMultiplier` (§7.3): `M ≈ m · 2^(shift − 31)` with `m` the
/// int32 "quantized multiplier" in `[2^30, 2^31)`, or `(0, 0)` for `M = 0`,
/// a non-finite `M`, and for `shift < −31` (LiteRT 2.3's flush).
pub fn quantize_multiplier(m: f64) -> (i32, i32) {
    if m == 0.0 || !m.is_finite() {
        return (0, 0);
    }
    let (q, mut shift) = frexp(m);
    // `round` is half away from zero, as C's `round`.
    let mut q_fixed = (q * 2f64.powi(31)).round() as i64;
    if q_fixed == 1i64 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        return (0, 0);
    }
    (q_fixed as i32, shift)
}

/// `SaturatingRoundingDoublingHighMul` (§7.4): `round(a·b / 2^31)` with ties
/// toward +∞, saturating the one overflowing case `a = b = INT32_MIN`.
#[inline]
pub fn srdhm(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let p = i64::from(a) * i64::from(b);
    let nudge = if p >= 0 { 1i64 << 30 } else { 1 - (1i64 << 30) };
    // Rust's `/` truncates toward zero, as C's.
    ((p + nudge) / (1i64 << 31)) as i32
}

/// `RoundingDivideByPOT` (§7.4): `x / 2^exponent` rounded to nearest, ties
/// away from zero. Defined for `exponent ≤ 62` (LiteRT uses `≤ 31`).
#[inline]
pub fn rdbpot(x: i32, exponent: u32) -> i32 {
    let e = exponent.min(62);
    let x = i64::from(x);
    let mask = (1i64 << e) - 1;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i64::from(x < 0);
    ((x >> e) + i64::from(remainder > threshold)) as i32
}

/// `MultiplyByQuantizedMultiplier` (§7.4, default build, "double
/// rounding"): `RDBPOT(SRDHM(x · 2^max(shift,0), m), max(−shift, 0))`. The
/// left shift wraps like the unguarded int32 multiply of the C code.
#[inline]
pub fn mbqm(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.max(0) as u32;
    let right = (-shift).max(0) as u32;
    let shifted = (i64::from(x) << left.min(62)) as i32;
    rdbpot(srdhm(shifted, multiplier), right)
}

/// The fused-activation clamp range of §7.6 for an output with `scale` and
/// `zero_point` stored as `qtype`: `quant(f) = Z + (int32) RHA(f / S)` with
/// the quotient in float32, intersected with the type's range.
pub fn activation_range(act: Activation, qtype: QType, scale: f32, zero_point: i32) -> (i32, i32) {
    let (tmin, tmax) = (qtype.min(), qtype.max());
    // `as i32` saturates where C would be undefined; the sum is taken in i64.
    let quant = |f: f32| i64::from(zero_point) + i64::from((f / scale).round() as i32);
    let clamp = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    match act {
        Activation::None => (tmin, tmax),
        Activation::Relu => (tmin.max(clamp(quant(0.0))), tmax),
        Activation::Relu6 => (tmin.max(clamp(quant(0.0))), tmax.min(clamp(quant(6.0)))),
        Activation::ReluN1To1 => (tmin.max(clamp(quant(-1.0))), tmax.min(clamp(quant(1.0)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frexp_matches_the_definition() {
        assert_eq!(frexp(1.0), (0.5, 1));
        assert_eq!(frexp(0.75), (0.75, 0));
        assert_eq!(frexp(3.0), (0.75, 2));
        let tiny = f64::from_bits(1); // smallest subnormal, 2^-1074
        assert_eq!(frexp(tiny), (0.5, -1073));
    }
}
