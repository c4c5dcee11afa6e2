//! The reader: TFLite flatbuffer bytes → [`IntModel`].

use crate::codes;
use crate::fb;
use crate::validate::{ModelError, validate};
use quant_core::integer::{Activation, Hw, IntModel, IntOp, IntOpKind, IntTensor, Padding};
use quant_core::{DType, QuantParams, Tensor, TensorError};

/// Why a `.tflite` file could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ReadError {
    /// Too short to hold a flatbuffer header.
    #[error("not a TFLite file: {len} bytes is too short")]
    TooShort {
        /// File length.
        len: usize,
    },
    /// Bytes 4..8 are not `TFL3`.
    #[error("not a TFLite file: file identifier {found:?} is not \"TFL3\"")]
    WrongIdentifier {
        /// The bytes found (lossy UTF-8).
        found: String,
    },
    /// The flatbuffer does not verify (truncated or corrupt).
    #[error("invalid TFLite flatbuffer: {0}")]
    Invalid(#[from] flatbuffers::InvalidFlatbuffer),
    /// `Model.version` is not 3.
    #[error("TFLite schema version {found} is not supported (expected 3)")]
    SchemaVersion {
        /// The version found.
        found: u32,
    },
    /// A required table or vector is absent.
    #[error("the model has no {0}")]
    Missing(&'static str),
    /// An op refers to an operator code that does not exist.
    #[error("op {op}: opcode index {index} is out of range ({count} operator codes)")]
    OpcodeIndex {
        /// Op index.
        op: usize,
        /// The bad index.
        index: u32,
        /// Operator codes in the file.
        count: usize,
    },
    /// An op quant's integer model does not have.
    #[error("op {op} ({name}): operator not supported by quant's integer model")]
    UnsupportedOp {
        /// Op index.
        op: usize,
        /// The builtin name (`TANH`, ...) or `custom '<code>'`.
        name: String,
    },
    /// An op lacks the options table it needs, or has another one.
    #[error("op {op} ({name}): {problem}")]
    Options {
        /// Op index.
        op: usize,
        /// The op name.
        name: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// An op or the subgraph refers to a tensor index that is negative
    /// (other than an omitted optional input) or out of range.
    #[error("{context}: tensor index {index} is out of range ({count} tensors)")]
    TensorIndex {
        /// Where the index appears.
        context: String,
        /// The bad index.
        index: i64,
        /// Tensors in the subgraph.
        count: usize,
    },
    /// A tensor problem: buffer index, type, shape, quantization or data.
    #[error("tensor {tensor} ('{name}'): {problem}")]
    Tensor {
        /// Tensor index.
        tensor: usize,
        /// Tensor name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The decoded model fails quant's structural checks.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Checks the identifier and verifies the flatbuffer.
pub(crate) fn root(bytes: &[u8]) -> Result<fb::Model<'_>, ReadError> {
    if bytes.len() < 8 {
        return Err(ReadError::TooShort { len: bytes.len() });
    }
    if &bytes[4..8] != crate::FILE_IDENTIFIER.as_bytes() {
        return Err(ReadError::WrongIdentifier {
            found: String::from_utf8_lossy(&bytes[4..8]).into_owned(),
        });
    }
    Ok(fb::root_as_model(bytes)?)
}

fn padding(op: usize, name: &'static str, p: fb::Padding) -> Result<Padding, ReadError> {
    match p {
        fb::Padding::SAME => Ok(Padding::Same),
        fb::Padding::VALID => Ok(Padding::Valid),
        other => Err(ReadError::Options {
            op,
            name,
            problem: format!("unknown padding {}", other.0),
        }),
    }
}

fn activation(
    op: usize,
    name: &'static str,
    a: fb::ActivationFunctionType,
) -> Result<Activation, ReadError> {
    use fb::ActivationFunctionType as A;
    match a {
        A::NONE => Ok(Activation::None),
        A::RELU => Ok(Activation::Relu),
        A::RELU_N1_TO_1 => Ok(Activation::ReluN1To1),
        A::RELU6 => Ok(Activation::Relu6),
        other => Err(ReadError::Options {
            op,
            name,
            problem: format!(
                "fused activation {} is not supported on integer kernels",
                other
                    .variant_name()
                    .map_or_else(|| other.0.to_string(), str::to_string)
            ),
        }),
    }
}

/// A positive option value (stride, window, dilation, multiplier).
fn positive(op: usize, name: &'static str, field: &str, v: i32) -> Result<usize, ReadError> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| ReadError::Options {
            op,
            name,
            problem: format!("{field} is {v}; it must be positive"),
        })
}

fn missing(op: usize, name: &'static str, table: &str) -> ReadError {
    ReadError::Options {
        op,
        name,
        problem: format!("no {table} (LiteRT would read zeros)"),
    }
}

/// The op kind of one operator, from its code and options.
fn op_kind(
    index: usize,
    code: fb::BuiltinOperator,
    op: &fb::Operator<'_>,
) -> Result<IntOpKind, ReadError> {
    use fb::BuiltinOperator as B;
    let unsupported = || ReadError::UnsupportedOp {
        op: index,
        name: codes::op_name(code),
    };
    let name: &'static str = match code {
        B::CONV_2D => "CONV_2D",
        B::DEPTHWISE_CONV_2D => "DEPTHWISE_CONV_2D",
        B::FULLY_CONNECTED => "FULLY_CONNECTED",
        B::ADD => "ADD",
        B::MUL => "MUL",
        B::MAX_POOL_2D => "MAX_POOL_2D",
        B::AVERAGE_POOL_2D => "AVERAGE_POOL_2D",
        B::MEAN => "MEAN",
        B::RESHAPE => "RESHAPE",
        B::CONCATENATION => "CONCATENATION",
        B::SOFTMAX => "SOFTMAX",
        B::LOGISTIC => "LOGISTIC",
        B::PAD => "PAD",
        B::QUANTIZE => "QUANTIZE",
        B::DEQUANTIZE => "DEQUANTIZE",
        _ => return Err(unsupported()),
    };
    let has_options = op.builtin_options_type() != fb::BuiltinOptions::NONE;
    let wrong = |expected: &str| ReadError::Options {
        op: index,
        name,
        problem: format!(
            "expected {expected}, found options of union type {}",
            op.builtin_options_type().0
        ),
    };
    // Options that may be absent (LiteRT then reads zeros/false, which is
    // a meaningful default for these ops).
    let optional = |present: bool, expected: &str| {
        if has_options && !present {
            Err(wrong(expected))
        } else {
            Ok(())
        }
    };
    Ok(match code {
        B::CONV_2D => {
            let o = op.builtin_options_as_conv_2_doptions().ok_or_else(|| {
                if has_options {
                    wrong("Conv2DOptions")
                } else {
                    missing(index, name, "Conv2DOptions")
                }
            })?;
            IntOpKind::Conv2D {
                padding: padding(index, name, o.padding())?,
                stride: Hw::new(
                    positive(index, name, "stride_h", o.stride_h())?,
                    positive(index, name, "stride_w", o.stride_w())?,
                ),
                dilation: Hw::new(
                    positive(index, name, "dilation_h_factor", o.dilation_h_factor())?,
                    positive(index, name, "dilation_w_factor", o.dilation_w_factor())?,
                ),
                activation: activation(index, name, o.fused_activation_function())?,
            }
        }
        B::DEPTHWISE_CONV_2D => {
            let o = op
                .builtin_options_as_depthwise_conv_2_doptions()
                .ok_or_else(|| {
                    if has_options {
                        wrong("DepthwiseConv2DOptions")
                    } else {
                        missing(index, name, "DepthwiseConv2DOptions")
                    }
                })?;
            IntOpKind::DepthwiseConv2D {
                padding: padding(index, name, o.padding())?,
                stride: Hw::new(
                    positive(index, name, "stride_h", o.stride_h())?,
                    positive(index, name, "stride_w", o.stride_w())?,
                ),
                dilation: Hw::new(
                    positive(index, name, "dilation_h_factor", o.dilation_h_factor())?,
                    positive(index, name, "dilation_w_factor", o.dilation_w_factor())?,
                ),
                depth_multiplier: positive(index, name, "depth_multiplier", o.depth_multiplier())?,
                activation: activation(index, name, o.fused_activation_function())?,
            }
        }
        B::MAX_POOL_2D | B::AVERAGE_POOL_2D => {
            let o = op.builtin_options_as_pool_2_doptions().ok_or_else(|| {
                if has_options {
                    wrong("Pool2DOptions")
                } else {
                    missing(index, name, "Pool2DOptions")
                }
            })?;
            let padding = padding(index, name, o.padding())?;
            let stride = Hw::new(
                positive(index, name, "stride_h", o.stride_h())?,
                positive(index, name, "stride_w", o.stride_w())?,
            );
            let filter = Hw::new(
                positive(index, name, "filter_height", o.filter_height())?,
                positive(index, name, "filter_width", o.filter_width())?,
            );
            let activation = activation(index, name, o.fused_activation_function())?;
            if code == B::MAX_POOL_2D {
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
            }
        }
        B::FULLY_CONNECTED => {
            let o = op.builtin_options_as_fully_connected_options();
            optional(o.is_some(), "FullyConnectedOptions")?;
            if let Some(o) = o {
                if o.weights_format() != fb::FullyConnectedOptionsWeightsFormat::DEFAULT {
                    return Err(ReadError::Options {
                        op: index,
                        name,
                        problem: "shuffled weights are not supported".into(),
                    });
                }
                if o.asymmetric_quantize_inputs() {
                    return Err(ReadError::Options {
                        op: index,
                        name,
                        problem: "asymmetric_quantize_inputs (hybrid) is not supported".into(),
                    });
                }
            }
            IntOpKind::FullyConnected {
                activation: match o {
                    Some(o) => activation(index, name, o.fused_activation_function())?,
                    None => Activation::None,
                },
                keep_num_dims: o.is_some_and(|o| o.keep_num_dims()),
            }
        }
        B::ADD => {
            let o = op.builtin_options_as_add_options();
            optional(o.is_some(), "AddOptions")?;
            IntOpKind::Add {
                activation: match o {
                    Some(o) => activation(index, name, o.fused_activation_function())?,
                    None => Activation::None,
                },
            }
        }
        B::MUL => {
            let o = op.builtin_options_as_mul_options();
            optional(o.is_some(), "MulOptions")?;
            IntOpKind::Mul {
                activation: match o {
                    Some(o) => activation(index, name, o.fused_activation_function())?,
                    None => Activation::None,
                },
            }
        }
        B::MEAN => {
            let o = op.builtin_options_as_reducer_options();
            optional(o.is_some(), "ReducerOptions")?;
            IntOpKind::Mean {
                keep_dims: o.is_some_and(|o| o.keep_dims()),
            }
        }
        B::CONCATENATION => {
            let o = op
                .builtin_options_as_concatenation_options()
                .ok_or_else(|| {
                    if has_options {
                        wrong("ConcatenationOptions")
                    } else {
                        missing(index, name, "ConcatenationOptions")
                    }
                })?;
            IntOpKind::Concatenation {
                axis: o.axis(),
                activation: activation(index, name, o.fused_activation_function())?,
            }
        }
        B::SOFTMAX => {
            let o = op.builtin_options_as_softmax_options().ok_or_else(|| {
                if has_options {
                    wrong("SoftmaxOptions")
                } else {
                    missing(index, name, "SoftmaxOptions")
                }
            })?;
            if o.beta() == 0.0 || !o.beta().is_finite() {
                return Err(ReadError::Options {
                    op: index,
                    name,
                    problem: format!("softmax beta is {} (missing or unusable)", o.beta()),
                });
            }
            IntOpKind::Softmax { beta: o.beta() }
        }
        B::RESHAPE => {
            optional(
                op.builtin_options_as_reshape_options().is_some(),
                "ReshapeOptions",
            )?;
            IntOpKind::Reshape
        }
        B::PAD => {
            optional(op.builtin_options_as_pad_options().is_some(), "PadOptions")?;
            IntOpKind::Pad
        }
        B::QUANTIZE => {
            optional(
                op.builtin_options_as_quantize_options().is_some(),
                "QuantizeOptions",
            )?;
            IntOpKind::Quantize
        }
        B::DEQUANTIZE => {
            optional(
                op.builtin_options_as_dequantize_options().is_some(),
                "DequantizeOptions",
            )?;
            IntOpKind::Dequantize
        }
        B::LOGISTIC => IntOpKind::Logistic,
        _ => return Err(unsupported()),
    })
}

fn quant_params(
    t: &fb::Tensor<'_>,
    shape: &[usize],
    problem: &dyn Fn(String) -> ReadError,
) -> Result<Option<QuantParams>, ReadError> {
    let Some(q) = t.quantization() else {
        return Ok(None);
    };
    let scales: Vec<f32> = q.scale().map(|v| v.iter().collect()).unwrap_or_default();
    if scales.is_empty() {
        // Only min/max (or nothing): LiteRT treats the tensor as not quantized.
        return Ok(None);
    }
    let Some(zero_points) = q.zero_point().map(|v| v.iter().collect::<Vec<i64>>()) else {
        return Err(problem("quantization has a scale but no zero_point".into()));
    };
    let dim = q.quantized_dimension();
    let axis = usize::try_from(dim)
        .ok()
        .filter(|&d| d < shape.len().max(1))
        .ok_or_else(|| problem(format!("quantized_dimension {dim} is out of range")))?;
    let axis = (scales.len() > 1).then_some(axis);
    Ok(Some(QuantParams {
        scales,
        zero_points,
        axis,
    }))
}

fn tensor(
    index: usize,
    t: &fb::Tensor<'_>,
    buffers: &flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<fb::Buffer<'_>>>,
) -> Result<IntTensor, ReadError> {
    let name = t.name().unwrap_or_default().to_string();
    let problem = |problem: String| ReadError::Tensor {
        tensor: index,
        name: name.clone(),
        problem,
    };
    let dtype = codes::dtype_of(t.type_()).ok_or_else(|| {
        problem(format!(
            "tensor type {} is not supported",
            codes::type_name(t.type_())
        ))
    })?;
    let shape = t
        .shape()
        .map(|s| {
            s.iter()
                .map(|d| {
                    usize::try_from(d).map_err(|_| problem(format!("dimension {d} is negative")))
                })
                .collect::<Result<Vec<usize>, ReadError>>()
        })
        .transpose()?
        .unwrap_or_default();
    let quant = quant_params(t, &shape, &problem)?;
    let buffer_index = t.buffer() as usize;
    let data = if buffer_index == 0 {
        // LiteRT never reads buffer 0: no data, whatever it holds.
        None
    } else {
        if buffer_index >= buffers.len() {
            return Err(problem(format!(
                "buffer index {buffer_index} is out of range ({} buffers)",
                buffers.len()
            )));
        }
        let buffer = buffers.get(buffer_index);
        if buffer.offset() > 1 {
            return Err(problem(
                "data stored outside the flatbuffer (Buffer.offset) is not supported".into(),
            ));
        }
        match buffer.data() {
            Some(bytes) if !bytes.is_empty() => Some(
                Tensor::from_le_bytes(dtype, &shape, bytes.bytes())
                    .map_err(|e: TensorError| problem(format!("constant data: {e}")))?,
            ),
            _ => None,
        }
    };
    Ok(IntTensor {
        name,
        dtype,
        shape,
        quant,
        data,
    })
}

fn index_list(
    list: Option<flatbuffers::Vector<'_, i32>>,
    count: usize,
    context: &dyn Fn(usize) -> String,
) -> Result<Vec<Option<usize>>, ReadError> {
    list.iter()
        .flat_map(|v| v.iter())
        .enumerate()
        .map(|(pos, i)| {
            if i == -1 {
                return Ok(None);
            }
            usize::try_from(i)
                .ok()
                .filter(|&i| i < count)
                .map(Some)
                .ok_or_else(|| ReadError::TensorIndex {
                    context: context(pos),
                    index: i64::from(i),
                    count,
                })
        })
        .collect()
}

/// Parses a TFLite flatbuffer into an [`IntModel`] (subgraph 0).
///
/// The file must carry the `TFL3` identifier, verify as a flatbuffer and
/// declare schema version 3. Every op must be one of
/// [`IntOpKind`]'s (others are refused by name and index), with the
/// options the runtime needs (CONV_2D, DEPTHWISE_CONV_2D, the pools,
/// CONCATENATION and SOFTMAX with a non-zero beta). Models written by the
/// TF converter read too: a fully-connected layer listing only two inputs
/// gets an omitted bias, a RESHAPE given only `new_shape` gets an int32
/// shape tensor appended to the tensor table, and quantization with only
/// `min`/`max` counts as none, as in LiteRT. One-scale parameters read as
/// per-tensor (`axis: None`), as LiteRT treats them.
/// Constant data lands in [`IntTensor::data`] without quantization
/// parameters of its own. The result passes the writer's structural checks.
pub fn read(bytes: &[u8]) -> Result<IntModel, ReadError> {
    let model = root(bytes)?;
    if model.version() != crate::SCHEMA_VERSION {
        return Err(ReadError::SchemaVersion {
            found: model.version(),
        });
    }
    let subgraph = model
        .subgraphs()
        .and_then(|s| (!s.is_empty()).then(|| s.get(0)))
        .ok_or(ReadError::Missing("subgraph"))?;
    let buffers = model.buffers().ok_or(ReadError::Missing("buffers"))?;
    let opcodes = model.operator_codes();
    let mut tensors = subgraph
        .tensors()
        .iter()
        .flat_map(|v| v.iter())
        .enumerate()
        .map(|(i, t)| tensor(i, &t, &buffers))
        .collect::<Result<Vec<_>, _>>()?;
    let count = tensors.len();
    let io = |role: &'static str, list| {
        index_list(list, count, &|pos| format!("model {role} {pos}"))?
            .into_iter()
            .enumerate()
            .map(|(pos, t)| {
                t.ok_or_else(|| ReadError::TensorIndex {
                    context: format!("model {role} {pos}"),
                    index: -1,
                    count,
                })
            })
            .collect::<Result<Vec<usize>, ReadError>>()
    };
    let inputs = io("input", subgraph.inputs())?;
    let outputs = io("output", subgraph.outputs())?;
    let mut ops = Vec::new();
    for (index, op) in subgraph
        .operators()
        .iter()
        .flat_map(|v| v.iter())
        .enumerate()
    {
        let code_count = opcodes.map_or(0, |c| c.len());
        let code_index = op.opcode_index();
        let code = opcodes
            .filter(|_| (code_index as usize) < code_count)
            .map(|c| c.get(code_index as usize))
            .ok_or(ReadError::OpcodeIndex {
                op: index,
                index: code_index,
                count: code_count,
            })?;
        let kind = match code.custom_code() {
            Some("") => {
                return Err(ReadError::UnsupportedOp {
                    op: index,
                    name: "custom ''".into(),
                });
            }
            Some(custom) => IntOpKind::Custom {
                name: custom.to_string(),
            },
            None => op_kind(index, codes::effective_code(&code), &op)?,
        };
        let name = kind.tflite_name();
        let mut op_inputs = index_list(op.inputs(), count, &|pos| {
            format!("op {index} ({name}) input {pos}")
        })?;
        let op_outputs = index_list(op.outputs(), count, &|pos| {
            format!("op {index} ({name}) output {pos}")
        })?
        .into_iter()
        .enumerate()
        .map(|(pos, t)| {
            t.ok_or_else(|| ReadError::TensorIndex {
                context: format!("op {index} ({name}) output {pos}"),
                index: -1,
                count,
            })
        })
        .collect::<Result<Vec<usize>, ReadError>>()?;
        match kind {
            IntOpKind::FullyConnected { .. } if op_inputs.len() == 2 => op_inputs.push(None),
            IntOpKind::Reshape if op_inputs.len() == 1 => {
                let new_shape: Vec<i32> = op
                    .builtin_options_as_reshape_options()
                    .and_then(|o| o.new_shape())
                    .map(|v| v.iter().collect())
                    .ok_or_else(|| ReadError::Options {
                        op: index,
                        name,
                        problem: "no shape input and no ReshapeOptions.new_shape".into(),
                    })?;
                let len = new_shape.len();
                let data = Tensor::from_vec(&[len], new_shape).map_err(|e| ReadError::Options {
                    op: index,
                    name,
                    problem: format!("new_shape: {e}"),
                })?;
                let base = op_outputs
                    .first()
                    .map_or_else(|| format!("op{index}"), |&t| tensors[t].name.clone());
                tensors.push(IntTensor {
                    name: format!("{base}/new_shape"),
                    dtype: DType::I32,
                    shape: vec![len],
                    quant: None,
                    data: Some(data),
                });
                op_inputs.push(Some(tensors.len() - 1));
            }
            _ => {}
        }
        ops.push(IntOp {
            kind,
            inputs: op_inputs,
            outputs: op_outputs,
        });
    }
    let result = IntModel {
        tensors,
        ops,
        inputs,
        outputs,
        description: model.description().unwrap_or_default().to_string(),
    };
    validate(&result)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    //! Converter-style layouts quant's writer never produces, built with
    //! the generated tables directly.

    use super::*;
    use flatbuffers::FlatBufferBuilder;

    /// A uint8 model `x → RESHAPE(new_shape [1, 4] in options) → FC
    /// (inputs [y, w] only)`.
    fn converter_style() -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let empty = fb::Buffer::create(&mut fbb, &fb::BufferArgs::default());
        let weights = fbb.create_vector(&[1u8, 2, 3, 4, 5, 6, 7, 8]);
        let wbuf = fb::Buffer::create(
            &mut fbb,
            &fb::BufferArgs {
                data: Some(weights),
                ..Default::default()
            },
        );
        let mut tensor = |name: &str, shape: &[i32], buffer: u32| {
            let shape = fbb.create_vector(shape);
            let name = fbb.create_string(name);
            let scale = fbb.create_vector(&[0.5f32]);
            let zero_point = fbb.create_vector(&[3i64]);
            let q = fb::QuantizationParameters::create(
                &mut fbb,
                &fb::QuantizationParametersArgs {
                    scale: Some(scale),
                    zero_point: Some(zero_point),
                    ..Default::default()
                },
            );
            fb::Tensor::create(
                &mut fbb,
                &fb::TensorArgs {
                    shape: Some(shape),
                    type_: fb::TensorType::UINT8,
                    buffer,
                    name: Some(name),
                    quantization: Some(q),
                    ..Default::default()
                },
            )
        };
        let tensors = [
            tensor("x", &[1, 2, 2], 0),
            tensor("y", &[1, 4], 0),
            tensor("w", &[2, 4], 1),
            tensor("z", &[1, 2], 0),
        ];
        let tensors = fbb.create_vector(&tensors);
        let new_shape = fbb.create_vector(&[1i32, 4]);
        let reshape_options = fb::ReshapeOptions::create(
            &mut fbb,
            &fb::ReshapeOptionsArgs {
                new_shape: Some(new_shape),
            },
        );
        let i0 = fbb.create_vector(&[0i32]);
        let o0 = fbb.create_vector(&[1i32]);
        let reshape = fb::Operator::create(
            &mut fbb,
            &fb::OperatorArgs {
                opcode_index: 0,
                inputs: Some(i0),
                outputs: Some(o0),
                builtin_options_type: fb::BuiltinOptions::ReshapeOptions,
                builtin_options: Some(reshape_options.as_union_value()),
                ..Default::default()
            },
        );
        let i1 = fbb.create_vector(&[1i32, 2]);
        let o1 = fbb.create_vector(&[3i32]);
        let fc = fb::Operator::create(
            &mut fbb,
            &fb::OperatorArgs {
                opcode_index: 1,
                inputs: Some(i1),
                outputs: Some(o1),
                ..Default::default()
            },
        );
        let operators = fbb.create_vector(&[reshape, fc]);
        let inputs = fbb.create_vector(&[0i32]);
        let outputs = fbb.create_vector(&[3i32]);
        let subgraph = fb::SubGraph::create(
            &mut fbb,
            &fb::SubGraphArgs {
                tensors: Some(tensors),
                inputs: Some(inputs),
                outputs: Some(outputs),
                operators: Some(operators),
                name: None,
            },
        );
        // Old-style codes: only the deprecated byte is filled.
        let codes: Vec<_> = [22i8, 9]
            .into_iter()
            .map(|c| {
                fb::OperatorCode::create(
                    &mut fbb,
                    &fb::OperatorCodeArgs {
                        deprecated_builtin_code: c,
                        version: 1,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let codes = fbb.create_vector(&codes);
        let subgraphs = fbb.create_vector(&[subgraph]);
        let buffers = fbb.create_vector(&[empty, wbuf]);
        let model = fb::Model::create(
            &mut fbb,
            &fb::ModelArgs {
                version: 3,
                operator_codes: Some(codes),
                subgraphs: Some(subgraphs),
                buffers: Some(buffers),
                ..Default::default()
            },
        );
        fbb.finish(model, Some("TFL3"));
        fbb.finished_data().to_vec()
    }

    #[test]
    fn converter_layouts_are_normalised() {
        let model = read(&converter_style()).unwrap();
        // RESHAPE with only new_shape gets an int32 shape input.
        assert_eq!(model.ops[0].kind, IntOpKind::Reshape);
        assert_eq!(model.ops[0].inputs, vec![Some(0), Some(4)]);
        let shape = &model.tensors[4];
        assert_eq!(shape.name, "y/new_shape");
        assert_eq!(
            shape.data.as_ref().unwrap().to_i64_vec().unwrap(),
            vec![1, 4]
        );
        // FULLY_CONNECTED listing two inputs gets an omitted bias; no
        // options means no activation.
        assert_eq!(
            model.ops[1].kind,
            IntOpKind::FullyConnected {
                activation: Activation::None,
                keep_num_dims: false
            }
        );
        assert_eq!(model.ops[1].inputs, vec![Some(1), Some(2), None]);
        assert_eq!(model.tensors[2].data.as_ref().unwrap().shape(), &[2, 4]);
        // The normalised model writes and reads back unchanged.
        let again = read(&crate::write(&model).unwrap()).unwrap();
        assert_eq!(again, model);
    }
}
