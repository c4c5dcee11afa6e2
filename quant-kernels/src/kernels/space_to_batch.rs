//! `SpaceToBatchND` and `BatchToSpaceND`: the reshuffles TensorFlow wraps
//! around a layer to compute an atrous (dilated) convolution with an
//! undilated kernel.
//!
//! Both relate a *space* tensor `S` of shape `[N, s_1, …, s_M, R…]` and a
//! *batch* tensor `B` of shape `[N·P, t_1, …, t_M, R…]`, `P = Π block_k`,
//! `t_k·block_k = s_k + before_k + after_k`:
//!
//! ```text
//! B[o·N + n, j_1, …, j_M, r] = S[n, j_1·block_1 + o_1 − before_1, …, r]
//! ```
//!
//! where `o` is the row-major index of the block offsets `(o_1, …, o_M)`.
//! `SpaceToBatchND` pads (`before`, `after` = its `paddings`) and writes
//! zeros where the space position falls in the padding; `BatchToSpaceND`
//! crops (`before`, `after` = its `crops`) and drops those positions. Each
//! is the other's gradient (with paddings and crops swapped), and the
//! trailing dims `R` move as contiguous chunks.

use ndarray::{ArrayD, IxDyn};
use quant_core::{Element, Tensor, TensorData};

/// The two shapes of one space/batch correspondence.
struct Geometry {
    /// `N`, the space tensor's batch.
    batch: usize,
    block: Vec<usize>,
    /// `s_k`: the space tensor's spatial dims (unpadded, or cropped).
    space: Vec<usize>,
    /// `t_k`: the batch tensor's spatial dims.
    grid: Vec<usize>,
    /// Padding (or crop) at the start of each spatial dim.
    before: Vec<usize>,
    /// The trailing dims `R`.
    rest: Vec<usize>,
}

impl Geometry {
    fn chunk(&self) -> usize {
        self.rest.iter().product()
    }

    fn space_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch];
        s.extend(&self.space);
        s.extend(&self.rest);
        s
    }

    fn batch_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch * self.block.iter().product::<usize>()];
        s.extend(&self.grid);
        s.extend(&self.rest);
        s
    }

    /// Calls `f(batch_chunk, space_chunk)` for every chunk of `R` values of
    /// the batch tensor in row-major order, with the index of the
    /// corresponding chunk of the space tensor (`None` in the padding).
    fn for_each(&self, mut f: impl FnMut(usize, Option<usize>)) {
        let m = self.block.len();
        let cells: usize = self.grid.iter().product();
        let offsets: usize = self.block.iter().product();
        let mut o = vec![0usize; m];
        let mut j = vec![0usize; m];
        let mut index = 0;
        for offset in 0..offsets {
            // o: the row-major block offsets of `offset`.
            let mut rem = offset;
            for k in (0..m).rev() {
                o[k] = rem % self.block[k];
                rem /= self.block[k];
            }
            for n in 0..self.batch {
                j.fill(0);
                for _ in 0..cells {
                    let mut space = Some(n);
                    for k in 0..m {
                        let padded = j[k] * self.block[k] + o[k];
                        space = match space {
                            Some(s)
                                if padded >= self.before[k]
                                    && padded - self.before[k] < self.space[k] =>
                            {
                                Some(s * self.space[k] + padded - self.before[k])
                            }
                            _ => None,
                        };
                    }
                    f(index, space);
                    index += 1;
                    // Next grid cell, last dim fastest.
                    for k in (0..m).rev() {
                        j[k] += 1;
                        if j[k] < self.grid[k] {
                            break;
                        }
                        j[k] = 0;
                    }
                }
            }
        }
    }
}

/// A block shape with its margins (paddings or crops) per spatial dim.
struct Blocks {
    block: Vec<usize>,
    before: Vec<usize>,
    after: Vec<usize>,
}

/// Reads `block_shape` (M values ≥ 1) and an `[M, 2]` table of
/// non-negative `before, after` pairs for a rank-`rank` input.
fn block_and_margins(
    rank: usize,
    block_shape: &[i64],
    margins: &[i64],
    what: &str,
) -> Result<Blocks, String> {
    let m = block_shape.len();
    if m == 0 || m >= rank {
        return Err(format!(
            "block_shape has {m} values; it needs 1 to {} for a rank-{rank} input",
            rank.saturating_sub(1)
        ));
    }
    if block_shape.iter().any(|&b| b < 1) {
        return Err(format!("block_shape {block_shape:?} must be positive"));
    }
    if margins.len() != 2 * m || margins.iter().any(|&p| p < 0) {
        return Err(format!(
            "{what} {margins:?} must be {m}×2 non-negative values"
        ));
    }
    let usize_of = |v: &i64| usize::try_from(*v).unwrap_or_else(|_| unreachable!("checked ≥ 0"));
    let block = block_shape.iter().map(usize_of).collect();
    let before = margins.iter().step_by(2).map(usize_of).collect();
    let after = margins.iter().skip(1).step_by(2).map(usize_of).collect();
    Ok(Blocks {
        block,
        before,
        after,
    })
}

/// `SpaceToBatchND(x, block_shape, paddings)`: pads the `M` spatial dims
/// of `x` (`paddings` is `[M, 2]`, row-major) with zeros and moves each
/// block offset into the batch dimension. Any element type.
pub fn space_to_batch_nd(
    x: &Tensor,
    block_shape: &[i64],
    paddings: &[i64],
) -> Result<Tensor, String> {
    let shape = x.shape();
    let Blocks {
        block,
        before,
        after,
    } = block_and_margins(shape.len(), block_shape, paddings, "paddings")?;
    let m = block.len();
    let mut grid = Vec::with_capacity(m);
    for k in 0..m {
        let padded = shape[k + 1] + before[k] + after[k];
        if !padded.is_multiple_of(block[k]) {
            return Err(format!(
                "padded spatial dim {k} ({padded}) is not a multiple of block size {}",
                block[k]
            ));
        }
        grid.push(padded / block[k]);
    }
    let geometry = Geometry {
        batch: shape[0],
        space: shape[1..=m].to_vec(),
        rest: shape[m + 1..].to_vec(),
        block,
        grid,
        before,
    };
    Ok(reshuffle(x.data(), &geometry, Direction::ToBatch))
}

/// `BatchToSpaceND(x, block_shape, crops)`: moves the block offsets held
/// in the batch dimension of `x` back into the `M` spatial dims and crops
/// them (`crops` is `[M, 2]`, row-major). Any element type.
pub fn batch_to_space_nd(x: &Tensor, block_shape: &[i64], crops: &[i64]) -> Result<Tensor, String> {
    let shape = x.shape();
    let Blocks {
        block,
        before,
        after,
    } = block_and_margins(shape.len(), block_shape, crops, "crops")?;
    let m = block.len();
    let offsets: usize = block.iter().product();
    if !shape[0].is_multiple_of(offsets) {
        return Err(format!(
            "batch {} is not a multiple of the block size product {offsets}",
            shape[0]
        ));
    }
    let grid = shape[1..=m].to_vec();
    let mut space = Vec::with_capacity(m);
    for k in 0..m {
        let full = grid[k] * block[k];
        match full.checked_sub(before[k] + after[k]) {
            Some(s) => space.push(s),
            None => {
                return Err(format!(
                    "crops {} + {} exceed spatial dim {k} ({full} after un-batching)",
                    before[k], after[k]
                ));
            }
        }
    }
    let geometry = Geometry {
        batch: shape[0] / offsets,
        rest: shape[m + 1..].to_vec(),
        block,
        space,
        grid,
        before,
    };
    Ok(reshuffle(x.data(), &geometry, Direction::ToSpace))
}

/// Which way a reshuffle goes.
#[derive(Clone, Copy)]
enum Direction {
    /// Space tensor in, batch tensor out (`SpaceToBatchND`).
    ToBatch,
    /// Batch tensor in, space tensor out (`BatchToSpaceND`).
    ToSpace,
}

/// Runs `direction` over `x` of any element type.
fn reshuffle(data: &TensorData, g: &Geometry, direction: Direction) -> Tensor {
    match data {
        TensorData::F32(a) => Tensor::from_array(copy_chunks(a, g, direction)),
        TensorData::F64(a) => Tensor::from_array(copy_chunks(a, g, direction)),
        TensorData::I32(a) => Tensor::from_array(copy_chunks(a, g, direction)),
        TensorData::I64(a) => Tensor::from_array(copy_chunks(a, g, direction)),
        TensorData::U8(a) => Tensor::from_array(copy_chunks(a, g, direction)),
        TensorData::I8(a) => Tensor::from_array(copy_chunks(a, g, direction)),
        TensorData::Bool(a) => Tensor::from_array(copy_chunks(a, g, direction)),
    }
}

fn copy_chunks<T: Element + Default>(
    x: &ArrayD<T>,
    g: &Geometry,
    direction: Direction,
) -> ArrayD<T> {
    let x = x.as_standard_layout();
    let src = x
        .as_slice()
        .unwrap_or_else(|| unreachable!("a standard-layout array is contiguous"));
    let chunk = g.chunk();
    let out_shape = match direction {
        Direction::ToBatch => g.batch_shape(),
        Direction::ToSpace => g.space_shape(),
    };
    let mut out = vec![T::default(); out_shape.iter().product()];
    if chunk > 0 {
        g.for_each(|b, s| {
            let Some(s) = s else { return };
            let (from, to) = match direction {
                Direction::ToBatch => (s, b),
                Direction::ToSpace => (b, s),
            };
            out[to * chunk..(to + 1) * chunk]
                .copy_from_slice(&src[from * chunk..(from + 1) * chunk]);
        });
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), out)
        .unwrap_or_else(|e| unreachable!("the output holds its shape's element count: {e}"))
}
