//! Softmax and softmax cross-entropy over the last axis.

use ndarray::{Array1, Array2, ArrayD, ArrayView1, Axis, Ix2};
use rayon::prelude::*;

fn rows(x: &ArrayD<f32>) -> Result<ndarray::ArrayView2<'_, f32>, String> {
    let classes = *x
        .shape()
        .last()
        .ok_or("softmax needs at least one dimension")?;
    let batch = x.len().checked_div(classes).unwrap_or(0);
    x.view()
        .into_shape_with_order((batch, classes))
        .map_err(|e| e.to_string())?
        .into_dimensionality::<Ix2>()
        .map_err(|e| e.to_string())
}

/// Softmax of one row: `exp(x − max) / Σ exp(x − max)`, written into `out`.
/// Returns `ln Σ exp(x − max)` (for the cross-entropy).
fn softmax_row(x: ArrayView1<'_, f32>, out: &mut [f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (o, &v) in out.iter_mut().zip(x.iter()) {
        *o = (v - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
    sum.ln()
}

/// Softmax over the last axis.
pub fn softmax(x: &ArrayD<f32>) -> Result<ArrayD<f32>, String> {
    let view = rows(x)?;
    let classes = view.ncols();
    let mut out = vec![0.0f32; x.len()];
    if classes > 0 {
        out.par_chunks_mut(classes)
            .zip(view.axis_iter(Axis(0)).into_par_iter())
            .for_each(|(o, row)| {
                softmax_row(row, o);
            });
    }
    ArrayD::from_shape_vec(x.raw_dim(), out).map_err(|e| e.to_string())
}

/// `SparseSoftmaxCrossEntropyWithLogits(features [B, C], labels [B])`:
/// per-example loss `ln Σ exp(x) − x[label]` and its gradient
/// `softmax(x) − onehot(label)`. A label outside `0..C` is an error.
pub fn sparse_softmax_cross_entropy(
    features: &ArrayD<f32>,
    labels: &[i64],
) -> Result<(Array1<f32>, ArrayD<f32>), String> {
    let view = rows(features)?;
    let (batch, classes) = view.dim();
    if labels.len() != batch {
        return Err(format!("{} labels for a batch of {batch}", labels.len()));
    }
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| !(0..classes as i64).contains(*l))
    {
        return Err(format!(
            "label {l} of example {i} is outside the valid range [0, {classes})"
        ));
    }
    let mut backprop = Array2::<f32>::zeros((batch, classes));
    let mut loss = Array1::<f32>::zeros(batch);
    backprop
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(
            loss.as_slice_mut()
                .ok_or("loss is not contiguous")?
                .par_iter_mut(),
        )
        .enumerate()
        .for_each(|(i, (mut bp, l))| {
            let row = view.row(i);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let bp = bp
                .as_slice_mut()
                .unwrap_or_else(|| unreachable!("fresh arrays are contiguous"));
            let log_sum = softmax_row(row, bp);
            let label = labels[i] as usize;
            *l = log_sum - (row[label] - max);
            bp[label] -= 1.0;
        });
    Ok((loss, backprop.into_dyn()))
}

/// `SoftmaxCrossEntropyWithLogits(features [B, C], labels [B, C])`: loss
/// `−Σ labels · log_softmax(x)` and gradient `softmax(x)·Σ labels − labels`.
pub fn softmax_cross_entropy(
    features: &ArrayD<f32>,
    labels: &ArrayD<f32>,
) -> Result<(Array1<f32>, ArrayD<f32>), String> {
    if features.shape() != labels.shape() {
        return Err(format!(
            "features {:?} and labels {:?} differ in shape",
            features.shape(),
            labels.shape()
        ));
    }
    let view = rows(features)?;
    let lab = rows(labels)?;
    let (batch, classes) = view.dim();
    let mut backprop = Array2::<f32>::zeros((batch, classes));
    let mut loss = Array1::<f32>::zeros(batch);
    for i in 0..batch {
        let row = view.row(i);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut bp = backprop.row_mut(i);
        let bp = bp
            .as_slice_mut()
            .unwrap_or_else(|| unreachable!("fresh arrays are contiguous"));
        let log_sum = softmax_row(row, bp);
        let mut l = 0.0f32;
        let total: f32 = lab.row(i).sum();
        for j in 0..classes {
            l -= lab[[i, j]] * ((row[j] - max) - log_sum);
            bp[j] = bp[j] * total - lab[[i, j]];
        }
        loss[i] = l;
    }
    Ok((loss, backprop.into_dyn()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn softmax_rows_sum_to_one_and_xent_matches_the_definition() {
        let x = array![[1.0f32, 2.0, 3.0], [1000.0, 1000.0, 1000.0]].into_dyn();
        let s = softmax(&x).unwrap();
        for row in s.rows() {
            assert!((row.sum() - 1.0).abs() < 1e-6);
        }
        let (loss, bp) = sparse_softmax_cross_entropy(&x, &[2, 0]).unwrap();
        let expected0 = -(3.0f64.exp() / (1.0f64.exp() + 2.0f64.exp() + 3.0f64.exp())).ln();
        assert!((f64::from(loss[0]) - expected0).abs() < 1e-6);
        assert!((f64::from(loss[1]) - 3.0f64.ln()).abs() < 1e-6);
        assert!((bp[[1, 0]] - (1.0 / 3.0 - 1.0)).abs() < 1e-6);
        assert!(
            sparse_softmax_cross_entropy(&x, &[3, 0])
                .unwrap_err()
                .contains("label 3")
        );
        let onehot = array![[0.0f32, 0.0, 1.0], [1.0, 0.0, 0.0]].into_dyn();
        let (dense_loss, dense_bp) = softmax_cross_entropy(&x, &onehot).unwrap();
        assert!((dense_loss[0] - loss[0]).abs() < 1e-6);
        assert!(
            dense_bp
                .iter()
                .zip(bp.iter())
                .all(|(a, b)| (a - b).abs() < 1e-6)
        );
    }
}
