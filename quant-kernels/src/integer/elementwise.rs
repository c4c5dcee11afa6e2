//! Broadcasting of the binary 8-bit ops (ADD, MUL): NumPy rules, the
//! per-element arithmetic unchanged (as LiteRT's broadcast reference
//! routines).

use super::op::{Inputs, OpResult, expect_q, fail, q_slice, q_value};
use super::value::{Q8, QType, Value, with_q8};
use quant_core::integer::TensorIndex;

/// Runs a binary 8-bit op: checks that both inputs (tensors `operands`)
/// hold `qtype` levels, broadcasts them, and maps each pair of input
/// levels to an output level with `element`.
pub(crate) fn run_binary(
    inputs: &Inputs,
    operands: [TensorIndex; 2],
    qtype: QType,
    element: impl Fn(i32, i32) -> i32,
) -> OpResult<Value> {
    let (x, y) = (inputs.get(0)?, inputs.get(1)?);
    expect_q(x, qtype, operands[0])?;
    expect_q(y, qtype, operands[1])?;
    with_q8!(qtype, run_typed(x, y, operands, element))
}

fn run_typed<T: Q8>(
    x: &Value,
    y: &Value,
    operands: [TensorIndex; 2],
    element: impl Fn(i32, i32) -> i32,
) -> OpResult<Value> {
    let shape = broadcast_shape(&x.shape, &y.shape, operands[1])?;
    let a = q_slice::<T>(x, operands[0])?;
    let b = q_slice::<T>(y, operands[1])?;
    let out = binary((a, &x.shape), (b, &y.shape), &shape, element);
    Ok(q_value(shape, out))
}

/// The broadcast shape of `a` and `b`, or an error blaming `t`.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize], t: TensorIndex) -> OpResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() < rank {
            1
        } else {
            s[i + s.len() - rank]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => fail(Some(t), format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// Strides of `shape` aligned to the last dimensions of `out`, 0 where
/// `shape` broadcasts.
fn strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut s = vec![0; out.len()];
    let mut stride = 1;
    for (i, &d) in shape.iter().enumerate().rev() {
        let o = i + out.len() - shape.len();
        s[o] = if d == 1 { 0 } else { stride };
        stride *= d;
    }
    s
}

/// `f(a, b)` per element of the broadcast of `a` and `b` over `out`; `f`
/// gets the stored levels and returns the level to store (already clamped).
pub(crate) fn binary<T: Q8>(
    (a, a_shape): (&[T], &[usize]),
    (b, b_shape): (&[T], &[usize]),
    out: &[usize],
    f: impl Fn(i32, i32) -> i32,
) -> Vec<T> {
    if a_shape == b_shape {
        return a
            .iter()
            .zip(b)
            .map(|(&x, &y)| T::from_level(f(x.level(), y.level())))
            .collect();
    }
    let n: usize = out.iter().product();
    let (sa, sb) = (strides(a_shape, out), strides(b_shape, out));
    let mut index = vec![0usize; out.len()];
    let (mut ia, mut ib) = (0usize, 0usize);
    let mut result = Vec::with_capacity(n);
    for _ in 0..n {
        result.push(T::from_level(f(a[ia].level(), b[ib].level())));
        // Advance the multi-index, last dimension fastest.
        for d in (0..out.len()).rev() {
            index[d] += 1;
            ia += sa[d];
            ib += sb[d];
            if index[d] < out[d] {
                break;
            }
            ia -= sa[d] * out[d];
            ib -= sb[d] * out[d];
            index[d] = 0;
        }
    }
    result
}
