//! The integer executor on the MNIST CNN's hot ops at batch 64, int8
//! per-channel and uint8, scalar reference vs fast kernels:
//!
//! - `conv1`: `[64, 28, 28, 1]` → 5×5 SAME → 16 channels;
//! - `conv2`: `[64, 14, 14, 16]` → 5×5 SAME → 32 channels;
//! - `fc`: `[64, 1568]` → 10 units.
//!
//! Each is a one-op model run through `IntExecutor::run` (input copy
//! included) on rayon's global pool. Throughput is in multiply-adds
//! (taps inside the image counted as for a dense 5×5 window).
//!
//! Run: `cargo bench -p quant-kernels --bench integer`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quant_core::integer::{Activation, Hw, IntModel, IntOp, IntOpKind, IntTensor, Padding};
use quant_core::{DType, QuantParams, Tensor};
use quant_kernels::integer::{IntExecutor, KernelPath};

/// Deterministic levels (xorshift).
fn levels(n: usize, seed: u64) -> Vec<i64> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as i64 % 256
        })
        .collect()
}

fn tensor(dtype: DType, shape: &[usize], v: &[i64]) -> Tensor {
    match dtype {
        DType::U8 => Tensor::from_vec(shape, v.iter().map(|&x| x as u8).collect()).unwrap(),
        _ => Tensor::from_vec(shape, v.iter().map(|&x| (x - 128) as i8).collect()).unwrap(),
    }
}

/// A one-op CONV_2D (5×5 SAME, ReLU6) or FULLY_CONNECTED model and its input.
fn layer(dtype: DType, input: &[usize], out_c: usize, fc: bool) -> (IntModel, Tensor) {
    let q = |s: f32, z: i64| QuantParams {
        scales: vec![s],
        zero_points: vec![z],
        axis: None,
    };
    let zp = if dtype == DType::U8 { 128 } else { 0 };
    let in_c = *input.last().unwrap();
    let w_shape = if fc {
        vec![out_c, in_c]
    } else {
        vec![out_c, 5, 5, in_c]
    };
    let w_n: usize = w_shape.iter().product();
    let w_quant = if dtype == DType::I8 {
        QuantParams {
            scales: vec![0.01; out_c],
            zero_points: vec![0; out_c],
            axis: Some(0),
        }
    } else {
        q(0.01, 120)
    };
    let mut w_levels = levels(w_n, 7);
    if dtype == DType::I8 {
        w_levels.iter_mut().for_each(|v| *v = (*v).clamp(1, 255));
    }
    let mut m = IntModel::default();
    let x = m.add_tensor(IntTensor {
        name: "x".into(),
        dtype,
        shape: input.to_vec(),
        quant: Some(q(0.02, zp - 8)),
        data: None,
    });
    let w = m.add_tensor(IntTensor {
        name: "w".into(),
        dtype,
        shape: w_shape.clone(),
        quant: Some(w_quant),
        data: Some(tensor(dtype, &w_shape, &w_levels)),
    });
    let b = m.add_tensor(IntTensor {
        name: "b".into(),
        dtype: DType::I32,
        shape: vec![out_c],
        quant: None,
        data: Some(Tensor::from_vec(&[out_c], vec![100i32; out_c]).unwrap()),
    });
    let y = m.add_tensor(IntTensor {
        name: "y".into(),
        dtype,
        shape: vec![],
        quant: Some(q(0.05, zp - 100)),
        data: None,
    });
    let kind = if fc {
        IntOpKind::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
        }
    } else {
        IntOpKind::Conv2D {
            padding: Padding::Same,
            stride: Hw::ONE,
            dilation: Hw::ONE,
            activation: Activation::Relu6,
        }
    };
    m.ops.push(IntOp {
        kind,
        inputs: vec![Some(x), Some(w), Some(b)],
        outputs: vec![y],
    });
    m.inputs = vec![x];
    m.outputs = vec![y];
    let input_t = tensor(dtype, input, &levels(input.iter().product(), 3));
    (m, input_t)
}

fn bench(c: &mut Criterion) {
    let cases: [(&str, &[usize], usize, bool, u64); 3] = [
        ("conv1", &[64, 28, 28, 1], 16, false, 64 * 784 * 16 * 25),
        ("conv2", &[64, 14, 14, 16], 32, false, 64 * 196 * 32 * 400),
        ("fc", &[64, 1568], 10, true, 64 * 1568 * 10),
    ];
    for (name, shape, out_c, fc, macs) in cases {
        let mut group = c.benchmark_group(format!("integer/{name}"));
        group.throughput(Throughput::Elements(macs));
        group.measurement_time(Duration::from_secs(3));
        group.sample_size(20);
        for dtype in [DType::I8, DType::U8] {
            let (model, input) = layer(dtype, shape, out_c, fc);
            for path in [KernelPath::Reference, KernelPath::Fast] {
                let exec = IntExecutor::with_kernels(&model, path).unwrap();
                let inputs = vec![input.clone()];
                group.bench_function(format!("{}/{path:?}", dtype.name()), |b| {
                    b.iter(|| black_box(exec.run(black_box(&inputs)).unwrap()))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
