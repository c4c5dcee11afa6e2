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
//!
//! Besides TFLite's builtin operators, an op may be [`IntOpKind::Custom`]:
//! an op type a plugin implements, written to TFLite as a `CUSTOM`
//! operator with its name as the custom code.
//!
//! The model serializes to JSON (serde `Serialize`, the form plugin
//! exporters receive): `{"tensors": [...], "ops": [...], "inputs": [...],
//! "outputs": [...], "description": "..."}`; a tensor is `{"name", "dtype"
//! ("u8", "i8", "i32", "f32"), "shape", "quant" (null or `{"scales",
//! "zero_points", "axis"?}`), "data"}` with `data` null or the row-major
//! elements as numbers; an op is `{"kind": {"op": "<TFLite name>", ...its
//! options}, "inputs" (indices, null for an omitted input), "outputs"}`,
//! the options named as the fields of [`IntOpKind`]'s variants (a custom
//! op: `{"op": "CUSTOM", "name": "<op type>"}`).

use crate::dtype::DType;
use crate::tensor::{QuantParams, Tensor};
use serde::{Deserialize, Serialize, Serializer};

/// Index of a tensor in [`IntModel::tensors`].
pub type TensorIndex = usize;

/// A lowered, integer-only model (one subgraph).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize)]
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
    #[serde(serialize_with = "serialize_data")]
    pub data: Option<Tensor>,
}

/// A constant's data as JSON: its row-major elements as numbers (integers
/// for integer types, floats for float ones), or null.
fn serialize_data<S: Serializer>(data: &Option<Tensor>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let Some(t) = data else {
        return s.serialize_none();
    };
    let mut seq = s.serialize_seq(Some(t.len()))?;
    match t.to_i64_vec() {
        Ok(ints) if !matches!(t.dtype(), DType::F32 | DType::F64) => {
            for v in ints {
                seq.serialize_element(&v)?;
            }
        }
        _ => {
            for v in t.to_f64_vec() {
                seq.serialize_element(&v)?;
            }
        }
    }
    seq.end()
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
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op")]
pub enum IntOpKind {
    /// `CONV_2D`: inputs `[input, filter (OHWI), bias]`.
    #[serde(rename = "CONV_2D")]
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
    #[serde(rename = "DEPTHWISE_CONV_2D")]
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
    #[serde(rename = "FULLY_CONNECTED")]
    FullyConnected {
        /// Fused activation.
        activation: Activation,
        /// Keep the input's leading dimensions instead of flattening to 2-D.
        keep_num_dims: bool,
    },
    /// `ADD`: inputs `[a, b]`.
    #[serde(rename = "ADD")]
    Add {
        /// Fused activation.
        activation: Activation,
    },
    /// `MUL`: inputs `[a, b]`.
    #[serde(rename = "MUL")]
    Mul {
        /// Fused activation.
        activation: Activation,
    },
    /// `MAX_POOL_2D`: input `[input]`.
    #[serde(rename = "MAX_POOL_2D")]
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
    #[serde(rename = "AVERAGE_POOL_2D")]
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
    #[serde(rename = "MEAN")]
    Mean {
        /// Keep reduced dimensions as size 1.
        keep_dims: bool,
    },
    /// `RESHAPE`: inputs `[input, shape (int32 constant)]`; `-1` in the
    /// shape takes the remaining elements.
    #[serde(rename = "RESHAPE")]
    Reshape,
    /// `CONCATENATION`: inputs `[a, b, ...]`.
    #[serde(rename = "CONCATENATION")]
    Concatenation {
        /// The axis (negative counts from the end).
        axis: i32,
        /// Fused activation: kept for round trips only; LiteRT 2.3 refuses
        /// any value but `None` (the inspector flags it).
        activation: Activation,
    },
    /// `SOFTMAX` along the last axis: input `[input]`.
    #[serde(rename = "SOFTMAX")]
    Softmax {
        /// The inverse temperature (TFLite's `beta`).
        beta: f32,
    },
    /// `LOGISTIC`: input `[input]`.
    #[serde(rename = "LOGISTIC")]
    Logistic,
    /// `PAD`: inputs `[input, paddings (int32 [rank, 2])]`.
    #[serde(rename = "PAD")]
    Pad,
    /// `QUANTIZE`: float → integer, or integer → integer (requantize).
    #[serde(rename = "QUANTIZE")]
    Quantize,
    /// `DEQUANTIZE`: integer → float.
    #[serde(rename = "DEQUANTIZE")]
    Dequantize,
    /// `CUSTOM`: an op type a plugin implements (its integer kernel runs
    /// it); inputs and outputs are the graph op's, in order, each quantized
    /// with its own parameters. Written to TFLite as a `CUSTOM` operator
    /// whose custom code is `name`.
    #[serde(rename = "CUSTOM")]
    Custom {
        /// The op type (the plugin's `[[op]]` name, e.g. `HardSwish`).
        name: String,
    },
}

impl IntOpKind {
    /// The TFLite builtin operator name (`CONV_2D`, ...; `CUSTOM` for a
    /// plugin op).
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
            IntOpKind::Custom { .. } => "CUSTOM",
        }
    }
}

/// One op of an [`IntModel`].
#[derive(Clone, Debug, PartialEq, Serialize)]
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
