//! The exact int16 GEMM behind the fast CONV_2D path: every im2col patch
//! (one row per output pixel) times every filter row, int32 sums.
//!
//! # Design note
//!
//! The filter is packed once (at prepare time) with output channels in the
//! vector lanes: for each group of eight channels and each pair of depth
//! positions `(2p, 2p + 1)`, eight i32 words each holding the two i16
//! weights of one channel. A patch pair `(x[2p], x[2p + 1])` is broadcast
//! as one i32 to all lanes and `_mm256_madd_epi16` gives
//! `x[2p]·w[c][2p] + x[2p+1]·w[c][2p+1]` for eight channels at once, so no
//! horizontal reduction is needed. Operands are offset-subtracted 8-bit
//! levels (within ±255): a pair sum is at most 2·255² and never saturates
//! (unlike `vpmaddubsw`). Lane sums wrap modulo 2^32 exactly like the
//! scalar wrapping accumulation, so every path gives identical integers.
//!
//! The AVX2 kernel is register-blocked: a tile of four pixels × sixteen
//! channels keeps eight accumulators in registers across the whole depth
//! (two weight loads and four broadcasts per eight multiply-adds); edge
//! tiles use one pixel or eight channels. Dispatch is at run time
//! (`is_x86_feature_detected!`, cached by std); [`gemm_portable`] is the
//! definition the vector kernel is tested against.

/// Output channels per vector (i32 lanes of a 256-bit register).
const LANES: usize = 8;

/// A filter `[outs, depth]` of i16 weights packed for [`gemm`].
#[derive(Clone, Debug)]
pub(crate) struct PackedFilter {
    outs: usize,
    pairs: usize,
    /// `[outs.div_ceil(8)][pairs]` vectors of eight words, each `w[c][2p]`
    /// in the low and `w[c][2p + 1]` in the high half (zero beyond `outs`
    /// and the depth).
    data: Vec<[i32; LANES]>,
}

impl PackedFilter {
    /// Packs row-major `weights` of `outs` rows of `depth` elements.
    pub(crate) fn new(weights: &[i16], outs: usize, depth: usize) -> PackedFilter {
        debug_assert_eq!(weights.len(), outs * depth);
        let pairs = depth.div_ceil(2);
        let mut data = vec![[0i32; LANES]; outs.div_ceil(LANES) * pairs];
        for (c, row) in weights.chunks_exact(depth.max(1)).take(outs).enumerate() {
            for (k, &w) in row.iter().enumerate() {
                let slot = &mut data[(c / LANES) * pairs + k / 2][c % LANES];
                let bits = u32::from(w as u16) << (16 * (k % 2));
                *slot = (*slot as u32 | bits) as i32;
            }
        }
        PackedFilter { outs, pairs, data }
    }

    /// The patch length [`gemm`] expects: the depth rounded up to even
    /// (the extra element must be 0).
    pub(crate) fn patch_len(&self) -> usize {
        2 * self.pairs
    }

    /// The weights of channel `c` at depth positions `2p` and `2p + 1`.
    fn pair(&self, c: usize, p: usize) -> (i32, i32) {
        let word = self.data[(c / LANES) * self.pairs + p][c % LANES];
        (i32::from(word as i16), word >> 16)
    }
}

/// `acc[i·outs + c] = Σ_k patches[i·kp + k] · w[c][k]` (wrapping i32) for
/// every pixel `i`, where `kp` = [`PackedFilter::patch_len`];
/// `patches.len() = n·kp`, `acc.len() = n·outs`.
pub(crate) fn gemm(filter: &PackedFilter, patches: &[i16], acc: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU.
            unsafe { avx2::gemm(filter, patches, acc) };
            return;
        }
    }
    gemm_portable(filter, patches, acc);
}

/// The portable kernel (the definition the AVX2 one is tested against).
pub(crate) fn gemm_portable(filter: &PackedFilter, patches: &[i16], acc: &mut [i32]) {
    let kp = filter.patch_len();
    if kp == 0 || filter.outs == 0 {
        acc.fill(0);
        return;
    }
    for (x, out) in patches
        .chunks_exact(kp)
        .zip(acc.chunks_exact_mut(filter.outs))
    {
        for (c, a) in out.iter_mut().enumerate() {
            *a = (0..filter.pairs).fold(0i32, |s, p| {
                let (w0, w1) = filter.pair(c, p);
                // At most 2·255² in magnitude: exact.
                s.wrapping_add(i32::from(x[2 * p]) * w0 + i32::from(x[2 * p + 1]) * w1)
            });
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{LANES, PackedFilter, gemm_portable};

    /// Pixels per full tile.
    const PIXELS: usize = 4;

    /// [`super::gemm`] with AVX2: full tiles of [`PIXELS`] pixels, then
    /// single pixels.
    #[target_feature(enable = "avx2")]
    pub(super) fn gemm(filter: &PackedFilter, patches: &[i16], acc: &mut [i32]) {
        let kp = filter.patch_len();
        if kp == 0 || filter.outs == 0 {
            return gemm_portable(filter, patches, acc);
        }
        let n = (patches.len() / kp).min(acc.len() / filter.outs);
        let mut px = 0;
        while px + PIXELS <= n {
            channel_tiles::<PIXELS>(filter, patches, acc, px);
            px += PIXELS;
        }
        for px in px..n {
            channel_tiles::<1>(filter, patches, acc, px);
        }
    }

    /// All channels of pixels `px..px + P`: two vectors (16 channels) per
    /// tile, then one.
    #[target_feature(enable = "avx2")]
    fn channel_tiles<const P: usize>(
        filter: &PackedFilter,
        patches: &[i16],
        acc: &mut [i32],
        px: usize,
    ) {
        let vectors = filter.outs.div_ceil(LANES);
        let mut v = 0;
        while v + 2 <= vectors {
            tile::<P, 2>(filter, patches, acc, px, v);
            v += 2;
        }
        if v < vectors {
            tile::<P, 1>(filter, patches, acc, px, v);
        }
    }

    /// Pixels `px..px + P` × channel vectors `v..v + C`: the accumulators
    /// stay in registers over the whole depth, then are stored (the
    /// channels beyond `outs` of the last vector are dropped).
    #[target_feature(enable = "avx2")]
    fn tile<const P: usize, const C: usize>(
        filter: &PackedFilter,
        patches: &[i16],
        acc: &mut [i32],
        px: usize,
        v: usize,
    ) {
        let (kp, pairs, outs) = (filter.patch_len(), filter.pairs, filter.outs);
        // Slices of exactly `pairs` elements: no bounds checks in the loop.
        let mut x: [&[[i16; 2]]; P] = [&[]; P];
        for (i, x) in x.iter_mut().enumerate() {
            *x = &patches[(px + i) * kp..][..kp].as_chunks::<2>().0[..pairs];
        }
        let mut w: [&[[i32; LANES]]; C] = [&[]; C];
        for (j, w) in w.iter_mut().enumerate() {
            *w = &filter.data[(v + j) * pairs..][..pairs];
        }
        let mut sum = [[_mm256_setzero_si256(); C]; P];
        let mut wv = [_mm256_setzero_si256(); C];
        for p in 0..pairs {
            for (wv, w) in wv.iter_mut().zip(&w) {
                // SAFETY: same size, every bit pattern is valid.
                *wv = unsafe { std::mem::transmute::<[i32; LANES], __m256i>(w[p]) };
            }
            for (row, x) in sum.iter_mut().zip(&x) {
                // The two i16 of the pair as one i32 (low half first).
                let [lo, hi] = x[p];
                let xb =
                    _mm256_set1_epi32((u32::from(lo as u16) | (u32::from(hi as u16) << 16)) as i32);
                for (s, &wv) in row.iter_mut().zip(&wv) {
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(xb, wv));
                }
            }
        }
        for (i, row) in sum.iter().enumerate() {
            for (j, &s) in row.iter().enumerate() {
                let c0 = (v + j) * LANES;
                let dst = &mut acc[(px + i) * outs + c0..][..LANES.min(outs - c0)];
                // SAFETY: same size, every bit pattern is valid.
                let lanes = unsafe { std::mem::transmute::<__m256i, [i32; LANES]>(s) };
                dst.copy_from_slice(&lanes[..dst.len()]);
            }
        }
    }
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
                match (i + (s >> 60) as usize) % 9 {
                    0 => -255,
                    1 => 255,
                    2 => 0,
                    _ => ((s >> 33) % 511) as i16 - 255,
                }
            })
            .collect()
    }

    /// The plain definition over unpacked rows.
    fn naive(weights: &[i16], outs: usize, depth: usize, x: &[i16], n: usize) -> Vec<i32> {
        let mut out = Vec::new();
        for i in 0..n {
            for c in 0..outs {
                out.push((0..depth).fold(0i32, |s, k| {
                    s.wrapping_add(i32::from(weights[c * depth + k]) * i32::from(x[i * depth + k]))
                }));
            }
        }
        out
    }

    #[test]
    fn packed_gemm_equals_the_plain_definition() {
        let mut seed = 1;
        for outs in [1usize, 7, 8, 9, 10, 16, 17, 24, 32, 33] {
            for depth in [1usize, 2, 3, 25, 26, 400, 401] {
                for n in [1usize, 3, 4, 5, 9] {
                    seed += 1;
                    let w = values(outs * depth, seed);
                    let x = values(n * depth, seed + 1000);
                    let f = PackedFilter::new(&w, outs, depth);
                    let kp = f.patch_len();
                    let mut patches = vec![0i16; n * kp];
                    for (dst, src) in patches.chunks_exact_mut(kp).zip(x.chunks_exact(depth)) {
                        dst[..depth].copy_from_slice(src);
                    }
                    let want = naive(&w, outs, depth, &x, n);
                    let mut slow = vec![7; n * outs];
                    gemm_portable(&f, &patches, &mut slow);
                    assert_eq!(slow, want, "portable {outs}×{depth}, {n} pixels");
                    let mut fast = vec![7; n * outs];
                    gemm(&f, &patches, &mut fast);
                    assert_eq!(fast, want, "dispatched {outs}×{depth}, {n} pixels");
                }
            }
        }
    }

    #[test]
    fn gemm_wraps_like_the_scalar_accumulation() {
        // Every product 255·255 over 2^16 + 2 positions: past 2^31.
        let depth = (1 << 16) + 2;
        let (w, x) = (vec![255i16; 2 * depth], vec![-255i16; 5 * depth]);
        let f = PackedFilter::new(&w, 2, depth);
        let want = (-65025i64 * depth as i64) as i32;
        let mut fast = vec![0; 10];
        gemm(&f, &x, &mut fast);
        assert_eq!(fast, vec![want; 10]);
    }
}
