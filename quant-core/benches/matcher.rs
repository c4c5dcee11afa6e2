//! Matching the quantize pass's layer pattern on every node of generated
//! networks of 1k, 10k and 100k conv-BiasAdd-ReLU6 layers with residual adds:
//! the time per layer should stay flat (linear scaling).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quant_core::builder::{GraphBuilder, Padding};
use quant_core::matcher::{Pattern, PatternBuilder};
use quant_core::{DType, Graph, Shape, Tensor};
use std::hint::black_box;

fn network(layers: usize) -> Graph {
    let mut b = GraphBuilder::new();
    let mut x = b
        .placeholder("input", DType::F32, Shape::known(&[1, 4, 4, 4]))
        .unwrap();
    let w = b
        .constant("w", Tensor::zeros(DType::F32, &[1, 1, 4, 4]).unwrap())
        .unwrap();
    let bias = b
        .constant("b", Tensor::zeros(DType::F32, &[4]).unwrap())
        .unwrap();
    for i in 0..layers {
        x = b
            .scope(&format!("layer{i}"), |b| {
                let y = b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?;
                let y = b.bias_add("BiasAdd", y, bias)?;
                let y = if i % 2 == 1 {
                    b.binary("AddV2", "add", y, x)?
                } else {
                    y
                };
                b.relu6("Relu6", y)
            })
            .unwrap();
    }
    b.finish()
}

/// The activation-rooted layer pattern of the quantize pass (section 3.1).
fn layer_pattern() -> Pattern {
    let mut p = PatternBuilder::new();
    let input = p.any();
    let weights = p
        .op("Const|Variable|VariableV2|Identity|ReadVariableOp|Mul")
        .id();
    let layer = p
        .op("Conv2D|MatMul|DepthwiseConv2dNative")
        .inputs([input, weights])
        .unordered()
        .name("layer")
        .id();
    let bias_rhs = p.any();
    let bias_add = p
        .op("Add|AddV2|BiasAdd")
        .inputs([layer, bias_rhs])
        .unordered()
        .name("bias_add")
        .id();
    let bypass_rhs = p.any();
    let bypass = p
        .op("Add|AddV2")
        .inputs([bias_add, bypass_rhs])
        .unordered()
        .name("bypass")
        .id();
    let act_in = p.one_of([bias_add, bypass, layer]);
    let act = p
        .op("Relu|Relu6|Identity")
        .inputs([act_in])
        .name("activation")
        .id();
    p.build(act).unwrap()
}

fn bench(c: &mut Criterion) {
    let pattern = layer_pattern();
    let mut group = c.benchmark_group("match_all_layers");
    group.sample_size(10);
    for layers in [1_000, 10_000, 100_000] {
        let g = network(layers);
        assert_eq!(pattern.match_graph(&g).count(), layers);
        group.throughput(Throughput::Elements(layers as u64));
        group.bench_with_input(BenchmarkId::from_parameter(layers), &g, |bench, g| {
            bench.iter(|| black_box(pattern.match_graph(black_box(g)).count()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
