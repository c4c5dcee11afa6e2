//! The one configuration struct every pass reads (reference semantics §1.1).

use crate::error::ConfigError;

/// Options of the quantization rewrite, shared by all passes.
///
/// The defaults are those of `create_eval_graph`; [`QuantizeConfig::training`]
/// gives those of `create_training_graph`. Call [`QuantizeConfig::validate`]
/// (the [`PassManager`](crate::PassManager) does) before using a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantizeConfig {
    /// Training rewrite (true) or eval rewrite (false).
    pub is_training: bool,
    /// Bits of the weight quantizers, `2..=16`.
    pub weight_bits: u32,
    /// Bits of the activation quantizers, `2..=16`.
    pub activation_bits: u32,
    /// Symmetric training-time ranges (§4.1) for every quantizer.
    pub symmetric: bool,
    /// Symmetric ranges for the weight quantizers only (implied by
    /// `symmetric`). Targets whose weights have zero point 0, such as
    /// `tflite-int8`, set it.
    pub symmetric_weights: bool,
    /// Steps before quantization turns on; `None` or `Some(0)`: always on.
    pub quant_delay: Option<i64>,
    /// Step from which batch norms use their moving statistics (training only).
    pub freeze_bn_delay: Option<i64>,
    /// Only quantize ops under this name scope (batch-norm folding ignores it).
    pub scope: Option<String>,
    /// Per-channel weight quantization.
    pub per_channel: bool,
}

impl Default for QuantizeConfig {
    fn default() -> QuantizeConfig {
        QuantizeConfig::eval()
    }
}

impl QuantizeConfig {
    /// The defaults of `create_eval_graph`.
    pub fn eval() -> QuantizeConfig {
        QuantizeConfig {
            is_training: false,
            weight_bits: 8,
            activation_bits: 8,
            symmetric: false,
            symmetric_weights: false,
            quant_delay: None,
            freeze_bn_delay: None,
            scope: None,
            per_channel: false,
        }
    }

    /// The defaults of `create_training_graph` (`quant_delay = 0`).
    pub fn training() -> QuantizeConfig {
        QuantizeConfig {
            is_training: true,
            quant_delay: Some(0),
            ..QuantizeConfig::eval()
        }
    }

    /// Checks the options: bit widths in `2..=16`, no negative delays, and
    /// `freeze_bn_delay` only in training mode.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (which, bits) in [
            ("weight_bits", self.weight_bits),
            ("activation_bits", self.activation_bits),
        ] {
            if !(2..=16).contains(&bits) {
                return Err(ConfigError::Bits { which, bits });
            }
        }
        for (which, delay) in [
            ("quant_delay", self.quant_delay),
            ("freeze_bn_delay", self.freeze_bn_delay),
        ] {
            if let Some(value) = delay.filter(|v| *v < 0) {
                return Err(ConfigError::NegativeDelay { which, value });
            }
        }
        if let (false, Some(delay)) = (self.is_training, self.freeze_bn_delay) {
            return Err(ConfigError::FreezeWithoutTraining(delay));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        QuantizeConfig::eval().validate().unwrap();
        QuantizeConfig::training().validate().unwrap();
    }

    #[test]
    fn bits_outside_2_to_16_are_refused() {
        for bits in [0, 1, 17] {
            let c = QuantizeConfig {
                weight_bits: bits,
                ..QuantizeConfig::eval()
            };
            assert_eq!(
                c.validate(),
                Err(ConfigError::Bits {
                    which: "weight_bits",
                    bits
                })
            );
        }
        let c = QuantizeConfig {
            activation_bits: 1,
            ..QuantizeConfig::training()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::Bits {
                which: "activation_bits",
                bits: 1
            })
        );
        for bits in [2, 4, 16] {
            let c = QuantizeConfig {
                weight_bits: bits,
                activation_bits: bits,
                ..QuantizeConfig::eval()
            };
            assert_eq!(c.validate(), Ok(()));
        }
    }

    #[test]
    fn freeze_bn_delay_needs_training_mode() {
        let c = QuantizeConfig {
            freeze_bn_delay: Some(100),
            ..QuantizeConfig::eval()
        };
        assert_eq!(c.validate(), Err(ConfigError::FreezeWithoutTraining(100)));
        let c = QuantizeConfig {
            freeze_bn_delay: Some(100),
            ..QuantizeConfig::training()
        };
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn negative_delays_are_refused() {
        let c = QuantizeConfig {
            quant_delay: Some(-1),
            ..QuantizeConfig::eval()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::NegativeDelay {
                which: "quant_delay",
                value: -1
            })
        );
    }
}
