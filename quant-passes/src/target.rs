//! Hardware targets: quantization schemes and what they can run.
//!
//! A [`Target`] says how a deployed model stores numbers (bits, symmetry,
//! per-channel weights, narrow range, the integer type), which integer ops
//! and fused activations it supports, and which exporter writes it. The
//! rewrite reads it to train with the scheme the hardware will use
//! ([`Target::training_options`]); `lower_to_integer` reads it to choose
//! scales, zero points and legal ops. The built-in targets
//! ([`Target::tflite_int8`], [`Target::tflite_uint8`]) are registered in
//! [`TargetRegistry::builtin`] exactly as plugin targets are.

use crate::api::{EvalOptions, TrainingOptions};
use quant_core::integer::Activation;
use std::collections::BTreeMap;
use thiserror::Error;

/// The integer type of a target's weights and activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    /// Unsigned 8-bit (levels 0..255), as in the paper and TF 1.x TFLite.
    U8,
    /// Signed 8-bit (levels −128..127), as in today's TFLite.
    I8,
}

/// A deployment scheme (architecture.md, "Targets describe schemes").
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Registry key, e.g. `tflite-int8`.
    pub name: String,
    /// One line for listings.
    pub description: String,
    /// Bits of the weights (`2..=16`).
    pub weight_bits: u32,
    /// Bits of the activations (`2..=16`).
    pub activation_bits: u32,
    /// Weights have zero point 0.
    pub symmetric_weights: bool,
    /// Activations have zero point 0.
    pub symmetric_activations: bool,
    /// One scale per output channel for conv, depthwise and fully-connected weights.
    pub per_channel_weights: bool,
    /// Weights avoid the lowest level (`[1, 2^b − 1]`, int8 `[−127, 127]`).
    pub narrow_range_weights: bool,
    /// The integer type weights and activations are stored in.
    pub storage: Storage,
    /// The integer ops it runs, by TFLite builtin name (`CONV_2D`, ...),
    /// and the plugin op types it runs as TFLite `CUSTOM` ops, by op type
    /// (`HardSwish`, see [`Target::supports_custom_op`]).
    pub ops: Vec<String>,
    /// The fused activations its kernels apply.
    pub fused_activations: Vec<Activation>,
    /// The exporter that writes it (`tflite-int8`, `tflite-uint8`, or one a
    /// plugin provides); `None` when nothing can write it yet.
    pub exporter: Option<String>,
}

/// The integer ops both built-in TFLite targets run.
const TFLITE_OPS: [&str; 15] = [
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "MUL",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "MEAN",
    "RESHAPE",
    "CONCATENATION",
    "SOFTMAX",
    "LOGISTIC",
    "PAD",
    "QUANTIZE",
    "DEQUANTIZE",
];

impl Target {
    /// `tflite-int8`: today's TFLite scheme. int8 weights, symmetric (zero
    /// point 0), narrow range, per channel; int8 asymmetric activations;
    /// int32 biases.
    pub fn tflite_int8() -> Target {
        Target {
            name: "tflite-int8".into(),
            description:
                "TFLite int8: per-channel symmetric int8 weights, asymmetric int8 activations"
                    .into(),
            weight_bits: 8,
            activation_bits: 8,
            symmetric_weights: true,
            symmetric_activations: false,
            per_channel_weights: true,
            narrow_range_weights: true,
            storage: Storage::I8,
            ops: TFLITE_OPS.iter().map(|s| s.to_string()).collect(),
            fused_activations: vec![
                Activation::None,
                Activation::Relu,
                Activation::ReluN1To1,
                Activation::Relu6,
            ],
            exporter: Some("tflite-int8".into()),
        }
    }

    /// `tflite-uint8`: the paper's scheme. uint8 weights and activations,
    /// per tensor, asymmetric; narrow-range weights; int32 biases.
    pub fn tflite_uint8() -> Target {
        Target {
            name: "tflite-uint8".into(),
            description: "TFLite uint8 (the paper's scheme): per-tensor asymmetric uint8".into(),
            symmetric_weights: false,
            per_channel_weights: false,
            storage: Storage::U8,
            exporter: Some("tflite-uint8".into()),
            ..Target::tflite_int8()
        }
    }

    /// The options of the training rewrite that simulate this target.
    pub fn training_options(&self) -> TrainingOptions {
        TrainingOptions {
            weight_bits: self.weight_bits,
            activation_bits: self.activation_bits,
            symmetric: self.symmetric_activations,
            symmetric_weights: self.symmetric_weights,
            per_channel: self.per_channel_weights,
            ..TrainingOptions::default()
        }
    }

    /// The options of the eval rewrite that simulate this target.
    pub fn eval_options(&self) -> EvalOptions {
        EvalOptions {
            weight_bits: self.weight_bits,
            activation_bits: self.activation_bits,
            symmetric: self.symmetric_activations,
            symmetric_weights: self.symmetric_weights,
            per_channel: self.per_channel_weights,
            ..EvalOptions::new()
        }
    }

    /// Whether the target runs the integer op with this TFLite name.
    pub fn supports_op(&self, tflite_name: &str) -> bool {
        self.ops.iter().any(|o| o == tflite_name)
    }

    /// Whether the target runs graph op type `op_type` (one with no
    /// builtin integer lowering, e.g. a plugin's `HardSwish`) as a TFLite
    /// `CUSTOM` op: it lists the op type itself in [`Target::ops`]. The
    /// built-in targets list none, so lowering for them refuses such ops.
    pub fn supports_custom_op(&self, op_type: &str) -> bool {
        self.supports_op(op_type)
    }
}

/// Errors of the [`TargetRegistry`].
#[derive(Debug, Error, PartialEq)]
pub enum TargetError {
    /// No target has this name.
    #[error("unknown target `{name}` (known: {})", known.join(", "))]
    Unknown {
        /// The requested name.
        name: String,
        /// The registered names.
        known: Vec<String>,
    },
    /// A second target tried to take a registered name.
    #[error("target `{0}` is already registered")]
    Duplicate(String),
    /// A target's description is inconsistent.
    #[error("target `{name}`: {problem}")]
    Invalid {
        /// The target.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

/// The targets quant knows, by name: the built-in ones and those plugins add.
#[derive(Clone, Debug, Default)]
pub struct TargetRegistry {
    targets: BTreeMap<String, Target>,
}

impl TargetRegistry {
    /// An empty registry.
    pub fn new() -> TargetRegistry {
        TargetRegistry::default()
    }

    /// The built-in targets, `tflite-int8` and `tflite-uint8`.
    pub fn builtin() -> TargetRegistry {
        let mut registry = TargetRegistry::new();
        for target in [Target::tflite_int8(), Target::tflite_uint8()] {
            registry
                .register(target)
                .expect("the built-in targets are valid and distinct");
        }
        registry
    }

    /// Adds a target after checking it: bits in `2..=16`, a non-empty name,
    /// no name taken.
    pub fn register(&mut self, target: Target) -> Result<(), TargetError> {
        let invalid = |problem: String| TargetError::Invalid {
            name: target.name.clone(),
            problem,
        };
        if target.name.is_empty() {
            return Err(invalid("the name is empty".into()));
        }
        for (which, bits) in [
            ("weight_bits", target.weight_bits),
            ("activation_bits", target.activation_bits),
        ] {
            if !(2..=16).contains(&bits) {
                return Err(invalid(format!(
                    "{which} = {bits} is out of range: bit widths must be in 2..=16"
                )));
            }
        }
        if self.targets.contains_key(&target.name) {
            return Err(TargetError::Duplicate(target.name));
        }
        self.targets.insert(target.name.clone(), target);
        Ok(())
    }

    /// The target called `name`.
    pub fn get(&self, name: &str) -> Result<&Target, TargetError> {
        self.targets.get(name).ok_or_else(|| TargetError::Unknown {
            name: name.to_string(),
            known: self.targets.keys().cloned().collect(),
        })
    }

    /// Every target, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Target> {
        self.targets.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_targets_are_registered_and_lookups_name_the_known_ones() {
        let registry = TargetRegistry::builtin();
        assert_eq!(registry.get("tflite-int8").unwrap().storage, Storage::I8);
        assert!(!registry.get("tflite-uint8").unwrap().per_channel_weights);
        let err = registry.get("edgetpu").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown target `edgetpu` (known: tflite-int8, tflite-uint8)"
        );
    }

    #[test]
    fn duplicates_and_bad_bits_are_refused() {
        let mut registry = TargetRegistry::builtin();
        assert_eq!(
            registry.register(Target::tflite_int8()),
            Err(TargetError::Duplicate("tflite-int8".into()))
        );
        let bad = Target {
            name: "w1".into(),
            weight_bits: 1,
            ..Target::tflite_int8()
        };
        assert_eq!(
            registry.register(bad).unwrap_err().to_string(),
            "target `w1`: weight_bits = 1 is out of range: bit widths must be in 2..=16"
        );
    }

    #[test]
    fn custom_ops_are_legal_only_where_the_target_lists_the_op_type() {
        let mut target = Target::tflite_int8();
        assert!(!target.supports_custom_op("HardSwish"));
        target.ops.push("HardSwish".into());
        assert!(target.supports_custom_op("HardSwish"));
        assert!(!target.supports_custom_op("Tanh"));
    }

    #[test]
    fn int8_trains_with_symmetric_per_channel_weights_and_asymmetric_activations() {
        let options = Target::tflite_int8().training_options();
        assert!(options.symmetric_weights && options.per_channel && !options.symmetric);
        let options = Target::tflite_uint8().eval_options();
        assert!(!options.symmetric_weights && !options.per_channel);
    }
}
