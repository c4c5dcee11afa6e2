//! The eval rewrite (fused and unfused batch-norm folding, then fake-quant
//! insertion) of generated networks of 1k, 10k and 100k conv-BN-ReLU6
//! layers with a residual add every other layer: the time per layer should
//! stay flat.
//!
//! The rewrite allocates millions of small objects, so the allocator matters;
//! this bench uses mimalloc with the setting the `cargo xtask` CLI ships
//! with (a library user picks their own; glibc's malloc is slower here):
//! freed memory is kept for reuse. With mimalloc's default, memory freed by
//! one iteration is returned to the OS and the next iteration gets it back
//! as fresh pages the kernel zeroes, which at 100k layers (2 GB per
//! iteration) took a third of the measured time.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quant_core::builder::{GraphBuilder, Padding};
use quant_core::{DType, Graph, Shape, Tensor};
use quant_passes::{FoldBatchNorms, FoldUnfusedBatchNorms, PassManager, Quantize, QuantizeConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its index in `mi_option_t`, the same in
/// mimalloc 2 and 3); -1 keeps freed memory, as `cargo xtask` does.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn network(layers: usize) -> Graph {
    let mut b = GraphBuilder::new();
    let mut x = b
        .placeholder("input", DType::F32, Shape::known(&[1, 4, 4, 4]))
        .unwrap();
    let ones = Tensor::from_vec(&[4], vec![1.0f32; 4]).unwrap();
    let zeros = Tensor::zeros(DType::F32, &[1, 1, 4, 4]).unwrap();
    for i in 0..layers {
        x = b
            .scope(&format!("layer{i}"), |b| {
                let w = b.variable("weights", zeros.clone(), true)?;
                let y = b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?;
                let p = b.variable("BatchNorm/params", ones.clone(), false)?;
                let bn = b.scope("BatchNorm", |b| {
                    b.fused_batch_norm("FusedBatchNormV3", y, p, p, p, p, 0.001, false)
                })?;
                let y = if i % 2 == 1 {
                    b.binary("AddV2", "add", bn.into(), x)?
                } else {
                    bn.into()
                };
                b.relu6("Relu6", y)
            })
            .unwrap();
    }
    b.finish()
}

fn bench(c: &mut Criterion) {
    // SAFETY: sets a plain integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // The pipeline of `create_eval_graph`.
    let manager = PassManager::new()
        .with(FoldBatchNorms)
        .with(FoldUnfusedBatchNorms)
        .with(Quantize);
    let config = QuantizeConfig::eval();
    let mut group = c.benchmark_group("eval_rewrite");
    group.sample_size(10);
    for layers in [1_000, 10_000, 100_000] {
        group.throughput(Throughput::Elements(layers as u64));
        // Criterion calls the closure only when the filter selects this
        // size, so a filtered run does not build the 100k-layer network.
        group.bench_function(BenchmarkId::from_parameter(layers), |bench| {
            let graph = network(layers);
            // The rewritten graph is returned, so criterion drops it after
            // the clock stops: freeing ~50 nodes per layer is not part of
            // the rewrite.
            bench.iter_batched(
                || graph.clone(),
                |mut g| {
                    let report = manager.run(&mut g, &config).unwrap();
                    (g, report)
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
