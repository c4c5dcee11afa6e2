//! Fake-quant kernels against a parallel copy, on 16M float32 values.
//!
//! `copy` moves the same buffer into a preallocated output with the same
//! chunking and threads as the kernels (rayon's global pool, chunks of
//! `PAR_CHUNK`): it is the memory-speed baseline. Throughput is reported in
//! bytes of `x` for every benchmark, so the ratios between them are ratios
//! of time (the fused gradient also reads `g`).
//!
//! After the criterion groups, the four workloads run again round-robin
//! (40 rounds) and their minimum and median times and ratios to `copy` are
//! printed: on a shared machine, interleaving exposes every workload to the
//! same background load, which sequential criterion groups do not.
//!
//! Run: `cargo bench -p quant-kernels --bench fake_quant`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use quant_kernels::kernels::fake_quant::{
    FakeQuantParams, PAR_CHUNK, fake_quant_per_channel, fake_quant_vars, fake_quant_vars_grad,
};
use rayon::prelude::*;

const LEN: usize = 16 << 20;
const CHANNELS: usize = 64;

/// Deterministic values in `[lo, hi)` (xorshift).
fn uniform(len: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    // The range is [-1, 1]; a quarter of the values fall outside it.
    let x = uniform(LEN, -1.5, 1.5, 1);
    let g = uniform(LEN, -1.0, 1.0, 2);
    let mut out = vec![1f32; LEN]; // written, so no page faults are timed
    let p = FakeQuantParams::new(8, false).unwrap();
    let mins: Vec<f32> = (0..CHANNELS).map(|i| -1.0 - i as f32 / 64.0).collect();
    let maxs: Vec<f32> = (0..CHANNELS).map(|i| 1.0 + i as f32 / 128.0).collect();

    let mut group = c.benchmark_group("fake_quant_16M");
    group
        .throughput(Throughput::Bytes((LEN * size_of::<f32>()) as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));

    group.bench_function("copy", |b| {
        b.iter(|| {
            x.par_chunks(PAR_CHUNK)
                .zip(out.par_chunks_mut(PAR_CHUNK))
                .for_each(|(src, dst)| dst.copy_from_slice(src));
            black_box(&mut out);
        })
    });
    group.bench_function("fake_quant_vars", |b| {
        b.iter(|| {
            fake_quant_vars(black_box(&x), -1.0, 1.0, p, &mut out);
            black_box(&mut out);
        })
    });
    group.bench_function("fake_quant_per_channel_64", |b| {
        b.iter(|| {
            fake_quant_per_channel(black_box(&x), &mins, &maxs, p, &mut out);
            black_box(&mut out);
        })
    });
    group.bench_function("fake_quant_vars_grad_fused", |b| {
        b.iter(|| {
            let sums = fake_quant_vars_grad(black_box(&g), black_box(&x), -1.0, 1.0, p, &mut out);
            black_box((sums, &mut out));
        })
    });
    group.finish();
}

/// Runs the four workloads round-robin and prints the minimum and median
/// time of each and its ratio to `copy`. On a shared machine, interleaving
/// exposes every workload to the same background load, which sequential
/// criterion groups do not.
fn interleaved_summary() {
    const ROUNDS: usize = 40;
    let x = uniform(LEN, -1.5, 1.5, 1);
    let g = uniform(LEN, -1.0, 1.0, 2);
    let mut out = vec![1f32; LEN];
    let p = FakeQuantParams::new(8, false).unwrap();
    let mins: Vec<f32> = (0..CHANNELS).map(|i| -1.0 - i as f32 / 64.0).collect();
    let maxs: Vec<f32> = (0..CHANNELS).map(|i| 1.0 + i as f32 / 128.0).collect();
    let names = [
        "copy",
        "fake_quant_vars",
        "fake_quant_per_channel_64",
        "fake_quant_vars_grad_fused",
    ];
    let mut times = vec![Vec::with_capacity(ROUNDS); names.len()];
    for round in 0..ROUNDS + 2 {
        for (k, t) in times.iter_mut().enumerate() {
            let start = Instant::now();
            match k {
                0 => x
                    .par_chunks(PAR_CHUNK)
                    .zip(out.par_chunks_mut(PAR_CHUNK))
                    .for_each(|(src, dst)| dst.copy_from_slice(src)),
                1 => fake_quant_vars(black_box(&x), -1.0, 1.0, p, &mut out),
                2 => fake_quant_per_channel(black_box(&x), &mins, &maxs, p, &mut out),
                _ => {
                    black_box(fake_quant_vars_grad(
                        black_box(&g),
                        &x,
                        -1.0,
                        1.0,
                        p,
                        &mut out,
                    ));
                }
            }
            black_box(&mut out);
            if round >= 2 {
                t.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let stats: Vec<(f64, f64)> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            (t[0], t[t.len() / 2])
        })
        .collect();
    let gbps = |ms: f64| (LEN * size_of::<f32>()) as f64 / (ms * 1e-3) / 1e9;
    println!("\ninterleaved, {ROUNDS} rounds (GB/s of x; ratio = copy time / time):");
    for (name, &(min, median)) in names.iter().zip(&stats) {
        println!(
            "  {name:28} min {min:7.3} ms ({:5.2} GB/s, {:4.2}x)   median {median:7.3} ms ({:5.2} GB/s, {:4.2}x)",
            gbps(min),
            stats[0].0 / min,
            gbps(median),
            stats[0].1 / median,
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    interleaved_summary();
    Criterion::default().configure_from_args().final_summary();
}
