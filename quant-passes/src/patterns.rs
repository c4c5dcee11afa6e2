//! Layer patterns as data: the pattern registry the quantize pass reads.
//!
//! A [`LayerPattern`] is a [`quant_core::matcher::Pattern`] plus the roles
//! of its captures: which sub-pattern is the layer op, which one feeds it
//! its weights, which op's output is the activation to quantize, and
//! optionally the bias add and the bypass add. The quantize pass
//! ([`QuantizeWithPatterns`](crate::passes::quantize::QuantizeWithPatterns))
//! matches the registered patterns, in registration order, before its
//! built-in stages (§3.2), and quantizes each match exactly as a built-in
//! layer (§3.3): `C/weights_quant` on the weights, `A/act_quant` on the
//! activation, `C/conv_quant` on the bias when a bypass follows, and
//! `A/add_quant` on a bypass not followed by an activation.
//!
//! The built-in stages keep their own names ([`BUILTIN_PATTERNS`]); a plugin
//! pattern may not take one of them.

use quant_core::matcher::{Pattern, PatternId};
use thiserror::Error;

/// The names of the quantize pass's built-in layer stages (§3.2), in the
/// order they run (after any registered pattern).
pub const BUILTIN_PATTERNS: [&str; 4] = [
    "post_activation_bypass",
    "activation",
    "final_layer",
    "separable",
];

/// The names of the captures a [`LayerPattern`] reads its roles from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleNames {
    /// The layer op (its scope names the quantizers; its input 1 is the weights).
    pub layer: String,
    /// The op whose output is the layer's weights (must feed another pattern).
    pub weights: String,
    /// The op whose output gets the activation quantizer.
    pub activation: String,
    /// The bias add (quantized as `conv_quant` when a bypass follows).
    pub bias: Option<String>,
    /// The bypass add (`A/add_quant` when no activation follows it).
    pub bypass: Option<String>,
}

/// The sub-patterns a match is read through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// See [`RoleNames::layer`].
    pub layer: PatternId,
    /// See [`RoleNames::weights`].
    pub weights: PatternId,
    /// See [`RoleNames::activation`].
    pub activation: PatternId,
    /// See [`RoleNames::bias`].
    pub bias: Option<PatternId>,
    /// See [`RoleNames::bypass`].
    pub bypass: Option<PatternId>,
}

/// Errors building or registering a [`LayerPattern`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PatternRegistryError {
    /// A role names a capture the pattern does not have.
    #[error(
        "pattern `{pattern}`: role `{role}` names `{capture}`, which is not a named node of the pattern"
    )]
    UnknownCapture {
        /// The pattern.
        pattern: String,
        /// The role (`layer`, `weights`, ...).
        role: &'static str,
        /// The name it gave.
        capture: String,
    },
    /// The weights capture is the root, so no op reads it.
    #[error("pattern `{0}`: the weights capture cannot be the root pattern")]
    WeightsAtRoot(String),
    /// A second pattern tried to take a registered (or built-in) name.
    #[error("pattern `{0}` is already registered")]
    Duplicate(String),
    /// A pattern name is empty.
    #[error("a pattern name is empty")]
    EmptyName,
}

/// A layer pattern with the roles of its captures.
#[derive(Clone, Debug)]
pub struct LayerPattern {
    name: String,
    description: String,
    pattern: Pattern,
    roles: Roles,
}

impl LayerPattern {
    /// A layer pattern whose roles are the captures named in `roles`.
    pub fn new(
        name: &str,
        description: &str,
        pattern: Pattern,
        roles: &RoleNames,
    ) -> Result<LayerPattern, PatternRegistryError> {
        if name.is_empty() {
            return Err(PatternRegistryError::EmptyName);
        }
        let find = |role: &'static str, capture: &str| {
            pattern
                .find(capture)
                .ok_or_else(|| PatternRegistryError::UnknownCapture {
                    pattern: name.to_string(),
                    role,
                    capture: capture.to_string(),
                })
        };
        let roles = Roles {
            layer: find("layer", &roles.layer)?,
            weights: find("weights", &roles.weights)?,
            activation: find("activation", &roles.activation)?,
            bias: roles.bias.as_deref().map(|b| find("bias", b)).transpose()?,
            bypass: roles
                .bypass
                .as_deref()
                .map(|b| find("bypass", b))
                .transpose()?,
        };
        if roles.weights == pattern.root() {
            return Err(PatternRegistryError::WeightsAtRoot(name.to_string()));
        }
        Ok(LayerPattern {
            name: name.to_string(),
            description: description.to_string(),
            pattern,
            roles,
        })
    }

    /// The registry key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One line for listings.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The pattern tried on every node.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// The roles of its captures.
    pub fn roles(&self) -> Roles {
        self.roles
    }
}

/// The layer patterns the quantize pass matches before its built-in stages.
#[derive(Clone, Debug, Default)]
pub struct PatternRegistry {
    patterns: Vec<LayerPattern>,
}

impl PatternRegistry {
    /// An empty registry.
    pub fn new() -> PatternRegistry {
        PatternRegistry::default()
    }

    /// Adds a pattern; its name must be new and not one of [`BUILTIN_PATTERNS`].
    pub fn register(&mut self, pattern: LayerPattern) -> Result<(), PatternRegistryError> {
        if BUILTIN_PATTERNS.contains(&pattern.name.as_str()) || self.get(&pattern.name).is_some() {
            return Err(PatternRegistryError::Duplicate(pattern.name));
        }
        self.patterns.push(pattern);
        Ok(())
    }

    /// The pattern called `name`.
    pub fn get(&self, name: &str) -> Option<&LayerPattern> {
        self.patterns.iter().find(|p| p.name == name)
    }

    /// The registered patterns, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &LayerPattern> {
        self.patterns.iter()
    }

    /// Whether no pattern is registered.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant_core::matcher::PatternBuilder;

    fn dense_tanh() -> Pattern {
        let mut p = PatternBuilder::new();
        let w = p.op("Variable|Const").name("w").id();
        let x = p.any();
        let mm = p.op("MatMul").inputs([x, w]).name("mm").id();
        let b = p.any();
        let add = p.op("Add").inputs([mm, b]).unordered().name("add").id();
        let act = p.op("Tanh").inputs([add]).name("act").id();
        p.build(act).unwrap()
    }

    fn roles() -> RoleNames {
        RoleNames {
            layer: "mm".into(),
            weights: "w".into(),
            activation: "act".into(),
            bias: Some("add".into()),
            bypass: None,
        }
    }

    #[test]
    fn roles_must_name_captures_and_names_must_be_new() {
        let bad = RoleNames {
            bias: Some("bias".into()),
            ..roles()
        };
        assert_eq!(
            LayerPattern::new("t", "", dense_tanh(), &bad)
                .unwrap_err()
                .to_string(),
            "pattern `t`: role `bias` names `bias`, which is not a named node of the pattern"
        );
        let mut registry = PatternRegistry::new();
        registry
            .register(LayerPattern::new("t", "", dense_tanh(), &roles()).unwrap())
            .unwrap();
        for name in ["t", "final_layer"] {
            let again = LayerPattern::new(name, "", dense_tanh(), &roles()).unwrap();
            assert_eq!(
                registry.register(again),
                Err(PatternRegistryError::Duplicate(name.into()))
            );
        }
        let at_root = RoleNames {
            weights: "act".into(),
            ..roles()
        };
        assert_eq!(
            LayerPattern::new("r", "", dense_tanh(), &at_root).unwrap_err(),
            PatternRegistryError::WeightsAtRoot("r".into())
        );
    }
}
