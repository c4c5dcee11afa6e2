//! From a model to a training graph: loss head, step counter, gradients
//! and optimizer.

use crate::error::TrainError;
use quant_core::builder::GraphBuilder;
use quant_core::{Attrs, DType, Graph, OpRegistry, OutletId, Shape, Tensor};
use quant_passes::passes::gradients::{GradientOptions, gradients, trainable_variables};
use quant_passes::passes::optimizer::{
    OptimizerConfig, apply_gradients, learning_rate_placeholder,
};
use quant_passes::quantized_value;

/// The labels placeholder: int64 `[N]` class indices.
pub const LABELS: &str = "labels";
/// The per-example cross-entropy.
pub const CROSS_ENTROPY: &str = "loss/SparseSoftmaxCrossEntropyWithLogits";
/// The scalar loss: the batch mean of the cross-entropy.
pub const LOSS: &str = "loss/Mean";
/// The number of training steps taken: an int64 variable, incremented by
/// `global_step/AssignAdd` once per step. It positions the data and the
/// learning-rate schedule, so a restored checkpoint resumes exactly.
pub const GLOBAL_STEP: &str = "global_step";

/// A model with everything one training step runs.
#[derive(Clone, Debug)]
pub struct TrainingGraph {
    /// The graph.
    pub graph: Graph,
    /// The images placeholder.
    pub input: String,
    /// The logits tensor the loss reads: the fake quant of the named logits
    /// when the training rewrite quantized them.
    pub logits: String,
    /// The variables the optimizer updates, in graph order.
    pub trained: Vec<String>,
    /// What a training step fetches: [`LOSS`], the logits, then every
    /// update op (optimizer updates, batch-norm moving averages, the
    /// global step), in graph order.
    pub fetches: Vec<String>,
}

/// `name` for output 0, else `name:k`.
fn outlet_name(graph: &Graph, outlet: OutletId) -> String {
    let name = graph.node(outlet.node).name();
    match outlet.slot {
        0 => name.to_string(),
        k => format!("{name}:{k}"),
    }
}

/// Op types that write a variable.
fn is_update(op: &str) -> bool {
    matches!(op, "Assign" | "AssignAdd" | "AssignSub") || op.starts_with("Apply")
}

/// Adds, to a forward graph (float or after the training rewrite), a
/// sparse softmax cross-entropy loss on `logits` against [`LABELS`], the
/// [`GLOBAL_STEP`] counter, the gradients of the loss with respect to every
/// trainable variable (see `quant_passes::passes::gradients`), and the
/// optimizer's update ops fed by the `learning_rate` placeholder.
///
/// Update ops already in the graph with no consumers (the batch norms'
/// moving averages) are fetched by every step too.
pub fn training_graph(
    graph: Graph,
    input: &str,
    logits: &str,
    optimizer: &OptimizerConfig,
    options: &GradientOptions,
) -> Result<TrainingGraph, TrainError> {
    let missing = |what, name: &str| TrainError::Missing {
        what,
        name: name.to_string(),
    };
    graph.id(input).ok_or_else(|| missing("input", input))?;
    // After the training rewrite the model's output is the fake quant that
    // quantizes `logits`: train on it (so its range is learned too).
    let logits_out = quantized_value(
        &graph,
        graph
            .outlet(logits)
            .map_err(|_| missing("logits", logits))?,
    );
    let logits = &outlet_name(&graph, logits_out);

    let mut b = GraphBuilder::extend(graph, OpRegistry::builtin());
    let loss = (|| {
        let labels = b.placeholder(LABELS, DType::I64, Shape(vec![None]))?;
        let xent = b.add(
            "SparseSoftmaxCrossEntropyWithLogits",
            CROSS_ENTROPY,
            &[logits_out, labels],
            Attrs::new(),
        )?;
        let loss = b.mean(LOSS, xent.into(), &[0], false)?;
        let step = b.variable(GLOBAL_STEP, Tensor::scalar(0i64), false)?;
        let one = b.constant(
            &format!("{GLOBAL_STEP}/AssignAdd/value"),
            Tensor::scalar(1i64),
        )?;
        b.add(
            "AssignAdd",
            &format!("{GLOBAL_STEP}/AssignAdd"),
            &[step, one],
            Attrs::new(),
        )?;
        Ok::<OutletId, quant_core::GraphError>(loss)
    })();
    let mut graph = b.finish();
    let loss = loss?;

    let variables = trainable_variables(&graph, loss, options);
    if variables.is_empty() {
        return Err(TrainError::NothingToTrain { loss: LOSS.into() });
    }
    let xs: Vec<OutletId> = variables.iter().map(|&v| v.into()).collect();
    let grads = gradients(&mut graph, &[loss], &xs, options)?;
    let pairs: Vec<_> = variables
        .iter()
        .zip(grads)
        .filter_map(|(&v, g)| g.map(|g| (v, g)))
        .collect();
    let lr = learning_rate_placeholder(&mut graph)?;
    apply_gradients(&mut graph, optimizer, &pairs, lr)?;

    let trained = pairs
        .iter()
        .map(|&(v, _)| graph.node(v).name().to_string())
        .collect();
    let mut fetches = vec![LOSS.to_string(), logits.to_string()];
    fetches.extend(
        graph
            .nodes()
            .filter(|&(id, n)| is_update(n.op()) && !graph.has_consumers(id))
            .map(|(_, n)| n.name().to_string()),
    );
    Ok(TrainingGraph {
        graph,
        input: input.to_string(),
        logits: logits.to_string(),
        trained,
        fetches,
    })
}
