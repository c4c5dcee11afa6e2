//! The integer model: what `lower_to_integer` produces, the TFLite writer
//! serializes, the TFLite reader parses and the integer executor runs.
//!
//! It mirrors a TFLite subgraph on purpose (one flat tensor table, ops in
//! execution order referring to tensors by index, TFLite's layouts) so that
//! writing and reading `.tflite` files is a field-by-field mapping and a
//! model quant did not write runs unchanged:
//!
//! - activations are NHWC;
//! - conv filters are OHWI `[out, kh, kw, in]`, depthwise filters
//!   `[1, kh, kw, in·multiplier]`, fully-connected weights `[units, in]`;
//! - biases are int32 with scale `input_scale · weight_scale[c]`.
//!
//! Every quantized tensor carries its [`QuantParams`] (`real = scale ·
//! (q − zero_point)`); constants carry their data.

use crate::dtype::DType;
use crate::tensor::{QuantParams, Tensor};
use serde::{Deserialize, Serialize};

/// Index of a tensor in [`IntModel::tensors`].
pub type TensorIndex = usize;

/// A lowered, integer-only model (one subgraph).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntModel {
    /// Every tensor: activations, constants, inputs and outputs.
    pub tensors: Vec<IntTensor>,
    /// The ops in execution order (topologically sorted).
    pub ops: Vec<IntOp>,
    /// Tensors the caller feeds.
    pub inputs: Vec<TensorIndex>,
    /// Tensors the caller reads.
    pub outputs: Vec<TensorIndex>,
    /// Free text (written as the TFLite model description).
    pub description: String,
}

/// One tensor of an [`IntModel`].
#[derive(Clone, Debug, PartialEq)]
pub struct IntTensor {
    /// Name (from the graph node it was lowered from, or the file).
    pub name: String,
    /// Element type: `U8`/`I8` for quantized values, `I32` for biases and
    /// shape operands, `F32` only at float model edges.
    pub dtype: DType,
    /// Static shape. For activations the batch dimension is the one
    /// declared; the executor accepts any batch and recomputes shapes.
    pub shape: Vec<usize>,
    /// Quantization parameters (required on every `U8`/`I8` tensor and on
    /// int32 biases).
    pub quant: Option<QuantParams>,
    /// The value of a constant; `None` for tensors computed at run time.
    pub data: Option<Tensor>,
}

/// Padding of convolutions and pools (TensorFlow's geometry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Padding {
    /// Output size `ceil(in / stride)`; the extra row or column of padding
    /// goes to the bottom or right.
    Same,
    /// No padding: output size `ceil((in − k_eff + 1) / stride)`.
    Valid,
}

/// A fused activation: a clamp of the output integers (reference semantics §7.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Activation {
    /// No clamp beyond the storage type.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `clamp(x, −1, 1)`.
    ReluN1To1,
    /// `clamp(x, 0, 6)`.
    Relu6,
}

/// Strides, dilations or window sizes as `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hw {
    /// Along the height axis.
    pub h: usize,
    /// Along the width axis.
    pub w: usize,
}

impl Hw {
    /// `(h, w)`.
    pub const fn new(h: usize, w: usize) -> Hw {
        Hw { h, w }
    }

    /// `(1, 1)`.
    pub const ONE: Hw = Hw { h: 1, w: 1 };
}

/// The operation of an [`IntOp`], with its options. The inputs each op
/// expects are listed on its variant, in TFLite's order.
#[derive(Clone, Debug, PartialEq)]
pub enum IntOpKind {
    /// `CONV_2D`: inputs `[input, filter (OHWI), bias]`.
    Conv2D {
        /// Padding.
        padding: Padding,
        /// Strides.
        stride: Hw,
        /// Dilations.
        dilation: Hw,
        /// Fused activation.
        activation: Activation,
    },
    /// `DEPTHWISE_CONV_2D`: inputs `[input, filter [1,kh,kw,in·mult], bias]`.
    DepthwiseConv2D {
        /// Padding.
        padding: Padding,
        /// Strides.
        stride: Hw,
        /// Dilations.
        dilation: Hw,
        /// Output channels per input channel.
        depth_multiplier: usize,
        /// Fused activation.
        activation: Activation,
    },
    /// `FULLY_CONNECTED`: inputs `[input, weights [units, in], bias or None]`.
    FullyConnected {
        /// Fused activation.
        activation: Activation,
        /// Keep the input's leading dimensions instead of flattening to 2-D.
        keep_num_dims: bool,
    },
    /// `ADD`: inputs `[a, b]`.
    Add {
        /// Fused activation.
        activation: Activation,
    },
    /// `MUL`: inputs `[a, b]`.
    Mul {
        /// Fused activation.
        activation: Activation,
    },
    /// `MAX_POOL_2D`: input `[input]`.
    MaxPool2D {
        /// Padding.
        padding: Padding,
        /// Strides.
        stride: Hw,
        /// Window size.
        filter: Hw,
        /// Fused activation.
        activation: Activation,
    },
    /// `AVERAGE_POOL_2D`: input `[input]`.
    AveragePool2D {
        /// Padding.
        padding: Padding,
        /// Strides.
        stride: Hw,
        /// Window size.
        filter: Hw,
        /// Fused activation.
        activation: Activation,
    },
    /// `MEAN`: inputs `[input, axes (int32 constant)]`.
    Mean {
        /// Keep reduced dimensions as size 1.
        keep_dims: bool,
    },
    /// `RESHAPE`: inputs `[input, shape (int32 constant)]`; `-1` in the
    /// shape takes the remaining elements.
    Reshape,
    /// `CONCATENATION`: inputs `[a, b, ...]`.
    Concatenation {
        /// The axis (negative counts from the end).
        axis: i32,
        /// Fused activation: kept for round trips only; LiteRT 2.3 refuses
        /// any value but `None` (the inspector flags it).
        activation: Activation,
    },
    /// `SOFTMAX` along the last axis: input `[input]`.
    Softmax {
        /// The inverse temperature (TFLite's `beta`).
        beta: f32,
    },
    /// `LOGISTIC`: input `[input]`.
    Logistic,
    /// `PAD`: inputs `[input, paddings (int32 [rank, 2])]`.
    Pad,
    /// `QUANTIZE`: float → integer, or integer → integer (requantize).
    Quantize,
    /// `DEQUANTIZE`: integer → float.
    Dequantize,
}

impl IntOpKind {
    /// The TFLite builtin operator name (`CONV_2D`, ...).
    pub fn tflite_name(&self) -> &'static str {
        match self {
            IntOpKind::Conv2D { .. } => "CONV_2D",
            IntOpKind::DepthwiseConv2D { .. } => "DEPTHWISE_CONV_2D",
            IntOpKind::FullyConnected { .. } => "FULLY_CONNECTED",
            IntOpKind::Add { .. } => "ADD",
            IntOpKind::Mul { .. } => "MUL",
            IntOpKind::MaxPool2D { .. } => "MAX_POOL_2D",
            IntOpKind::AveragePool2D { .. } => "AVERAGE_POOL_2D",
            IntOpKind::Mean { .. } => "MEAN",
            IntOpKind::Reshape => "RESHAPE",
            IntOpKind::Concatenation { .. } => "CONCATENATION",
            IntOpKind::Softmax { .. } => "SOFTMAX",
            IntOpKind::Logistic => "LOGISTIC",
            IntOpKind::Pad => "PAD",
            IntOpKind::Quantize => "QUANTIZE",
            IntOpKind::Dequantize => "DEQUANTIZE",
        }
    }
}

/// One op of an [`IntModel`].
#[derive(Clone, Debug, PartialEq)]
pub struct IntOp {
    /// What it computes.
    pub kind: IntOpKind,
    /// Input tensors in TFLite's order; `None` marks an omitted optional
    /// input (TFLite's `-1`, e.g. a fully-connected layer without bias).
    pub inputs: Vec<Option<TensorIndex>>,
    /// Output tensors.
    pub outputs: Vec<TensorIndex>,
}

impl IntModel {
    /// Adds a tensor and returns its index.
    pub fn add_tensor(&mut self, tensor: IntTensor) -> TensorIndex {
        self.tensors.push(tensor);
        self.tensors.len() - 1
    }

    /// The tensor called `name`, if any.
    pub fn tensor_by_name(&self, name: &str) -> Option<TensorIndex> {
        self.tensors.iter().position(|t| t.name == name)
    }
}
