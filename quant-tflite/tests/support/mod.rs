//! Shared builders of integer models and a raw flatbuffer decoder that
//! does not use quant-tflite's generated code (so byte-level facts are
//! checked independently of the writer).

#![allow(dead_code)]

use quant_core::integer::{Activation, Hw, IntModel, IntOp, IntOpKind, IntTensor, Padding};
use quant_core::{DType, QuantParams, Tensor};

pub fn per_tensor(scale: f32, zero_point: i64) -> QuantParams {
    QuantParams {
        scales: vec![scale],
        zero_points: vec![zero_point],
        axis: None,
    }
}

pub fn per_channel(scales: Vec<f32>, axis: usize) -> QuantParams {
    let n = scales.len();
    QuantParams {
        scales,
        zero_points: vec![0; n],
        axis: Some(axis),
    }
}

pub fn activation(
    model: &mut IntModel,
    name: &str,
    dtype: DType,
    shape: &[usize],
    quant: Option<QuantParams>,
) -> usize {
    model.add_tensor(IntTensor {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        quant,
        data: None,
    })
}

pub fn constant(
    model: &mut IntModel,
    name: &str,
    data: Tensor,
    quant: Option<QuantParams>,
) -> usize {
    model.add_tensor(IntTensor {
        name: name.into(),
        dtype: data.dtype(),
        shape: data.shape().to_vec(),
        quant,
        data: Some(data),
    })
}

pub fn op(model: &mut IntModel, kind: IntOpKind, inputs: &[Option<usize>], output: usize) {
    model.ops.push(IntOp {
        kind,
        inputs: inputs.to_vec(),
        outputs: vec![output],
    });
}

/// Deterministic small integers for weights.
fn pattern(n: usize, lo: i32, hi: i32, seed: usize) -> Vec<i32> {
    let span = (hi - lo + 1) as usize;
    (0..n)
        .map(|i| lo + ((i * 37 + seed * 11 + 5) % span) as i32)
        .collect()
}

/// Weights of `dtype` (int8 symmetric in [-127, 127], uint8 in [0, 255]).
pub fn weights(dtype: DType, shape: &[usize], seed: usize) -> Tensor {
    let n: usize = shape.iter().product();
    match dtype {
        DType::I8 => Tensor::from_vec(
            shape,
            pattern(n, -127, 127, seed)
                .into_iter()
                .map(|v| v as i8)
                .collect(),
        )
        .unwrap(),
        _ => Tensor::from_vec(
            shape,
            pattern(n, 0, 255, seed)
                .into_iter()
                .map(|v| v as u8)
                .collect(),
        )
        .unwrap(),
    }
}

pub fn int32(shape: &[usize], values: Vec<i32>) -> Tensor {
    Tensor::from_vec(shape, values).unwrap()
}

/// Weight quantization for `channels` output channels along `axis`: int8
/// per-channel symmetric, uint8 per-tensor asymmetric.
pub fn weight_quant(dtype: DType, channels: usize, axis: usize) -> QuantParams {
    match dtype {
        DType::I8 => per_channel(
            (0..channels).map(|c| 0.01 + 0.002 * c as f32).collect(),
            axis,
        ),
        _ => per_tensor(0.02, 120),
    }
}

/// Bias quantization: scale = input scale × weight scale, zero point 0.
pub fn bias_quant(input: &QuantParams, weights: &QuantParams) -> QuantParams {
    let scales: Vec<f32> = weights.scales.iter().map(|s| input.scales[0] * s).collect();
    let n = scales.len();
    QuantParams {
        scales,
        zero_points: vec![0; n],
        axis: weights.axis.map(|_| 0),
    }
}

/// The activation parameters of the body (any zero point is legal).
pub fn body_quant(dtype: DType) -> QuantParams {
    match dtype {
        DType::I8 => per_tensor(0.05, -3),
        _ => per_tensor(0.05, 125),
    }
}

/// Softmax/logistic output parameters (1/256 with zero point -128 or 0).
pub fn prob_quant(dtype: DType) -> QuantParams {
    per_tensor(1.0 / 256.0, if dtype == DType::I8 { -128 } else { 0 })
}

/// A chain using every `IntOpKind`, all in `dtype`, with legal parameters:
/// PAD, CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D, ADD,
/// MUL, CONCATENATION, MEAN, RESHAPE, FULLY_CONNECTED (without bias, then
/// with bias and keep_num_dims), SOFTMAX, LOGISTIC, DEQUANTIZE, QUANTIZE.
pub fn every_op_model(dtype: DType) -> IntModel {
    let mut m = IntModel {
        description: format!("every op, {dtype}"),
        ..IntModel::default()
    };
    let a = body_quant(dtype);
    let q = || Some(body_quant(dtype));
    let x = activation(&mut m, "input", dtype, &[1, 6, 6, 2], q());
    let paddings = constant(
        &mut m,
        "pad/paddings",
        int32(&[4, 2], vec![0, 0, 1, 1, 1, 1, 0, 0]),
        None,
    );
    let padded = activation(&mut m, "pad", dtype, &[1, 8, 8, 2], q());
    op(&mut m, IntOpKind::Pad, &[Some(x), Some(paddings)], padded);

    let wq = weight_quant(dtype, 3, 0);
    let w = constant(
        &mut m,
        "conv/weights",
        weights(dtype, &[3, 3, 3, 2], 1),
        Some(wq.clone()),
    );
    let b = constant(
        &mut m,
        "conv/bias",
        int32(&[3], vec![100, -50, 7]),
        Some(bias_quant(&a, &wq)),
    );
    let conv = activation(&mut m, "conv", dtype, &[1, 8, 8, 3], q());
    op(
        &mut m,
        IntOpKind::Conv2D {
            padding: Padding::Same,
            stride: Hw::ONE,
            dilation: Hw::ONE,
            activation: Activation::Relu6,
        },
        &[Some(padded), Some(w), Some(b)],
        conv,
    );

    let dq = weight_quant(dtype, 6, 3);
    let dw = constant(
        &mut m,
        "dw/weights",
        weights(dtype, &[1, 3, 3, 6], 2),
        Some(dq.clone()),
    );
    let db = constant(
        &mut m,
        "dw/bias",
        int32(&[6], vec![1, 2, 3, -4, -5, 6]),
        Some(bias_quant(&a, &dq)),
    );
    let dwo = activation(&mut m, "dw", dtype, &[1, 6, 6, 6], q());
    op(
        &mut m,
        IntOpKind::DepthwiseConv2D {
            padding: Padding::Valid,
            stride: Hw::ONE,
            dilation: Hw::ONE,
            depth_multiplier: 2,
            activation: Activation::Relu,
        },
        &[Some(conv), Some(dw), Some(db)],
        dwo,
    );

    let max = activation(&mut m, "maxpool", dtype, &[1, 3, 3, 6], q());
    op(
        &mut m,
        IntOpKind::MaxPool2D {
            padding: Padding::Valid,
            stride: Hw::new(2, 2),
            filter: Hw::new(2, 2),
            activation: Activation::None,
        },
        &[Some(dwo)],
        max,
    );
    let avg = activation(&mut m, "avgpool", dtype, &[1, 3, 3, 6], q());
    op(
        &mut m,
        IntOpKind::AveragePool2D {
            padding: Padding::Same,
            stride: Hw::ONE,
            filter: Hw::new(3, 2),
            activation: Activation::ReluN1To1,
        },
        &[Some(max)],
        avg,
    );
    let add = activation(&mut m, "add", dtype, &[1, 3, 3, 6], q());
    op(
        &mut m,
        IntOpKind::Add {
            activation: Activation::Relu,
        },
        &[Some(avg), Some(max)],
        add,
    );
    let mul = activation(&mut m, "mul", dtype, &[1, 3, 3, 6], q());
    op(
        &mut m,
        IntOpKind::Mul {
            activation: Activation::None,
        },
        &[Some(add), Some(add)],
        mul,
    );
    let cat = activation(&mut m, "concat", dtype, &[1, 3, 3, 12], q());
    op(
        &mut m,
        IntOpKind::Concatenation {
            axis: -1,
            activation: Activation::None,
        },
        &[Some(mul), Some(max)],
        cat,
    );
    let axes = constant(&mut m, "mean/axes", int32(&[2], vec![1, 2]), None);
    let mean = activation(&mut m, "mean", dtype, &[1, 1, 1, 12], q());
    op(
        &mut m,
        IntOpKind::Mean { keep_dims: true },
        &[Some(cat), Some(axes)],
        mean,
    );
    let shape = constant(&mut m, "reshape/shape", int32(&[2], vec![-1, 12]), None);
    let flat = activation(&mut m, "reshape", dtype, &[1, 12], q());
    op(&mut m, IntOpKind::Reshape, &[Some(mean), Some(shape)], flat);

    let fq = weight_quant(dtype, 5, 0);
    let fw = constant(&mut m, "fc1/weights", weights(dtype, &[5, 12], 3), Some(fq));
    let fc1 = activation(&mut m, "fc1", dtype, &[1, 5], q());
    op(
        &mut m,
        IntOpKind::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
        },
        &[Some(flat), Some(fw), None],
        fc1,
    );
    let gq = weight_quant(dtype, 4, 0);
    let gw = constant(
        &mut m,
        "fc2/weights",
        weights(dtype, &[4, 5], 4),
        Some(gq.clone()),
    );
    let gb = constant(
        &mut m,
        "fc2/bias",
        int32(&[4], vec![10, 20, -30, 0]),
        Some(bias_quant(&a, &gq)),
    );
    let fc2 = activation(&mut m, "fc2", dtype, &[1, 4], q());
    op(
        &mut m,
        IntOpKind::FullyConnected {
            activation: Activation::Relu,
            keep_num_dims: true,
        },
        &[Some(fc1), Some(gw), Some(gb)],
        fc2,
    );

    let sm = activation(&mut m, "softmax", dtype, &[1, 4], Some(prob_quant(dtype)));
    op(&mut m, IntOpKind::Softmax { beta: 1.0 }, &[Some(fc2)], sm);
    let lg = activation(&mut m, "logistic", dtype, &[1, 4], Some(prob_quant(dtype)));
    op(&mut m, IntOpKind::Logistic, &[Some(sm)], lg);
    let deq = activation(&mut m, "dequantize", DType::F32, &[1, 4], None);
    op(&mut m, IntOpKind::Dequantize, &[Some(lg)], deq);
    let requant = activation(&mut m, "quantize", dtype, &[1, 4], q());
    op(&mut m, IntOpKind::Quantize, &[Some(deq)], requant);
    m.inputs = vec![x];
    m.outputs = vec![deq, requant];
    m
}

/// The MNIST CNN of docs/tflite-export.md §13 (conv8-RELU6, maxpool,
/// conv16-RELU6, maxpool, reshape [-1,784], FC10, softmax), with integer
/// I/O or with float I/O (QUANTIZE first, DEQUANTIZE last).
pub fn mnist_model(dtype: DType, float_io: bool) -> IntModel {
    let mut m = IntModel::default();
    let input_q = if dtype == DType::I8 {
        per_tensor(1.0 / 255.0, -128)
    } else {
        per_tensor(1.0 / 255.0, 0)
    };
    let relu6_q = if dtype == DType::I8 {
        per_tensor(6.0 / 255.0, -128)
    } else {
        per_tensor(6.0 / 255.0, 0)
    };
    let logits_q = body_quant(dtype);
    let mut x = activation(
        &mut m,
        "image",
        dtype,
        &[1, 28, 28, 1],
        Some(input_q.clone()),
    );
    if float_io {
        let f = activation(&mut m, "image_f32", DType::F32, &[1, 28, 28, 1], None);
        m.inputs = vec![f];
        op(&mut m, IntOpKind::Quantize, &[Some(f)], x);
    } else {
        m.inputs = vec![x];
    }
    let mut in_q = input_q;
    for (i, (cin, cout, hw)) in [(1usize, 8usize, 28usize), (8, 16, 14)]
        .into_iter()
        .enumerate()
    {
        let wq = weight_quant(dtype, cout, 0);
        let w = constant(
            &mut m,
            &format!("conv{i}/weights"),
            weights(dtype, &[cout, 3, 3, cin], i),
            Some(wq.clone()),
        );
        let b = constant(
            &mut m,
            &format!("conv{i}/bias"),
            int32(&[cout], vec![3; cout]),
            Some(bias_quant(&in_q, &wq)),
        );
        let c = activation(
            &mut m,
            &format!("conv{i}"),
            dtype,
            &[1, hw, hw, cout],
            Some(relu6_q.clone()),
        );
        op(
            &mut m,
            IntOpKind::Conv2D {
                padding: Padding::Same,
                stride: Hw::ONE,
                dilation: Hw::ONE,
                activation: Activation::Relu6,
            },
            &[Some(x), Some(w), Some(b)],
            c,
        );
        let p = activation(
            &mut m,
            &format!("pool{i}"),
            dtype,
            &[1, hw / 2, hw / 2, cout],
            Some(relu6_q.clone()),
        );
        op(
            &mut m,
            IntOpKind::MaxPool2D {
                padding: Padding::Valid,
                stride: Hw::new(2, 2),
                filter: Hw::new(2, 2),
                activation: Activation::None,
            },
            &[Some(c)],
            p,
        );
        x = p;
        in_q = relu6_q.clone();
    }
    let shape = constant(&mut m, "flatten/shape", int32(&[2], vec![-1, 784]), None);
    let flat = activation(&mut m, "flatten", dtype, &[1, 784], Some(relu6_q.clone()));
    op(&mut m, IntOpKind::Reshape, &[Some(x), Some(shape)], flat);
    let wq = weight_quant(dtype, 10, 0);
    let w = constant(
        &mut m,
        "logits/weights",
        weights(dtype, &[10, 784], 9),
        Some(wq.clone()),
    );
    let b = constant(
        &mut m,
        "logits/bias",
        int32(&[10], vec![-7; 10]),
        Some(bias_quant(&relu6_q, &wq)),
    );
    let logits = activation(&mut m, "logits", dtype, &[1, 10], Some(logits_q));
    op(
        &mut m,
        IntOpKind::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
        },
        &[Some(flat), Some(w), Some(b)],
        logits,
    );
    let probs = activation(&mut m, "probs", dtype, &[1, 10], Some(prob_quant(dtype)));
    op(
        &mut m,
        IntOpKind::Softmax { beta: 1.0 },
        &[Some(logits)],
        probs,
    );
    if float_io {
        let out = activation(&mut m, "probs_f32", DType::F32, &[1, 10], None);
        op(&mut m, IntOpKind::Dequantize, &[Some(probs)], out);
        m.outputs = vec![out];
    } else {
        m.outputs = vec![probs];
    }
    m
}

/// Raw flatbuffer access by vtable slot, independent of generated code.
pub struct Raw<'a>(pub &'a [u8]);

impl Raw<'_> {
    pub fn u16(&self, pos: usize) -> u16 {
        u16::from_le_bytes(self.0[pos..pos + 2].try_into().unwrap())
    }
    pub fn u32(&self, pos: usize) -> u32 {
        u32::from_le_bytes(self.0[pos..pos + 4].try_into().unwrap())
    }
    pub fn i32(&self, pos: usize) -> i32 {
        self.u32(pos) as i32
    }
    pub fn f32(&self, pos: usize) -> f32 {
        f32::from_bits(self.u32(pos))
    }
    /// The root table's position.
    pub fn root(&self) -> usize {
        self.u32(0) as usize
    }
    /// Position of field `id` of the table at `table`, if present.
    pub fn field(&self, table: usize, id: usize) -> Option<usize> {
        let vtable = (table as i64 - i64::from(self.i32(table))) as usize;
        let vt_size = self.u16(vtable) as usize;
        let slot = 4 + 2 * id;
        if slot + 2 > vt_size {
            return None;
        }
        match self.u16(vtable + slot) {
            0 => None,
            off => Some(table + off as usize),
        }
    }
    /// Follows the uoffset stored at `pos`.
    pub fn deref(&self, pos: usize) -> usize {
        pos + self.u32(pos) as usize
    }
    /// A vector field: (length, position of element 0).
    pub fn vector(&self, table: usize, id: usize) -> Option<(usize, usize)> {
        let v = self.deref(self.field(table, id)?);
        Some((self.u32(v) as usize, v + 4))
    }
    /// Element `i` of a vector of tables.
    pub fn table_at(&self, table: usize, id: usize, i: usize) -> usize {
        let (len, start) = self.vector(table, id).unwrap();
        assert!(i < len);
        self.deref(start + 4 * i)
    }
    pub fn string(&self, table: usize, id: usize) -> Option<String> {
        let (len, start) = self.vector(table, id)?;
        Some(String::from_utf8(self.0[start..start + len].to_vec()).unwrap())
    }
    pub fn i32_vector(&self, table: usize, id: usize) -> Vec<i32> {
        self.vector(table, id)
            .map(|(len, start)| (0..len).map(|i| self.i32(start + 4 * i)).collect())
            .unwrap_or_default()
    }
}
