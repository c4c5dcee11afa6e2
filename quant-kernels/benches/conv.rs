//! Conv2D and MatMul on the MNIST CNN's shapes at batch 64.
//!
//! - `conv1`: x `[64, 28, 28, 1]`, w `[5, 5, 1, 16]`, SAME;
//! - `conv2`: x `[64, 14, 14, 16]`, w `[5, 5, 16, 32]`, SAME;
//! - `fc`: `[64, 1568] · [1568, 10]`.
//!
//! Each conv is timed forward, per gradient (input, filter) and as a whole
//! training step (forward + both gradients); the matmul forward and backward
//! (`dA = dY·Bᵀ`, `dB = Aᵀ·dY`). Everything runs on rayon's global pool.
//! Each benchmark runs three times: on the default gemm backend (`forward`,
//! ...: implicit GEMM where it applies), on the packed GEMM with explicit
//! im2col patches (`im2col_forward`, ...) and on the portable matrixmultiply
//! one (`portable_forward`, ...).
//!
//! Run: `cargo bench -p quant-kernels --bench conv`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::{Array, Array2, Array4, Dimension, ShapeBuilder};
use quant_kernels::gemm::{Backend, set_backend};
use quant_kernels::kernels::conv::{conv2d, conv2d_backprop_filter, conv2d_backprop_input};
use quant_kernels::kernels::matmul::matmul;
use quant_kernels::kernels::window::{Padding, Window2d};

/// Deterministic values in `[-1, 1)` (xorshift).
fn uniform<D: Dimension, Sh: ShapeBuilder<Dim = D>>(shape: Sh, seed: u64) -> Array<f32, D> {
    let mut s = seed | 1;
    Array::from_shape_simple_fn(shape, || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    })
}

fn bench_conv(c: &mut Criterion, name: &str, x_shape: [usize; 4], w_shape: [usize; 4]) {
    let window = Window2d {
        kernel: [w_shape[0], w_shape[1]],
        strides: [1, 1],
        dilations: [1, 1],
        padding: Padding::Same,
    };
    let x: Array4<f32> = uniform(x_shape, 1);
    let w: Array4<f32> = uniform(w_shape, 2);
    let dy: Array4<f32> = uniform([x_shape[0], x_shape[1], x_shape[2], w_shape[3]], 3);

    let mut group = c.benchmark_group(name);
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (backend, prefix) in BACKENDS {
        set_backend(backend);
        group.bench_function(format!("{prefix}forward"), |b| {
            b.iter(|| conv2d(black_box(x.view()), w.view(), &window).unwrap())
        });
        group.bench_function(format!("{prefix}backprop_input"), |b| {
            b.iter(|| {
                conv2d_backprop_input(x_shape, w.view(), black_box(dy.view()), &window).unwrap()
            })
        });
        group.bench_function(format!("{prefix}backprop_filter"), |b| {
            b.iter(|| {
                conv2d_backprop_filter(x.view(), w_shape, black_box(dy.view()), &window).unwrap()
            })
        });
        group.bench_function(format!("{prefix}forward_backward"), |b| {
            b.iter(|| {
                let y = conv2d(black_box(x.view()), w.view(), &window).unwrap();
                let dx = conv2d_backprop_input(x_shape, w.view(), dy.view(), &window).unwrap();
                let dw = conv2d_backprop_filter(x.view(), w_shape, dy.view(), &window).unwrap();
                (y, dx, dw)
            })
        });
    }
    set_backend(Backend::Auto);
    group.finish();
}

/// The gemm backends compared, with the prefix of their benchmark ids.
const BACKENDS: [(Backend, &str); 3] = [
    (Backend::Auto, ""),
    (Backend::Explicit, "im2col_"),
    (Backend::Portable, "portable_"),
];

fn bench(c: &mut Criterion) {
    bench_conv(
        c,
        "conv1_b64_28x28x1_5x5x16",
        [64, 28, 28, 1],
        [5, 5, 1, 16],
    );
    bench_conv(
        c,
        "conv2_b64_14x14x16_5x5x32",
        [64, 14, 14, 16],
        [5, 5, 16, 32],
    );

    let a: Array2<f32> = uniform((64, 1568), 4);
    let b: Array2<f32> = uniform((1568, 10), 5);
    let dy: Array2<f32> = uniform((64, 10), 6);
    let mut group = c.benchmark_group("fc_b64_1568x10");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (backend, prefix) in BACKENDS {
        set_backend(backend);
        group.bench_function(format!("{prefix}forward"), |bn| {
            bn.iter(|| matmul(black_box(a.view()), b.view(), false, false))
        });
        group.bench_function(format!("{prefix}backward"), |bn| {
            bn.iter(|| {
                let da = matmul(black_box(dy.view()), b.view(), false, true);
                let db = matmul(a.view(), dy.view(), true, false);
                (da, db)
            })
        });
    }
    set_backend(Backend::Auto);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
