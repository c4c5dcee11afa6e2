//! The layer-pattern registry the quantize pass reads.
//!
//! A [`LayerPattern`] finds layers in a graph and says, for each, which op
//! is the layer, which tensor its weights, which op's output is the
//! activation to quantize, and optionally the bias add, the bypass add and
//! a post-activation bypass add ([`LayerCaptures`]). It is either data (a
//! [`quant_core::matcher::Pattern`] plus the [`Roles`] of its captures, as
//! plugin manifests declare them) or code (a [`MatchFn`]: quant's own
//! stages of §3.2, and the custom matchers of plugin libraries).
//!
//! [`PatternRegistry::builtin`] holds the four stages of §3.2 (the names in
//! [`BUILTIN_PATTERNS`]); [`PatternRegistry::register`] adds a pattern
//! before them, so registered patterns are tried first, in registration
//! order. The quantize pass ([`Quantize`](crate::passes::quantize::Quantize)
//! and [`QuantizeWithPatterns`](crate::passes::quantize::QuantizeWithPatterns))
//! tries every entry in order, matches a layer op at most once, and
//! quantizes each match as §3.3 says: `C/weights_quant` on the weights,
//! `A/act_quant` on the activation, `C/conv_quant` on the bias when a bypass
//! follows, `A/add_quant` on a bypass not followed by an activation, and a
//! post-activation bypass quantizer.

use crate::passes::layer_patterns::builtin_patterns;
use quant_core::matcher::{Pattern, PatternId};
use quant_core::{DType, Graph, NodeId, OutletId};
use std::sync::Arc;
use thiserror::Error;

/// The names of the built-in layer patterns (the stages of §3.2), in the
/// order they run (after any registered pattern).
pub const BUILTIN_PATTERNS: [&str; 4] = [
    "post_activation_bypass",
    "activation",
    "final_layer",
    "separable",
];

/// One layer a [`LayerPattern`] found, and the nodes §3.3 quantizes
/// around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerCaptures {
    /// The layer op: its scope names the quantizers.
    pub layer: NodeId,
    /// The layer's weights (`C/weights_quant` goes on them).
    pub weights: OutletId,
    /// The op whose output 0 gets `A/act_quant`.
    pub activation: NodeId,
    /// The bias add (`C/conv_quant` when a bypass follows).
    pub bias: Option<NodeId>,
    /// The bypass add before the activation (`A/add_quant` when no
    /// activation follows it).
    pub bypass: Option<NodeId>,
    /// An add reading the activation (`post_activation_bypass_quant`).
    pub post_bypass: Option<NodeId>,
}

/// A code matcher: every layer it finds in a graph, or a message saying
/// why it could not look.
pub type MatchFn = Arc<dyn Fn(&Graph) -> Result<Vec<LayerCaptures>, String> + Send + Sync>;

/// The names of the captures a data pattern reads its roles from.
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

/// The sub-patterns a match of a data pattern is read through.
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

/// How a [`LayerPattern`] finds layers.
#[derive(Clone)]
enum Matcher {
    /// A graph pattern and the roles of its captures.
    Data { pattern: Pattern, roles: Roles },
    /// A function.
    Code(MatchFn),
}

/// A named way of finding layers, with a description for listings.
#[derive(Clone)]
pub struct LayerPattern {
    name: String,
    description: String,
    matcher: Matcher,
    builtin: bool,
}

impl std::fmt::Debug for LayerPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.matcher {
            Matcher::Data { .. } => "data",
            Matcher::Code(_) => "code",
        };
        f.debug_struct("LayerPattern")
            .field("name", &self.name)
            .field("kind", &kind)
            .field("builtin", &self.builtin)
            .finish()
    }
}

impl LayerPattern {
    /// A data pattern whose roles are the captures named in `roles`.
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
            matcher: Matcher::Data { pattern, roles },
            builtin: false,
        })
    }

    /// A code pattern: `find` returns the layers of a graph.
    pub fn from_fn(
        name: &str,
        description: &str,
        find: MatchFn,
    ) -> Result<LayerPattern, PatternRegistryError> {
        if name.is_empty() {
            return Err(PatternRegistryError::EmptyName);
        }
        Ok(LayerPattern {
            name: name.to_string(),
            description: description.to_string(),
            matcher: Matcher::Code(find),
            builtin: false,
        })
    }

    /// One of quant's own stages.
    pub(crate) fn builtin(name: &str, description: &str, find: MatchFn) -> LayerPattern {
        LayerPattern {
            name: name.to_string(),
            description: description.to_string(),
            matcher: Matcher::Code(find),
            builtin: true,
        }
    }

    /// The registry key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One line for listings.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether it is one of quant's own stages of §3.2.
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// The graph pattern of a data pattern (`None` for code).
    pub fn pattern(&self) -> Option<&Pattern> {
        match &self.matcher {
            Matcher::Data { pattern, .. } => Some(pattern),
            Matcher::Code(_) => None,
        }
    }

    /// The roles of a data pattern's captures (`None` for code).
    pub fn roles(&self) -> Option<Roles> {
        match &self.matcher {
            Matcher::Data { roles, .. } => Some(*roles),
            Matcher::Code(_) => None,
        }
    }

    /// Every layer it finds in `graph`, in match order. A data pattern
    /// skips matches whose weights are not a weight source (decision 5); a
    /// code matcher's error is passed on.
    pub fn find(&self, graph: &Graph) -> Result<Vec<LayerCaptures>, String> {
        match &self.matcher {
            Matcher::Code(find) => find(graph),
            Matcher::Data { pattern, roles } => Ok(pattern
                .match_graph(graph)
                .filter_map(|m| {
                    let weights = m.tensor(roles.weights)?;
                    if !is_weight_source(graph, weights) {
                        return None;
                    }
                    Some(LayerCaptures {
                        layer: m.node(roles.layer)?,
                        weights,
                        activation: m.node(roles.activation)?,
                        bias: roles.bias.and_then(|b| m.node(b)),
                        bypass: roles.bypass.and_then(|b| m.node(b)),
                        post_bypass: None,
                    })
                })
                .collect()),
        }
    }
}

/// Whether `outlet` may be a layer's weights: anything but a `Const` that
/// is not float (decision 5: integer constants are shapes, not weights).
pub(crate) fn is_weight_source(graph: &Graph, outlet: OutletId) -> bool {
    let node = graph.node(outlet.node);
    match node.op() {
        "Const" => graph.fact(outlet).dtype == Some(DType::F32),
        _ => true,
    }
}

/// The layer patterns the quantize pass tries, in order: registered
/// patterns first, then the built-in stages of §3.2.
#[derive(Clone, Debug)]
pub struct PatternRegistry {
    patterns: Vec<LayerPattern>,
}

impl Default for PatternRegistry {
    /// The built-in stages.
    fn default() -> Self {
        PatternRegistry::builtin()
    }
}

impl PatternRegistry {
    /// The four stages of §3.2 ([`BUILTIN_PATTERNS`]).
    pub fn builtin() -> PatternRegistry {
        PatternRegistry {
            patterns: builtin_patterns(),
        }
    }

    /// Adds a pattern, tried after those registered before it and before
    /// the built-in stages; its name must be new.
    pub fn register(&mut self, pattern: LayerPattern) -> Result<(), PatternRegistryError> {
        if self.get(&pattern.name).is_some() {
            return Err(PatternRegistryError::Duplicate(pattern.name));
        }
        let at = self
            .patterns
            .iter()
            .position(LayerPattern::is_builtin)
            .unwrap_or(self.patterns.len());
        self.patterns.insert(at, pattern);
        Ok(())
    }

    /// The pattern called `name`.
    pub fn get(&self, name: &str) -> Option<&LayerPattern> {
        self.patterns.iter().find(|p| p.name == name)
    }

    /// Every pattern, in the order the quantize pass tries them.
    pub fn iter(&self) -> impl Iterator<Item = &LayerPattern> {
        self.patterns.iter()
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
        let mut registry = PatternRegistry::builtin();
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

    #[test]
    fn the_builtin_stages_are_entries_and_registered_patterns_run_before_them() {
        let builtin = PatternRegistry::builtin();
        let names: Vec<&str> = builtin.iter().map(LayerPattern::name).collect();
        assert_eq!(names, BUILTIN_PATTERNS);
        assert!(
            builtin
                .iter()
                .all(|p| p.is_builtin() && p.pattern().is_none())
        );
        let mut registry = builtin.clone();
        let code: MatchFn = Arc::new(|_: &Graph| Err("not today".to_string()));
        registry
            .register(LayerPattern::from_fn("code", "a code matcher", code).unwrap())
            .unwrap();
        registry
            .register(LayerPattern::new("data", "", dense_tanh(), &roles()).unwrap())
            .unwrap();
        let names: Vec<&str> = registry.iter().map(LayerPattern::name).collect();
        assert_eq!(names[..2], ["code", "data"]);
        assert_eq!(names[2..], BUILTIN_PATTERNS);
        let g = Graph::new();
        assert_eq!(
            registry.get("code").unwrap().find(&g),
            Err("not today".to_string())
        );
        assert_eq!(registry.get("data").unwrap().find(&g), Ok(Vec::new()));
    }
}
