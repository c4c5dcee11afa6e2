//! The range observers built from ordinary ops run in the executor and
//! compute exactly what `kernels::observers` specifies.

use quant_core::builder::GraphBuilder;
use quant_core::{Attrs, DType, Shape, Tensor};
use quant_kernels::kernels::observers::{EmaState, asymmetric_range};
use quant_kernels::session::Session;

/// An EMA quantizer's `max` update for input `x` with decay `d`, as the
/// rewrite will build it (names as in reference semantics §3.9).
fn ema_graph(decay: f32) -> quant_core::Graph {
    let mut b = GraphBuilder::new();
    let p = "q";
    let x = b.placeholder("x", DType::F32, Shape(vec![None])).unwrap();
    let max = b
        .variable(&format!("{p}/max"), Tensor::scalar(6.0f32), false)
        .unwrap();
    let biased = b
        .variable(
            &format!("{p}/{p}/max/biased"),
            Tensor::scalar(0.0f32),
            false,
        )
        .unwrap();
    let step = b
        .variable(
            &format!("{p}/{p}/max/local_step"),
            Tensor::scalar(0.0f32),
            false,
        )
        .unwrap();
    let axis = b
        .constant("axis", Tensor::from_vec(&[1], vec![0i32]).unwrap())
        .unwrap();
    let bmax = b
        .add("Max", &format!("{p}/BatchMax"), &[x, axis], Attrs::new())
        .unwrap()
        .into();
    let zero = b.constant("zero", Tensor::scalar(0.0f32)).unwrap();
    let rmax = b.binary("Maximum", "rmax", bmax, zero).unwrap();
    let c = b
        .constant("decay_complement", Tensor::scalar(1.0f32 - decay))
        .unwrap();
    let one = b.constant("one", Tensor::scalar(1.0f32)).unwrap();
    let diff = b.binary("Sub", "diff", biased, rmax).unwrap();
    let delta = b.binary("Mul", "delta", diff, c).unwrap();
    let new_biased = b
        .add("AssignSub", "update_biased", &[biased, delta], Attrs::new())
        .unwrap()
        .into();
    let new_step = b
        .add("AssignAdd", "update_step", &[step, one], Attrs::new())
        .unwrap()
        .into();
    let base = b.binary("Sub", "base", one, c).unwrap();
    let pow = b.binary("Pow", "pow", base, new_step).unwrap();
    let factor = b.binary("Sub", "factor", one, pow).unwrap();
    let unbiased = b.binary("RealDiv", "unbiased", new_biased, factor).unwrap();
    let gap = b.binary("Sub", "gap", max, unbiased).unwrap();
    b.add(
        "AssignSub",
        &format!("{p}/AssignMaxEma"),
        &[max, gap],
        Attrs::new(),
    )
    .unwrap();
    b.finish()
}

#[test]
fn the_ema_subgraph_matches_the_reference_arithmetic_bit_for_bit() {
    let decay = 0.999;
    let mut s = Session::new(ema_graph(decay)).unwrap();
    let mut reference = EmaState {
        value: 6.0,
        ..EmaState::default()
    };
    for batch in [
        vec![0.5f32, 2.0, -1.0],
        vec![3.0, 0.1],
        vec![-4.0, -2.0],
        vec![1.25],
    ] {
        let n = batch.len();
        let bmax = batch.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let out = s
            .run(
                &[("x", Tensor::from_vec(&[n], batch).unwrap())],
                &["q/AssignMaxEma"],
            )
            .unwrap();
        reference = reference.update(asymmetric_range(0.0, bmax).1, decay);
        let got = *out[0].array::<f32>().unwrap().iter().next().unwrap();
        assert_eq!(
            got.to_bits(),
            reference.value.to_bits(),
            "{got} vs {}",
            reference.value
        );
        assert_eq!(
            s.variable("q/q/max/local_step").unwrap(),
            &Tensor::scalar(reference.local_step)
        );
        assert_eq!(
            s.variable("q/q/max/biased").unwrap(),
            &Tensor::scalar(reference.biased)
        );
    }
}
