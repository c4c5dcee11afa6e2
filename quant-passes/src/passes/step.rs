//! The quantization step counter shared by `quant_delay` and
//! `freeze_bn_delay` (reference semantics §3.7).

use quant_core::builder::GraphBuilder;
use quant_core::{Attrs, GraphError, OutletId, Tensor};

/// The step variable: an int64 scalar, initially 0, not trainable.
pub const STEP_VARIABLE: &str = "fake_quantization_step";
/// The step the graph computes with: the variable's value after this run's
/// increment (`fake_quantization_step/Identity:0`).
pub const STEP_TENSOR: &str = "fake_quantization_step/Identity";
const STEP_INCREMENT: &str = "fake_quantization_step/AssignAdd";

/// The step tensor, created on first request.
///
/// The first call adds, at the root scope:
///
/// ```text
/// fake_quantization_step            Variable int64, initial 0
/// fake_quantization_step/AssignAdd/value   Const int64 1
/// fake_quantization_step/AssignAdd  AssignAdd(variable, value)
/// fake_quantization_step/Identity   Identity(AssignAdd)
/// ```
///
/// and later calls return the same tensor without adding anything. The
/// executor runs the `AssignAdd` at most once per run, however many nodes
/// read the step, so the k-th run reads k (§3.7).
pub fn quantization_step(b: &mut GraphBuilder<'_>) -> Result<OutletId, GraphError> {
    if let Some(id) = b.graph().id(STEP_TENSOR) {
        return Ok(id.into());
    }
    let variable = b.variable(STEP_VARIABLE, Tensor::scalar(0i64), false)?;
    let one = b.constant(&format!("{STEP_INCREMENT}/value"), Tensor::scalar(1i64))?;
    let next = b.add("AssignAdd", STEP_INCREMENT, &[variable, one], Attrs::new())?;
    b.identity(STEP_TENSOR, next.into())
}
