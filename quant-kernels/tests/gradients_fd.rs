//! Finite-difference checks of the backward kernels not covered next to
//! their forward kernels (conv, depthwise and pooling check themselves in
//! their modules): for a random upstream gradient `g`, the analytic
//! gradient of `L = Σ g · f(x)` must match central differences of `L`
//! (accumulated in f64) at 1e-3 relative tolerance.

use ndarray::{Array2, ArrayD, IxDyn};
use quant_kernels::kernels::{batch_norm, elementwise as ew, matmul, softmax};

/// A small deterministic generator.
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn array(&mut self, shape: &[usize], scale: f32) -> ArrayD<f32> {
        ArrayD::from_shape_fn(IxDyn(shape), |_| self.uniform() * scale)
    }
}

fn dot(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

/// Central differences of `loss` with respect to every element of `x`.
fn numeric(x: &ArrayD<f32>, h: f32, loss: impl Fn(&ArrayD<f32>) -> f64) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let mut p = x.clone();
            let mut m = x.clone();
            p.as_slice_mut().unwrap()[i] += h;
            m.as_slice_mut().unwrap()[i] -= h;
            (loss(&p) - loss(&m)) / (2.0 * f64::from(h))
        })
        .collect()
}

fn assert_close(what: &str, analytic: &ArrayD<f32>, numeric: &[f64]) {
    let scale = numeric.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
    let err = analytic
        .iter()
        .zip(numeric)
        .fold(0f64, |m, (a, n)| m.max((f64::from(*a) - n).abs()))
        / scale;
    assert!(err < 1e-3, "{what}: relative error {err:e}");
}

#[test]
fn smooth_unary_gradients() {
    let mut rng = Rng(1);
    let x = rng.array(&[3, 5], 2.0).mapv(|v| v + 2.5); // positive for rsqrt/sqrt
    let g = rng.array(&[3, 5], 1.0);
    type Case = (
        &'static str,
        fn(f32) -> f32,
        fn(&ArrayD<f32>, &ArrayD<f32>) -> Result<ArrayD<f32>, String>,
    );
    let cases: [Case; 4] = [
        ("rsqrt", |v| 1.0 / v.sqrt(), ew::rsqrt_grad),
        ("sqrt", f32::sqrt, ew::sqrt_grad),
        ("sigmoid", ew::sigmoid, ew::sigmoid_grad),
        ("tanh", f32::tanh, ew::tanh_grad),
    ];
    for (name, f, grad) in cases {
        let y = ew::unary(&x, f);
        let analytic = grad(&y, &g).unwrap();
        let num = numeric(&x, 1e-2, |x| dot(&ew::unary(x, f), &g));
        assert_close(name, &analytic, &num);
    }
}

#[test]
fn relu_gradients_away_from_the_kinks() {
    let mut rng = Rng(2);
    // Keep inputs at least 0.05 away from 0 and 6.
    let x = rng.array(&[40], 8.0).mapv(|v| {
        if v.abs() < 0.05 || (v - 6.0).abs() < 0.05 {
            v + 0.2
        } else {
            v
        }
    });
    let g = rng.array(&[40], 1.0);
    let relu = |x: &ArrayD<f32>| ew::unary(x, |v| v.max(0.0));
    let relu6 = |x: &ArrayD<f32>| ew::unary(x, |v| v.clamp(0.0, 6.0));
    assert_close(
        "relu",
        &ew::relu_grad(&g, &x).unwrap(),
        &numeric(&x, 1e-2, |x| dot(&relu(x), &g)),
    );
    assert_close(
        "relu6",
        &ew::relu6_grad(&g, &x).unwrap(),
        &numeric(&x, 1e-2, |x| dot(&relu6(x), &g)),
    );
}

#[test]
fn matmul_gradients_for_every_transpose() {
    let mut rng = Rng(3);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a = rng.array(if ta { &[4, 3] } else { &[3, 4] }, 1.0);
        let b = rng.array(if tb { &[5, 4] } else { &[4, 5] }, 1.0);
        let g = rng.array(&[3, 5], 1.0);
        let mm = |a: &ArrayD<f32>, b: &ArrayD<f32>| -> ArrayD<f32> {
            let (a2, b2) = (
                a.view().into_dimensionality().unwrap(),
                b.view().into_dimensionality().unwrap(),
            );
            matmul::matmul(a2, b2, ta, tb).into_dyn()
        };
        let g2: Array2<f32> = g.clone().into_dimensionality().unwrap();
        let (a2, b2) = (
            a.view().into_dimensionality().unwrap(),
            b.view().into_dimensionality().unwrap(),
        );
        // dA = g·Bᵀ (or its transpose), dB = Aᵀ·g (or its transpose), as MatMuls with flags.
        let da = if ta {
            matmul::matmul(b2, g2.view(), tb, true)
        } else {
            matmul::matmul(g2.view(), b2, false, !tb)
        };
        let db = if tb {
            matmul::matmul(g2.view(), a2, true, ta)
        } else {
            matmul::matmul(a2, g2.view(), !ta, false)
        };
        assert_close(
            "matmul dA",
            &da.into_dyn(),
            &numeric(&a, 1e-2, |a| dot(&mm(a, &b), &g)),
        );
        assert_close(
            "matmul dB",
            &db.into_dyn(),
            &numeric(&b, 1e-2, |b| dot(&mm(&a, b), &g)),
        );
    }
}

#[test]
fn softmax_cross_entropy_gradients() {
    let mut rng = Rng(4);
    let logits = rng.array(&[4, 6], 3.0);
    let labels = [0i64, 5, 2, 2];
    let (_, backprop) = softmax::sparse_softmax_cross_entropy(&logits, &labels).unwrap();
    let loss = |x: &ArrayD<f32>| {
        softmax::sparse_softmax_cross_entropy(x, &labels)
            .unwrap()
            .0
            .iter()
            .map(|v| f64::from(*v))
            .sum()
    };
    assert_close("sparse xent", &backprop, &numeric(&logits, 1e-2, loss));

    let soft = rng.array(&[4, 6], 1.0).mapv(|v| v.abs());
    let (_, backprop) = softmax::softmax_cross_entropy(&logits, &soft).unwrap();
    let loss = |x: &ArrayD<f32>| {
        softmax::softmax_cross_entropy(x, &soft)
            .unwrap()
            .0
            .iter()
            .map(|v| f64::from(*v))
            .sum()
    };
    assert_close("dense xent", &backprop, &numeric(&logits, 1e-2, loss));
}

#[test]
fn fused_batch_norm_gradients_in_training_and_inference() {
    let mut rng = Rng(5);
    let x = rng.array(&[2, 3, 3, 4], 2.0);
    let g = rng.array(&[2, 3, 3, 4], 1.0);
    let scale: Vec<f32> = (0..4).map(|i| 0.5 + i as f32 * 0.3).collect();
    let offset: Vec<f32> = (0..4).map(|i| i as f32 * 0.1 - 0.2).collect();
    let (mean, var) = (vec![0.1f32, -0.2, 0.3, 0.0], vec![1.5f32, 0.7, 2.0, 1.1]);
    for training in [true, false] {
        let fwd = |x: &ArrayD<f32>, s: &[f32], o: &[f32]| {
            batch_norm::fused_batch_norm(x, s, o, &mean, &var, 0.001, 1.0, training).unwrap()
        };
        let out = fwd(&x, &scale, &offset);
        let (dx, dscale, doffset) = batch_norm::fused_batch_norm_grad(
            &g,
            &x,
            &scale,
            out.saved_mean.as_slice().unwrap(),
            out.saved_variance.as_slice().unwrap(),
            0.001,
            training,
        )
        .unwrap();
        assert_close(
            &format!("bn dx (training={training})"),
            &dx,
            &numeric(&x, 1e-2, |x| dot(&fwd(x, &scale, &offset).y, &g)),
        );
        let s = ArrayD::from_shape_vec(IxDyn(&[4]), scale.clone()).unwrap();
        let num = numeric(&s, 1e-2, |s| {
            dot(&fwd(&x, s.as_slice().unwrap(), &offset).y, &g)
        });
        assert_close(
            &format!("bn dscale (training={training})"),
            &dscale.into_dyn(),
            &num,
        );
        let o = ArrayD::from_shape_vec(IxDyn(&[4]), offset.clone()).unwrap();
        let num = numeric(&o, 1e-2, |o| {
            dot(&fwd(&x, &scale, o.as_slice().unwrap()).y, &g)
        });
        assert_close(
            &format!("bn doffset (training={training})"),
            &doffset.into_dyn(),
            &num,
        );
    }
}
