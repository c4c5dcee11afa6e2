//! The [`Pass`] trait, the per-rule [`PassReport`] and the [`PassManager`]
//! that runs a pipeline of passes.

use crate::config::QuantizeConfig;
use crate::error::PassError;
use quant_core::Graph;
use std::collections::BTreeMap;

/// One rewrite pass over a graph. A pass rewrites in place and reports
/// every rule it applied; running it again on its own output applies nothing.
pub trait Pass {
    /// The pass's stable name (`fold_batch_norms`).
    fn name(&self) -> &'static str;

    /// Rewrites `graph` in place.
    fn run(&self, graph: &mut Graph, config: &QuantizeConfig) -> Result<PassReport, PassError>;
}

/// One application of a rewrite rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedRule {
    /// The pass that applied it.
    pub pass: &'static str,
    /// The rule's name.
    pub rule: &'static str,
    /// The node the rule was rooted at.
    pub node: String,
}

/// A rule that matched a node's op type but whose preconditions failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRule {
    /// The pass.
    pub pass: &'static str,
    /// The rule's name.
    pub rule: &'static str,
    /// The candidate node.
    pub node: String,
    /// The failed precondition.
    pub reason: String,
}

/// Why a fake quant was inserted (reference semantics §3.3, §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuantizerRole {
    /// A layer's weights (`C/weights_quant`).
    Weights,
    /// A layer's activation (`A/act_quant`).
    Activation,
    /// The bias add before a bypass (`C/conv_quant`).
    BiasAdd,
    /// A bypass add not followed by an activation (`A/add_quant`).
    Bypass,
    /// An add after an activation (`post_activation_bypass_quant`).
    PostActivationBypass,
    /// An `Add`/`Mul` between quantized tensors (`activation_<Op>_quant`).
    Intermediate,
}

impl QuantizerRole {
    /// The role's stable name: `weights`, `activation`, `bias_add`,
    /// `bypass`, `post_activation_bypass` or `intermediate`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantizerRole::Weights => "weights",
            QuantizerRole::Activation => "activation",
            QuantizerRole::BiasAdd => "bias_add",
            QuantizerRole::Bypass => "bypass",
            QuantizerRole::PostActivationBypass => "post_activation_bypass",
            QuantizerRole::Intermediate => "intermediate",
        }
    }
}

impl std::fmt::Display for QuantizerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fake-quant op inserted by a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsertedQuantizer {
    /// The fake-quant node (`conv1/weights_quant/FakeQuantWithMinMaxVars`).
    pub node: String,
    /// Why it was inserted.
    pub role: QuantizerRole,
    /// `num_bits`.
    pub num_bits: u32,
    /// `narrow_range`.
    pub narrow_range: bool,
    /// Whether training-time ranges are symmetric (§4.1).
    pub symmetric: bool,
    /// Whether it is a `FakeQuantWithMinMaxVarsPerChannel`.
    pub per_channel: bool,
}

/// What a pass (or a pipeline) did, in the order it did it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Every applied rule, in application order.
    pub applied: Vec<AppliedRule>,
    /// Candidates the rules declined, in visiting order.
    pub skipped: Vec<SkippedRule>,
    /// Every fake quant inserted, in insertion order.
    pub quantizers: Vec<InsertedQuantizer>,
}

impl PassReport {
    /// An empty report.
    pub fn new() -> PassReport {
        PassReport::default()
    }

    /// Records an application of `rule` of `pass` at `node`.
    pub fn applied(&mut self, pass: &'static str, rule: &'static str, node: impl Into<String>) {
        self.applied.push(AppliedRule {
            pass,
            rule,
            node: node.into(),
        });
    }

    /// Records that `rule` declined `node` because of `reason`.
    pub fn skipped(
        &mut self,
        pass: &'static str,
        rule: &'static str,
        node: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.skipped.push(SkippedRule {
            pass,
            rule,
            node: node.into(),
            reason: reason.into(),
        });
    }

    /// How many times `rule` was applied.
    pub fn count(&self, rule: &str) -> usize {
        self.applied.iter().filter(|a| a.rule == rule).count()
    }

    /// Application counts per rule, sorted by rule name.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for a in &self.applied {
            *counts.entry(a.rule).or_insert(0) += 1;
        }
        counts
    }

    /// Whether no rule was applied.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }

    /// Appends `other` after this report.
    pub fn extend(&mut self, other: PassReport) {
        self.applied.extend(other.applied);
        self.skipped.extend(other.skipped);
        self.quantizers.extend(other.quantizers);
    }
}

/// Runs passes in order over one graph, validating the config first.
#[derive(Default)]
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
}

impl PassManager {
    /// An empty pipeline.
    pub fn new() -> PassManager {
        PassManager::default()
    }

    /// Appends `pass` to the pipeline.
    pub fn with(mut self, pass: impl Pass + 'static) -> PassManager {
        self.passes.push(Box::new(pass));
        self
    }

    /// The names of the passes, in order.
    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Validates `config`, then runs every pass in order, emitting a
    /// `tracing` debug event per applied rule. Stops at the first error.
    pub fn run(&self, graph: &mut Graph, config: &QuantizeConfig) -> Result<PassReport, PassError> {
        config.validate()?;
        let mut report = PassReport::new();
        for pass in &self.passes {
            let r = pass.run(graph, config)?;
            for a in &r.applied {
                tracing::debug!(pass = a.pass, rule = a.rule, node = %a.node, "applied rule");
            }
            for s in &r.skipped {
                tracing::trace!(pass = s.pass, rule = s.rule, node = %s.node, reason = %s.reason, "skipped rule");
            }
            report.extend(r);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant_core::NewNode;

    /// Adds one `NoOp` named after itself, once.
    struct AddNoOp(&'static str);

    impl Pass for AddNoOp {
        fn name(&self) -> &'static str {
            self.0
        }

        fn run(&self, graph: &mut Graph, _: &QuantizeConfig) -> Result<PassReport, PassError> {
            let mut report = PassReport::new();
            if graph.id(self.0).is_some() {
                report.skipped(self.0, "add_noop", self.0, "already there");
                return Ok(report);
            }
            graph
                .add_node(NewNode::new(self.0, "NoOp"))
                .map_err(|source| PassError::Graph {
                    pass: self.0,
                    node: self.0.into(),
                    source,
                })?;
            report.applied(self.0, "add_noop", self.0);
            Ok(report)
        }
    }

    #[test]
    fn the_manager_runs_passes_in_order_and_concatenates_reports() {
        let pm = PassManager::new().with(AddNoOp("a")).with(AddNoOp("b"));
        assert_eq!(pm.pass_names(), ["a", "b"]);
        let mut g = Graph::new();
        let report = pm.run(&mut g, &QuantizeConfig::eval()).unwrap();
        let applied: Vec<_> = report
            .applied
            .iter()
            .map(|a| (a.pass, a.node.as_str()))
            .collect();
        assert_eq!(applied, [("a", "a"), ("b", "b")]);
        assert_eq!(report.count("add_noop"), 2);
        assert_eq!(
            report.counts().into_iter().collect::<Vec<_>>(),
            [("add_noop", 2)]
        );
        let again = pm.run(&mut g, &QuantizeConfig::eval()).unwrap();
        assert!(again.is_empty());
        assert_eq!(again.skipped.len(), 2);
    }

    #[test]
    fn the_manager_refuses_an_invalid_config_before_running() {
        let pm = PassManager::new().with(AddNoOp("a"));
        let mut g = Graph::new();
        let config = QuantizeConfig {
            weight_bits: 1,
            ..QuantizeConfig::eval()
        };
        let err = pm.run(&mut g, &config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: weight_bits = 1 is out of range: bit widths must be in 2..=16"
        );
        assert!(g.is_empty());
    }
}
