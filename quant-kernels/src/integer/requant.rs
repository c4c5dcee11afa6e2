//! Requantization of a block of int32 accumulators with per-channel
//! fixed-point multipliers: `clamp(MBQM(acc + bias[c], m[c], e[c]) + Z_out)`
//! (§7.4, §7.5), scalar and AVX2 with identical results.
//!
//! # Design note
//!
//! The AVX2 kernel handles eight channels per step: the left shift is
//! `vpsllvd` (wrapping, as the scalar i64-shift-then-truncate), SRDHM forms
//! the 64-bit products of even and odd lanes with `vpmuldq`, adds the
//! nudge and the round-toward-zero correction, and keeps the low 32 bits of
//! a logical 64-bit shift by 31 (equal to the arithmetic one there; the one
//! saturating case `a = b = INT32_MIN` cannot occur since multipliers are
//! non-negative). RDBPOT uses per-lane masks and `vpsravd`. The final
//! `+ Z_out` and clamp are done as `clamp(v, lo − Z, hi − Z) + Z`, which
//! equals the scalar's exact (i64) sum and clamp without overflow.

use super::fixed_point::mbqm;

/// Per-output-channel requantization parameters.
#[derive(Clone, Debug)]
pub(crate) struct Requant {
    /// Bias added to the accumulator.
    pub bias: Vec<i32>,
    /// Quantized multipliers (non-negative).
    pub multiplier: Vec<i32>,
    /// Shifts (`e` of QM, ≥ −31).
    pub shift: Vec<i32>,
    /// Output zero point.
    pub out_zp: i32,
    /// Clamp range (within the 8-bit type).
    pub act: (i32, i32),
}

impl Requant {
    /// The output level of one accumulator of channel `c`.
    #[inline]
    pub(crate) fn one(&self, acc: i32, c: usize) -> i32 {
        let v = mbqm(
            acc.wrapping_add(self.bias[c]),
            self.multiplier[c],
            self.shift[c],
        );
        (i64::from(v) + i64::from(self.out_zp)).clamp(i64::from(self.act.0), i64::from(self.act.1))
            as i32
    }

    /// Requantizes `acc` in place: consecutive groups of `channels`
    /// accumulators (one per channel, channel fastest).
    pub(crate) fn block(&self, acc: &mut [i32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was detected on this CPU.
                unsafe { self.block_avx2(acc) };
                return;
            }
        }
        self.block_scalar(acc);
    }

    /// The scalar definition of [`Requant::block`].
    pub(crate) fn block_scalar(&self, acc: &mut [i32]) {
        let channels = self.bias.len();
        for group in acc.chunks_mut(channels) {
            for (c, a) in group.iter_mut().enumerate() {
                *a = self.one(*a, c);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn block_avx2(&self, acc: &mut [i32]) {
        use std::arch::x86_64::*;
        let channels = self.bias.len();
        let full = channels / 8 * 8;
        let zero = _mm256_setzero_si256();
        let one = _mm256_set1_epi32(1);
        let zp = _mm256_set1_epi32(self.out_zp);
        let lo = _mm256_set1_epi32(self.act.0 - self.out_zp);
        let hi = _mm256_set1_epi32(self.act.1 - self.out_zp);
        let nudge_pos = _mm256_set1_epi64x(1 << 30);
        let nudge_neg = _mm256_set1_epi64x(1 - (1 << 30));
        let trunc = _mm256_set1_epi64x((1 << 31) - 1);
        // SRDHM of the even 32-bit lanes (as 64-bit products), result in
        // the low half of each 64-bit lane.
        let srdhm_even = |a: __m256i, b: __m256i| {
            let p = _mm256_mul_epi32(a, b);
            let neg = _mm256_cmpgt_epi64(zero, p);
            let q = _mm256_add_epi64(p, _mm256_blendv_epi8(nudge_pos, nudge_neg, neg));
            let qneg = _mm256_cmpgt_epi64(zero, q);
            _mm256_srli_epi64::<31>(_mm256_add_epi64(q, _mm256_and_si256(qneg, trunc)))
        };
        for group in acc.chunks_mut(channels) {
            let mut c = 0;
            while c < full {
                // SAFETY: `c + 8 ≤ full ≤ channels` = the length of `group`
                // and of every parameter vector; unaligned loads and stores.
                unsafe {
                    let x = _mm256_loadu_si256(group.as_ptr().add(c).cast());
                    let bias = _mm256_loadu_si256(self.bias.as_ptr().add(c).cast());
                    let m = _mm256_loadu_si256(self.multiplier.as_ptr().add(c).cast());
                    let e = _mm256_loadu_si256(self.shift.as_ptr().add(c).cast());
                    let left = _mm256_max_epi32(e, zero);
                    let right = _mm256_max_epi32(_mm256_sub_epi32(zero, e), zero);
                    let a = _mm256_sllv_epi32(_mm256_add_epi32(x, bias), left);
                    let even = srdhm_even(a, m);
                    let odd = srdhm_even(_mm256_srli_epi64::<32>(a), _mm256_srli_epi64::<32>(m));
                    let v = _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd));
                    // RDBPOT(v, right).
                    let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
                    let rem = _mm256_and_si256(v, mask);
                    let thr = _mm256_add_epi32(
                        _mm256_srli_epi32::<1>(mask),
                        _mm256_and_si256(_mm256_cmpgt_epi32(zero, v), one),
                    );
                    let r = _mm256_add_epi32(
                        _mm256_srav_epi32(v, right),
                        _mm256_and_si256(_mm256_cmpgt_epi32(rem, thr), one),
                    );
                    let y = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(r, lo), hi), zp);
                    _mm256_storeu_si256(group.as_mut_ptr().add(c).cast(), y);
                }
                c += 8;
            }
            for (c, a) in group.iter_mut().enumerate().skip(full) {
                *a = self.one(*a, c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integer::fixed_point::quantize_multiplier;

    #[test]
    fn vector_requantization_equals_the_scalar_one() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for channels in [1usize, 7, 8, 9, 16, 19, 32] {
            let reals = [
                1e-9,
                2f64.powi(-32),
                3e-5,
                0.00099999994,
                0.25,
                0.5,
                0.75,
                1.0,
                1.5,
                7.3,
                300.0,
            ];
            let (mut multiplier, mut shift) = (Vec::new(), Vec::new());
            for c in 0..channels {
                let (m, e) = quantize_multiplier(reals[(c + next() as usize) % reals.len()]);
                multiplier.push(m);
                shift.push(e);
            }
            let bias = (0..channels)
                .map(|_| (next() as i32) >> (next() % 32))
                .collect();
            let out_zp = (next() % 256) as i32 - 128;
            let r = Requant {
                bias,
                multiplier,
                shift,
                out_zp,
                act: (-128, 127),
            };
            let acc: Vec<i32> = (0..channels * 50)
                .map(|i| match i % 11 {
                    0 => i32::MIN,
                    1 => i32::MAX,
                    2 => -(1 << (next() % 31)),
                    3 => 1 << (next() % 31),
                    _ => (next() as i32) >> (next() % 32),
                })
                .collect();
            let (mut fast, mut slow) = (acc.clone(), acc);
            r.block(&mut fast);
            r.block_scalar(&mut slow);
            assert_eq!(fast, slow, "{channels} channels");
        }
    }
}
