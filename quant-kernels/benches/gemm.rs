//! The gemm products behind the MNIST CNN's conv2 layer at batch 64, on both
//! backends, single call (gemm's own row/column split on rayon's pool):
//!
//! - `kernel_peak_l2`: `[96, 256] · [256, 32]`, every operand in L2;
//! - `conv2_fwd_full`: patches `[12544, 400]` · W `[400, 32]` (all 64 images);
//! - `conv2_fwd_group`: `[588, 400] · [400, 32]` (the 3-image group conv runs);
//! - `conv2_dinput_group`: dy `[588, 32]` · Wᵀ;
//! - `conv2_dfilter_group`: patchesᵀ `[400, 588]` · dy `[588, 32]`, β = 1.
//!
//! Each runs on rayon's global pool and, as `…/auto_1t` and `…/portable_1t`,
//! inside a one-thread pool (per-core kernel throughput). Throughput is
//! reported in FLOP/s (2 per multiply-add).
//!
//! Run: `cargo bench -p quant-kernels --bench gemm`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{Array, Array2, Dimension, ShapeBuilder};
use quant_kernels::gemm::{Backend, gemm, set_backend};

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

/// `(name, m, k, n, A transposed, B transposed, β)`.
type Case = (&'static str, usize, usize, usize, bool, bool, f32);

const CASES: [Case; 5] = [
    ("kernel_peak_l2", 96, 256, 32, false, false, 0.0),
    ("conv2_fwd_full", 12544, 400, 32, false, false, 0.0),
    ("conv2_fwd_group", 588, 400, 32, false, false, 0.0),
    ("conv2_dinput_group", 588, 32, 400, false, true, 0.0),
    ("conv2_dfilter_group", 400, 588, 32, true, false, 1.0),
];

fn bench(c: &mut Criterion) {
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    for (name, m, k, n, ta, tb, beta) in CASES {
        let a: Array2<f32> = if ta {
            uniform((k, m), 1).reversed_axes()
        } else {
            uniform((m, k), 1)
        };
        let b: Array2<f32> = if tb {
            uniform((n, k), 2).reversed_axes()
        } else {
            uniform((k, n), 2)
        };
        let mut out = Array2::<f32>::zeros((m, n));
        let mut group = c.benchmark_group(name);
        group
            .sample_size(30)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements((2 * m * k * n) as u64));
        for (backend, id) in [(Backend::Auto, "auto"), (Backend::Portable, "portable")] {
            set_backend(backend);
            group.bench_function(id, |bn| {
                bn.iter(|| gemm(1.0, black_box(a.view()), b.view(), beta, out.view_mut()))
            });
            group.bench_function(format!("{id}_1t"), |bn| {
                one_thread.install(|| {
                    bn.iter(|| gemm(1.0, black_box(a.view()), b.view(), beta, out.view_mut()))
                })
            });
        }
        set_backend(Backend::Auto);
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
