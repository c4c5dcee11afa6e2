//! One quantization-aware training step of the built-in MNIST CNN at batch
//! 64: forward, backward and Adam update of the graph `create_training_graph`
//! makes (batch norms folded in training form, per-channel fake-quant
//! weights, moving-average activation ranges). `tools/bench/train_peers.py`
//! times the same step in PyTorch eager QAT; `cargo xtask bench --peers`
//! runs both.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quant_core::Tensor;
use quant_core::data::Batch;
use quant_core::models::{self, ModelOptions, Rng};
use quant_passes::passes::gradients::GradientOptions;
use quant_passes::passes::optimizer::{LrSchedule, OptimizerConfig, OptimizerKind};
use quant_passes::{TrainingOptions, experimental_create_training_graph};
use quant_train::{Trainer, training_graph};

const BATCH: usize = 64;

fn trainer() -> Trainer {
    let mut graph = models::builtin(
        "mnist-cnn",
        ModelOptions {
            training: true,
            ..ModelOptions::default()
        },
    )
    .expect("built-in model")
    .expect("the model builds");
    experimental_create_training_graph(
        &mut graph,
        &TrainingOptions {
            per_channel: true,
            ..TrainingOptions::default()
        },
    )
    .expect("the training rewrite applies");
    let optimizer = OptimizerConfig {
        kind: OptimizerKind::ADAM,
        weight_decay: 0.0,
    };
    let tg = training_graph(
        graph,
        models::INPUT,
        models::LOGITS,
        &optimizer,
        &GradientOptions::default(),
    )
    .expect("the training graph builds");
    Trainer::new(tg, LrSchedule::Constant(1e-3)).expect("the session starts")
}

fn batch() -> Batch {
    let mut rng = Rng::new(0);
    let images: Vec<f32> = (0..BATCH * 28 * 28).map(|_| rng.uniform()).collect();
    let labels: Vec<i64> = (0..BATCH as i64).map(|i| i % 10).collect();
    Batch {
        images: Tensor::from_vec(&[BATCH, 28, 28, 1], images).expect("images"),
        labels: Tensor::from_vec(&[BATCH], labels).expect("labels"),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("mnist_cnn_b64");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let (mut t, b) = (trainer(), batch());
    group.bench_function("qat_step", |bench| {
        bench.iter(|| t.step(&b).expect("a training step runs"));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
