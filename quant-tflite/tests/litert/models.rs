//! Seeded random single-op integer models that LiteRT 2.3 accepts, for
//! every op of [`IntOpKind`] in uint8 and int8, and one small multi-op model.
//!
//! The legality rules are those of `docs/tflite-export.md` §7–8: int8
//! weights symmetric (zero point 0, per-channel on the TFLite axis), uint8
//! everything per-tensor, biases int32 with scale `S_in·S_w[c]`, pools /
//! RESHAPE / PAD with their input's parameters, int8 CONCATENATION with
//! equal parameters everywhere, SOFTMAX and LOGISTIC with the fixed output
//! (1/256, −128 or 0), ADD with an output multiplier below 1, a bias on
//! every convolution, and no fused activation on CONCATENATION (LiteRT
//! 2.3 rejects one at Prepare, contrary to the "ignored" of
//! reference-semantics §7.6). About 40% of the models use power-of-two scales, so
//! that the multipliers are exact powers of two and ties occur; inputs are
//! sometimes drawn close to the zero point to make accumulators small.

use super::Case;
use quant_core::integer::{Activation, Hw, IntModel, IntOp, IntOpKind, IntTensor, Padding};
use quant_core::{DType, QuantParams, Tensor};

/// A small deterministic generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi);
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as i64
    }

    /// Uniform in `lo..=hi` as usize.
    pub fn size(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as i64, hi as i64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.size(0, items.len() - 1)]
    }
}

/// The storage type of a quantized model: uint8 (legacy) or int8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ty {
    /// `U8` or `I8`.
    pub dtype: DType,
}

impl Ty {
    /// uint8.
    pub const U8: Ty = Ty { dtype: DType::U8 };
    /// int8.
    pub const I8: Ty = Ty { dtype: DType::I8 };

    /// Smallest value.
    pub fn min(self) -> i64 {
        if self.dtype == DType::U8 { 0 } else { -128 }
    }

    /// Largest value.
    pub fn max(self) -> i64 {
        if self.dtype == DType::U8 { 255 } else { 127 }
    }

    /// `u8` or `i8`.
    pub fn name(self) -> &'static str {
        if self.dtype == DType::U8 { "u8" } else { "i8" }
    }

    /// The zero point of SOFTMAX and LOGISTIC outputs.
    pub fn prob_zero_point(self) -> i64 {
        self.min()
    }
}

/// Per-tensor parameters.
pub fn per_tensor(scale: f32, zero_point: i64) -> QuantParams {
    QuantParams {
        scales: vec![scale],
        zero_points: vec![zero_point],
        axis: None,
    }
}

/// Builds a tensor of `dtype` from integer values (which must fit).
pub fn int_tensor(dtype: DType, shape: &[usize], values: &[i64]) -> Tensor {
    let t = match dtype {
        DType::U8 => Tensor::from_vec(shape, values.iter().map(|&v| v as u8).collect()),
        DType::I8 => Tensor::from_vec(shape, values.iter().map(|&v| v as i8).collect()),
        DType::I32 => Tensor::from_vec(shape, values.iter().map(|&v| v as i32).collect()),
        other => panic!("no integer tensor of {other:?}"),
    };
    t.expect("shape and value count agree")
}

/// Builds a single-subgraph model tensor by tensor.
#[derive(Default)]
pub struct Builder {
    /// The model so far.
    pub model: IntModel,
    /// The values fed to each model input.
    pub feeds: Vec<Tensor>,
}

impl Builder {
    fn tensor(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        quant: Option<QuantParams>,
        data: Option<Tensor>,
    ) -> usize {
        self.model.add_tensor(IntTensor {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            quant,
            data,
        })
    }

    /// A model input fed with `value` (its dtype and shape).
    pub fn input(&mut self, name: &str, value: Tensor, quant: Option<QuantParams>) -> usize {
        let t = self.tensor(name, value.dtype(), value.shape(), quant.clone(), None);
        let fed = match quant {
            Some(q) => value.with_quant(q).expect("parameters fit the input"),
            None => value,
        };
        self.model.inputs.push(t);
        self.feeds.push(fed);
        t
    }

    /// A constant.
    pub fn constant(&mut self, name: &str, value: Tensor, quant: Option<QuantParams>) -> usize {
        let (dtype, shape) = (value.dtype(), value.shape().to_vec());
        self.tensor(name, dtype, &shape, quant, Some(value))
    }

    /// An int32 shape-like constant.
    pub fn i32_constant(&mut self, name: &str, shape: &[usize], values: &[i64]) -> usize {
        self.constant(name, int_tensor(DType::I32, shape, values), None)
    }

    /// A tensor computed at run time.
    pub fn computed(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        quant: Option<QuantParams>,
    ) -> usize {
        self.tensor(name, dtype, shape, quant, None)
    }

    /// Appends an op.
    pub fn op(&mut self, kind: IntOpKind, inputs: &[Option<usize>], outputs: &[usize]) {
        self.model.ops.push(IntOp {
            kind,
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
        });
    }

    /// Marks a model output.
    pub fn output(&mut self, t: usize) {
        self.model.outputs.push(t);
    }

    /// The finished case.
    pub fn case(mut self, name: String, group: &str, description: &str) -> Case {
        self.model.description = description.to_string();
        Case {
            name,
            group: group.to_string(),
            model: self.model,
            inputs: self.feeds,
        }
    }
}

/// A scale: a power of two in 2^-10..2^-1 when `pow2`, otherwise
/// log-uniform in [1e-3, 0.3].
fn scale(rng: &mut Rng, pow2: bool) -> f32 {
    if pow2 {
        2f32.powi(-(rng.range(1, 10) as i32))
    } else {
        10f64.powf(-3.0 + 2.5 * rng.unit()) as f32
    }
}

/// `base · 2^u` with u uniform in [lo, hi] (an integer when `pow2`).
fn scaled(rng: &mut Rng, base: f64, lo: f64, hi: f64, pow2: bool) -> f32 {
    let e = if pow2 {
        rng.range(lo.ceil() as i64, hi.floor() as i64) as f64
    } else {
        lo + (hi - lo) * rng.unit()
    };
    let v = base * 2f64.powf(e);
    if pow2 {
        2f64.powi(v.log2().round() as i32) as f32
    } else {
        v as f32
    }
}

/// How input values are spread around the zero point.
#[derive(Clone, Copy)]
struct Spread {
    zero_point: i64,
    /// `None`: the whole type range; `Some(s)`: zero point ± s.
    half_width: Option<i64>,
}

impl Spread {
    fn random(rng: &mut Rng, zero_point: i64) -> Spread {
        let half_width = if rng.chance(0.3) {
            Some(rng.pick(&[1, 2, 3, 6, 15]))
        } else {
            None
        };
        Spread {
            zero_point,
            half_width,
        }
    }

    /// Mean of (q − Z)² for values drawn this way (approximate).
    fn mean_square(self, ty: Ty) -> f64 {
        match self.half_width {
            Some(s) => (s * (s + 1)) as f64 / 3.0,
            None => {
                let mid = (ty.min() + ty.max()) as f64 / 2.0;
                5461.0 + (mid - self.zero_point as f64).powi(2)
            }
        }
    }

    fn values(self, rng: &mut Rng, ty: Ty, n: usize) -> Vec<i64> {
        (0..n)
            .map(|_| match self.half_width {
                Some(s) => (self.zero_point + rng.range(-s, s)).clamp(ty.min(), ty.max()),
                None => rng.range(ty.min(), ty.max()),
            })
            .collect()
    }
}

fn zero_point(rng: &mut Rng, ty: Ty) -> i64 {
    rng.range(ty.min(), ty.max())
}

fn activation(rng: &mut Rng) -> Activation {
    rng.pick(&[
        Activation::None,
        Activation::None,
        Activation::Relu,
        Activation::Relu6,
        Activation::ReluN1To1,
    ])
}

/// A quantized activation input: (tensor index, parameters, spread).
fn quantized_input(
    b: &mut Builder,
    rng: &mut Rng,
    ty: Ty,
    name: &str,
    shape: &[usize],
    pow2: bool,
) -> (usize, f32, i64, Spread) {
    let s = scale(rng, pow2);
    let z = zero_point(rng, ty);
    let spread = Spread::random(rng, z);
    let n = shape.iter().product();
    let values = spread.values(rng, ty, n);
    let t = b.input(
        name,
        int_tensor(ty.dtype, shape, &values),
        Some(per_tensor(s, z)),
    );
    (t, s, z, spread)
}

/// Output size of a window op along one axis (TensorFlow's geometry).
fn out_size(input: usize, window: usize, stride: usize, dilation: usize, pad: Padding) -> usize {
    let k = (window - 1) * dilation + 1;
    match pad {
        Padding::Same => input.div_ceil(stride),
        Padding::Valid => (input + 1 - k).div_ceil(stride),
    }
}

/// Window size, dilation and stride along one axis.
fn window_geometry(rng: &mut Rng, dilate: bool) -> (usize, usize, usize) {
    let window = rng.size(1, 4);
    let dilation = if dilate && window > 1 && rng.chance(0.25) {
        2
    } else {
        1
    };
    let stride = rng.pick(&[1, 1, 2, 3]);
    (window, dilation, stride)
}

fn fits_valid(input: usize, window: usize, dilation: usize) -> bool {
    input > (window - 1) * dilation
}

/// The weights of a conv-like layer: quantized values, parameters per
/// output channel and the mean square of (q_w − Z_w).
struct Weights {
    values: Vec<i64>,
    scales: Vec<f32>,
    zero_point: i64,
    mean_square: f64,
}

/// Weights with `channels` output channels; `channel_of(i)` gives the
/// output channel of flat element i. int8: symmetric, per-channel with
/// probability 0.75; uint8: per-tensor, asymmetric.
fn weights(
    rng: &mut Rng,
    ty: Ty,
    n: usize,
    channels: usize,
    pow2: bool,
    per_channel: bool,
) -> Weights {
    let r = rng.pick(&[1i64, 3, 15, 127]);
    let base = scale(rng, pow2);
    let scales: Vec<f32> = if per_channel {
        (0..channels)
            .map(|_| scaled(rng, f64::from(base), -1.0, 1.0, pow2))
            .collect()
    } else {
        vec![base]
    };
    let zero_point = if ty == Ty::I8 {
        0
    } else {
        rng.range(1, 254).clamp(r.min(128), 255 - r.min(127))
    };
    let values = (0..n)
        .map(|_| (zero_point + rng.range(-r, r)).clamp(ty.min().max(-127), ty.max()))
        .collect();
    Weights {
        values,
        scales,
        zero_point,
        mean_square: (r * (r + 1)) as f64 / 3.0,
    }
}

/// An output scale giving outputs spread over tens of steps for an
/// accumulator of the given RMS: `S_out = S_in·S_w / M`.
fn conv_output_scale(rng: &mut Rng, s_in: f32, s_w: f32, acc_rms: f64, pow2: bool) -> f32 {
    let m = 30.0 / acc_rms.max(1.0) * 2f64.powf(rng.unit() * 4.0 - 2.0);
    let s = f64::from(s_in) * f64::from(s_w) / m;
    if pow2 {
        2f64.powi(s.log2().round() as i32) as f32
    } else {
        s as f32
    }
}

/// The bias of a conv-like layer: int32 values and parameters
/// `S_in·S_w[c]` (the float32 product).
fn bias(
    b: &mut Builder,
    rng: &mut Rng,
    channels: usize,
    s_in: f32,
    w: &Weights,
    acc_rms: f64,
) -> usize {
    let limit = (2.0 * acc_rms).clamp(1.0, 1e6) as i64;
    let values: Vec<i64> = if rng.chance(0.2) {
        vec![0; channels]
    } else {
        (0..channels).map(|_| rng.range(-limit, limit)).collect()
    };
    let scales: Vec<f32> = w.scales.iter().map(|&sw| s_in * sw).collect();
    let quant = QuantParams {
        zero_points: vec![0; scales.len()],
        axis: (scales.len() > 1).then_some(0),
        scales,
    };
    b.constant(
        "bias",
        int_tensor(DType::I32, &[channels], &values),
        Some(quant),
    )
}

fn weight_quant(w: &Weights, axis: usize) -> QuantParams {
    QuantParams {
        scales: w.scales.clone(),
        zero_points: vec![w.zero_point; w.scales.len()],
        axis: (w.scales.len() > 1).then_some(axis),
    }
}

fn nhwc(rng: &mut Rng, max_hw: usize, max_c: usize) -> [usize; 4] {
    [
        rng.size(1, 2),
        rng.size(1, max_hw),
        rng.size(1, max_hw),
        rng.size(1, max_c),
    ]
}

/// One random model of `op` (a TFLite op name) in `ty`. `large` makes
/// CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED layers of up to
/// 16×16×32 → 48 channels and 512 → 64 units (the other ops ignore it).
pub fn single_op(op: &str, ty: Ty, seed: u64, large: bool) -> Case {
    let mut rng = Rng::new(seed);
    let rng = &mut rng;
    let pow2 = rng.chance(0.4);
    let mut b = Builder::default();
    let size = if large { " large" } else { "" };
    let mut group = format!("{op} {}{size}", ty.name());
    let name = format!("{}_{}_{seed}", op.to_lowercase(), ty.name());
    let description = format!("{group} seed {seed}{}", if pow2 { " pow2" } else { "" });
    match op {
        "CONV_2D" | "DEPTHWISE_CONV_2D" => {
            let depthwise = op == "DEPTHWISE_CONV_2D";
            let [n, h, w, c] = match (large, depthwise) {
                (true, _) => nhwc(rng, 16, 32),
                (false, true) => nhwc(rng, 8, 8),
                (false, false) => nhwc(rng, 8, 6),
            };
            let (kh, dh, sh) = window_geometry(rng, true);
            let (kw, dw, sw) = window_geometry(rng, true);
            let mut padding = if rng.chance(0.5) {
                Padding::Same
            } else {
                Padding::Valid
            };
            if padding == Padding::Valid && !(fits_valid(h, kh, dh) && fits_valid(w, kw, dw)) {
                padding = Padding::Same;
            }
            let (x, s_in, _z_in, spread) =
                quantized_input(&mut b, rng, ty, "input", &[n, h, w, c], pow2);
            let mult = if depthwise { rng.size(1, 3) } else { 1 };
            let c_out = match (depthwise, large) {
                (true, _) => c * mult,
                (false, true) => rng.size(1, 48),
                (false, false) => rng.size(1, 6),
            };
            let per_channel = ty == Ty::I8 && rng.chance(0.75);
            let (filter_shape, taps, axis) = if depthwise {
                ([1, kh, kw, c_out], kh * kw, 3)
            } else {
                ([c_out, kh, kw, c], kh * kw * c, 0)
            };
            let wts = weights(
                rng,
                ty,
                filter_shape.iter().product(),
                c_out,
                pow2,
                per_channel,
            );
            let acc_rms = (taps as f64 * spread.mean_square(ty) * wts.mean_square).sqrt();
            let filter = b.constant(
                "filter",
                int_tensor(ty.dtype, &filter_shape, &wts.values),
                Some(weight_quant(&wts, axis)),
            );
            let bias = bias(&mut b, rng, c_out, s_in, &wts, acc_rms);
            let s_out = conv_output_scale(rng, s_in, wts.scales[0], acc_rms, pow2);
            let out_shape = [
                n,
                out_size(h, kh, sh, dh, padding),
                out_size(w, kw, sw, dw, padding),
                c_out,
            ];
            let y = b.computed(
                "output",
                ty.dtype,
                &out_shape,
                Some(per_tensor(s_out, zero_point(rng, ty))),
            );
            let (stride, dilation, activation) =
                (Hw::new(sh, sw), Hw::new(dh, dw), activation(rng));
            let kind = if depthwise {
                IntOpKind::DepthwiseConv2D {
                    padding,
                    stride,
                    dilation,
                    depth_multiplier: mult,
                    activation,
                }
            } else {
                IntOpKind::Conv2D {
                    padding,
                    stride,
                    dilation,
                    activation,
                }
            };
            b.op(kind, &[Some(x), Some(filter), Some(bias)], &[y]);
            b.output(y);
        }
        "FULLY_CONNECTED" => {
            let (n, depth, units) = if large {
                (rng.size(1, 8), rng.size(1, 512), rng.size(1, 64))
            } else {
                (rng.size(1, 3), rng.size(1, 40), rng.size(1, 12))
            };
            let form = rng.size(0, 4);
            let (in_shape, keep_num_dims, out_shape) = match form {
                0..=2 => (vec![n, depth], false, vec![n, units]),
                3 => {
                    let a = rng.size(1, 3);
                    (vec![n, a, depth], false, vec![n * a, units])
                }
                _ => {
                    let a = rng.size(1, 3);
                    (vec![n, a, depth], true, vec![n, a, units])
                }
            };
            let (x, s_in, _z_in, spread) =
                quantized_input(&mut b, rng, ty, "input", &in_shape, pow2);
            let per_channel = ty == Ty::I8 && rng.chance(0.7);
            let wts = weights(rng, ty, units * depth, units, pow2, per_channel);
            let acc_rms = (depth as f64 * spread.mean_square(ty) * wts.mean_square).sqrt();
            let weights_t = b.constant(
                "weights",
                int_tensor(ty.dtype, &[units, depth], &wts.values),
                Some(weight_quant(&wts, 0)),
            );
            let bias = rng
                .chance(0.8)
                .then(|| bias(&mut b, rng, units, s_in, &wts, acc_rms));
            let s_out = conv_output_scale(rng, s_in, wts.scales[0], acc_rms, pow2);
            let y = b.computed(
                "output",
                ty.dtype,
                &out_shape,
                Some(per_tensor(s_out, zero_point(rng, ty))),
            );
            b.op(
                IntOpKind::FullyConnected {
                    activation: activation(rng),
                    keep_num_dims,
                },
                &[Some(x), Some(weights_t), bias],
                &[y],
            );
            b.output(y);
        }
        "ADD" | "MUL" => {
            let rank = rng.size(1, 4);
            let shape: Vec<usize> = (0..rank).map(|_| rng.size(1, 5)).collect();
            let (a, s1, _, sp1) = quantized_input(&mut b, rng, ty, "a", &shape, pow2);
            let (c, s2, _, sp2) = quantized_input(&mut b, rng, ty, "b", &shape, pow2);
            let act = activation(rng);
            let (s_out, kind) = if op == "ADD" {
                // Output multiplier 2·max(S1, S2) / (2^20·S_out) stays far below 1.
                let s = scaled(rng, f64::from(s1.max(s2)), -1.0, 2.0, pow2);
                (s, IntOpKind::Add { activation: act })
            } else {
                let rms = (sp1.mean_square(ty) * sp2.mean_square(ty)).sqrt();
                let m = 30.0 / rms.max(1.0);
                let base = f64::from(s1) * f64::from(s2) / m;
                let s = scaled(rng, base, -2.0, 2.0, pow2);
                (s, IntOpKind::Mul { activation: act })
            };
            let y = b.computed(
                "output",
                ty.dtype,
                &shape,
                Some(per_tensor(s_out, zero_point(rng, ty))),
            );
            b.op(kind, &[Some(a), Some(c)], &[y]);
            b.output(y);
        }
        "MAX_POOL_2D" | "AVERAGE_POOL_2D" => {
            let [n, h, w, c] = nhwc(rng, 8, 5);
            let (fh, _, sh) = window_geometry(rng, false);
            let (fw, _, sw) = window_geometry(rng, false);
            let mut padding = if rng.chance(0.5) {
                Padding::Same
            } else {
                Padding::Valid
            };
            if padding == Padding::Valid && !(fits_valid(h, fh, 1) && fits_valid(w, fw, 1)) {
                padding = Padding::Same;
            }
            let (x, s, z, _) = quantized_input(&mut b, rng, ty, "input", &[n, h, w, c], pow2);
            let out_shape = [
                n,
                out_size(h, fh, sh, 1, padding),
                out_size(w, fw, sw, 1, padding),
                c,
            ];
            let y = b.computed("output", ty.dtype, &out_shape, Some(per_tensor(s, z)));
            let (stride, filter, activation) = (Hw::new(sh, sw), Hw::new(fh, fw), activation(rng));
            let kind = if op == "MAX_POOL_2D" {
                IntOpKind::MaxPool2D {
                    padding,
                    stride,
                    filter,
                    activation,
                }
            } else {
                IntOpKind::AveragePool2D {
                    padding,
                    stride,
                    filter,
                    activation,
                }
            };
            b.op(kind, &[Some(x)], &[y]);
            b.output(y);
        }
        "MEAN" => {
            let special = rng.chance(0.3);
            let rank = if special { 4 } else { rng.size(2, 4) };
            let shape: Vec<usize> = (0..rank)
                .map(|i| {
                    if i == 0 {
                        rng.size(1, 2)
                    } else {
                        rng.size(1, 6)
                    }
                })
                .collect();
            let mut axes: Vec<usize> = if special {
                vec![1, 2]
            } else {
                let picked: Vec<usize> = (1..rank).filter(|_| rng.chance(0.5)).collect();
                if picked.is_empty() {
                    vec![rng.size(1, rank - 1)]
                } else {
                    picked
                }
            };
            if !special && axes.len() > 1 && rng.chance(0.3) {
                axes.reverse();
            }
            let keep_dims = special || rng.chance(0.5);
            let (x, s_in, _, _) = quantized_input(&mut b, rng, ty, "input", &shape, pow2);
            let out_shape: Vec<usize> = (0..rank)
                .filter_map(|i| match (axes.contains(&i), keep_dims) {
                    (false, _) => Some(shape[i]),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect();
            let axes_t = b.i32_constant(
                "axes",
                &[axes.len()],
                &axes.iter().map(|&a| a as i64).collect::<Vec<_>>(),
            );
            let s_out = scaled(rng, f64::from(s_in), -1.0, 1.0, pow2);
            let y = b.computed(
                "output",
                ty.dtype,
                &out_shape,
                Some(per_tensor(s_out, zero_point(rng, ty))),
            );
            b.op(
                IntOpKind::Mean { keep_dims },
                &[Some(x), Some(axes_t)],
                &[y],
            );
            b.output(y);
        }
        "RESHAPE" => {
            let rank = rng.size(1, 4);
            let shape: Vec<usize> = (0..rank).map(|_| rng.size(1, 6)).collect();
            let (x, s, z, _) = quantized_input(&mut b, rng, ty, "input", &shape, pow2);
            // Split the non-batch elements into 0..=3 factors.
            let mut rest: usize = shape[1..].iter().product();
            let mut out_shape = vec![shape[0]];
            for _ in 0..rng.size(0, 3) {
                let divisors: Vec<usize> = (1..=rest).filter(|&d| rest.is_multiple_of(d)).collect();
                let d = rng.pick(&divisors);
                out_shape.push(d);
                rest /= d;
            }
            if rest > 1 || (out_shape.len() == 1 && rng.chance(0.5)) {
                out_shape.push(rest);
            }
            let mut spec: Vec<i64> = out_shape.iter().map(|&d| d as i64).collect();
            if rng.chance(0.6) {
                let at = rng.size(0, spec.len() - 1);
                spec[at] = -1;
            }
            let shape_t = b.i32_constant("shape", &[spec.len()], &spec);
            let y = b.computed("output", ty.dtype, &out_shape, Some(per_tensor(s, z)));
            b.op(IntOpKind::Reshape, &[Some(x), Some(shape_t)], &[y]);
            b.output(y);
        }
        "CONCATENATION" => {
            let rank = rng.size(1, 4);
            let base: Vec<usize> = (0..rank).map(|_| rng.size(1, 4)).collect();
            let axis = rng.size(0, rank - 1);
            let count = rng.size(2, 3);
            let same_params = ty == Ty::I8 || rng.chance(0.3);
            let (s_out, z_out) = (scale(rng, pow2), zero_point(rng, ty));
            let mut inputs = Vec::new();
            let mut total = 0;
            for k in 0..count {
                let mut shape = base.clone();
                shape[axis] = rng.size(1, 4);
                total += shape[axis];
                let (s, z) = if same_params {
                    (s_out, z_out)
                } else {
                    (
                        scaled(rng, f64::from(s_out), -1.5, 1.5, pow2),
                        zero_point(rng, ty),
                    )
                };
                let spread = Spread::random(rng, z);
                let values = spread.values(rng, ty, shape.iter().product());
                inputs.push(Some(b.input(
                    &format!("in{k}"),
                    int_tensor(ty.dtype, &shape, &values),
                    Some(per_tensor(s, z)),
                )));
            }
            let mut out_shape = base.clone();
            out_shape[axis] = total;
            let y = b.computed(
                "output",
                ty.dtype,
                &out_shape,
                Some(per_tensor(s_out, z_out)),
            );
            let axis = if rng.chance(0.3) {
                axis as i32 - rank as i32
            } else {
                axis as i32
            };
            // LiteRT 2.3 rejects a fused activation on CONCATENATION at
            // Prepare ("params->activation != kTfLiteActNone"), uint8 and int8.
            let activation = Activation::None;
            b.op(IntOpKind::Concatenation { axis, activation }, &inputs, &[y]);
            b.output(y);
        }
        "SOFTMAX" | "LOGISTIC" => {
            let shape = match rng.size(0, 2) {
                0 => vec![rng.size(1, 3), rng.size(1, 20)],
                1 => vec![rng.size(1, 2), 1, 1, rng.size(1, 20)],
                _ => vec![rng.size(1, 2), rng.size(1, 4), rng.size(1, 12)],
            };
            let (x, _, _, _) = quantized_input(&mut b, rng, ty, "input", &shape, pow2);
            let y = b.computed(
                "output",
                ty.dtype,
                &shape,
                Some(per_tensor(1.0 / 256.0, ty.prob_zero_point())),
            );
            let kind = if op == "SOFTMAX" {
                let beta = if rng.chance(0.7) {
                    1.0
                } else {
                    rng.pick(&[0.25, 0.5, 1.7, 2.0])
                };
                IntOpKind::Softmax { beta }
            } else {
                IntOpKind::Logistic
            };
            b.op(kind, &[Some(x)], &[y]);
            b.output(y);
        }
        "PAD" => {
            let rank = rng.size(2, 4);
            let shape: Vec<usize> = (0..rank).map(|_| rng.size(1, 5)).collect();
            let (x, s, z, _) = quantized_input(&mut b, rng, ty, "input", &shape, pow2);
            let mut pads = Vec::new();
            let mut out_shape = Vec::new();
            for (i, &d) in shape.iter().enumerate() {
                let (before, after) = if i == 0 {
                    (0, 0)
                } else {
                    (rng.size(0, 2), rng.size(0, 2))
                };
                pads.extend([before as i64, after as i64]);
                out_shape.push(d + before + after);
            }
            let pads_t = b.i32_constant("paddings", &[rank, 2], &pads);
            let y = b.computed("output", ty.dtype, &out_shape, Some(per_tensor(s, z)));
            b.op(IntOpKind::Pad, &[Some(x), Some(pads_t)], &[y]);
            b.output(y);
        }
        "QUANTIZE" => {
            let rank = rng.size(1, 4);
            let shape: Vec<usize> = (0..rank).map(|_| rng.size(1, 6)).collect();
            let count: usize = shape.iter().product();
            let (s_out, z_out) = (scale(rng, pow2), zero_point(rng, ty));
            let from = rng.pick(&["f32", "f32", "u8", "i8"]);
            let x = if from == "f32" {
                let lo = (ty.min() - z_out - 4) as f64;
                let hi = (ty.max() - z_out + 4) as f64;
                let values: Vec<f32> = (0..count)
                    .map(|_| {
                        let steps = if rng.chance(0.5) {
                            // An exact half step: a tie for power-of-two scales.
                            rng.range(lo as i64, hi as i64) as f64 + 0.5
                        } else {
                            lo + (hi - lo) * rng.unit()
                        };
                        (steps * f64::from(s_out)) as f32
                    })
                    .collect();
                b.input(
                    "input",
                    Tensor::from_vec(&shape, values).expect("shape and values agree"),
                    None,
                )
            } else {
                let from_ty = if from == "u8" { Ty::U8 } else { Ty::I8 };
                let (s_in, z_in) = if rng.chance(0.15) {
                    // The same grid: identity, or the zero point shifted
                    // by 128 between the types.
                    (s_out, z_out + from_ty.min() - ty.min())
                } else {
                    (
                        scaled(rng, f64::from(s_out), -2.0, 2.0, pow2),
                        zero_point(rng, from_ty),
                    )
                };
                let spread = Spread::random(rng, z_in);
                let values = spread.values(rng, from_ty, count);
                b.input(
                    "input",
                    int_tensor(from_ty.dtype, &shape, &values),
                    Some(per_tensor(s_in, z_in)),
                )
            };
            group = format!("QUANTIZE {from}->{}{size}", ty.name());
            let y = b.computed("output", ty.dtype, &shape, Some(per_tensor(s_out, z_out)));
            b.op(IntOpKind::Quantize, &[Some(x)], &[y]);
            b.output(y);
        }
        "DEQUANTIZE" => {
            let rank = rng.size(1, 4);
            let shape: Vec<usize> = (0..rank).map(|_| rng.size(1, 6)).collect();
            let (x, _, _, _) = quantized_input(&mut b, rng, ty, "input", &shape, pow2);
            let y = b.computed("output", DType::F32, &shape, None);
            b.op(IntOpKind::Dequantize, &[Some(x)], &[y]);
            b.output(y);
        }
        other => panic!("no generator for {other}"),
    }
    b.case(name, &group, &description)
}

/// The ops [`single_op`] covers: every [`IntOpKind`].
pub const OPS: [&str; 15] = [
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "MUL",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "MEAN",
    "RESHAPE",
    "CONCATENATION",
    "SOFTMAX",
    "LOGISTIC",
    "PAD",
    "QUANTIZE",
    "DEQUANTIZE",
];

/// A small classifier with float I/O: QUANTIZE → CONV_2D (3×3, 4 channels,
/// SAME, RELU6) → MAX_POOL_2D 2×2 → RESHAPE [-1, 64] → FULLY_CONNECTED 10 →
/// SOFTMAX → DEQUANTIZE, declared for batch 1 and fed `batch` images of
/// 8×8×1 in [0, 1).
pub fn small_classifier(ty: Ty, seed: u64, batch: usize) -> Case {
    let mut rng = Rng::new(seed);
    let rng = &mut rng;
    let mut b = Builder::default();
    let pixels: Vec<f32> = (0..batch * 64).map(|_| rng.unit() as f32).collect();
    let image = Tensor::from_vec(&[batch, 8, 8, 1], pixels).expect("shape and values agree");
    let x = b.input("image", image, None);
    b.model.tensors[x].shape = vec![1, 8, 8, 1];
    let low = ty.min();
    let s_x = 1.0f32 / 255.0;
    let xq = b.computed(
        "image_q",
        ty.dtype,
        &[1, 8, 8, 1],
        Some(per_tensor(s_x, low)),
    );
    b.op(IntOpKind::Quantize, &[Some(x)], &[xq]);

    let per_channel = ty == Ty::I8;
    let w1 = weights(rng, ty, 4 * 9, 4, false, per_channel);
    let filter = b.constant(
        "conv/filter",
        int_tensor(ty.dtype, &[4, 3, 3, 1], &w1.values),
        Some(weight_quant(&w1, 0)),
    );
    let acc1 = (9.0 * 5461.0 * w1.mean_square).sqrt();
    let conv_bias = bias(&mut b, rng, 4, s_x, &w1, acc1);
    let s_conv = 6.0f32 / 255.0;
    let conv = b.computed(
        "conv",
        ty.dtype,
        &[1, 8, 8, 4],
        Some(per_tensor(s_conv, low)),
    );
    b.op(
        IntOpKind::Conv2D {
            padding: Padding::Same,
            stride: Hw::ONE,
            dilation: Hw::ONE,
            activation: Activation::Relu6,
        },
        &[Some(xq), Some(filter), Some(conv_bias)],
        &[conv],
    );
    let pool = b.computed(
        "pool",
        ty.dtype,
        &[1, 4, 4, 4],
        Some(per_tensor(s_conv, low)),
    );
    b.op(
        IntOpKind::MaxPool2D {
            padding: Padding::Valid,
            stride: Hw::new(2, 2),
            filter: Hw::new(2, 2),
            activation: Activation::None,
        },
        &[Some(conv)],
        &[pool],
    );
    let shape = b.i32_constant("flatten/shape", &[2], &[-1, 64]);
    let flat = b.computed("flatten", ty.dtype, &[1, 64], Some(per_tensor(s_conv, low)));
    b.op(IntOpKind::Reshape, &[Some(pool), Some(shape)], &[flat]);

    let w2 = weights(rng, ty, 10 * 64, 10, false, per_channel);
    let fc_w = b.constant(
        "fc/weights",
        int_tensor(ty.dtype, &[10, 64], &w2.values),
        Some(weight_quant(&w2, 0)),
    );
    let acc2 = (64.0 * 3000.0 * w2.mean_square).sqrt();
    let fc_bias = bias(&mut b, rng, 10, s_conv, &w2, acc2);
    let s_logits = conv_output_scale(rng, s_conv, w2.scales[0], acc2, false);
    let z_logits = (low + ty.max()) / 2;
    let logits = b.computed(
        "logits",
        ty.dtype,
        &[1, 10],
        Some(per_tensor(s_logits, z_logits)),
    );
    b.op(
        IntOpKind::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
        },
        &[Some(flat), Some(fc_w), Some(fc_bias)],
        &[logits],
    );
    let probs = b.computed(
        "probs_q",
        ty.dtype,
        &[1, 10],
        Some(per_tensor(1.0 / 256.0, ty.prob_zero_point())),
    );
    b.op(IntOpKind::Softmax { beta: 1.0 }, &[Some(logits)], &[probs]);
    let out = b.computed("probs", DType::F32, &[1, 10], None);
    b.op(IntOpKind::Dequantize, &[Some(probs)], &[out]);
    b.output(out);
    let group = format!("classifier {}", ty.name());
    b.case(
        format!("classifier_{}_{seed}", ty.name()),
        &group,
        "conv → maxpool → reshape → fc → softmax, float I/O",
    )
}
