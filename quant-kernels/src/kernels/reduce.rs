//! Reductions over axes: Sum, Mean, Max, Min.

use ndarray::{ArrayD, Axis};

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Sum of the elements.
    Sum,
    /// Sum divided by the element count.
    Mean,
    /// Largest element.
    Max,
    /// Smallest element.
    Min,
}

/// Normalises axes (negative counts from the end) and removes duplicates.
pub fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out: Vec<usize> = axes
        .iter()
        .map(|&a| {
            let r = rank as i64;
            if a < -r || a >= r {
                Err(format!("axis {a} is out of range for rank {rank}"))
            } else {
                Ok(if a < 0 { (a + r) as usize } else { a as usize })
            }
        })
        .collect::<Result<_, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Reduces `x` over `axes` (already normalised), keeping reduced axes as size 1 when `keep_dims`.
pub fn reduce(x: &ArrayD<f32>, axes: &[usize], keep_dims: bool, kind: Reduction) -> ArrayD<f32> {
    let mut out = x.clone();
    let mut count = 1usize;
    for &axis in axes.iter().rev() {
        count *= x.shape()[axis];
        out = match kind {
            Reduction::Sum | Reduction::Mean => out.sum_axis(Axis(axis)),
            Reduction::Max => out.fold_axis(Axis(axis), f32::NEG_INFINITY, |a, &b| a.max(b)),
            Reduction::Min => out.fold_axis(Axis(axis), f32::INFINITY, |a, &b| a.min(b)),
        };
    }
    if kind == Reduction::Mean {
        let n = count as f32;
        out.mapv_inplace(|v| v / n);
    }
    if keep_dims {
        for &axis in axes {
            out.insert_axis_inplace(Axis(axis));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn reductions_over_several_axes() {
        let x = array![[[1.0f32, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]].into_dyn();
        let axes = normalize_axes(&[1, -1], 3).unwrap();
        assert_eq!(axes, [1, 2]);
        assert_eq!(
            reduce(&x, &axes, false, Reduction::Mean),
            array![2.5f32, 6.5].into_dyn()
        );
        assert_eq!(reduce(&x, &axes, true, Reduction::Max).shape(), &[2, 1, 1]);
        assert_eq!(
            reduce(&x, &[0], false, Reduction::Min),
            array![[1.0f32, 2.0], [3.0, 4.0]].into_dyn()
        );
        assert!(normalize_axes(&[3], 3).is_err());
    }
}
