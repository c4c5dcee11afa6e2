//! The exact int16 × int16 → int32 dot product behind the fast
//! FULLY_CONNECTED path (CONV_2D uses the packed [`gemm`](super::gemm)).
//!
//! # Design note
//!
//! Operands are offset-subtracted 8-bit levels (`q − Z`, within ±255)
//! widened to i16 and zero-padded to a multiple of [`LANES`], so every
//! kernel runs whole vectors. The AVX2 kernel multiplies with
//! `_mm256_madd_epi16` (16 products, summed in pairs into eight i32 lanes):
//! a pair sum is at most 2·255² and never saturates, unlike
//! `vpmaddubsw`'s i16 pairs. Lane sums wrap modulo 2^32 exactly like the
//! scalar wrapping accumulation, so both paths give identical integers.
//! Dispatch is at run time (`is_x86_feature_detected!`, cached by std).

/// Operands are padded to a multiple of this many elements.
pub(crate) const LANES: usize = 16;

/// `k` rounded up to a multiple of [`LANES`].
pub(crate) fn padded(k: usize) -> usize {
    k.div_ceil(LANES) * LANES
}

/// `Σ a[i]·b[i]` with wrapping i32 accumulation; `a.len() == b.len()`, a
/// multiple of [`LANES`].
pub(crate) fn dot(a: &[i16], b: &[i16]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    debug_assert_eq!(a.len() % LANES, 0);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// The portable kernel (also the definition the AVX2 one is tested against).
pub(crate) fn dot_portable(a: &[i16], b: &[i16]) -> i32 {
    a.iter().zip(b).fold(0i32, |s, (&x, &y)| {
        s.wrapping_add(i32::from(x) * i32::from(y))
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_avx2(a: &[i16], b: &[i16]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len()) / LANES * LANES;
    let mut acc0 = _mm256_setzero_si256();
    let mut acc1 = _mm256_setzero_si256();
    let mut i = 0;
    // SAFETY (loads): `i + 16 ≤ n ≤ len` for both slices; unaligned loads.
    while i + 2 * LANES <= n {
        unsafe {
            let x0 = _mm256_loadu_si256(a.as_ptr().add(i).cast());
            let y0 = _mm256_loadu_si256(b.as_ptr().add(i).cast());
            let x1 = _mm256_loadu_si256(a.as_ptr().add(i + LANES).cast());
            let y1 = _mm256_loadu_si256(b.as_ptr().add(i + LANES).cast());
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(x0, y0));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(x1, y1));
        }
        i += 2 * LANES;
    }
    if i + LANES <= n {
        unsafe {
            let x0 = _mm256_loadu_si256(a.as_ptr().add(i).cast());
            let y0 = _mm256_loadu_si256(b.as_ptr().add(i).cast());
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(x0, y0));
        }
    }
    let acc = _mm256_add_epi32(acc0, acc1);
    let lo = _mm256_castsi256_si128(acc);
    let hi = _mm256_extracti128_si256::<1>(acc);
    let s = _mm_add_epi32(lo, hi);
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift values in ±255 (extremes included).
    fn values(n: usize, seed: u64) -> Vec<i16> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match i % 7 {
                    0 => -255,
                    1 => 255,
                    _ => ((s >> 33) % 511) as i16 - 255,
                }
            })
            .collect()
    }

    #[test]
    fn dispatched_dot_equals_the_portable_one() {
        for (k, seed) in [
            (0, 1),
            (16, 2),
            (32, 3),
            (48, 4),
            (800, 5),
            (3136, 6),
            (1 << 16, 7),
        ] {
            let (a, b) = (values(k, seed), values(k, seed + 100));
            assert_eq!(dot(&a, &b), dot_portable(&a, &b), "k = {k}");
        }
        // Worst case: every product 255·255 (wraps past 2^31 for long vectors).
        let a = vec![255i16; 1 << 16];
        let expected = (65025i64 << 16) as i32;
        assert_eq!(dot(&a, &a), expected);
        assert_eq!(padded(25), 32);
        assert_eq!(padded(32), 32);
        assert_eq!(padded(0), 0);
    }
}
