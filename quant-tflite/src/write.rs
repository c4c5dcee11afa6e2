//! The writer: [`IntModel`] → TFLite flatbuffer bytes.

use crate::codes::{self, VersionFacts};
use crate::fb;
use crate::validate::{ModelError, validate};
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Push, PushAlignment, Vector, WIPOffset};
use quant_core::DType;
use quant_core::integer::{Activation, IntModel, IntOp, IntOpKind, Padding};

/// Why a model could not be written.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum WriteError {
    /// The model is structurally invalid (names the op or tensor).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The constants do not fit a flatbuffer (2 GiB).
    #[error("the model's constants take {bytes} bytes; TFLite flatbuffers must stay below 2 GiB")]
    TooLarge {
        /// Bytes of constant data.
        bytes: usize,
    },
}

/// The name of the metadata entry holding the minimum runtime version.
pub(crate) const MIN_RUNTIME_VERSION: &str = "min_runtime_version";
/// The signature key quant writes.
pub(crate) const SIGNATURE_KEY: &str = "serving_default";
/// Room left for tables and strings next to the constant data.
const MAX_DATA_BYTES: usize = (1 << 31) - (64 << 20);

/// One byte of `Buffer.data`, aligned so the whole vector starts on a
/// 16-byte boundary (the schema's `force_align: 16`).
struct Align16(u8);

impl Push for Align16 {
    type Output = u8;

    unsafe fn push(&self, dst: &mut [u8], _written_len: usize) {
        // A plain byte store: `dst` holds at least `size()` (1) bytes.
        dst[0] = self.0;
    }

    fn alignment() -> PushAlignment {
        PushAlignment::new(16)
    }
}

fn padding(p: Padding) -> fb::Padding {
    match p {
        Padding::Same => fb::Padding::SAME,
        Padding::Valid => fb::Padding::VALID,
    }
}

fn activation(a: Activation) -> fb::ActivationFunctionType {
    match a {
        Activation::None => fb::ActivationFunctionType::NONE,
        Activation::Relu => fb::ActivationFunctionType::RELU,
        Activation::ReluN1To1 => fb::ActivationFunctionType::RELU_N1_TO_1,
        Activation::Relu6 => fb::ActivationFunctionType::RELU6,
    }
}

/// The builtin code of an op kind.
pub(crate) fn builtin_code(kind: &IntOpKind) -> fb::BuiltinOperator {
    use fb::BuiltinOperator as B;
    match kind {
        IntOpKind::Conv2D { .. } => B::CONV_2D,
        IntOpKind::DepthwiseConv2D { .. } => B::DEPTHWISE_CONV_2D,
        IntOpKind::FullyConnected { .. } => B::FULLY_CONNECTED,
        IntOpKind::Add { .. } => B::ADD,
        IntOpKind::Mul { .. } => B::MUL,
        IntOpKind::MaxPool2D { .. } => B::MAX_POOL_2D,
        IntOpKind::AveragePool2D { .. } => B::AVERAGE_POOL_2D,
        IntOpKind::Mean { .. } => B::MEAN,
        IntOpKind::Reshape => B::RESHAPE,
        IntOpKind::Concatenation { .. } => B::CONCATENATION,
        IntOpKind::Softmax { .. } => B::SOFTMAX,
        IntOpKind::Logistic => B::LOGISTIC,
        IntOpKind::Pad => B::PAD,
        IntOpKind::Quantize => B::QUANTIZE,
        IntOpKind::Dequantize => B::DEQUANTIZE,
        IntOpKind::Custom { .. } => B::CUSTOM,
    }
}

/// The version the TF converter writes for `op` of a (validated) model.
fn op_version(model: &IntModel, op: &IntOp) -> i32 {
    let tensor = |slot: usize| {
        op.inputs
            .get(slot)
            .copied()
            .flatten()
            .map(|t| &model.tensors[t])
    };
    let input = tensor(0);
    let scale = |t: Option<&quant_core::integer::IntTensor>| {
        t.and_then(|t| t.quant.as_ref())
            .and_then(|q| q.scales.first().copied())
            .map(f64::from)
    };
    let output = op.outputs.first().map(|&t| &model.tensors[t]);
    let facts = VersionFacts {
        int8: input.is_some_and(|t| t.dtype == DType::I8),
        per_channel_input: input
            .and_then(|t| t.quant.as_ref())
            .is_some_and(|q| q.scales.len() > 1),
        keep_num_dims: matches!(
            op.kind,
            IntOpKind::FullyConnected {
                keep_num_dims: true,
                ..
            }
        ),
        mul_rescale_at_least_one: match (scale(input), scale(tensor(1)), scale(output)) {
            (Some(a), Some(b), Some(o)) if a > 0.0 && b > 0.0 && o > 0.0 => a * b / o >= 1.0,
            _ => false,
        },
    };
    codes::converter_version(builtin_code(&op.kind), facts).unwrap_or(1)
}

/// Serializes a model as a TFLite flatbuffer (schema version 3).
///
/// The model is validated first ([`ModelError`] names the op or tensor at
/// fault). The file follows docs/tflite-export.md §1: identifier `TFL3`,
/// an empty buffer 0 shared by every tensor without data, one 16-byte
/// aligned buffer per constant, `builtin_code` and
/// `deprecated_builtin_code` both written, the converter's op versions
/// (§6; MUL gets v3 for int8 when `s_a·s_b/s_out ≥ 1`), an options table
/// for every op the converter writes one for (fields written even when
/// they equal the schema default, so `SoftmaxOptions.beta` is always
/// present), RESHAPE with its shape as the second input and no options, a
/// fully-connected layer without bias as input `-1`, the
/// `min_runtime_version` metadata, one `serving_default` signature and
/// the model's description. Shapes are written as they are (no
/// `shape_signature`). Writing is deterministic.
pub fn write(model: &IntModel) -> Result<Vec<u8>, WriteError> {
    validate(model)?;
    let data_bytes: usize = model
        .tensors
        .iter()
        .filter_map(|t| t.data.as_ref())
        .map(|d| d.len() * d.dtype().size_of().unwrap_or(1) + 16)
        .sum();
    if data_bytes > MAX_DATA_BYTES {
        return Err(WriteError::TooLarge { bytes: data_bytes });
    }
    let mut fbb = FlatBufferBuilder::with_capacity(data_bytes + 4096);

    // Operator codes, in order of first use, and each op's code index.
    // A custom op's code carries its name (`custom_code`).
    let mut opcodes: Vec<(fb::BuiltinOperator, i32, Option<&str>)> = Vec::new();
    let mut op_code_index = Vec::with_capacity(model.ops.len());
    for op in &model.ops {
        let custom = match &op.kind {
            IntOpKind::Custom { name } => Some(name.as_str()),
            _ => None,
        };
        let key = (builtin_code(&op.kind), op_version(model, op), custom);
        let index = opcodes.iter().position(|k| *k == key).unwrap_or_else(|| {
            opcodes.push(key);
            opcodes.len() - 1
        });
        op_code_index.push(index);
    }
    let min_runtime = opcodes
        .iter()
        .filter_map(|&(code, version, _)| codes::min_runtime(code, version))
        .max_by_key(|v| codes::runtime_key(v));

    // Buffers: 0 empty, then one per constant, then the metadata payload.
    let mut buffers = vec![fb::Buffer::create(&mut fbb, &fb::BufferArgs::default())];
    let mut tensor_buffer = vec![0u32; model.tensors.len()];
    for (index, tensor) in model.tensors.iter().enumerate() {
        if let Some(data) = &tensor.data {
            tensor_buffer[index] = buffers.len() as u32;
            let bytes: Vec<Align16> = data.to_le_bytes().into_iter().map(Align16).collect();
            let vector = fbb.create_vector(&bytes);
            buffers.push(fb::Buffer::create(
                &mut fbb,
                &fb::BufferArgs {
                    data: Some(vector),
                    ..Default::default()
                },
            ));
        }
    }
    let mut metadata = Vec::new();
    if let Some(version) = min_runtime {
        let mut payload = [0u8; 16];
        payload[..version.len()].copy_from_slice(version.as_bytes());
        let vector = fbb.create_vector(&payload.map(Align16));
        let buffer_index = buffers.len() as u32;
        buffers.push(fb::Buffer::create(
            &mut fbb,
            &fb::BufferArgs {
                data: Some(vector),
                ..Default::default()
            },
        ));
        let name = fbb.create_string(MIN_RUNTIME_VERSION);
        metadata.push(fb::Metadata::create(
            &mut fbb,
            &fb::MetadataArgs {
                name: Some(name),
                buffer: buffer_index,
            },
        ));
    }

    let tensors: Vec<_> = model
        .tensors
        .iter()
        .enumerate()
        .map(|(index, t)| {
            // Validation checked every dimension fits in i32.
            let shape: Vec<i32> = t.shape.iter().map(|&d| d as i32).collect();
            let shape = fbb.create_vector(&shape);
            let name = fbb.create_string(&t.name);
            let quantization = t.quant.as_ref().map(|q| {
                let scale = fbb.create_vector(&q.scales);
                let zero_point = fbb.create_vector(&q.zero_points);
                fb::QuantizationParameters::create(
                    &mut fbb,
                    &fb::QuantizationParametersArgs {
                        scale: Some(scale),
                        zero_point: Some(zero_point),
                        quantized_dimension: q.axis.map_or(0, |a| a as i32),
                        ..Default::default()
                    },
                )
            });
            fb::Tensor::create(
                &mut fbb,
                &fb::TensorArgs {
                    shape: Some(shape),
                    // Validation checked the dtype has a TFLite type.
                    type_: codes::tensor_type(t.dtype).unwrap_or(fb::TensorType::FLOAT32),
                    buffer: tensor_buffer[index],
                    name: Some(name),
                    quantization,
                    is_variable: false,
                    shape_signature: None,
                    has_rank: true,
                },
            )
        })
        .collect();

    let operators: Vec<_> = model
        .ops
        .iter()
        .zip(&op_code_index)
        .map(|(op, &code_index)| {
            let inputs: Vec<i32> = op
                .inputs
                .iter()
                .map(|t| t.map_or(-1, |t| t as i32))
                .collect();
            let outputs: Vec<i32> = op.outputs.iter().map(|&t| t as i32).collect();
            let inputs = fbb.create_vector(&inputs);
            let outputs = fbb.create_vector(&outputs);
            fbb.force_defaults(true);
            let (options_type, options) = options(&mut fbb, &op.kind);
            fbb.force_defaults(false);
            fb::Operator::create(
                &mut fbb,
                &fb::OperatorArgs {
                    opcode_index: code_index as u32,
                    inputs: Some(inputs),
                    outputs: Some(outputs),
                    builtin_options_type: options_type,
                    builtin_options: options,
                    ..Default::default()
                },
            )
        })
        .collect();

    let to_i32 = |list: &[usize]| list.iter().map(|&t| t as i32).collect::<Vec<_>>();
    let tensors = fbb.create_vector(&tensors);
    let inputs = fbb.create_vector(&to_i32(&model.inputs));
    let outputs = fbb.create_vector(&to_i32(&model.outputs));
    let operators = fbb.create_vector(&operators);
    let subgraph_name = fbb.create_string("main");
    let subgraph = fb::SubGraph::create(
        &mut fbb,
        &fb::SubGraphArgs {
            tensors: Some(tensors),
            inputs: Some(inputs),
            outputs: Some(outputs),
            operators: Some(operators),
            name: Some(subgraph_name),
        },
    );

    let signature = signature(&mut fbb, model);
    fbb.force_defaults(true);
    let operator_codes: Vec<_> = opcodes
        .iter()
        .map(|&(code, version, custom)| {
            let custom_code = custom.map(|name| fbb.create_string(name));
            fb::OperatorCode::create(
                &mut fbb,
                &fb::OperatorCodeArgs {
                    // Every code quant writes is below 127 and fits the old byte.
                    deprecated_builtin_code: code.0.min(127) as i8,
                    custom_code,
                    version,
                    builtin_code: code,
                },
            )
        })
        .collect();
    fbb.force_defaults(false);
    let operator_codes = fbb.create_vector(&operator_codes);
    let subgraphs = fbb.create_vector(&[subgraph]);
    let description =
        (!model.description.is_empty()).then(|| fbb.create_string(&model.description));
    let buffers = fbb.create_vector(&buffers);
    let metadata = (!metadata.is_empty()).then(|| fbb.create_vector(&metadata));
    let signature_defs = fbb.create_vector(&[signature]);
    let root = fb::Model::create(
        &mut fbb,
        &fb::ModelArgs {
            version: crate::SCHEMA_VERSION,
            operator_codes: Some(operator_codes),
            subgraphs: Some(subgraphs),
            description,
            buffers: Some(buffers),
            metadata,
            signature_defs: Some(signature_defs),
        },
    );
    fbb.finish(root, Some(crate::FILE_IDENTIFIER));
    Ok(fbb.finished_data().to_vec())
}

type Options = (
    fb::BuiltinOptions,
    Option<WIPOffset<flatbuffers::UnionWIPOffset>>,
);

/// The options table of an op (none for RESHAPE, LOGISTIC, QUANTIZE and
/// DEQUANTIZE, as the converter writes them).
fn options(fbb: &mut FlatBufferBuilder<'_>, kind: &IntOpKind) -> Options {
    use fb::BuiltinOptions as O;
    let dim = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
    match *kind {
        IntOpKind::Conv2D {
            padding: p,
            stride,
            dilation,
            activation: a,
        } => {
            let o = fb::Conv2DOptions::create(
                fbb,
                &fb::Conv2DOptionsArgs {
                    padding: padding(p),
                    stride_w: dim(stride.w),
                    stride_h: dim(stride.h),
                    fused_activation_function: activation(a),
                    dilation_w_factor: dim(dilation.w),
                    dilation_h_factor: dim(dilation.h),
                },
            );
            (O::Conv2DOptions, Some(o.as_union_value()))
        }
        IntOpKind::DepthwiseConv2D {
            padding: p,
            stride,
            dilation,
            depth_multiplier,
            activation: a,
        } => {
            let o = fb::DepthwiseConv2DOptions::create(
                fbb,
                &fb::DepthwiseConv2DOptionsArgs {
                    padding: padding(p),
                    stride_w: dim(stride.w),
                    stride_h: dim(stride.h),
                    depth_multiplier: dim(depth_multiplier),
                    fused_activation_function: activation(a),
                    dilation_w_factor: dim(dilation.w),
                    dilation_h_factor: dim(dilation.h),
                },
            );
            (O::DepthwiseConv2DOptions, Some(o.as_union_value()))
        }
        IntOpKind::FullyConnected {
            activation: a,
            keep_num_dims,
        } => {
            let o = fb::FullyConnectedOptions::create(
                fbb,
                &fb::FullyConnectedOptionsArgs {
                    fused_activation_function: activation(a),
                    weights_format: fb::FullyConnectedOptionsWeightsFormat::DEFAULT,
                    keep_num_dims,
                    asymmetric_quantize_inputs: false,
                },
            );
            (O::FullyConnectedOptions, Some(o.as_union_value()))
        }
        IntOpKind::Add { activation: a } => {
            let o = fb::AddOptions::create(
                fbb,
                &fb::AddOptionsArgs {
                    fused_activation_function: activation(a),
                    pot_scale_int16: true,
                },
            );
            (O::AddOptions, Some(o.as_union_value()))
        }
        IntOpKind::Mul { activation: a } => {
            let o = fb::MulOptions::create(
                fbb,
                &fb::MulOptionsArgs {
                    fused_activation_function: activation(a),
                },
            );
            (O::MulOptions, Some(o.as_union_value()))
        }
        IntOpKind::MaxPool2D {
            padding: p,
            stride,
            filter,
            activation: a,
        }
        | IntOpKind::AveragePool2D {
            padding: p,
            stride,
            filter,
            activation: a,
        } => {
            let o = fb::Pool2DOptions::create(
                fbb,
                &fb::Pool2DOptionsArgs {
                    padding: padding(p),
                    stride_w: dim(stride.w),
                    stride_h: dim(stride.h),
                    filter_width: dim(filter.w),
                    filter_height: dim(filter.h),
                    fused_activation_function: activation(a),
                },
            );
            (O::Pool2DOptions, Some(o.as_union_value()))
        }
        IntOpKind::Mean { keep_dims } => {
            let o = fb::ReducerOptions::create(fbb, &fb::ReducerOptionsArgs { keep_dims });
            (O::ReducerOptions, Some(o.as_union_value()))
        }
        IntOpKind::Concatenation {
            axis,
            activation: a,
        } => {
            let o = fb::ConcatenationOptions::create(
                fbb,
                &fb::ConcatenationOptionsArgs {
                    axis,
                    fused_activation_function: activation(a),
                },
            );
            (O::ConcatenationOptions, Some(o.as_union_value()))
        }
        IntOpKind::Softmax { beta } => {
            let o = fb::SoftmaxOptions::create(fbb, &fb::SoftmaxOptionsArgs { beta });
            (O::SoftmaxOptions, Some(o.as_union_value()))
        }
        IntOpKind::Pad => {
            let o = fb::PadOptions::create(fbb, &fb::PadOptionsArgs {});
            (O::PadOptions, Some(o.as_union_value()))
        }
        IntOpKind::Reshape
        | IntOpKind::Logistic
        | IntOpKind::Quantize
        | IntOpKind::Dequantize
        | IntOpKind::Custom { .. } => (O::NONE, None),
    }
}

/// The `serving_default` signature: model inputs and outputs by tensor name.
fn signature<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    model: &IntModel,
) -> WIPOffset<fb::SignatureDef<'a>> {
    let mut maps = |list: &[usize]| -> WIPOffset<Vector<'a, ForwardsUOffset<fb::TensorMap<'a>>>> {
        let entries: Vec<_> = list
            .iter()
            .map(|&t| {
                let name = fbb.create_string(&model.tensors[t].name);
                fb::TensorMap::create(
                    fbb,
                    &fb::TensorMapArgs {
                        name: Some(name),
                        tensor_index: t as u32,
                    },
                )
            })
            .collect();
        fbb.create_vector(&entries)
    };
    let inputs = maps(&model.inputs);
    let outputs = maps(&model.outputs);
    let key = fbb.create_string(SIGNATURE_KEY);
    fb::SignatureDef::create(
        fbb,
        &fb::SignatureDefArgs {
            inputs: Some(inputs),
            outputs: Some(outputs),
            signature_key: Some(key),
            subgraph_index: 0,
        },
    )
}
