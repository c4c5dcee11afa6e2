//! FULLY_CONNECTED (§7.10.4), reference rule R of LiteRT 2.3:
//! `acc = bias[u] + Σ_d (q_w[u,d] − Z_w)(q_in[b,d] − Z_in)`, then
//! `y = RHA(double(acc) · (double(S_in)·double(S_w[u]) / double(S_out)))`
//! (double-precision requantization, no fixed-point multiplier),
//! `q = clamp_act(y + Z_out)`. The input is flattened to `[N/in, in]`.
//!
//! The reference path accumulates with direct loops; the fast path uses the
//! zero-padded [`dot`](super::dot) kernel. Both give the same integers.

use quant_core::integer::{IntOpKind, TensorIndex};
use rayon::prelude::*;

use super::KernelPath;
use super::dot::{dot, padded};
use super::layer::{LayerKind, prepare_layer};
use super::op::{Ctx, Inputs, Kernel, OpResult, expect_q, fail, q_slice, q_value};
use super::value::{Q8, QType, Value, with_q8};

/// A prepared FULLY_CONNECTED.
pub(crate) struct FullyConnected {
    input: TensorIndex,
    qtype: QType,
    units: usize,
    depth: usize,
    keep_num_dims: bool,
    /// `q_w − Z_w`, `[units, depth]`.
    weights: Vec<i16>,
    /// Rows zero-padded to `kp`.
    packed: Vec<i16>,
    kp: usize,
    bias: Vec<i32>,
    multipliers: Vec<f64>,
    in_zp: i32,
    out_zp: i32,
    act: (i32, i32),
    path: KernelPath,
}

impl FullyConnected {
    /// Validates the op and computes its real multipliers.
    pub(crate) fn prepare(ctx: &Ctx, path: KernelPath) -> OpResult<FullyConnected> {
        let IntOpKind::FullyConnected {
            activation,
            keep_num_dims,
        } = ctx.op.kind
        else {
            return fail(None, "not a FULLY_CONNECTED");
        };
        ctx.expect_inputs(2, 3)?;
        let input = ctx.input(0)?;
        let weights_t = ctx.input(1)?;
        let shape = ctx.tensor(weights_t).shape.clone();
        let [units, depth] = shape[..] else {
            return fail(
                Some(weights_t),
                format!("must be 2-D [units, in], has shape {shape:?}"),
            );
        };
        let layer = prepare_layer(
            ctx,
            weights_t,
            ctx.opt_input(2),
            0,
            |e| e / depth.max(1),
            LayerKind::FullyConnected,
            activation,
        )?;
        let kp = padded(depth);
        let mut packed = vec![0i16; units * kp];
        if depth > 0 {
            for (dst, src) in packed
                .chunks_exact_mut(kp)
                .zip(layer.weights.chunks_exact(depth))
            {
                dst[..depth].copy_from_slice(src);
            }
        }
        Ok(FullyConnected {
            input,
            qtype: layer.qtype,
            units,
            depth,
            keep_num_dims,
            weights: layer.weights,
            packed,
            kp,
            bias: layer.bias,
            multipliers: layer.real_multipliers,
            in_zp: layer.input.zero_point,
            out_zp: layer.output.zero_point,
            act: layer.act,
            path,
        })
    }

    fn finish(&self, acc: i32, u: usize) -> i32 {
        let acc = acc.wrapping_add(self.bias[u]);
        // `round` is half away from zero; `as i64` saturates (C: undefined).
        let y = (f64::from(acc) * self.multipliers[u]).round() as i64;
        y.saturating_add(i64::from(self.out_zp))
            .clamp(i64::from(self.act.0), i64::from(self.act.1)) as i32
    }

    fn run_typed<T: Q8>(&self, x: &Value) -> OpResult<Value> {
        let data = q_slice::<T>(x, self.input)?;
        let (units, depth) = (self.units, self.depth);
        let total = data.len();
        if depth == 0 || !total.is_multiple_of(depth) {
            return fail(
                Some(self.input),
                format!(
                    "{total} elements (shape {:?}) do not flatten to rows of {depth}",
                    x.shape
                ),
            );
        }
        let rows = total / depth;
        let shape = if self.keep_num_dims {
            if x.shape.last() != Some(&depth) {
                return fail(
                    Some(self.input),
                    format!(
                        "keep_num_dims needs the last dimension {depth}, shape is {:?}",
                        x.shape
                    ),
                );
            }
            let mut s = x.shape.clone();
            *s.last_mut().expect("checked non-empty") = units;
            s
        } else {
            vec![rows, units]
        };
        let mut out = vec![T::default(); rows * units];
        if out.is_empty() {
            return Ok(q_value(shape, out));
        }
        out.par_chunks_mut(units)
            .zip(data.par_chunks(depth))
            .for_each(|(row, xs)| match self.path {
                KernelPath::Reference => {
                    for (u, o) in row.iter_mut().enumerate() {
                        let ws = &self.weights[u * depth..(u + 1) * depth];
                        let acc = xs.iter().zip(ws).fold(0i32, |a, (&q, &wv)| {
                            a.wrapping_add(i32::from(wv) * (q.level() - self.in_zp))
                        });
                        *o = T::from_level(self.finish(acc, u));
                    }
                }
                KernelPath::Fast => {
                    let mut v = vec![0i16; self.kp];
                    for (d, &q) in v.iter_mut().zip(xs) {
                        *d = (q.level() - self.in_zp) as i16;
                    }
                    for (u, o) in row.iter_mut().enumerate() {
                        let acc = dot(&v, &self.packed[u * self.kp..(u + 1) * self.kp]);
                        *o = T::from_level(self.finish(acc, u));
                    }
                }
            });
        Ok(q_value(shape, out))
    }
}

impl Kernel for FullyConnected {
    fn run(&self, inputs: &Inputs) -> OpResult<Value> {
        let x = inputs.get(0)?;
        expect_q(x, self.qtype, self.input)?;
        with_q8!(self.qtype, run_typed(self, x))
    }
}

fn run_typed<T: Q8>(op: &FullyConnected, x: &Value) -> OpResult<Value> {
    op.run_typed::<T>(x)
}
