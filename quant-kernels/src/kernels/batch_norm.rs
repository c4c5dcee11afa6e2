//! Fused batch normalisation over the channel (last) axis, forward in
//! training and inference mode, and its gradient (TensorFlow's
//! `FusedBatchNormV3` / `FusedBatchNormGradV3`, NHWC).
//!
//! Channel statistics are accumulated in f64 and rounded once to f32.

use ndarray::{Array1, ArrayD, ArrayView2, Axis, Ix2};
use rayon::prelude::*;

/// The outputs of a forward pass.
#[derive(Clone, Debug)]
pub struct BatchNormOutput {
    /// The normalised output, shaped like the input.
    pub y: ArrayD<f32>,
    /// Output 1: the batch mean (training) or the given mean (inference),
    /// blended with the running mean when `exponential_avg_factor ≠ 1`.
    pub batch_mean: Array1<f32>,
    /// Output 2: the Bessel-corrected batch variance (training) or the given
    /// variance (inference), blended like `batch_mean`.
    pub batch_variance: Array1<f32>,
    /// Output 3: the mean used for normalisation (saved for the gradient).
    pub saved_mean: Array1<f32>,
    /// Output 4: the variance used for normalisation (biased, in training).
    pub saved_variance: Array1<f32>,
}

fn as_rows(x: &ArrayD<f32>) -> Result<ArrayView2<'_, f32>, String> {
    let c = *x.shape().last().ok_or("batch norm needs a channel axis")?;
    let rows = x.len().checked_div(c).unwrap_or(0);
    x.view()
        .into_shape_with_order((rows, c))
        .map_err(|e| e.to_string())?
        .into_dimensionality::<Ix2>()
        .map_err(|e| e.to_string())
}

/// Per-channel sums of `f(row, channel value)` over all rows, in f64, in
/// parallel over fixed chunks of 256 rows.
fn channel_sums(x: ArrayView2<'_, f32>, f: impl Fn(usize, usize, f32) -> f64 + Sync) -> Vec<f64> {
    let c = x.ncols();
    x.axis_chunks_iter(Axis(0), 256)
        .into_par_iter()
        .enumerate()
        .map(|(chunk, rows)| {
            let mut acc = vec![0.0f64; c];
            for (r, row) in rows.rows().into_iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    acc[j] += f(chunk * 256 + r, j, v);
                }
            }
            acc
        })
        .collect::<Vec<_>>()
        .into_iter()
        // Summed in chunk order, so the result never depends on thread timing.
        .fold(vec![0.0; c], |mut a, b| {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            a
        })
}

fn check_params(c: usize, params: &[(&str, &[f32])]) -> Result<(), String> {
    for (name, p) in params {
        if p.len() != c {
            return Err(format!("{name} has {} elements for {c} channels", p.len()));
        }
    }
    Ok(())
}

fn normalise(
    x: ArrayView2<'_, f32>,
    shape: &[usize],
    scale: &[f32],
    offset: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f32,
) -> Result<ArrayD<f32>, String> {
    let c = x.ncols();
    let inv: Vec<f32> = var.iter().map(|&v| 1.0 / (v + epsilon).sqrt()).collect();
    let mut y = vec![0.0f32; x.len()];
    if c > 0 {
        y.par_chunks_mut(c)
            .zip(x.axis_iter(Axis(0)).into_par_iter())
            .for_each(|(out, row)| {
                for j in 0..c {
                    out[j] = (row[j] - mean[j]) * inv[j] * scale[j] + offset[j];
                }
            });
    }
    ArrayD::from_shape_vec(shape, y).map_err(|e| e.to_string())
}

/// `FusedBatchNormV3` forward. In training mode the batch statistics are
/// computed over all but the last axis; in inference mode `mean` and
/// `variance` are used as given.
#[allow(clippy::too_many_arguments)]
pub fn fused_batch_norm(
    x: &ArrayD<f32>,
    scale: &[f32],
    offset: &[f32],
    mean: &[f32],
    variance: &[f32],
    epsilon: f32,
    exponential_avg_factor: f32,
    is_training: bool,
) -> Result<BatchNormOutput, String> {
    let rows = as_rows(x)?;
    let (n, c) = rows.dim();
    check_params(c, &[("scale", scale), ("offset", offset)])?;
    if !is_training {
        check_params(c, &[("mean", mean), ("variance", variance)])?;
        let y = normalise(rows, x.shape(), scale, offset, mean, variance, epsilon)?;
        let (m, v) = (Array1::from(mean.to_vec()), Array1::from(variance.to_vec()));
        return Ok(BatchNormOutput {
            y,
            batch_mean: m.clone(),
            batch_variance: v.clone(),
            saved_mean: m,
            saved_variance: v,
        });
    }
    let sums = channel_sums(rows, |_, _, v| f64::from(v));
    let mean_b: Vec<f64> = sums.iter().map(|s| s / n.max(1) as f64).collect();
    let sq = channel_sums(rows, |_, j, v| (f64::from(v) - mean_b[j]).powi(2));
    let var_b: Vec<f32> = sq.iter().map(|s| (s / n.max(1) as f64) as f32).collect();
    let mean_f: Vec<f32> = mean_b.iter().map(|&m| m as f32).collect();
    let y = normalise(rows, x.shape(), scale, offset, &mean_f, &var_b, epsilon)?;
    let bessel = if n > 1 {
        n as f32 / (n - 1) as f32
    } else {
        1.0
    };
    let corrected: Vec<f32> = var_b.iter().map(|v| v * bessel).collect();
    let f = exponential_avg_factor;
    let blend = |running: &[f32], batch: &[f32]| -> Array1<f32> {
        if f == 1.0 || running.len() != batch.len() {
            Array1::from(batch.to_vec())
        } else {
            batch
                .iter()
                .zip(running)
                .map(|(b, r)| (1.0 - f) * r + f * b)
                .collect()
        }
    };
    Ok(BatchNormOutput {
        y,
        batch_mean: blend(mean, &mean_f),
        batch_variance: blend(variance, &corrected),
        saved_mean: Array1::from(mean_f),
        saved_variance: Array1::from(var_b),
    })
}

/// `(dx, dscale, doffset)`.
pub type BatchNormGrads = (ArrayD<f32>, Array1<f32>, Array1<f32>);

/// The gradients of [`fused_batch_norm`]: `(dx, dscale, doffset)`, given the
/// upstream gradient, the input, the scale, and the mean and variance saved
/// by the forward pass (outputs 3 and 4).
pub fn fused_batch_norm_grad(
    dy: &ArrayD<f32>,
    x: &ArrayD<f32>,
    scale: &[f32],
    saved_mean: &[f32],
    saved_variance: &[f32],
    epsilon: f32,
    is_training: bool,
) -> Result<BatchNormGrads, String> {
    if dy.shape() != x.shape() {
        return Err(format!(
            "y_backprop {:?} and x {:?} differ in shape",
            dy.shape(),
            x.shape()
        ));
    }
    let (xr, dyr) = (as_rows(x)?, as_rows(dy)?);
    let (n, c) = xr.dim();
    check_params(
        c,
        &[
            ("scale", scale),
            ("mean", saved_mean),
            ("variance", saved_variance),
        ],
    )?;
    let inv: Vec<f64> = saved_variance
        .iter()
        .map(|&v| 1.0 / (f64::from(v) + f64::from(epsilon)).sqrt())
        .collect();
    let doffset = channel_sums(dyr, |_, _, g| f64::from(g));
    let dscale = channel_sums(dyr, |r, j, g| {
        f64::from(g) * (f64::from(xr[[r, j]]) - f64::from(saved_mean[j])) * inv[j]
    });
    let mut dx = vec![0.0f32; x.len()];
    if c > 0 {
        let nf = n as f64;
        dx.par_chunks_mut(c).enumerate().for_each(|(r, out)| {
            for j in 0..c {
                let g = f64::from(dyr[[r, j]]);
                let k = f64::from(scale[j]) * inv[j];
                out[j] = if is_training {
                    let xhat = (f64::from(xr[[r, j]]) - f64::from(saved_mean[j])) * inv[j];
                    (k * (g - doffset[j] / nf - xhat * dscale[j] / nf)) as f32
                } else {
                    (k * g) as f32
                };
            }
        });
    }
    let dx = ArrayD::from_shape_vec(x.shape(), dx).map_err(|e| e.to_string())?;
    let to32 = |v: Vec<f64>| v.into_iter().map(|s| s as f32).collect::<Array1<f32>>();
    Ok((dx, to32(dscale), to32(doffset)))
}
