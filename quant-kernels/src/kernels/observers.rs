//! Range observers: how a quantizer's `[min, max]` follows the data
//! during training (reference semantics §4).
//!
//! The rewrite builds these from ordinary ops (`Min`/`Max` reductions,
//! `Minimum`/`Maximum`, `Mul`, `Sub`, `Pow`, `RealDiv`, `Assign`,
//! `AssignAdd`, `AssignSub`), all of which the executor runs; the
//! functions here are the same arithmetic in plain Rust, in the same float32
//! order, and are what those subgraphs are tested against.

/// The range of a batch that always contains 0 (asymmetric quantizers):
/// `(min(bmin, 0), max(bmax, 0))`.
pub fn asymmetric_range(batch_min: f32, batch_max: f32) -> (f32, f32) {
    (batch_min.min(0.0), batch_max.max(0.0))
}

/// The ratio of the negative to the positive end of a symmetric range:
/// −1 with a narrow range, else `−(2^b − 2) / 2^b` (−127/128 at 8 bits),
/// so the zero point nudges to `2^(b−1)`.
pub fn symmetric_ratio(num_bits: u32, narrow_range: bool) -> f32 {
    if narrow_range {
        -1.0
    } else {
        let levels = (1u64 << num_bits) as f32;
        -(levels - 2.0) / levels
    }
}

/// The symmetric range of a batch: `(min(bmin, bmax/ρ), max(bmax, bmin·ρ))`.
pub fn symmetric_range(
    batch_min: f32,
    batch_max: f32,
    num_bits: u32,
    narrow_range: bool,
) -> (f32, f32) {
    let rho = symmetric_ratio(num_bits, narrow_range);
    (
        batch_min.min(batch_max / rho),
        batch_max.max(batch_min * rho),
    )
}

/// The state of one zero-debiased exponential moving average: the value
/// itself and its two shadow variables (`<prefix>/<prefix>/min/biased` and
/// `.../local_step` in the original's naming).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EmaState {
    /// The debiased average (the quantizer's `min` or `max` variable).
    pub value: f32,
    /// The biased running average, starting at 0.
    pub biased: f32,
    /// The number of updates, as a float, starting at 0.
    pub local_step: f32,
}

impl EmaState {
    /// One update with observation `x` and decay `d`, in TensorFlow's
    /// float32 order: `c = 1 − d`; `biased −= (biased − x)·c`;
    /// `local_step += 1`; `u = biased / (1 − (1 − c)^local_step)`;
    /// `value −= value − u`.
    pub fn update(self, x: f32, decay: f32) -> EmaState {
        let c = 1.0 - decay;
        let biased = self.biased - (self.biased - x) * c;
        let local_step = self.local_step + 1.0;
        let unbiased = biased / (1.0 - (1.0 - c).powf(local_step));
        EmaState {
            value: self.value - (self.value - unbiased),
            biased,
            local_step,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_section_4_1() {
        assert_eq!(asymmetric_range(0.5, 2.0), (0.0, 2.0));
        assert_eq!(asymmetric_range(-2.0, -0.5), (-2.0, 0.0));
        assert_eq!(symmetric_ratio(8, false), -0.9921875);
        // Row 9 of §5.5: batch range [−0.8, 0.5], symmetric, wide → [−0.8, 0.79375].
        assert_eq!(symmetric_range(-0.8, 0.5, 8, false), (-0.8, 0.79375));
        assert_eq!(symmetric_range(-0.3, 0.5, 8, true), (-0.5, 0.5));
    }

    #[test]
    fn ema_example_of_section_4_2() {
        let d = 0.999;
        let (mut lo, mut hi) = (EmaState::default(), EmaState::default());
        for (bmin, bmax) in [(-1.0, 1.0), (0.0, 0.0)] {
            lo = lo.update(bmin, d);
            hi = hi.update(bmax, d);
        }
        assert!((lo.value + 0.49975).abs() < 1e-5, "{lo:?}");
        assert!((hi.value - 0.49975).abs() < 1e-5, "{hi:?}");
        // After one step the debiased value is the first observation to ~1e-5.
        let one = EmaState::default().update(3.0, d);
        assert!((one.value - 3.0).abs() / 3.0 < 2e-5, "{one:?}");
        assert_eq!(one.local_step, 1.0);
    }
}
