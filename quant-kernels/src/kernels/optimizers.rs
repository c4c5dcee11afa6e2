//! Optimizer updates: TensorFlow's `ApplyGradientDescent`, `ApplyMomentum`
//! and `ApplyAdam` (formulas in `quant_core::ops`' optimizer module, and
//! below), on f32 tensors.
//!
//! Each update is written as TensorFlow's CPU kernel evaluates it, operation
//! by operation in the same order and without fused multiply-adds, so that
//! the results match TensorFlow's to the last bit wherever both round the
//! same way:
//!
//! ```text
//! gradient descent  var ← var − delta·alpha
//! momentum          accum ← accum·momentum + grad
//!                   var ← var − accum·lr                          (plain)
//!                   var ← var − (grad·lr + accum·momentum·lr)     (Nesterov)
//! Adam              alpha ← lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)
//!                   m ← m + (grad − m)·(1 − β₁)
//!                   v ← v + (grad² − v)·(1 − β₂)
//!                   var ← var − m·alpha / (√v + ε)                (plain)
//!                   var ← var − (grad·(1 − β₁) + β₁·m)·alpha / (√v + ε)  (Nesterov)
//! ```
//!
//! The tensor-level functions take the op's inputs in TensorFlow's order
//! and return the updated variable followed by its updated slots; the
//! element loops run in chunks on rayon's pool.

use quant_core::Tensor;
use rayon::prelude::*;

/// Elements per parallel chunk (updates are memory-bound: small chunks
/// would only add scheduling overhead).
const CHUNK: usize = 1 << 14;

/// `var ← var − delta·alpha`, elementwise.
pub fn gradient_descent_update(var: &mut [f32], alpha: f32, delta: &[f32]) {
    var.par_chunks_mut(CHUNK)
        .zip(delta.par_chunks(CHUNK))
        .for_each(|(var, delta)| {
            for (w, &d) in var.iter_mut().zip(delta) {
                *w -= d * alpha;
            }
        });
}

/// The momentum update of `var` and its accumulator, elementwise.
pub fn momentum_update(
    var: &mut [f32],
    accum: &mut [f32],
    lr: f32,
    grad: &[f32],
    momentum: f32,
    nesterov: bool,
) {
    var.par_chunks_mut(CHUNK)
        .zip(accum.par_chunks_mut(CHUNK))
        .zip(grad.par_chunks(CHUNK))
        .for_each(|((var, accum), grad)| {
            for ((w, a), &g) in var.iter_mut().zip(accum).zip(grad) {
                *a = *a * momentum + g;
                if nesterov {
                    *w -= g * lr + *a * momentum * lr;
                } else {
                    *w -= *a * lr;
                }
            }
        });
}

/// The scalar hyper-parameters of one Adam step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// β₁ᵗ, the first-moment decay to the power of the step (1-based).
    pub beta1_power: f32,
    /// β₂ᵗ.
    pub beta2_power: f32,
    /// The learning rate.
    pub lr: f32,
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub epsilon: f32,
    /// Whether to use the Nesterov form.
    pub nesterov: bool,
}

/// The Adam update of `var` and its moments `m` and `v`, elementwise.
pub fn adam_update(var: &mut [f32], m: &mut [f32], v: &mut [f32], grad: &[f32], step: &AdamStep) {
    let alpha = step.lr * (1.0 - step.beta2_power).sqrt() / (1.0 - step.beta1_power);
    let (beta1, one_minus_beta1, one_minus_beta2) =
        (step.beta1, 1.0 - step.beta1, 1.0 - step.beta2);
    let (epsilon, nesterov) = (step.epsilon, step.nesterov);
    var.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(grad.par_chunks(CHUNK))
        .for_each(|(((var, m), v), grad)| {
            for (((w, m), v), &g) in var.iter_mut().zip(m).zip(v).zip(grad) {
                *m += (g - *m) * one_minus_beta1;
                *v += (g * g - *v) * one_minus_beta2;
                let direction = if nesterov {
                    g * one_minus_beta1 + beta1 * *m
                } else {
                    *m
                };
                *w -= direction * alpha / (v.sqrt() + epsilon);
            }
        });
}

/// The f32 elements of input `i`, which must have the variable's shape.
fn like_var(inputs: &[&Tensor], i: usize, what: &str) -> Result<Vec<f32>, String> {
    let var = input(inputs, 0, "var")?;
    let t = input(inputs, i, what)?;
    if t.shape() != var.shape() {
        return Err(format!(
            "{what} (input {i}) has shape {:?}, the variable has shape {:?}",
            t.shape(),
            var.shape()
        ));
    }
    let a = t
        .array::<f32>()
        .map_err(|e| format!("{what} (input {i}): {e}"))?;
    Ok(a.iter().copied().collect())
}

/// The value of scalar input `i`.
fn scalar(inputs: &[&Tensor], i: usize, what: &str) -> Result<f32, String> {
    let t = input(inputs, i, what)?;
    if !t.shape().is_empty() {
        return Err(format!(
            "{what} (input {i}) must be a scalar, found shape {:?}",
            t.shape()
        ));
    }
    let a = t
        .array::<f32>()
        .map_err(|e| format!("{what} (input {i}): {e}"))?;
    a.iter()
        .next()
        .copied()
        .ok_or_else(|| format!("{what} (input {i}) is empty"))
}

fn input<'t>(inputs: &[&'t Tensor], i: usize, what: &str) -> Result<&'t Tensor, String> {
    inputs
        .get(i)
        .copied()
        .ok_or_else(|| format!("missing input {i} ({what})"))
}

/// A tensor of the variable's shape holding `values`.
fn shaped(inputs: &[&Tensor], values: Vec<f32>) -> Result<Tensor, String> {
    Tensor::from_vec(inputs[0].shape(), values).map_err(|e| e.to_string())
}

/// `ApplyGradientDescent(var, alpha, delta)`: returns `[var]` updated.
pub fn apply_gradient_descent(inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let mut var = like_var(inputs, 0, "var")?;
    let alpha = scalar(inputs, 1, "alpha")?;
    let delta = like_var(inputs, 2, "delta")?;
    gradient_descent_update(&mut var, alpha, &delta);
    Ok(vec![shaped(inputs, var)?])
}

/// `ApplyMomentum(var, accum, lr, grad, momentum)`: returns `[var, accum]`
/// updated.
pub fn apply_momentum(inputs: &[&Tensor], nesterov: bool) -> Result<Vec<Tensor>, String> {
    let mut var = like_var(inputs, 0, "var")?;
    let mut accum = like_var(inputs, 1, "accum")?;
    let lr = scalar(inputs, 2, "lr")?;
    let grad = like_var(inputs, 3, "grad")?;
    let momentum = scalar(inputs, 4, "momentum")?;
    momentum_update(&mut var, &mut accum, lr, &grad, momentum, nesterov);
    Ok(vec![shaped(inputs, var)?, shaped(inputs, accum)?])
}

/// `ApplyAdam(var, m, v, beta1_power, beta2_power, lr, beta1, beta2,
/// epsilon, grad)`: returns `[var, m, v]` updated.
pub fn apply_adam(inputs: &[&Tensor], nesterov: bool) -> Result<Vec<Tensor>, String> {
    let mut var = like_var(inputs, 0, "var")?;
    let mut m = like_var(inputs, 1, "m")?;
    let mut v = like_var(inputs, 2, "v")?;
    let step = AdamStep {
        beta1_power: scalar(inputs, 3, "beta1_power")?,
        beta2_power: scalar(inputs, 4, "beta2_power")?,
        lr: scalar(inputs, 5, "lr")?,
        beta1: scalar(inputs, 6, "beta1")?,
        beta2: scalar(inputs, 7, "beta2")?,
        epsilon: scalar(inputs, 8, "epsilon")?,
        nesterov,
    };
    let grad = like_var(inputs, 9, "grad")?;
    adam_update(&mut var, &mut m, &mut v, &grad, &step);
    Ok(vec![
        shaped(inputs, var)?,
        shaped(inputs, m)?,
        shaped(inputs, v)?,
    ])
}
