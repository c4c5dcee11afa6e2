//! Integer kernels and executor: the worked examples of reference semantics
//! §7.3/§7.9, hand-computed single-op cases (§7.10 rules, values derived by
//! hand or with f64 float math away from ties), the fast paths against the
//! scalar reference, and a small float-I/O network.

use quant_core::integer::{
    Activation, Hw, IntModel, IntOp, IntOpKind, IntTensor, Padding, TensorIndex,
};
use quant_core::{DType, Element, QuantParams, Tensor};
use quant_kernels::integer::fixed_point::{
    activation_range, mbqm, quantize_multiplier, rdbpot, srdhm,
};
use quant_kernels::integer::{IntError, IntExecutor, KernelPath, QType};

// ---------------------------------------------------------------- helpers

fn qp(scale: f32, zero_point: i64) -> QuantParams {
    QuantParams {
        scales: vec![scale],
        zero_points: vec![zero_point],
        axis: None,
    }
}

fn qp_axis(scales: Vec<f32>, axis: usize) -> QuantParams {
    let n = scales.len();
    QuantParams {
        scales,
        zero_points: vec![0; n],
        axis: Some(axis),
    }
}

#[derive(Default)]
struct Builder {
    m: IntModel,
}

impl Builder {
    /// A run-time tensor.
    fn act(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        q: Option<QuantParams>,
    ) -> TensorIndex {
        self.m.add_tensor(IntTensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            quant: q,
            data: None,
        })
    }

    fn q8(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        scale: f32,
        zp: i64,
    ) -> TensorIndex {
        self.act(name, dtype, shape, Some(qp(scale, zp)))
    }

    /// A constant.
    fn cst<T: Element>(
        &mut self,
        name: &str,
        shape: &[usize],
        values: Vec<T>,
        q: Option<QuantParams>,
    ) -> TensorIndex {
        self.m.add_tensor(IntTensor {
            name: name.into(),
            dtype: T::DTYPE,
            shape: shape.to_vec(),
            quant: q,
            data: Some(Tensor::from_vec(shape, values).unwrap()),
        })
    }

    fn op(&mut self, kind: IntOpKind, inputs: &[Option<TensorIndex>], output: TensorIndex) {
        self.m.ops.push(IntOp {
            kind,
            inputs: inputs.to_vec(),
            outputs: vec![output],
        });
    }

    fn io(mut self, inputs: &[TensorIndex], outputs: &[TensorIndex]) -> IntModel {
        self.m.inputs = inputs.to_vec();
        self.m.outputs = outputs.to_vec();
        self.m
    }
}

fn run(model: &IntModel, inputs: Vec<Tensor>) -> Vec<Tensor> {
    let results: Vec<Vec<Tensor>> = [KernelPath::Reference, KernelPath::Fast]
        .iter()
        .map(|&p| {
            IntExecutor::with_kernels(model, p)
                .unwrap()
                .run(&inputs)
                .unwrap()
        })
        .collect();
    assert_eq!(results[0], results[1], "reference and fast paths differ");
    results.into_iter().next().unwrap()
}

fn levels(t: &Tensor) -> Vec<i64> {
    t.to_i64_vec().unwrap()
}

fn u8s(shape: &[usize], v: &[u8]) -> Tensor {
    Tensor::from_vec(shape, v.to_vec()).unwrap()
}

fn i8s(shape: &[usize], v: &[i8]) -> Tensor {
    Tensor::from_vec(shape, v.to_vec()).unwrap()
}

/// Deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.next() as usize % v.len()]
    }
}

fn conv_kind(padding: Padding, stride: Hw, dilation: Hw, activation: Activation) -> IntOpKind {
    IntOpKind::Conv2D {
        padding,
        stride,
        dilation,
        activation,
    }
}

// ---------------------------------------------------- fixed-point (§7.9)

#[test]
fn quantize_multiplier_worked_examples() {
    assert_eq!(quantize_multiplier(0.0003), (1_319_413_953, -11));
    assert_eq!(quantize_multiplier(1.5), (1_610_612_736, 1));
    // q·2^31 rounds up to 2^31: halved, shift + 1.
    assert_eq!(quantize_multiplier(0.999_999_999_99), (1_073_741_824, 1));
    // 2^-40 would be (2^30, -39): flushed by LiteRT 2.3's guard.
    assert_eq!(quantize_multiplier(2f64.powi(-40)), (0, 0));
    // 2^-32 is (2^30, -31): the last shift kept.
    assert_eq!(quantize_multiplier(2f64.powi(-32)), (1_073_741_824, -31));
    assert_eq!(quantize_multiplier(0.25), (1_073_741_824, -1));
    assert_eq!(quantize_multiplier(0.0), (0, 0));
}

#[test]
fn rdbpot_srdhm_mbqm_worked_examples() {
    for (x, e, want) in [
        (5, 1, 3),
        (-5, 1, -3),
        (-3, 2, -1),
        (6, 2, 2),
        (-6, 2, -2),
        (-7, 2, -2),
    ] {
        assert_eq!(rdbpot(x, e), want, "RDBPOT({x}, {e})");
    }
    let p = 1 << 15;
    for (a, b, want) in [
        (p, p, 1),
        (-p, p, 0),
        (3 * p, p, 2),
        (-3 * p, p, -1),
        (i32::MIN, i32::MIN, i32::MAX),
    ] {
        assert_eq!(srdhm(a, b), want, "SRDHM({a}, {b})");
    }
    for (x, want) in [(2, 1), (6, 2), (-2, -1), (-6, -2), (-10, -3)] {
        assert_eq!(mbqm(x, 1 << 30, -1), want, "MBQM({x}, M = 0.25)");
    }
    assert_eq!(mbqm(12_345_678, 1_319_413_953, -11), 3704);
    assert_eq!(mbqm(-12_345_678, 1_319_413_953, -11), -3704);
    // M = 1.5 (left shift 1): 10 · 1.5 = 15.
    assert_eq!(mbqm(10, 1_610_612_736, 1), 15);
}

#[test]
fn activation_ranges_follow_the_float32_quotient() {
    // ReLU6 on (0.1, 5): [5, 5 + round(6 / 0.1f) = 65].
    assert_eq!(
        activation_range(Activation::Relu6, QType::U8, 0.1, 5),
        (5, 65)
    );
    assert_eq!(
        activation_range(Activation::Relu6, QType::I8, 0.1, -123),
        (-123, -63)
    );
    assert_eq!(
        activation_range(Activation::Relu, QType::I8, 0.1, -130),
        (-128, 127)
    );
    assert_eq!(
        activation_range(Activation::ReluN1To1, QType::U8, 0.01, 128),
        (28, 228)
    );
    assert_eq!(
        activation_range(Activation::None, QType::U8, 0.01, 128),
        (0, 255)
    );
    // Clamped to the type: 6 / 0.01 = 600 levels.
    assert_eq!(
        activation_range(Activation::Relu6, QType::I8, 0.01, 0),
        (0, 127)
    );
}

// ------------------------------------------ the §7.9 dot-product example

/// The 4-input layer of §7.9 as a 1×1 CONV_2D or a FULLY_CONNECTED.
fn dot_example(dtype: DType, fc: bool) -> (IntModel, Tensor) {
    let mut b = Builder::default();
    let (zi, zo) = if dtype == DType::U8 {
        (10, 5)
    } else {
        (-118, -123)
    };
    let shape_in: &[usize] = if fc { &[1, 4] } else { &[1, 1, 1, 4] };
    let x = b.q8("x", dtype, shape_in, 0.02, zi);
    let y_shape: &[usize] = if fc { &[1, 1] } else { &[1, 1, 1, 1] };
    let y = b.q8("y", dtype, y_shape, 0.1, zo);
    let w_shape: &[usize] = if fc { &[1, 4] } else { &[1, 1, 1, 4] };
    let w = if dtype == DType::U8 {
        // Asymmetric uint8 weights with Z_w = 128 holding the same q_w − Z_w.
        b.cst::<u8>("w", w_shape, vec![148, 121, 228, 1], Some(qp(0.005, 128)))
    } else {
        b.cst::<i8>("w", w_shape, vec![20, -7, 100, -127], Some(qp(0.005, 0)))
    };
    let bias = b.cst::<i32>("b", &[1], vec![3000], Some(qp(0.02 * 0.005, 0)));
    let kind = if fc {
        IntOpKind::FullyConnected {
            activation: Activation::Relu6,
            keep_num_dims: false,
        }
    } else {
        conv_kind(Padding::Valid, Hw::ONE, Hw::ONE, Activation::Relu6)
    };
    b.op(kind, &[Some(x), Some(w), Some(bias)], y);
    let input = if dtype == DType::U8 {
        u8s(shape_in, &[60, 10, 250, 0])
    } else {
        i8s(shape_in, &[-68, -118, 122, -128])
    };
    (b.io(&[x], &[y]), input)
}

#[test]
fn dot_product_example_gives_34_and_minus_94() {
    // The multiplier of §7.9: double product vs float32 product.
    let (s_in, s_w, s_out) = (0.02f32, 0.005f32, 0.1f32);
    let double = f64::from(s_in) * f64::from(s_w) / f64::from(s_out);
    assert_eq!(quantize_multiplier(double), (1_099_511_562, -9));
    assert_eq!(
        quantize_multiplier(f64::from(s_in * s_w) / f64::from(s_out)).0,
        1_099_511_584
    );
    for fc in [false, true] {
        let (m, x) = dot_example(DType::U8, fc);
        let out = run(&m, vec![x]);
        assert_eq!(levels(&out[0]), vec![34], "uint8, fc = {fc}");
        assert_eq!(out[0].quant(), Some(&qp(0.1, 5)));
        let (m, x) = dot_example(DType::I8, fc);
        assert_eq!(levels(&run(&m, vec![x])[0]), vec![-94], "int8, fc = {fc}");
    }
}

// ------------------------------------------------------------- ADD / MUL

fn binary_model(
    kind: IntOpKind,
    dtype: DType,
    a: (&[usize], f32, i64),
    bq: (&[usize], f32, i64),
    out: (&[usize], f32, i64),
) -> IntModel {
    let mut b = Builder::default();
    let x = b.q8("a", dtype, a.0, a.1, a.2);
    let y = b.q8("b", dtype, bq.0, bq.1, bq.2);
    let z = b.q8("out", dtype, out.0, out.1, out.2);
    b.op(kind, &[Some(x), Some(y)], z);
    b.io(&[x, y], &[z])
}

#[test]
fn add_worked_example_and_broadcast() {
    let add = IntOpKind::Add {
        activation: Activation::None,
    };
    let m = binary_model(
        add.clone(),
        DType::I8,
        (&[1, 2], 0.5, 0),
        (&[1, 2], 0.25, 0),
        (&[1, 2], 1.0, 0),
    );
    // 3·0.5 + 3·0.25 = 2.25 → 2; −3·0.5 + 1·0.25 = −1.25 → −1.
    let out = run(&m, vec![i8s(&[1, 2], &[3, -3]), i8s(&[1, 2], &[3, 1])]);
    assert_eq!(levels(&out[0]), vec![2, -1]);
    // Broadcast a per-channel operand [2] over [2, 2] (uint8, Z = 10 / 20 / 0).
    let m = binary_model(
        add,
        DType::U8,
        (&[2, 2], 0.5, 10),
        (&[2], 0.25, 20),
        (&[2, 2], 1.0, 0),
    );
    let out = run(
        &m,
        vec![u8s(&[2, 2], &[12, 14, 20, 10]), u8s(&[2], &[24, 28])],
    );
    // reals: a = [1, 2, 5, 0], b = [1, 2] → [2, 4, 6, 2].
    assert_eq!(levels(&out[0]), vec![2, 4, 6, 2]);
    assert_eq!(out[0].shape(), &[2, 2]);
}

#[test]
fn add_rejects_an_output_multiplier_of_one() {
    let add = IntOpKind::Add {
        activation: Activation::None,
    };
    // 2·max(S) / (2^20·S_out) = 1.
    let s_out = 2f32.powi(-20);
    let m = binary_model(
        add,
        DType::I8,
        (&[1], 0.5, 0),
        (&[1], 0.25, 0),
        (&[1], s_out, 0),
    );
    let err = IntExecutor::new(&m).unwrap_err();
    let IntError::Op {
        op,
        op_name,
        tensor,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((*op, *op_name, tensor.as_deref()), (0, "ADD", Some("out")));
}

#[test]
fn mul_rounds_ties_away_from_zero() {
    let mul = IntOpKind::Mul {
        activation: Activation::None,
    };
    // M = 0.5·0.5 / 1 = 0.25: products 6, −6, 10 → 1.5, −1.5, 2.5 → 2, −2, 3.
    let m = binary_model(
        mul.clone(),
        DType::I8,
        (&[3], 0.5, 1),
        (&[3], 0.5, 0),
        (&[3], 1.0, -5),
    );
    let out = run(&m, vec![i8s(&[3], &[4, -2, 6]), i8s(&[3], &[2, 2, 2])]);
    assert_eq!(levels(&out[0]), vec![2 - 5, -2 - 5, 3 - 5]);
    // ReLU clamps at Z_out (uint8).
    let mul = IntOpKind::Mul {
        activation: Activation::Relu,
    };
    let m = binary_model(
        mul,
        DType::U8,
        (&[2], 0.5, 10),
        (&[2], 0.5, 10),
        (&[2], 0.25, 7),
    );
    let out = run(&m, vec![u8s(&[2], &[12, 8]), u8s(&[2], &[13, 13])]);
    // (2·3)·1 = 6 → 13; (−2·3) = −6 → 1 → clamped to 7.
    assert_eq!(levels(&out[0]), vec![13, 7]);
}

// ------------------------------------------------------------------ pools

fn pool_model(
    max: bool,
    dtype: DType,
    shape: &[usize],
    filter: Hw,
    stride: Hw,
    padding: Padding,
    zp: i64,
) -> IntModel {
    let mut b = Builder::default();
    let x = b.q8("x", dtype, shape, 0.5, zp);
    let y = b.q8("y", dtype, &[], 0.5, zp);
    let kind = if max {
        IntOpKind::MaxPool2D {
            padding,
            stride,
            filter,
            activation: Activation::None,
        }
    } else {
        IntOpKind::AveragePool2D {
            padding,
            stride,
            filter,
            activation: Activation::None,
        }
    };
    b.op(kind, &[Some(x)], y);
    b.io(&[x], &[y])
}

#[test]
fn average_pool_rounds_the_raw_levels() {
    // int8, Z = −128: [−3, −2] averages the stored −2.5 → −3 (rounding
    // q − Z = 125.5 would give −2).
    let m = pool_model(
        false,
        DType::I8,
        &[1, 1, 2, 1],
        Hw::new(1, 2),
        Hw::ONE,
        Padding::Valid,
        -128,
    );
    assert_eq!(
        levels(&run(&m, vec![i8s(&[1, 1, 2, 1], &[-3, -2])])[0]),
        vec![-3]
    );
    // SAME padding: edge windows count only in-bounds taps.
    // 1×3 input [1, 2, 4], 1×2 window stride 1 SAME: windows [1,2], [2,4], [4] → 2 (1.5↑), 3, 4.
    let m = pool_model(
        false,
        DType::U8,
        &[1, 1, 3, 1],
        Hw::new(1, 2),
        Hw::ONE,
        Padding::Same,
        0,
    );
    assert_eq!(
        levels(&run(&m, vec![u8s(&[1, 1, 3, 1], &[1, 2, 4])])[0]),
        vec![2, 3, 4]
    );
}

#[test]
fn max_pool_ignores_padding() {
    // 2×2 stride 2 SAME over 3×3: windows reach into the padding.
    let m = pool_model(
        true,
        DType::I8,
        &[1, 3, 3, 1],
        Hw::new(2, 2),
        Hw::new(2, 2),
        Padding::Same,
        0,
    );
    let x = i8s(&[1, 3, 3, 1], &[-9, -8, -7, -6, -5, -4, -3, -2, -100]);
    let out = run(&m, vec![x]);
    assert_eq!(out[0].shape(), &[1, 2, 2, 1]);
    assert_eq!(levels(&out[0]), vec![-5, -4, -2, -100]);
}

// ------------------------------------------------------ softmax / logistic

fn unary_model(
    kind: IntOpKind,
    dtype: DType,
    shape: &[usize],
    qin: (f32, i64),
    qout: (f32, i64),
) -> IntModel {
    let mut b = Builder::default();
    let x = b.q8("x", dtype, shape, qin.0, qin.1);
    let y = b.q8("y", dtype, shape, qout.0, qout.1);
    b.op(kind, &[Some(x)], y);
    b.io(&[x], &[y])
}

#[test]
fn softmax_of_a_constant_row_is_one_over_n() {
    for n in [1usize, 2, 3, 4, 5, 6, 7, 8, 10] {
        let expected = (256.0 / n as f64).round() as i64;
        let m = unary_model(
            IntOpKind::Softmax { beta: 1.0 },
            DType::U8,
            &[1, n],
            (0.1, 0),
            (1.0 / 256.0, 0),
        );
        let out = run(&m, vec![u8s(&[1, n], &vec![77; n])]);
        assert_eq!(
            levels(&out[0]),
            vec![expected.min(255); n],
            "uint8, n = {n}"
        );
        let m = unary_model(
            IntOpKind::Softmax { beta: 1.0 },
            DType::I8,
            &[1, n],
            (0.1, 0),
            (1.0 / 256.0, -128),
        );
        let out = run(&m, vec![i8s(&[1, n], &vec![-3; n])]);
        assert_eq!(
            levels(&out[0]),
            vec![(expected - 128).min(127); n],
            "int8, n = {n}"
        );
    }
}

#[test]
fn softmax_matches_float_math_away_from_ties() {
    let mut rng = Rng(0x5eed);
    let mut checked = 0;
    for _ in 0..40 {
        let n = rng.int(2, 12) as usize;
        let beta = rng.pick(&[1.0f32, 0.5, 2.0]);
        let s_in = rng.pick(&[0.05f32, 0.1, 0.0625, 0.2]);
        let xs: Vec<i8> = (0..n).map(|_| rng.int(-128, 127) as i8).collect();
        let m = unary_model(
            IntOpKind::Softmax { beta },
            DType::I8,
            &[1, n],
            (s_in, 3),
            (1.0 / 256.0, -128),
        );
        let out = levels(&run(&m, vec![i8s(&[1, n], &xs)])[0]);
        let max = *xs.iter().max().unwrap() as f64;
        let e: Vec<f64> = xs
            .iter()
            .map(|&q| ((q as f64 - max) * f64::from(s_in) * f64::from(beta)).exp())
            .collect();
        let sum: f64 = e.iter().sum();
        for (i, &ei) in e.iter().enumerate() {
            let levels_real = ei / sum * 256.0;
            let frac = levels_real - levels_real.floor();
            // Tiny probabilities fall under diff_min or the fixed-point
            // resolution; check the rest away from ties.
            if (frac - 0.5).abs() > 0.05 && levels_real > 0.6 {
                let want = (levels_real.round() as i64 - 128).min(127);
                assert_eq!(out[i], want, "row {xs:?} beta {beta} S {s_in}, element {i}");
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} elements checked");
}

#[test]
fn logistic_matches_float_math_and_checks_the_output_scale() {
    let m = unary_model(
        IntOpKind::Logistic,
        DType::U8,
        &[256],
        (0.05, 128),
        (1.0 / 256.0, 0),
    );
    let xs: Vec<u8> = (0..=255).collect();
    let out = levels(&run(&m, vec![u8s(&[256], &xs)])[0]);
    for (v, &q) in xs.iter().zip(&out) {
        let g = 1.0 / (1.0 + (-0.05 * (f64::from(*v) - 128.0)).exp()) * 256.0;
        if (g - g.floor() - 0.5).abs() > 0.01 {
            assert_eq!(q, (g.round() as i64).min(255), "level {v}");
        }
    }
    let m = unary_model(
        IntOpKind::Logistic,
        DType::I8,
        &[1],
        (0.05, 0),
        (1.0 / 255.0, -128),
    );
    let err = IntExecutor::new(&m).unwrap_err();
    assert!(
        err.to_string().contains("LOGISTIC") && err.to_string().contains("'y'"),
        "{err}"
    );
}

// ------------------------------------------------------------------- MEAN

fn mean_model(
    dtype: DType,
    shape: &[usize],
    axes: Vec<i32>,
    keep_dims: bool,
    qin: (f32, i64),
    qout: (f32, i64),
) -> IntModel {
    let mut b = Builder::default();
    let x = b.q8("x", dtype, shape, qin.0, qin.1);
    let n = axes.len();
    let a = b.cst::<i32>("axes", &[n], axes, None);
    let y = b.q8("y", dtype, &[], qout.0, qout.1);
    b.op(IntOpKind::Mean { keep_dims }, &[Some(x), Some(a)], y);
    b.io(&[x], &[y])
}

#[test]
fn mean_follows_the_reference_rule() {
    // Global average pool, same parameters: (2 + 4 + 6 + 8) / 4 = 5.
    let m = mean_model(
        DType::U8,
        &[1, 2, 2, 1],
        vec![1, 2],
        true,
        (0.5, 0),
        (0.5, 0),
    );
    let out = run(&m, vec![u8s(&[1, 2, 2, 1], &[2, 4, 6, 8])]);
    assert_eq!(
        (out[0].shape(), levels(&out[0])),
        (&[1usize, 1, 1, 1][..], vec![5])
    );
    // int8 [−1, −2], M = 1 = (2^30, 1): n = 2, k = 1, m' = 2^30, shift 0:
    // SRDHM(−3, 2^30) = −1.5 rounded toward +∞ = −1; [1, 2] → 2.
    let m = mean_model(DType::I8, &[2, 2], vec![-1], false, (0.5, 0), (0.5, 0));
    let out = run(&m, vec![i8s(&[2, 2], &[-1, -2, 1, 2])]);
    assert_eq!(
        (out[0].shape(), levels(&out[0])),
        (&[2usize][..], vec![-1, 2])
    );
    // Requantizing mean away from ties: S_in 0.5, Z_in 3 → S_out 0.25, Z_out −7.
    // Rows (levels): [10, 20, 31] → reals 3.5, 8.5, 14 → mean 26/3 = 8.667 → 34.67 → 35 − 7 = 28.
    let m = mean_model(DType::I8, &[1, 3], vec![1], false, (0.5, 3), (0.25, -7));
    assert_eq!(
        levels(&run(&m, vec![i8s(&[1, 3], &[10, 20, 31])])[0]),
        vec![28]
    );
}

// ---------------------------------------------- concatenation / pad / quantize

#[test]
fn concatenation_copies_or_rescales() {
    let mut b = Builder::default();
    let x = b.q8("x", DType::U8, &[1, 2], 1.0, 0);
    let y = b.q8("y", DType::U8, &[1, 1], 2.0, 1);
    let z = b.q8("z", DType::U8, &[1, 3], 2.0, 1);
    b.op(
        IntOpKind::Concatenation {
            axis: -1,
            activation: Activation::None,
        },
        &[Some(x), Some(y)],
        z,
    );
    let m = b.io(&[x, y], &[z]);
    // x rescaled: k = 0.5, c = 0 → 3 → 1.5 → 2 (+1), 5 → 2.5 → 3 (+1); y copied.
    let out = run(&m, vec![u8s(&[1, 2], &[3, 5]), u8s(&[1, 1], &[9])]);
    assert_eq!(levels(&out[0]), vec![3, 4, 9]);
    // int8 inputs with other parameters are refused.
    let mut b = Builder::default();
    let x = b.q8("x", DType::I8, &[1, 2], 1.0, 0);
    let z = b.q8("z", DType::I8, &[2, 2], 2.0, 0);
    b.op(
        IntOpKind::Concatenation {
            axis: 0,
            activation: Activation::None,
        },
        &[Some(x), Some(x)],
        z,
    );
    let err = IntExecutor::new(&b.io(&[x], &[z])).unwrap_err();
    assert!(
        matches!(&err, IntError::Op { op_name: "CONCATENATION", tensor: Some(t), .. } if t == "x"),
        "{err}"
    );
}

#[test]
fn pad_fills_with_the_output_zero_point() {
    let mut b = Builder::default();
    let x = b.q8("x", DType::I8, &[1, 2, 2, 1], 0.5, 0);
    let p = b.cst::<i32>("paddings", &[4, 2], vec![0, 0, 1, 0, 0, 1, 0, 0], None);
    let y = b.q8("y", DType::I8, &[1, 3, 3, 1], 0.5, 5);
    b.op(IntOpKind::Pad, &[Some(x), Some(p)], y);
    let out = run(&b.io(&[x], &[y]), vec![i8s(&[1, 2, 2, 1], &[1, 2, 3, 4])]);
    assert_eq!(out[0].shape(), &[1, 3, 3, 1]);
    assert_eq!(levels(&out[0]), vec![5, 5, 5, 1, 2, 5, 3, 4, 5]);
}

#[test]
fn quantize_requantize_and_dequantize() {
    // float → uint8: x/S = ±0.5 → ±1 (half away), 1000 saturates.
    let mut b = Builder::default();
    let x = b.act("x", DType::F32, &[4], None);
    let q = b.q8("q", DType::U8, &[4], 0.5, 10);
    b.op(IntOpKind::Quantize, &[Some(x)], q);
    let out = run(
        &b.io(&[x], &[q]),
        vec![Tensor::from_vec(&[4], vec![0.25f32, -0.25, 1000.0, -3.1]).unwrap()],
    );
    assert_eq!(levels(&out[0]), vec![11, 9, 255, 4]);
    // int8 → uint8 with M = 0.25: q − Z = −6, −2, 6, 10 → −2, −1, 2, 3 (ties away).
    let mut b = Builder::default();
    let x = b.q8("x", DType::I8, &[4], 0.25, -1);
    let q = b.q8("q", DType::U8, &[4], 1.0, 100);
    b.op(IntOpKind::Quantize, &[Some(x)], q);
    let out = run(&b.io(&[x], &[q]), vec![i8s(&[4], &[-7, -3, 5, 9])]);
    assert_eq!(levels(&out[0]), vec![98, 99, 102, 103]);
    // uint8 → float: float32(double(S)·(q − Z)).
    let mut b = Builder::default();
    let x = b.q8("x", DType::U8, &[2], 0.1, 1);
    let f = b.act("f", DType::F32, &[2], None);
    b.op(IntOpKind::Dequantize, &[Some(x)], f);
    let out = run(&b.io(&[x], &[f]), vec![u8s(&[2], &[3, 0])]);
    let want = [(f64::from(0.1f32) * 2.0) as f32, -f64::from(0.1f32) as f32];
    assert_eq!(out[0].array::<f32>().unwrap().as_slice().unwrap(), &want);
}

// --------------------------------------------------------- conv / depthwise

#[test]
fn depthwise_with_multiplier_two() {
    let mut b = Builder::default();
    let x = b.q8("x", DType::I8, &[1, 1, 2, 2], 1.0, 0);
    // [1, 1, 2, 4]: output channel o = i·2 + j.
    let w = b.cst::<i8>(
        "w",
        &[1, 1, 2, 4],
        vec![1, 2, 3, 4, 5, 6, 7, 8],
        Some(qp_axis(vec![1.0; 4], 3)),
    );
    let bias = b.cst::<i32>("b", &[4], vec![0, 1, 0, -1], None);
    let y = b.q8("y", DType::I8, &[1, 1, 1, 4], 1.0, 0);
    b.op(
        IntOpKind::DepthwiseConv2D {
            padding: Padding::Valid,
            stride: Hw::ONE,
            dilation: Hw::ONE,
            depth_multiplier: 2,
            activation: Activation::None,
        },
        &[Some(x), Some(w), Some(bias)],
        y,
    );
    // x pixels: (c0, c1) = (1, 2), (3, 4).
    // o0 = 1·1 + 3·5 = 16; o1 = 1·2 + 3·6 + 1 = 21; o2 = 2·3 + 4·7 = 34; o3 = 2·4 + 4·8 − 1 = 39.
    let out = run(&b.io(&[x], &[y]), vec![i8s(&[1, 1, 2, 2], &[1, 2, 3, 4])]);
    assert_eq!(levels(&out[0]), vec![16, 21, 34, 39]);
}

#[test]
fn int8_conv_refuses_weight_zero_points() {
    let mut b = Builder::default();
    let x = b.q8("x", DType::I8, &[1, 1, 1, 1], 1.0, 0);
    let w = b.cst::<i8>("conv/w", &[1, 1, 1, 1], vec![1], Some(qp(1.0, 3)));
    let y = b.q8("y", DType::I8, &[1, 1, 1, 1], 1.0, 0);
    b.op(
        conv_kind(Padding::Valid, Hw::ONE, Hw::ONE, Activation::None),
        &[Some(x), Some(w), None],
        y,
    );
    let err = IntExecutor::new(&b.io(&[x], &[y])).unwrap_err();
    assert_eq!(
        err,
        IntError::Op {
            op: 0,
            op_name: "CONV_2D",
            tensor: Some("conv/w".into()),
            message: "int8 CONV_2D weights need zero point 0".into()
        }
    );
    // A weight without data is refused too.
    let mut b = Builder::default();
    let x = b.q8("x", DType::I8, &[1, 1, 1, 1], 1.0, 0);
    let w = b.q8("w", DType::I8, &[1, 1, 1, 1], 1.0, 0);
    let y = b.q8("y", DType::I8, &[1, 1, 1, 1], 1.0, 0);
    b.op(
        conv_kind(Padding::Valid, Hw::ONE, Hw::ONE, Activation::None),
        &[Some(x), Some(w), None],
        y,
    );
    let err = IntExecutor::new(&b.io(&[x], &[y])).unwrap_err();
    assert!(
        err.to_string()
            .contains("is read before any op computes it"),
        "{err}"
    );
}

/// Random CONV_2D and FULLY_CONNECTED layers: the fast path equals the
/// scalar reference (checked inside `run`), and every output equals the
/// f64 rounding of the exact real result where that is not near a tie.
#[test]
fn random_conv_and_fc_layers_match_float_math_and_the_reference() {
    let mut rng = Rng(0x1234_5678);
    let mut checked = 0usize;
    for case in 0..120 {
        let dtype = rng.pick(&[DType::U8, DType::I8]);
        let q = QType::of(dtype).unwrap();
        let fc = case % 3 == 2;
        let (n, h, w) = (
            rng.int(1, 3) as usize,
            rng.int(1, 7) as usize,
            rng.int(1, 7) as usize,
        );
        let (cin, cout) = (rng.int(1, 20) as usize, rng.int(1, 9) as usize);
        let (kh, kw) = (rng.int(1, 3) as usize, rng.int(1, 3) as usize);
        let stride = Hw::new(rng.int(1, 2) as usize, rng.int(1, 2) as usize);
        let dilation = Hw::new(rng.int(1, 2) as usize, rng.int(1, 2) as usize);
        let padding = rng.pick(&[Padding::Same, Padding::Valid]);
        if !fc
            && padding == Padding::Valid
            && (h < (kh - 1) * dilation.h + 1 || w < (kw - 1) * dilation.w + 1)
        {
            continue;
        }
        let act = rng.pick(&[Activation::None, Activation::Relu, Activation::Relu6]);
        let (s_in, s_out) = (
            rng.pick(&[0.02f32, 0.05, 0.1]),
            rng.pick(&[0.05f32, 0.1, 0.3, 1.0]),
        );
        let z_in = rng.int(i64::from(q.min()), i64::from(q.max()));
        let z_out = rng.int(i64::from(q.min()) + 20, i64::from(q.max()) - 20);
        let per_channel = dtype == DType::I8 && rng.int(0, 1) == 1;
        let w_scales: Vec<f32> = (0..cout)
            .map(|_| rng.pick(&[0.01f32, 0.02, 0.003, 0.05]))
            .collect();
        let z_w = if dtype == DType::U8 {
            rng.int(100, 150)
        } else {
            0
        };
        let mut b = Builder::default();
        let in_shape = if fc {
            vec![n, cin * kh]
        } else {
            vec![n, h, w, cin]
        };
        let depth = if fc { cin * kh } else { kh * kw * cin };
        let w_shape = if fc {
            vec![cout, depth]
        } else {
            vec![cout, kh, kw, cin]
        };
        let x = b.q8("x", dtype, &in_shape, s_in, z_in);
        let wq = if per_channel {
            qp_axis(w_scales.clone(), 0)
        } else {
            qp(w_scales[0], z_w)
        };
        let wl: Vec<i64> = (0..cout * depth)
            .map(|_| {
                if dtype == DType::U8 {
                    rng.int(0, 255)
                } else {
                    rng.int(-127, 127)
                }
            })
            .collect();
        let wt = if dtype == DType::U8 {
            b.cst::<u8>(
                "w",
                &w_shape,
                wl.iter().map(|&v| v as u8).collect(),
                Some(wq),
            )
        } else {
            b.cst::<i8>(
                "w",
                &w_shape,
                wl.iter().map(|&v| v as i8).collect(),
                Some(wq),
            )
        };
        let bias: Vec<i32> = (0..cout).map(|_| rng.int(-2000, 2000) as i32).collect();
        let bt = b.cst::<i32>("b", &[cout], bias.clone(), None);
        let y = b.q8("y", dtype, &[], s_out, z_out);
        let kind = if fc {
            IntOpKind::FullyConnected {
                activation: act,
                keep_num_dims: false,
            }
        } else {
            conv_kind(padding, stride, dilation, act)
        };
        b.op(kind, &[Some(x), Some(wt), Some(bt)], y);
        let model = b.io(&[x], &[y]);
        let xl: Vec<i64> = (0..in_shape.iter().product::<usize>())
            .map(|_| rng.int(i64::from(q.min()), i64::from(q.max())))
            .collect();
        let input = if dtype == DType::U8 {
            Tensor::from_vec(&in_shape, xl.iter().map(|&v| v as u8).collect::<Vec<_>>()).unwrap()
        } else {
            Tensor::from_vec(&in_shape, xl.iter().map(|&v| v as i8).collect::<Vec<_>>()).unwrap()
        };
        let out = run(&model, vec![input]);
        let got = levels(&out[0]);
        // Independent float evaluation (f64), channel-last output order.
        let (lo, hi) = activation_range(act, q, s_out, z_out as i32);
        let zw = if dtype == DType::U8 { z_w } else { 0 };
        let sw = |c: usize| {
            if per_channel {
                w_scales[c]
            } else {
                w_scales[0]
            }
        };
        let mut expected_acc = Vec::new();
        if fc {
            for r in 0..n {
                for c in 0..cout {
                    let acc: i64 = (0..depth)
                        .map(|d| (wl[c * depth + d] - zw) * (xl[r * depth + d] - z_in))
                        .sum();
                    expected_acc.push((acc + i64::from(bias[c]), c));
                }
            }
        } else {
            let geo = |size: usize, k: usize, s: usize, d: usize| -> (usize, usize) {
                let eff = (k - 1) * d + 1;
                match padding {
                    Padding::Same => {
                        let out = size.div_ceil(s);
                        (out, (((out - 1) * s + eff).saturating_sub(size)) / 2)
                    }
                    Padding::Valid => ((size - eff) / s + 1, 0),
                }
            };
            let (oh, pt) = geo(h, kh, stride.h, dilation.h);
            let (ow, pl) = geo(w, kw, stride.w, dilation.w);
            assert_eq!(out[0].shape(), &[n, oh, ow, cout]);
            for bi in 0..n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for (c, &bc) in bias.iter().enumerate() {
                            let mut acc = i64::from(bc);
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * stride.h + ky * dilation.h) as i64 - pt as i64;
                                    let ix = (ox * stride.w + kx * dilation.w) as i64 - pl as i64;
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                        continue;
                                    }
                                    for ci in 0..cin {
                                        let xi =
                                            ((bi * h + iy as usize) * w + ix as usize) * cin + ci;
                                        let wi = ((c * kh + ky) * kw + kx) * cin + ci;
                                        acc += (wl[wi] - zw) * (xl[xi] - z_in);
                                    }
                                }
                            }
                            expected_acc.push((acc, c));
                        }
                    }
                }
            }
        }
        assert_eq!(got.len(), expected_acc.len());
        for (i, &(acc, c)) in expected_acc.iter().enumerate() {
            let real = acc as f64 * f64::from(s_in) * f64::from(sw(c)) / f64::from(s_out);
            if (real - real.floor() - 0.5).abs() < 1e-4 {
                continue;
            }
            let want = (real.round() as i64 + z_out).clamp(i64::from(lo), i64::from(hi));
            assert_eq!(
                got[i], want,
                "case {case} element {i} (acc {acc}, real {real})"
            );
            checked += 1;
        }
    }
    assert!(checked > 3000, "only {checked} outputs checked");
}

/// Random CONV_2D layers wider than the unit shapes above (up to 40 output
/// channels, 24 input channels, 5×5 windows, 14×14 inputs, strides and
/// dilations 1–2) with levels and zero points at the type extremes
/// (−128/127, 0/255): the fast path (packed GEMM, partial pixel and
/// channel tiles, odd depths) equals the scalar reference (checked inside
/// `run`), and most outputs are not clamped.
#[test]
fn wide_random_convs_with_extreme_levels_match_the_reference() {
    let mut rng = Rng(0x5eed_c0de);
    let (mut unclamped, mut total) = (0, 0);
    for case in 0..60 {
        let dtype = if case % 2 == 0 { DType::I8 } else { DType::U8 };
        let q = QType::of(dtype).unwrap();
        let (lo, hi) = (i64::from(q.min()), i64::from(q.max()));
        let extreme_only = case % 3 == 0;
        let level = |rng: &mut Rng| {
            if extreme_only || rng.int(0, 3) == 0 {
                rng.pick(&[lo, hi, 0.clamp(lo, hi)])
            } else {
                rng.int(lo, hi)
            }
        };
        let (n, h, w) = (
            rng.int(1, 2) as usize,
            rng.int(1, 14) as usize,
            rng.int(1, 14) as usize,
        );
        let (cin, cout) = (rng.int(1, 24) as usize, rng.int(1, 40) as usize);
        let (kh, kw) = (rng.int(1, 5) as usize, rng.int(1, 5) as usize);
        let stride = Hw::new(rng.int(1, 2) as usize, rng.int(1, 2) as usize);
        let dilation = Hw::new(rng.int(1, 2) as usize, rng.int(1, 2) as usize);
        let padding = if h < (kh - 1) * dilation.h + 1 || w < (kw - 1) * dilation.w + 1 {
            Padding::Same
        } else {
            rng.pick(&[Padding::Same, Padding::Valid])
        };
        let z_any = rng.int(lo, hi);
        let z_in = rng.pick(&[lo, hi, z_any]);
        let z_w = if dtype == DType::U8 {
            let z_any = rng.int(0, 255);
            rng.pick(&[0, 255, z_any])
        } else {
            0
        };
        let depth = kh * kw * cin;
        // Typical |acc| ≈ 150²·√depth maps to about ±60 output levels.
        let (s_in, s_w) = (0.05f32, 0.01f32);
        let s_out = s_in * s_w * 150.0 * 150.0 * (depth as f32).sqrt() / 60.0;
        let mut b = Builder::default();
        let x = b.q8("x", dtype, &[n, h, w, cin], s_in, z_in);
        let wl: Vec<i64> = (0..cout * depth).map(|_| level(&mut rng)).collect();
        let w_shape = [cout, kh, kw, cin];
        let wt = if dtype == DType::U8 {
            let v = wl.iter().map(|&v| v as u8).collect();
            b.cst::<u8>("w", &w_shape, v, Some(qp(s_w, z_w)))
        } else {
            let v = wl.iter().map(|&v| v as i8).collect();
            b.cst::<i8>("w", &w_shape, v, Some(qp_axis(vec![s_w; cout], 0)))
        };
        let bias: Vec<i32> = (0..cout).map(|_| rng.int(-5000, 5000) as i32).collect();
        let bt = b.cst::<i32>("b", &[cout], bias, None);
        let y = b.q8("y", dtype, &[], s_out, (lo + hi) / 2);
        let act = rng.pick(&[Activation::None, Activation::Relu]);
        b.op(
            conv_kind(padding, stride, dilation, act),
            &[Some(x), Some(wt), Some(bt)],
            y,
        );
        let model = b.io(&[x], &[y]);
        let xl: Vec<i64> = (0..n * h * w * cin).map(|_| level(&mut rng)).collect();
        let input = if dtype == DType::U8 {
            u8s(
                &[n, h, w, cin],
                &xl.iter().map(|&v| v as u8).collect::<Vec<_>>(),
            )
        } else {
            i8s(
                &[n, h, w, cin],
                &xl.iter().map(|&v| v as i8).collect::<Vec<_>>(),
            )
        };
        let got = levels(&run(&model, vec![input])[0]);
        unclamped += got.iter().filter(|&&v| v > lo && v < hi).count();
        total += got.len();
    }
    assert!(
        unclamped * 4 >= total,
        "only {unclamped} of {total} outputs unclamped"
    );
}

// ------------------------------------------------------------ a small net

/// QUANTIZE → CONV_2D (ReLU) → MAX_POOL_2D → RESHAPE → FULLY_CONNECTED →
/// DEQUANTIZE, float in and out, checked stage by stage with f64 math and
/// run at batch 1 and 3.
#[test]
fn float_io_network_matches_float_math_at_any_batch() {
    let mut b = Builder::default();
    let u = DType::U8;
    let x = b.act("input", DType::F32, &[1, 4, 4, 1], None);
    let xq = b.q8("input/q", u, &[1, 4, 4, 1], 1.0 / 64.0, 128);
    b.op(IntOpKind::Quantize, &[Some(x)], xq);
    // 2 output channels, 2×2 SAME.
    let wv: Vec<u8> = vec![140, 120, 100, 160, 90, 130, 150, 110];
    let w = b.cst::<u8>(
        "conv/w",
        &[2, 2, 2, 1],
        wv.clone(),
        Some(qp(1.0 / 32.0, 128)),
    );
    let bias = b.cst::<i32>("conv/b", &[2], vec![37, -101], Some(qp(1.0 / 2048.0, 0)));
    let c = b.q8("conv", u, &[1, 4, 4, 2], 0.03, 20);
    b.op(
        conv_kind(Padding::Same, Hw::ONE, Hw::ONE, Activation::Relu),
        &[Some(xq), Some(w), Some(bias)],
        c,
    );
    let p = b.q8("pool", u, &[1, 2, 2, 2], 0.03, 20);
    b.op(
        IntOpKind::MaxPool2D {
            padding: Padding::Valid,
            stride: Hw::new(2, 2),
            filter: Hw::new(2, 2),
            activation: Activation::None,
        },
        &[Some(c)],
        p,
    );
    let shape = b.cst::<i32>("flat/shape", &[2], vec![-1, 8], None);
    let fl = b.q8("flat", u, &[1, 8], 0.03, 20);
    b.op(IntOpKind::Reshape, &[Some(p), Some(shape)], fl);
    let fw: Vec<u8> = vec![
        130, 100, 160, 120, 127, 140, 90, 135, 110, 150, 128, 128, 170, 99, 125, 131, 128, 129,
        100, 157, 141, 118, 126, 128,
    ];
    let fcw = b.cst::<u8>("fc/w", &[3, 8], fw.clone(), Some(qp(1.0 / 64.0, 128)));
    let fcb = b.cst::<i32>("fc/b", &[3], vec![100, -50, 0], None);
    let fo = b.q8("fc", u, &[1, 3], 0.01, 128);
    b.op(
        IntOpKind::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
        },
        &[Some(fl), Some(fcw), Some(fcb)],
        fo,
    );
    let out = b.act("output", DType::F32, &[1, 3], None);
    b.op(IntOpKind::Dequantize, &[Some(fo)], out);
    let model = b.io(&[x], &[out]);

    let mut rng = Rng(99);
    let images: Vec<Vec<f32>> = (0..3)
        .map(|_| {
            (0..16)
                .map(|_| (rng.int(-120, 120) as f32 + 0.3) / 64.0)
                .collect()
        })
        .collect();
    let near_tie = |r: f64| (r - r.floor() - 0.5).abs() < 1e-3;
    // f64 evaluation of one image.
    let expected = |img: &[f32]| -> Vec<f32> {
        let xq: Vec<i64> = img
            .iter()
            .map(|&v| ((f64::from(v) * 64.0).round() as i64 + 128).clamp(0, 255))
            .collect();
        let mut conv = vec![0i64; 32];
        for y in 0..4 {
            for xx in 0..4 {
                for oc in 0..2 {
                    // SAME 2×2 stride 1 on 4: total pad 1, before 0.
                    let mut acc: i64 = [37i64, -101][oc];
                    for ky in 0..2 {
                        for kx in 0..2 {
                            let (iy, ix) = (y + ky, xx + kx);
                            if iy < 4 && ix < 4 {
                                acc += (i64::from(wv[oc * 4 + ky * 2 + kx]) - 128)
                                    * (xq[iy * 4 + ix] - 128);
                            }
                        }
                    }
                    let real = acc as f64 * (1.0 / 64.0) * (1.0 / 32.0) / f64::from(0.03f32);
                    assert!(!near_tie(real), "conv near a tie: {real}");
                    conv[(y * 4 + xx) * 2 + oc] = (real.round() as i64 + 20).clamp(20, 255);
                }
            }
        }
        let mut pooled = Vec::new();
        for py in 0..2 {
            for px in 0..2 {
                for oc in 0..2 {
                    let v = (0..4)
                        .map(|t| conv[((py * 2 + t / 2) * 4 + px * 2 + t % 2) * 2 + oc])
                        .max()
                        .unwrap();
                    pooled.push(v);
                }
            }
        }
        (0..3)
            .map(|u| {
                let acc: i64 = [100i64, -50, 0][u]
                    + (0..8)
                        .map(|d| (i64::from(fw[u * 8 + d]) - 128) * (pooled[d] - 20))
                        .sum::<i64>();
                let real = acc as f64 * f64::from(0.03f32) * (1.0 / 64.0) / f64::from(0.01f32);
                assert!(!near_tie(real), "fc near a tie: {real}");
                let q = (real.round() as i64 + 128).clamp(0, 255);
                (f64::from(0.01f32) * (q - 128) as f64) as f32
            })
            .collect()
    };
    let one = run(
        &model,
        vec![Tensor::from_vec(&[1, 4, 4, 1], images[0].clone()).unwrap()],
    );
    assert_eq!(
        one[0].array::<f32>().unwrap().as_slice().unwrap(),
        expected(&images[0]).as_slice()
    );
    let batch: Vec<f32> = images.concat();
    let three = run(
        &model,
        vec![Tensor::from_vec(&[3, 4, 4, 1], batch).unwrap()],
    );
    assert_eq!(three[0].shape(), &[3, 3]);
    let want: Vec<f32> = images.iter().flat_map(|i| expected(i)).collect();
    assert_eq!(
        three[0].array::<f32>().unwrap().as_slice().unwrap(),
        want.as_slice()
    );
}

#[test]
fn run_checks_the_fed_values() {
    let m = unary_model(
        IntOpKind::Logistic,
        DType::U8,
        &[1, 4],
        (0.05, 128),
        (1.0 / 256.0, 0),
    );
    let exec = IntExecutor::new(&m).unwrap();
    let err = exec.run(&[i8s(&[1, 4], &[0; 4])]).unwrap_err();
    assert!(
        matches!(
            &err,
            IntError::Io {
                role: "input",
                index: 0,
                ..
            }
        ),
        "{err}"
    );
    let err = exec.run(&[u8s(&[1, 5], &[0; 5])]).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(exec.run(&[]).is_err());
    // Another batch is fine.
    assert_eq!(
        exec.run(&[u8s(&[2, 4], &[128; 8])]).unwrap()[0].shape(),
        &[2, 4]
    );
}
