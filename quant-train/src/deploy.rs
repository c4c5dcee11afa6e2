//! From a trained eval graph to an integer model, and the integer model's
//! accuracy.
//!
//! [`lower_session`] runs `quant_passes::lower::lower_to_integer` on the
//! graph a [`Session`] holds, evaluating the constant subgraphs it asks for
//! (folded weights and biases, trained ranges) with the session's
//! variables: that is how a checkpoint's trained values reach the integer
//! model. [`evaluate_integer`] measures the classification accuracy of the
//! result on the integer executor.

use crate::error::TrainError;
use crate::trainer::count_correct;
use quant_core::data::{BatchOptions, MnistSplit};
use quant_core::integer::IntModel;
use quant_core::{DType, OutletId};
use quant_kernels::integer::IntExecutor;
use quant_kernels::session::Session;
use quant_passes::Target;
use quant_passes::lower::{LowerOptions, lower_to_integer};

/// Lowers the eval graph held by `session` for `target`, reading weights,
/// biases and ranges from the session's variables.
pub fn lower_session(
    session: &mut Session,
    target: &Target,
    options: &LowerOptions,
) -> Result<IntModel, TrainError> {
    let graph = session.graph().clone();
    let mut values = |outlets: &[OutletId]| {
        let names: Vec<String> = outlets
            .iter()
            .map(|o| format!("{}:{}", graph.node(o.node).name(), o.slot))
            .collect();
        let fetches: Vec<&str> = names.iter().map(String::as_str).collect();
        session.run(&[], &fetches).map_err(|e| e.to_string())
    };
    Ok(lower_to_integer(&graph, target, options, &mut values)?)
}

/// The fraction of `data` that the integer model classifies correctly.
///
/// The model must take the images as its one float input (float I/O, as
/// [`LowerOptions`] builds by default) and give `[N, classes]` scores as
/// its first output, float or integer (the arg-max is the same either way).
pub fn evaluate_integer(
    executor: &IntExecutor,
    data: &MnistSplit,
    batch_size: usize,
) -> Result<f64, TrainError> {
    let options = BatchOptions {
        batch_size,
        shuffle: false,
        seed: 0,
        drop_last: false,
    };
    let (mut correct, mut seen) = (0usize, 0usize);
    for batch in data.batches(&options, 0)? {
        let outputs = executor.run(std::slice::from_ref(&batch.images))?;
        let scores = outputs.first().ok_or_else(|| TrainError::BadOutput {
            name: "integer model".into(),
            message: "the model has no outputs".into(),
        })?;
        let labels = crate::trainer::labels(&batch.labels)?;
        let scores = match scores.dtype() {
            DType::F32 => scores.clone(),
            _ => dequantized(scores)?,
        };
        correct += count_correct(&scores, &labels, "integer model output")?;
        seen += labels.len();
    }
    Ok(if seen == 0 {
        0.0
    } else {
        correct as f64 / seen as f64
    })
}

/// Integer scores as f32 (`q` itself: the arg-max does not need the scale).
fn dequantized(t: &quant_core::Tensor) -> Result<quant_core::Tensor, TrainError> {
    let values: Vec<f32> = t
        .to_i64_vec()
        .map_err(|e| TrainError::BadOutput {
            name: "integer model output".into(),
            message: e.to_string(),
        })?
        .into_iter()
        .map(|q| q as f32)
        .collect();
    quant_core::Tensor::from_vec(t.shape(), values).map_err(|e| TrainError::BadOutput {
        name: "integer model output".into(),
        message: e.to_string(),
    })
}
