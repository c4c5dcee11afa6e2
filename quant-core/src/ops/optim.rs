//! Optimizer update ops (TensorFlow's `ApplyGradientDescent`,
//! `ApplyMomentum`, `ApplyAdam`). Input 0 is the variable, the slot
//! variables follow it; the executor writes the updated variable and slots
//! back to the store, and output 0 is the updated variable.
//!
//! The updates, as TensorFlow computes them:
//!
//! ```text
//! ApplyGradientDescent(var, alpha, delta):
//!     var -= alpha · delta
//! ApplyMomentum(var, accum, lr, grad, momentum):
//!     accum = accum · momentum + grad
//!     var -= lr · accum                                   (use_nesterov = false)
//!     var -= grad · lr + accum · momentum · lr            (use_nesterov = true)
//! ApplyAdam(var, m, v, beta1_power, beta2_power, lr, beta1, beta2, epsilon, grad):
//!     alpha = lr · √(1 − beta2_power) / (1 − beta1_power)
//!     m += (grad − m) · (1 − beta1)
//!     v += (grad² − v) · (1 − beta2)
//!     var -= m · alpha / (√v + epsilon)                   (use_nesterov = false)
//!     var -= (grad · (1 − beta1) + beta1 · m) · alpha / (√v + epsilon)   (true)
//! ```
//!
//! `lr`, `alpha`, `momentum`, the beta powers, `beta1`, `beta2` and
//! `epsilon` are scalars; every other input has the variable's shape.

use super::infer::InferCtx;
use super::{Arity, OpSpec};
use crate::graph::OutputFact;
use crate::shape::Shape;

/// Checks that inputs `like_var` have the variable's dtype and shape and
/// that inputs `scalars` are scalars of its dtype (where known), and
/// returns the variable's fact.
fn update(
    ctx: &InferCtx<'_>,
    like_var: &[usize],
    scalars: &[usize],
) -> Result<Vec<OutputFact>, String> {
    let var = ctx.input(0)?;
    for &i in like_var.iter().chain(scalars) {
        let fact = ctx.input(i)?;
        if let (Some(a), Some(b)) = (var.dtype, fact.dtype)
            && a != b
        {
            return Err(format!("input {i} is {b}, the variable is {a}"));
        }
    }
    for &i in like_var {
        if let (Some(a), Some(b)) = (&var.shape, ctx.shape(i)?)
            && !compatible(a, b)
        {
            return Err(format!(
                "input {i} has shape {b}, the variable has shape {a}"
            ));
        }
    }
    for &i in scalars {
        if let Some(s) = ctx.shape(i)?
            && s.rank() != 0
        {
            return Err(format!("input {i} must be a scalar, found shape {s}"));
        }
    }
    Ok(vec![var.clone()])
}

/// Whether two shapes can describe the same tensor (equal ranks, and equal
/// dimensions wherever both are known).
fn compatible(a: &Shape, b: &Shape) -> bool {
    a.rank() == b.rank()
        && a.dims()
            .iter()
            .zip(b.dims())
            .all(|(x, y)| x.is_none() || y.is_none() || x == y)
}

pub(super) fn specs() -> Vec<OpSpec> {
    vec![
        OpSpec::new("ApplyGradientDescent", Arity::Exact(3), 1, |ctx| {
            update(ctx, &[2], &[1])
        })
        .optional("use_locking", false),
        OpSpec::new("ApplyMomentum", Arity::Exact(5), 1, |ctx| {
            update(ctx, &[1, 3], &[2, 4])
        })
        .optional("use_locking", false)
        .optional("use_nesterov", false),
        OpSpec::new("ApplyAdam", Arity::Exact(10), 1, |ctx| {
            update(ctx, &[1, 2, 9], &[3, 4, 5, 6, 7, 8])
        })
        .optional("use_locking", false)
        .optional("use_nesterov", false),
    ]
}
