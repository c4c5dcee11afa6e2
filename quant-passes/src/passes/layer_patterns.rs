//! The built-in layer patterns: the vocabulary of §3.1 and the four
//! matching stages of §3.2, as entries of the [`PatternRegistry`].
//!
//! Each stage is a code matcher ([`LayerPattern::from_fn`]): the stages read
//! more out of a match than a data pattern's roles can say (a post-activation
//! bypass, the statistics branch of a fused batch norm to skip, separable
//! convolutions whose second op is not folded), so they are written in Rust,
//! but they are registered, listed and ordered exactly like a plugin's
//! patterns.
//!
//! [`PatternRegistry`]: crate::patterns::PatternRegistry

use crate::patterns::{BUILTIN_PATTERNS, LayerCaptures, LayerPattern, is_weight_source};
use quant_core::matcher::{Match, Pattern, PatternBuilder, PatternId};
use quant_core::{Graph, OutletId};
use std::sync::{Arc, LazyLock};

/// The sub-patterns of §3.1 a match is read through.
#[derive(Clone, Copy)]
struct Vocab {
    weights: PatternId,
    w_folded: PatternId,
    layer: PatternId,
    bias_add: PatternId,
    folded_bias: PatternId,
    bypass: PatternId,
    activation: PatternId,
    post_bypass: PatternId,
    sep_conv: PatternId,
    final_bias: PatternId,
}

/// The weight sources of §3.1 and decision 5, added to `p`: returns the
/// alternative matching any of them and the `mul_fold` one among them.
fn weight_sources(p: &mut PatternBuilder) -> (PatternId, PatternId) {
    let var = p.op("Variable|VariableV2").id();
    let part_id = p.op("Identity").inputs([var]).id();
    let (c1, c2) = (p.any(), p.any());
    let part_concat = p.op("ConcatV2").inputs([part_id, c1, c2]).id();
    let ref_source = p.one_of([part_id, part_concat, var]);
    let w_ref = p.op("Identity").inputs([ref_source]).id();
    let w_res = p.op("ReadVariableOp").id();
    let w_var = p.op("Variable|VariableV2").id();
    let w_const = p.op("Const").id();
    let direct = p.one_of([w_ref, w_res, w_var, w_const]);
    // Training-form folding scales the weights twice: correction_mult, then mul_fold.
    let correction = p.any();
    let w_corrected = p.op("Mul").inputs([direct, correction]).unordered().id();
    let folded_source = p.one_of([direct, w_corrected]);
    let scale = p.any();
    let w_folded = p.op("Mul").inputs([folded_source, scale]).unordered().id();
    let weights = p.one_of([w_ref, w_res, w_var, w_const, w_folded]);
    (weights, w_folded)
}

/// Whether `w` is produced by a weight source (for the report of layers no
/// pattern matched).
pub(crate) fn is_weight_like(graph: &Graph, w: OutletId) -> bool {
    // Built once: a graph can have many unmatched layers.
    static PATTERN: LazyLock<Pattern> = LazyLock::new(|| {
        let mut p = PatternBuilder::new();
        let (weights, _) = weight_sources(&mut p);
        p.build(weights)
            .unwrap_or_else(|e| unreachable!("the weight pattern is well formed: {e}"))
    });
    PATTERN.match_node(graph, w.node).is_some() && is_weight_source(graph, w)
}

fn vocabulary() -> (PatternBuilder, Vocab) {
    let mut p = PatternBuilder::new();
    let (weights, w_folded) = weight_sources(&mut p);
    let input = p.any();
    let layer = p
        .op("Conv2D|MatMul|DepthwiseConv2dNative")
        .inputs([input, weights])
        .id();
    let (b1, b2) = (p.any(), p.any());
    let b2s = p.op("BatchToSpaceND").inputs([layer, b1, b2]).id();
    let lout = p.one_of([b2s, layer]);
    let sep_other = p.any();
    let sep_conv = p
        .op("Conv2D|MatMul|DepthwiseConv2dNative")
        .inputs([lout, sep_other])
        .id();
    let fm = p.any();
    let fold_mul = p.op("Mul").inputs([fm, lout]).unordered().id();
    let ca = p.any();
    let correction = p.op("Add|AddV2").inputs([fold_mul, ca]).unordered().id();
    let fa = p.any();
    let folded_bias = p.op("Add|AddV2").inputs([correction, fa]).unordered().id();
    let bn_identity = p.op("Identity").inputs([folded_bias]).id();
    let ba = p.any();
    let bias_add = p
        .op("Add|AddV2|BiasAdd")
        .inputs([lout, ba])
        .unordered()
        .id();
    let bypass_in = p.one_of([bias_add, folded_bias, bn_identity]);
    let by = p.any();
    let bypass = p.op("Add|AddV2").inputs([bypass_in, by]).unordered().id();
    let act_in = p.one_of([bias_add, folded_bias, bn_identity, bypass, layer]);
    let activation = p.op("Relu|Relu6|Identity").inputs([act_in]).id();
    let pb = p.any();
    let post_bypass = p.op("Add|AddV2").inputs([pb, activation]).unordered().id();
    let final_bias = p.one_of([bias_add, folded_bias]);
    let v = Vocab {
        weights,
        w_folded,
        layer,
        bias_add,
        folded_bias,
        bypass,
        activation,
        post_bypass,
        sep_conv,
        final_bias,
    };
    (p, v)
}

/// The matching stages of §3.2, largest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    PostBypass,
    Activation,
    FinalLayer,
    Separable,
}

impl Stage {
    const ALL: [Stage; 4] = [
        Stage::PostBypass,
        Stage::Activation,
        Stage::FinalLayer,
        Stage::Separable,
    ];

    /// The registry name.
    fn name(self) -> &'static str {
        BUILTIN_PATTERNS[self as usize]
    }

    /// One line for listings.
    fn description(self) -> &'static str {
        match self {
            Stage::PostBypass => {
                "layer → bias → [bypass] → Relu/Relu6/Identity → add (§3.2 stage 1)"
            }
            Stage::Activation => "layer → bias → [bypass] → Relu/Relu6/Identity (§3.2 stage 2)",
            Stage::FinalLayer => "layer → bias add, no activation (§3.2 stage 3)",
            Stage::Separable => "layer feeding a second layer op directly (§3.2 stage 4)",
        }
    }

    fn pattern(self) -> &'static (Pattern, Vocab) {
        static PATTERNS: LazyLock<Vec<(Pattern, Vocab)>> = LazyLock::new(|| {
            Stage::ALL
                .iter()
                .map(|&stage| {
                    let (p, v) = vocabulary();
                    let root = match stage {
                        Stage::PostBypass => v.post_bypass,
                        Stage::Activation => v.activation,
                        Stage::FinalLayer => v.final_bias,
                        Stage::Separable => v.sep_conv,
                    };
                    let pattern = p.build(root).unwrap_or_else(|e| {
                        unreachable!("the layer patterns are well formed: {e}")
                    });
                    (pattern, v)
                })
                .collect()
        });
        &PATTERNS[self as usize]
    }

    /// Every layer this stage matches in `graph`, in match order.
    fn find(self, graph: &Graph) -> Vec<LayerCaptures> {
        let (pattern, v) = self.pattern();
        pattern
            .match_graph(graph)
            .filter_map(|m| self.record(graph, v, &m))
            .collect()
    }

    fn record(self, graph: &Graph, v: &Vocab, m: &Match<'_>) -> Option<LayerCaptures> {
        let layer = m.node(v.layer)?;
        let weights = m.tensor(v.weights)?;
        if !is_weight_source(graph, weights) {
            return None;
        }
        let bias = m.node(v.bias_add).or_else(|| m.node(v.folded_bias));
        let captures = match self {
            Stage::PostBypass | Stage::Activation => {
                let activation = m.node(v.activation)?;
                if self == Stage::Activation {
                    // conv → Identity → fused BN: the statistics branch.
                    let node = graph.node(activation);
                    let consumers = graph.consumers(OutletId::new(activation, 0));
                    if node.op() == "Identity"
                        && node.outputs().len() == 1
                        && consumers.len() == 1
                        && matches!(
                            graph.node(consumers[0].node).op(),
                            "FusedBatchNorm" | "FusedBatchNormV3"
                        )
                    {
                        return None;
                    }
                }
                LayerCaptures {
                    layer,
                    weights,
                    activation,
                    bias,
                    bypass: m.node(v.bypass),
                    post_bypass: m.node(v.post_bypass),
                }
            }
            Stage::FinalLayer => LayerCaptures {
                layer,
                weights,
                activation: m.root(),
                bias,
                bypass: None,
                post_bypass: None,
            },
            Stage::Separable => {
                if m.node(v.w_folded).is_some() {
                    return None;
                }
                LayerCaptures {
                    layer,
                    weights,
                    activation: layer,
                    bias: None,
                    bypass: None,
                    post_bypass: None,
                }
            }
        };
        Some(captures)
    }
}

/// The four stages of §3.2 as registry entries, in the order they run.
pub(crate) fn builtin_patterns() -> Vec<LayerPattern> {
    Stage::ALL
        .iter()
        .map(|&stage| {
            LayerPattern::builtin(
                stage.name(),
                stage.description(),
                Arc::new(move |graph: &Graph| Ok(stage.find(graph))),
            )
        })
        .collect()
}
