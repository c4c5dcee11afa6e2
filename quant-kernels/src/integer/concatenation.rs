//! CONCATENATION (§7.10.12). int8: every input's parameters must equal the
//! output's and the op is a copy. uint8: inputs with the output's
//! parameters are copied, others rescaled per element in float32:
//! `k = float32(S_in·float32(1/S_out))`, `c = float32(−Z_in)·k`,
//! `q = clamp(RHA(float32(q·k) + c) + Z_out, 0, 255)` (no fused
//! multiply-add). The fused activation is ignored, as by the kernels.

use quant_core::integer::{IntOpKind, TensorIndex};

use super::op::{Ctx, Inputs, Kernel, OpResult, expect_q, fail, q_slice, q_value};
use super::value::{Q8, QType, Value, with_q8};

/// How one input is copied.
#[derive(Clone, Copy, Debug)]
enum Rescale {
    /// Same parameters: copy.
    Copy,
    /// uint8 rescale with `(k, c, Z_out)`.
    Affine(f32, f32, i32),
}

/// A prepared CONCATENATION.
pub(crate) struct Concat {
    inputs: Vec<TensorIndex>,
    qtype: QType,
    axis: i32,
    rescale: Vec<Rescale>,
}

impl Concat {
    /// Validates the op and precomputes the per-input rescaling.
    pub(crate) fn prepare(ctx: &Ctx) -> OpResult<Concat> {
        let IntOpKind::Concatenation { axis, .. } = ctx.op.kind else {
            return fail(None, "not a CONCATENATION");
        };
        ctx.expect_inputs(1, usize::MAX)?;
        let out = ctx.output()?;
        let qtype = ctx.qtype(out)?;
        let po = ctx.affine(out)?;
        let mut inputs = Vec::new();
        let mut rescale = Vec::new();
        for i in 0..ctx.op.inputs.len() {
            let t = ctx.input(i)?;
            if ctx.qtype(t)? != qtype {
                return fail(Some(t), format!("must have the output's type {qtype:?}"));
            }
            let pi = ctx.affine(t)?;
            let same = pi.scale == po.scale && pi.zero_point == po.zero_point;
            rescale.push(match (same, qtype) {
                (true, _) => Rescale::Copy,
                (false, QType::I8) => {
                    return fail(
                        Some(t),
                        "int8 CONCATENATION inputs need the output's scale and zero point",
                    );
                }
                (false, QType::U8) => {
                    let k = pi.scale * (1.0f32 / po.scale);
                    Rescale::Affine(k, (-pi.zero_point) as f32 * k, po.zero_point)
                }
            });
            inputs.push(t);
        }
        Ok(Concat {
            inputs,
            qtype,
            axis,
            rescale,
        })
    }
}

fn run_typed<T: Q8>(op: &Concat, values: &[&Value]) -> OpResult<Value> {
    let first = values[0];
    let rank = first.shape.len() as i64;
    let axis = i64::from(op.axis);
    if axis < -rank || axis >= rank {
        return fail(
            Some(op.inputs[0]),
            format!("axis {axis} is out of range for rank {rank}"),
        );
    }
    let axis = axis.rem_euclid(rank.max(1)) as usize;
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for (v, &t) in values.iter().zip(&op.inputs) {
        let compatible = v.shape.len() == first.shape.len()
            && v.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if !compatible {
            return fail(
                Some(t),
                format!(
                    "shape {:?} does not concatenate with {:?} on axis {axis}",
                    v.shape, first.shape
                ),
            );
        }
        shape[axis] += v.shape[axis];
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * shape[axis] * inner);
    let slices = values
        .iter()
        .zip(&op.inputs)
        .map(|(v, &t)| q_slice::<T>(v, t))
        .collect::<OpResult<Vec<_>>>()?;
    for o in 0..outer {
        for ((v, xs), r) in values.iter().zip(&slices).zip(&op.rescale) {
            let chunk = v.shape[axis] * inner;
            let part = &xs[o * chunk..(o + 1) * chunk];
            match *r {
                Rescale::Copy => out.extend_from_slice(part),
                Rescale::Affine(k, c, zp) => out.extend(part.iter().map(|q| {
                    let y = (q.level() as f32 * k + c).round() as i32;
                    T::saturate(y.saturating_add(zp))
                })),
            }
        }
    }
    Ok(q_value(shape, out))
}

impl Kernel for Concat {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let mut values = Vec::with_capacity(self.inputs.len());
        for (i, &t) in self.inputs.iter().enumerate() {
            let v = inputs.get(i)?;
            expect_q(v, self.qtype, t)?;
            values.push(v);
        }
        with_q8!(self.qtype, run_typed(self, &values))
    }
}
