//! Facts about TFLite ops and types shared by the writer, the reader and
//! the inspector: builtin codes, dtype codes, the versions the TF 2.21
//! converter writes, the highest versions LiteRT 2.3 registers and the
//! minimum runtime versions (docs/tflite-export.md §3, §5, §6).

use crate::fb;
use quant_core::DType;

/// The TFLite tensor type of a quant dtype (`None` for types TFLite files
/// cannot hold).
pub(crate) fn tensor_type(dtype: DType) -> Option<fb::TensorType> {
    Some(match dtype {
        DType::F32 => fb::TensorType::FLOAT32,
        DType::F64 => fb::TensorType::FLOAT64,
        DType::I32 => fb::TensorType::INT32,
        DType::I64 => fb::TensorType::INT64,
        DType::U8 => fb::TensorType::UINT8,
        DType::I8 => fb::TensorType::INT8,
        DType::Bool => fb::TensorType::BOOL,
        DType::String | DType::Resource => return None,
    })
}

/// The quant dtype of a TFLite tensor type, if quant has one.
pub(crate) fn dtype_of(tensor_type: fb::TensorType) -> Option<DType> {
    Some(match tensor_type {
        fb::TensorType::FLOAT32 => DType::F32,
        fb::TensorType::FLOAT64 => DType::F64,
        fb::TensorType::INT32 => DType::I32,
        fb::TensorType::INT64 => DType::I64,
        fb::TensorType::UINT8 => DType::U8,
        fb::TensorType::INT8 => DType::I8,
        fb::TensorType::BOOL => DType::Bool,
        _ => return None,
    })
}

/// A printable name for a TFLite tensor type: quant's dtype name where
/// there is one (`i8`, `u8`, `f32`, ...), TFLite's name otherwise.
pub(crate) fn type_name(tensor_type: fb::TensorType) -> String {
    match dtype_of(tensor_type) {
        Some(d) => d.name().to_string(),
        None => tensor_type
            .variant_name()
            .map_or_else(|| format!("type{}", tensor_type.0), str::to_ascii_lowercase),
    }
}

/// The name of a builtin code (`CONV_2D`, ...), or `BUILTIN_<code>` for
/// codes outside the schema subset.
pub(crate) fn op_name(code: fb::BuiltinOperator) -> String {
    code.variant_name()
        .map_or_else(|| format!("BUILTIN_{}", code.0), str::to_string)
}

/// The op code an `OperatorCode` stands for: LiteRT takes the larger of
/// the two fields.
pub(crate) fn effective_code(code: &fb::OperatorCode<'_>) -> fb::BuiltinOperator {
    fb::BuiltinOperator(
        code.builtin_code()
            .0
            .max(i32::from(code.deprecated_builtin_code())),
    )
}

/// What decides an op's version besides its code.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct VersionFacts {
    /// Input 0 is int8.
    pub int8: bool,
    /// DEQUANTIZE: the input has per-channel parameters.
    pub per_channel_input: bool,
    /// FULLY_CONNECTED: `keep_num_dims`.
    pub keep_num_dims: bool,
    /// MUL: `s_a · s_b / s_out >= 1`.
    pub mul_rescale_at_least_one: bool,
}

/// The version the TF 2.21 converter writes (docs/tflite-export.md §6);
/// `None` for ops outside that table.
pub(crate) fn converter_version(code: fb::BuiltinOperator, f: VersionFacts) -> Option<i32> {
    use fb::BuiltinOperator as B;
    let by_type = |int8: i32| if f.int8 { int8 } else { 1 };
    Some(match code {
        B::CONV_2D | B::DEPTHWISE_CONV_2D => by_type(3),
        B::FULLY_CONNECTED if f.keep_num_dims => 5,
        B::FULLY_CONNECTED => by_type(4),
        B::MUL if f.int8 && f.mul_rescale_at_least_one => 3,
        B::ADD
        | B::MUL
        | B::AVERAGE_POOL_2D
        | B::MAX_POOL_2D
        | B::SOFTMAX
        | B::CONCATENATION
        | B::RELU6
        | B::LOGISTIC
        | B::TANH
        | B::MEAN
        | B::PAD => by_type(2),
        B::RELU => 2,
        B::RESHAPE | B::QUANTIZE => 1,
        B::DEQUANTIZE if f.int8 && f.per_channel_input => 5,
        B::DEQUANTIZE => by_type(2),
        _ => return None,
    })
}

/// The highest version LiteRT 2.3 registers (probed; §6).
pub(crate) fn litert_max_version(code: fb::BuiltinOperator) -> Option<i32> {
    use fb::BuiltinOperator as B;
    Some(match code {
        B::CONV_2D => 8,
        B::DEPTHWISE_CONV_2D => 7,
        B::FULLY_CONNECTED => 14,
        B::ADD | B::PAD | B::QUANTIZE => 6,
        B::MUL => 8,
        B::AVERAGE_POOL_2D | B::MAX_POOL_2D | B::RELU | B::RELU6 | B::LOGISTIC | B::MEAN => 3,
        B::RESHAPE => 1,
        B::SOFTMAX => 4,
        B::CONCATENATION => 7,
        B::DEQUANTIZE => 9,
        _ => return None,
    })
}

/// The minimum runtime version of an op version (TFLite's runtime
/// version table); `None` where quant does not know it.
pub(crate) fn min_runtime(code: fb::BuiltinOperator, version: i32) -> Option<&'static str> {
    use fb::BuiltinOperator as B;
    Some(match (code, version) {
        (B::CONV_2D | B::DEPTHWISE_CONV_2D, 1) => "1.5.0",
        (B::CONV_2D | B::DEPTHWISE_CONV_2D, 3) => "1.14.0",
        (B::FULLY_CONNECTED, 1) => "1.5.0",
        (B::FULLY_CONNECTED, 4) => "1.14.0",
        (B::FULLY_CONNECTED, 5) => "2.0.0",
        (B::MUL, 3) => "1.15.0",
        (
            B::ADD
            | B::MUL
            | B::AVERAGE_POOL_2D
            | B::MAX_POOL_2D
            | B::SOFTMAX
            | B::CONCATENATION
            | B::PAD
            | B::RESHAPE
            | B::RELU6,
            1,
        ) => "1.5.0",
        (
            B::ADD
            | B::MUL
            | B::AVERAGE_POOL_2D
            | B::MAX_POOL_2D
            | B::SOFTMAX
            | B::CONCATENATION
            | B::PAD
            | B::MEAN
            | B::RELU6
            | B::DEQUANTIZE,
            2,
        ) => "1.14.0",
        (B::LOGISTIC | B::TANH, 1 | 2) | (B::QUANTIZE, 1) => "1.14.0",
        (B::MEAN, 1) => "1.6.0",
        (B::DEQUANTIZE, 1) => "1.13.1",
        (B::DEQUANTIZE, 5) => "2.7.0",
        (B::RELU, 2) => "2.1.0",
        _ => return None,
    })
}

/// Compares dotted runtime versions numerically (`1.13.1` > `1.5.0`).
pub(crate) fn runtime_key(version: &str) -> Vec<u32> {
    version.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}
