//! PAD (§7.10.13): the stored integers are copied and the new elements get
//! the output zero point; no requantization (output parameters differing
//! from the input's are accepted and ignored, as by the kernels).

use quant_core::integer::TensorIndex;

use super::op::{Ctx, Inputs, Kernel, OpResult, expect_q, fail, numel, q_slice, q_value};
use super::value::{Q8, QType, Value, with_q8};

/// A prepared PAD.
pub(crate) struct Pad {
    input: TensorIndex,
    paddings_t: TensorIndex,
    qtype: QType,
    /// `(before, after)` per dimension.
    paddings: Vec<(usize, usize)>,
    out_zp: i32,
}

impl Pad {
    /// Validates the op and reads its paddings.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Pad> {
        ctx.expect_inputs(2, 2)?;
        let (input, paddings_t, out) = (ctx.input(0)?, ctx.input(1)?, ctx.output()?);
        let qtype = ctx.qtype(input)?;
        if ctx.qtype(out)? != qtype {
            return fail(Some(out), format!("must have the input's type {qtype:?}"));
        }
        let po = ctx.affine(out)?;
        let values = ctx.const_i32(paddings_t)?;
        if !values.len().is_multiple_of(2) {
            return fail(Some(paddings_t), "must have shape [rank, 2]");
        }
        let paddings = values
            .chunks_exact(2)
            .map(|p| match (usize::try_from(p[0]), usize::try_from(p[1])) {
                (Ok(a), Ok(b)) => Ok((a, b)),
                _ => fail(Some(paddings_t), format!("negative padding {p:?}")),
            })
            .collect::<OpResult<Vec<_>>>()?;
        Ok(Pad {
            input,
            paddings_t,
            qtype,
            paddings,
            out_zp: po.zero_point,
        })
    }

    fn run_typed<T: Q8>(&self, x: &Value) -> OpResult<Value> {
        let data = q_slice::<T>(x, self.input)?;
        let rank = x.shape.len();
        if self.paddings.len() != rank {
            return fail(
                Some(self.paddings_t),
                format!(
                    "has {} rows for an input of rank {rank}",
                    self.paddings.len()
                ),
            );
        }
        let shape: Vec<usize> = x
            .shape
            .iter()
            .zip(&self.paddings)
            .map(|(&d, &(a, b))| d + a + b)
            .collect();
        let total = numel(&shape, self.paddings_t)?;
        let mut out = vec![T::from_level(self.out_zp.clamp(T::QTYPE.min(), T::QTYPE.max())); total];
        if data.is_empty() || rank == 0 {
            if rank == 0 {
                out.copy_from_slice(data);
            }
            return Ok(q_value(shape, out));
        }
        // Output strides.
        let mut strides = vec![1usize; rank];
        for d in (0..rank - 1).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        let inner = x.shape[rank - 1];
        let mut index = vec![0usize; rank - 1];
        for row in data.chunks_exact(inner) {
            let mut o = self.paddings[rank - 1].0;
            for (d, &i) in index.iter().enumerate() {
                o += (i + self.paddings[d].0) * strides[d];
            }
            out[o..o + inner].copy_from_slice(row);
            for d in (0..rank - 1).rev() {
                index[d] += 1;
                if index[d] < x.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(q_value(shape, out))
    }
}

impl Kernel for Pad {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let x = inputs.get(0)?;
        expect_q(x, self.qtype, self.input)?;
        with_q8!(self.qtype, run_typed(self, x))
    }
}

fn run_typed<T: Q8>(op: &Pad, x: &Value) -> OpResult<Value> {
    op.run_typed::<T>(x)
}
