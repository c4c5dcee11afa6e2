//! RESHAPE: the elements unchanged under a new shape, from the constant
//! shape input (or, without one, the declared output shape). A `-1` takes
//! the remaining elements; a shape without `-1` whose first dimension is the
//! declared batch follows the run-time batch.

use quant_core::integer::TensorIndex;

use super::op::{Ctx, Inputs, Kernel, OpResult, fail};
use super::value::Value;

/// A prepared RESHAPE.
pub(crate) struct Reshape {
    /// Where the shape came from (for errors).
    shape_t: TensorIndex,
    target: Vec<i64>,
    /// The declared batch of the input.
    declared_batch: Option<usize>,
}

impl Reshape {
    /// Validates the op and reads the target shape.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Reshape> {
        ctx.expect_inputs(1, 2)?;
        let (input, out) = (ctx.input(0)?, ctx.output()?);
        let (in_dtype, out_dtype) = (ctx.tensor(input).dtype, ctx.tensor(out).dtype);
        if in_dtype != out_dtype {
            return fail(Some(out), format!("must have the input's type {in_dtype}"));
        }
        let (shape_t, target) = match ctx.opt_input(1) {
            Some(t) => (
                t,
                ctx.const_i32(t)?
                    .into_iter()
                    .map(i64::from)
                    .collect::<Vec<_>>(),
            ),
            None => (
                out,
                ctx.tensor(out).shape.iter().map(|&d| d as i64).collect(),
            ),
        };
        if target.iter().filter(|&&d| d == -1).count() > 1 || target.iter().any(|&d| d < -1) {
            return fail(Some(shape_t), format!("invalid shape {target:?}"));
        }
        Ok(Reshape {
            shape_t,
            target,
            declared_batch: ctx.tensor(input).shape.first().copied(),
        })
    }

    /// The output shape for an input of `shape`.
    fn resolve(&self, shape: &[usize]) -> OpResult<Vec<usize>> {
        let total: usize = shape.iter().product();
        let known: usize = self
            .target
            .iter()
            .filter(|&&d| d >= 0)
            .map(|&d| d as usize)
            .product();
        let mut out: Vec<usize> = self.target.iter().map(|&d| d.max(0) as usize).collect();
        if let Some(i) = self.target.iter().position(|&d| d == -1) {
            if known == 0 || !total.is_multiple_of(known) {
                return fail(
                    Some(self.shape_t),
                    format!(
                        "cannot reshape {shape:?} ({total} elements) to {:?}",
                        self.target
                    ),
                );
            }
            out[i] = total / known;
            return Ok(out);
        }
        if known != total {
            // Follow a changed batch when the shape keeps the declared one.
            let batch = shape.first().copied();
            if let (Some(b), Some(d), Some(first)) = (batch, self.declared_batch, out.first_mut())
                && *first == d
                && d > 0
                && b != d
                && known / d * b == total
            {
                *first = b;
                return Ok(out);
            }
            return fail(
                Some(self.shape_t),
                format!(
                    "cannot reshape {shape:?} ({total} elements) to {:?}",
                    self.target
                ),
            );
        }
        Ok(out)
    }
}

impl Kernel for Reshape {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let x = inputs.get(0)?;
        Ok(Value {
            shape: self.resolve(&x.shape)?,
            buf: x.buf.clone(),
        })
    }
}
