//! From fake-quant ranges to scales, zero points and integer levels.
//!
//! Decision 1 of the reference semantics: scales and zero points come from
//! the same float32 nudging the fake-quant kernel uses (§5.2), so a deployed
//! model computes on exactly the grid training simulated. This differs from
//! TensorFlow's converter, which nudges in double precision, at exact ties:
//! `[-1, 1]` with 8 bits gives a float32 zero point of 127.49999 and hence
//! 127 here, where the converter writes 128.
//!
//! Weight levels are computed with the fake-quant forward itself (§5.3b:
//! `k = floor((clamp(x) - nudged_min) / scale - quant_zero + 0.5)`, the
//! per-channel and `Args` variants multiplying by `inv_scale` instead of
//! dividing by `scale`), so that `(q - zero_point) · scale`, evaluated in
//! float32, is bit for bit the fake-quant output.
//!
//! Levels are unsigned (`quant_min..=quant_max`); the int8 storage of a
//! target is the level minus 128 (§7.1, §7.8).

use crate::target::Storage;
use quant_core::QuantParams;

/// A range nudged so that real 0 is a grid point (reference semantics §5.2),
/// with the constants the fake-quant forward uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Nudged {
    /// Smallest level: 1 with narrow range, else 0.
    pub quant_min: i64,
    /// Largest level, `2^bits − 1`.
    pub quant_max: i64,
    /// Step size `(max − min) / (quant_max − quant_min)` in float32.
    pub scale: f32,
    /// `(quant_max − quant_min) / (max − min)`, a division of its own.
    pub inv_scale: f32,
    /// The level of real 0, in `quant_min..=quant_max`.
    pub zero_point: i64,
    /// Lower end of the nudged range, `(quant_min − zero_point) · scale`.
    pub nudged_min: f32,
    /// Upper end of the nudged range, `(quant_max − zero_point) · scale`.
    pub nudged_max: f32,
    /// `floor(−nudged_min · inv_scale + 0.5)`, the zero point relative to
    /// `quant_min` as the kernel computes it.
    pub quant_zero: f32,
}

/// How the fake-quant forward turns a shifted value into steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// `FakeQuantWithMinMaxVars`: true float32 division by `scale`.
    Divide,
    /// `FakeQuantWithMinMaxVarsPerChannel` and `FakeQuantWithMinMaxArgs`:
    /// multiplication by `inv_scale`.
    Multiply,
}

/// TensorFlow's float32 nudging of `[min, max]` to `bits` bits (§5.2).
///
/// Meaningless unless `min < max` (the scale is not positive otherwise);
/// [`check_range`] says whether a range can be lowered.
pub fn nudge(min: f32, max: f32, bits: u32, narrow_range: bool) -> Nudged {
    let quant_min = i64::from(narrow_range);
    let quant_max = (1i64 << bits.min(62)) - 1;
    let (qmin_f, qmax_f) = (quant_min as f32, quant_max as f32);
    let scale = (max - min) / (qmax_f - qmin_f);
    let inv_scale = (qmax_f - qmin_f) / (max - min);
    let zp_f = qmin_f - min / scale;
    let zero_point = if zp_f < qmin_f {
        quant_min
    } else if zp_f > qmax_f {
        quant_max
    } else {
        zp_f.round() as i64
    };
    let nudged_min = (qmin_f - zero_point as f32) * scale;
    let nudged_max = (qmax_f - zero_point as f32) * scale;
    let quant_zero = (-nudged_min * inv_scale + 0.5).floor();
    Nudged {
        quant_min,
        quant_max,
        scale,
        inv_scale,
        zero_point,
        nudged_min,
        nudged_max,
        quant_zero,
    }
}

/// Why `[min, max]` cannot give a scale, if it cannot.
pub fn check_range(min: f32, max: f32) -> Result<(), String> {
    if !min.is_finite() || !max.is_finite() {
        Err(format!("the range [{min}, {max}] is not finite"))
    } else if min >= max {
        Err(format!(
            "the range [{min}, {max}] is empty (min must be smaller than max)"
        ))
    } else {
        Ok(())
    }
}

impl Nudged {
    /// The steps from the zero point the fake-quant forward puts `x` at;
    /// the fake-quant output is `steps · scale` in float32.
    pub fn steps(&self, x: f32, rounding: Rounding) -> i64 {
        let c = if self.nudged_max < x {
            self.nudged_max
        } else {
            x
        };
        let c = if c < self.nudged_min {
            self.nudged_min
        } else {
            c
        };
        let shifted = c - self.nudged_min;
        let scaled = match rounding {
            Rounding::Divide => shifted / self.scale,
            Rounding::Multiply => shifted * self.inv_scale,
        };
        (scaled - self.quant_zero + 0.5).floor() as i64
    }

    /// The level of `x`: `zero_point + steps`, clamped to the grid (the
    /// clamp never acts for a valid range; it guards the float edges).
    pub fn level(&self, x: f32, rounding: Rounding) -> i64 {
        (self.zero_point + self.steps(x, rounding)).clamp(self.quant_min, self.quant_max)
    }

    /// The zero point in `storage` (int8: level − 128).
    pub fn stored_zero_point(&self, storage: Storage) -> i64 {
        to_storage(self.zero_point, storage)
    }
}

/// A level in `storage`: unchanged for uint8, minus 128 for int8.
pub fn to_storage(level: i64, storage: Storage) -> i64 {
    match storage {
        Storage::U8 => level,
        Storage::I8 => level - 128,
    }
}

/// Per-tensor quantization parameters of a nudged range in `storage`.
pub fn tensor_params(n: &Nudged, storage: Storage) -> QuantParams {
    QuantParams {
        scales: vec![n.scale],
        zero_points: vec![n.stored_zero_point(storage)],
        axis: None,
    }
}

/// Quantization parameters of one or more nudged ranges: per tensor for
/// one, per channel along `axis` otherwise.
pub fn channel_params(grids: &[Nudged], storage: Storage, axis: usize) -> QuantParams {
    QuantParams {
        scales: grids.iter().map(|g| g.scale).collect(),
        zero_points: grids.iter().map(|g| g.stored_zero_point(storage)).collect(),
        axis: (grids.len() > 1).then_some(axis),
    }
}

/// Weights quantized on per-tensor or per-channel grids.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeights {
    /// One level per element, in the order of the float tensor.
    pub levels: Vec<i64>,
    /// One grid (per tensor) or one per channel (the last axis).
    pub grids: Vec<Nudged>,
}

/// Quantizes `x` (channel `i % C` for `C = mins.len()` grids, i.e. the last
/// axis) exactly as the fake-quant forward does.
///
/// Fails naming the channel whose range cannot be lowered.
pub fn quantize_weights(
    x: &[f32],
    mins: &[f32],
    maxs: &[f32],
    bits: u32,
    narrow_range: bool,
    rounding: Rounding,
) -> Result<QuantizedWeights, String> {
    let mut grids = Vec::with_capacity(mins.len());
    for (c, (&min, &max)) in mins.iter().zip(maxs).enumerate() {
        check_range(min, max).map_err(|e| {
            if mins.len() > 1 {
                format!("channel {c}: {e}")
            } else {
                e
            }
        })?;
        grids.push(nudge(min, max, bits, narrow_range));
    }
    if grids.is_empty() || !x.len().is_multiple_of(grids.len()) {
        return Err(format!(
            "{} weights do not split into {} channels",
            x.len(),
            grids.len()
        ));
    }
    let levels = x
        .iter()
        .enumerate()
        .map(|(i, &v)| grids[i % grids.len()].level(v, rounding))
        .collect();
    Ok(QuantizedWeights { levels, grids })
}

/// Rounds half away from zero to an int32, or `None` if it does not fit.
pub fn round_to_i32(x: f64) -> Option<i32> {
    let r = x.round();
    (r.is_finite() && r >= f64::from(i32::MIN) && r <= f64::from(i32::MAX)).then_some(r as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_examples_of_section_5_5() {
        // Row 1: [-1, 1], 8 bits wide: zero point 127 in float32.
        let n = nudge(-1.0, 1.0, 8, false);
        assert_eq!(n.zero_point, 127);
        assert_eq!(n.stored_zero_point(Storage::I8), -1);
        // Row 4: symmetric narrow weights, zero point 128 = int8 0, level 204.
        let n = nudge(-0.5, 0.5, 8, true);
        assert_eq!(n.zero_point, 128);
        assert_eq!(n.level(0.3, Rounding::Divide), 204);
        // Row 6: a range above 0 keeps its span: [0, 1.5].
        let n = nudge(0.5, 2.0, 8, false);
        assert_eq!((n.zero_point, n.nudged_max), (0, 1.5));
        assert_eq!(n.level(1.8, Rounding::Divide), 255);
        assert_eq!(n.level(1.0, Rounding::Divide), 170);
        // Row 7: 4 bits on [-0.4, 7.1]: zero point 1; 3.26 is 7 steps above 0 (3.5).
        let n = nudge(-0.4, 7.1, 4, false);
        assert_eq!(n.zero_point, 1);
        assert_eq!(n.steps(3.26, Rounding::Divide), 7);
    }

    #[test]
    fn degenerate_ranges_are_named() {
        assert!(check_range(0.0, 0.0).unwrap_err().contains("empty"));
        assert!(
            check_range(f32::NAN, 1.0)
                .unwrap_err()
                .contains("not finite")
        );
        let err = quantize_weights(
            &[0.0; 4],
            &[-1.0, 0.0],
            &[1.0, 0.0],
            8,
            true,
            Rounding::Multiply,
        )
        .unwrap_err();
        assert!(err.starts_with("channel 1:"), "{err}");
    }

    #[test]
    fn bias_rounding_is_half_away_and_checked() {
        assert_eq!(round_to_i32(2.5), Some(3));
        assert_eq!(round_to_i32(-2.5), Some(-3));
        assert_eq!(round_to_i32(3e9), None);
    }
}
