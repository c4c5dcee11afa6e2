//! The `.tflite` inspector: decodes a file field by field and lints it
//! against what LiteRT 2.3 rejects, crashes on or silently computes
//! wrongly (docs/tflite-export.md §8 and §14).
//!
//! Unlike [`crate::read`], inspection accepts any op and any options: it
//! only refuses bytes that are not a verifiable TFLite flatbuffer.

use crate::codes::{self, VersionFacts};
use crate::fb;
use crate::read::{ReadError, root};
use serde::Serialize;
use std::collections::BTreeMap;

/// Everything `inspect` learned about a `.tflite` file.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    /// The file identifier (bytes 4..8), `TFL3`.
    pub identifier: String,
    /// `Model.version` (3 is the only one LiteRT loads).
    pub schema_version: u32,
    /// `Model.description`, if any.
    pub description: Option<String>,
    /// Number of subgraphs (only subgraph 0 is listed and linted).
    pub subgraphs: usize,
    /// Number of buffers.
    pub buffers: usize,
    /// Bytes held by buffer 0 (must be 0); `None` if there is no buffer.
    pub buffer0_bytes: Option<usize>,
    /// Metadata entries.
    pub metadata: Vec<MetadataInfo>,
    /// The `min_runtime_version` metadata string, if present.
    pub min_runtime_version: Option<String>,
    /// Signature definitions.
    pub signatures: Vec<SignatureInfo>,
    /// Number of operators in subgraph 0.
    pub nodes: usize,
    /// Operator counts by builtin name (`CONV_2D`, ...).
    pub ops: BTreeMap<String, usize>,
    /// Subgraph input tensor indices.
    pub inputs: Vec<i32>,
    /// Subgraph output tensor indices.
    pub outputs: Vec<i32>,
    /// The operators in execution order.
    pub operators: Vec<OperatorInfo>,
    /// Every tensor of subgraph 0.
    pub tensors: Vec<TensorInfo>,
    /// Problems found, errors first.
    pub lints: Vec<Lint>,
    /// Every op reads and writes only integer tensors, except QUANTIZE ops
    /// fed by a graph input and DEQUANTIZE ops producing a graph output.
    pub fully_integer: bool,
}

/// One metadata entry.
#[derive(Clone, Debug, Serialize)]
pub struct MetadataInfo {
    /// Its name.
    pub name: String,
    /// The buffer holding its payload.
    pub buffer: u32,
    /// Payload size in bytes.
    pub bytes: usize,
}

/// One signature definition.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureInfo {
    /// The signature key (`serving_default`).
    pub key: String,
    /// The subgraph it runs.
    pub subgraph: u32,
    /// Named inputs.
    pub inputs: Vec<SignatureTensor>,
    /// Named outputs.
    pub outputs: Vec<SignatureTensor>,
}

/// A named tensor of a signature.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureTensor {
    /// The name callers use.
    pub name: String,
    /// The tensor index.
    pub tensor: u32,
}

/// One operator.
#[derive(Clone, Debug, Serialize)]
pub struct OperatorInfo {
    /// Position in execution order.
    pub index: usize,
    /// Builtin name (`CONV_2D`), `custom:<code>` or `BUILTIN_<n>`.
    pub op: String,
    /// Declared op version.
    pub version: i32,
    /// `OperatorCode.deprecated_builtin_code` (field 0).
    pub deprecated_builtin_code: i8,
    /// `OperatorCode.builtin_code` (field 3).
    pub builtin_code: i32,
    /// Input tensor indices (`-1` = omitted).
    pub inputs: Vec<i32>,
    /// Output tensor indices.
    pub outputs: Vec<i32>,
    /// The options table's type, if any.
    pub options_type: Option<String>,
    /// Decoded options fields.
    pub options: BTreeMap<String, String>,
}

/// One tensor.
#[derive(Clone, Debug, Serialize)]
pub struct TensorInfo {
    /// Tensor index.
    pub index: usize,
    /// Name.
    pub name: String,
    /// Element type (`i8`, `u8`, `i32`, `f32`, ... or TFLite's name).
    pub dtype: String,
    /// Declared shape.
    pub shape: Vec<i32>,
    /// `shape_signature` (`-1` = dynamic), if present.
    pub shape_signature: Option<Vec<i32>>,
    /// Buffer index (0 = no data).
    pub buffer: u32,
    /// Bytes in that buffer (0 for buffer 0, which LiteRT never reads).
    pub buffer_bytes: usize,
    /// Scales (empty if not quantized).
    pub scale: Vec<f32>,
    /// Zero points.
    pub zero_point: Vec<i64>,
    /// The axis per-channel parameters run along.
    pub quantized_dimension: i32,
}

/// How bad a lint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// LiteRT rejects the file, crashes, or silently computes wrong values.
    Error,
    /// Accepted by LiteRT 2.3 but fragile (other kernels, runtimes or APIs).
    Warning,
}

/// One problem found by the inspector.
#[derive(Clone, Debug, Serialize)]
pub struct Lint {
    /// Error or warning.
    pub severity: Severity,
    /// A stable kebab-case identifier (`softmax-beta`, ...).
    pub code: &'static str,
    /// The op concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<usize>,
    /// The tensor concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor: Option<usize>,
    /// What is wrong and what LiteRT does with it.
    pub message: String,
}

impl Inspection {
    /// Number of error lints.
    pub fn errors(&self) -> usize {
        self.lints
            .iter()
            .filter(|l| l.severity == Severity::Error)
            .count()
    }

    /// Number of warning lints.
    pub fn warnings(&self) -> usize {
        self.lints.len() - self.errors()
    }

    /// The lints with the given code (for callers and tests).
    pub fn lints_with(&self, code: &str) -> Vec<&Lint> {
        self.lints.iter().filter(|l| l.code == code).collect()
    }
}

/// Decodes and lints a `.tflite` file. Fails only when the bytes are not
/// a TFLite flatbuffer (too short, wrong identifier, not verifiable).
pub fn inspect(bytes: &[u8]) -> Result<Inspection, ReadError> {
    let model = root(bytes)?;
    let mut lints = Lints::default();
    let buffers: Vec<fb::Buffer<'_>> = model.buffers().iter().flat_map(|b| b.iter()).collect();
    let buffer_len = |i: usize| buffers.get(i).and_then(|b| b.data()).map_or(0, |d| d.len());
    let metadata: Vec<MetadataInfo> = model
        .metadata()
        .iter()
        .flat_map(|m| m.iter())
        .map(|m| MetadataInfo {
            name: m.name().unwrap_or_default().to_string(),
            buffer: m.buffer(),
            bytes: buffer_len(m.buffer() as usize),
        })
        .collect();
    let min_runtime_version = metadata
        .iter()
        .find(|m| m.name == crate::write::MIN_RUNTIME_VERSION)
        .and_then(|m| buffers.get(m.buffer as usize))
        .and_then(|b| b.data())
        .map(|d| {
            let bytes = d.bytes();
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        });
    let signatures: Vec<SignatureInfo> = model
        .signature_defs()
        .iter()
        .flat_map(|s| s.iter())
        .map(|s| {
            let maps = |v: Option<
                flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<fb::TensorMap<'_>>>,
            >| {
                v.iter()
                    .flat_map(|v| v.iter())
                    .map(|m| SignatureTensor {
                        name: m.name().unwrap_or_default().to_string(),
                        tensor: m.tensor_index(),
                    })
                    .collect()
            };
            SignatureInfo {
                key: s.signature_key().unwrap_or_default().to_string(),
                subgraph: s.subgraph_index(),
                inputs: maps(s.inputs()),
                outputs: maps(s.outputs()),
            }
        })
        .collect();

    if model.version() != crate::SCHEMA_VERSION {
        lints.error(
            "schema-version",
            None,
            None,
            format!("schema version {} (LiteRT loads only 3)", model.version()),
        );
    }
    let buffer0_bytes = (!buffers.is_empty()).then(|| buffer_len(0));
    match buffer0_bytes {
        None => lints.error(
            "no-buffers",
            None,
            None,
            "the model has no buffers; buffer 0 must exist and be empty".into(),
        ),
        Some(n) if n > 0 => lints.error(
            "buffer0-not-empty",
            None,
            None,
            format!(
                "buffer 0 holds {n} bytes; it must be the empty sentinel (LiteRT never reads it)"
            ),
        ),
        Some(_) => {}
    }
    if signatures.is_empty() {
        lints.warning(
            "no-signature",
            None,
            None,
            "no signature: get_signature_runner() fails".into(),
        );
    }
    if min_runtime_version.is_none() {
        lints.warning(
            "no-min-runtime-version",
            None,
            None,
            "no min_runtime_version metadata".into(),
        );
    }

    let subgraphs: Vec<fb::SubGraph<'_>> =
        model.subgraphs().iter().flat_map(|s| s.iter()).collect();
    let Some(subgraph) = subgraphs.first() else {
        lints.error(
            "no-subgraph",
            None,
            None,
            "the model has no subgraph".into(),
        );
        return Ok(Inspection {
            identifier: crate::FILE_IDENTIFIER.into(),
            schema_version: model.version(),
            description: model.description().map(str::to_string),
            subgraphs: 0,
            buffers: buffers.len(),
            buffer0_bytes,
            metadata,
            min_runtime_version,
            signatures,
            nodes: 0,
            ops: BTreeMap::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            operators: Vec::new(),
            tensors: Vec::new(),
            lints: lints.finish(),
            fully_integer: false,
        });
    };

    let raw_tensors: Vec<fb::Tensor<'_>> =
        subgraph.tensors().iter().flat_map(|t| t.iter()).collect();
    let tensors: Vec<TensorInfo> = raw_tensors
        .iter()
        .enumerate()
        .map(|(index, t)| {
            let q = t.quantization();
            TensorInfo {
                index,
                name: t.name().unwrap_or_default().to_string(),
                dtype: codes::type_name(t.type_()),
                shape: t.shape().map(|s| s.iter().collect()).unwrap_or_default(),
                shape_signature: t.shape_signature().map(|s| s.iter().collect()),
                buffer: t.buffer(),
                buffer_bytes: if t.buffer() == 0 {
                    0
                } else {
                    buffer_len(t.buffer() as usize)
                },
                scale: q
                    .and_then(|q| q.scale())
                    .map(|v| v.iter().collect())
                    .unwrap_or_default(),
                zero_point: q
                    .and_then(|q| q.zero_point())
                    .map(|v| v.iter().collect())
                    .unwrap_or_default(),
                quantized_dimension: q.map_or(0, |q| q.quantized_dimension()),
            }
        })
        .collect();
    for (info, raw) in tensors.iter().zip(&raw_tensors) {
        lint_tensor(&mut lints, info, raw, buffers.len());
    }

    let opcodes: Vec<fb::OperatorCode<'_>> = model
        .operator_codes()
        .iter()
        .flat_map(|c| c.iter())
        .collect();
    let graph_inputs: Vec<i32> = subgraph
        .inputs()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let graph_outputs: Vec<i32> = subgraph
        .outputs()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    for (role, list) in [("input", &graph_inputs), ("output", &graph_outputs)] {
        for &i in list {
            if i < 0 || i as usize >= tensors.len() {
                lints.error(
                    "tensor-index",
                    None,
                    None,
                    format!(
                        "model {role} refers to tensor {i}, out of range ({} tensors)",
                        tensors.len()
                    ),
                );
            }
        }
    }
    let mut operators = Vec::new();
    let mut ops = BTreeMap::new();
    let mut fully_integer = true;
    for (index, op) in subgraph
        .operators()
        .iter()
        .flat_map(|o| o.iter())
        .enumerate()
    {
        let code = opcodes.get(op.opcode_index() as usize);
        if code.is_none() {
            lints.error(
                "opcode-index",
                Some(index),
                None,
                format!(
                    "opcode index {} is out of range ({} operator codes)",
                    op.opcode_index(),
                    opcodes.len()
                ),
            );
        }
        let builtin = code.map_or(fb::BuiltinOperator(-1), codes::effective_code);
        let name = match code.and_then(|c| c.custom_code()) {
            Some(custom) => format!("custom:{custom}"),
            None if code.is_none() => "?".to_string(),
            None => codes::op_name(builtin),
        };
        let (options_type, options) = describe_options(&op);
        let info = OperatorInfo {
            index,
            op: name.clone(),
            version: code.map_or(0, |c| c.version()),
            deprecated_builtin_code: code.map_or(0, |c| c.deprecated_builtin_code()),
            builtin_code: code.map_or(0, |c| c.builtin_code().0),
            inputs: op.inputs().map(|v| v.iter().collect()).unwrap_or_default(),
            outputs: op.outputs().map(|v| v.iter().collect()).unwrap_or_default(),
            options_type,
            options,
        };
        *ops.entry(name).or_insert(0) += 1;
        let ctx = OpContext {
            index,
            code: builtin,
            custom: code.is_some_and(|c| c.custom_code().is_some()),
            info: &info,
            op: &op,
            tensors: &tensors,
        };
        if code.is_some() {
            lint_op(&mut lints, &ctx);
        }
        fully_integer &= integer_only(&ctx, &graph_inputs, &graph_outputs);
        operators.push(info);
    }
    lint_scheme(&mut lints, &operators, &tensors);
    Ok(Inspection {
        identifier: crate::FILE_IDENTIFIER.into(),
        schema_version: model.version(),
        description: model.description().map(str::to_string),
        subgraphs: subgraphs.len(),
        buffers: buffers.len(),
        buffer0_bytes,
        metadata,
        min_runtime_version,
        signatures,
        nodes: operators.len(),
        ops,
        inputs: graph_inputs,
        outputs: graph_outputs,
        operators,
        tensors,
        lints: lints.finish(),
        fully_integer,
    })
}

#[derive(Default)]
struct Lints(Vec<Lint>);

impl Lints {
    fn push(
        &mut self,
        severity: Severity,
        code: &'static str,
        op: Option<usize>,
        tensor: Option<usize>,
        message: String,
    ) {
        self.0.push(Lint {
            severity,
            code,
            op,
            tensor,
            message,
        });
    }
    fn error(
        &mut self,
        code: &'static str,
        op: Option<usize>,
        tensor: Option<usize>,
        message: String,
    ) {
        self.push(Severity::Error, code, op, tensor, message);
    }
    fn warning(
        &mut self,
        code: &'static str,
        op: Option<usize>,
        tensor: Option<usize>,
        message: String,
    ) {
        self.push(Severity::Warning, code, op, tensor, message);
    }
    fn finish(mut self) -> Vec<Lint> {
        self.0.sort_by_key(|l| l.severity);
        self.0
    }
}

fn is_integer_type(dtype: &str) -> bool {
    matches!(dtype, "i8" | "u8" | "i32" | "i64" | "int16" | "bool")
}

fn element_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "i8" | "u8" | "bool" => 1,
        "int16" | "float16" => 2,
        "i32" | "f32" => 4,
        "i64" | "f64" | "complex64" => 8,
        _ => return None,
    })
}

fn lint_tensor(lints: &mut Lints, t: &TensorInfo, raw: &fb::Tensor<'_>, buffers: usize) {
    let at = Some(t.index);
    let name = &t.name;
    if t.buffer as usize >= buffers && t.buffer != 0 {
        lints.error(
            "buffer-index",
            None,
            at,
            format!(
                "tensor '{name}': buffer index {} is out of range ({buffers} buffers)",
                t.buffer
            ),
        );
    }
    if t.shape.iter().any(|&d| d < 0) {
        lints.error(
            "negative-dimension",
            None,
            at,
            format!(
                "tensor '{name}': shape {:?} has a negative dimension",
                t.shape
            ),
        );
    } else if t.buffer_bytes > 0
        && let Some(size) = element_size(&t.dtype)
    {
        let expected = t
            .shape
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d as usize));
        if expected != Some(t.buffer_bytes) {
            let expected =
                expected.map_or_else(|| "more than usize::MAX".to_string(), |e| e.to_string());
            lints.error(
                "constant-size",
                None,
                at,
                format!(
                    "tensor '{name}': {} {:?} needs {expected} bytes, its buffer holds {}",
                    t.dtype, t.shape, t.buffer_bytes
                ),
            );
        }
    }
    let q = raw.quantization();
    let has_min_max = q.is_some_and(|q| {
        q.min().is_some_and(|v| !v.is_empty()) || q.max().is_some_and(|v| !v.is_empty())
    });
    let quantizable = matches!(t.dtype.as_str(), "i8" | "u8");
    if t.scale.is_empty() {
        if quantizable && has_min_max {
            lints.error("quant-min-max-only", None, at, format!("tensor '{name}': quantization has only min/max and no scale; LiteRT treats it as not quantized and integer kernels fail"));
        } else if quantizable {
            lints.error("unquantized-integer", None, at, format!("tensor '{name}': {} tensor without quantization parameters; integer kernels fail", t.dtype));
        }
        return;
    }
    if q.and_then(|q| q.zero_point()).is_none() {
        lints.error(
            "zero-point-missing",
            None,
            at,
            format!(
                "tensor '{name}': quantization has a scale but no zero_point (rejected at load)"
            ),
        );
        return;
    }
    if t.scale.len() != t.zero_point.len() {
        lints.error(
            "quant-counts",
            None,
            at,
            format!(
                "tensor '{name}': {} zero points and {} scales (rejected at load)",
                t.zero_point.len(),
                t.scale.len()
            ),
        );
        return;
    }
    if t.scale.len() > 1 {
        let qd = t.quantized_dimension;
        match usize::try_from(qd).ok().and_then(|d| t.shape.get(d)) {
            None => lints.error("quantized-dimension", None, at, format!("tensor '{name}': quantized_dimension {qd} is out of range for shape {:?} (rejected at load)", t.shape)),
            Some(&n) if n as usize != t.scale.len() => lints.error("quant-scale-count", None, at, format!("tensor '{name}': {} scales, but dimension {qd} of shape {:?} is {n} (rejected at load)", t.scale.len(), t.shape)),
            Some(_) => {}
        }
    }
    if let Some(s) = t.scale.iter().find(|s| !s.is_finite() || **s < 0.0) {
        lints.error(
            "bad-scale",
            None,
            at,
            format!("tensor '{name}': scale {s} is not a finite non-negative number"),
        );
    }
    let range = match t.dtype.as_str() {
        "i8" => Some((-128, 127)),
        "u8" => Some((0, 255)),
        _ => None,
    };
    if let Some((lo, hi)) = range
        && let Some(zp) = t.zero_point.iter().find(|&&z| z < lo || z > hi)
    {
        lints.error("zero-point-range", None, at, format!("tensor '{name}': zero point {zp} is outside the {} range [{lo}, {hi}] (garbage on builtin kernels, rejected by XNNPACK)", t.dtype));
    }
}

/// What an op's lints look at.
struct OpContext<'a, 'b> {
    index: usize,
    code: fb::BuiltinOperator,
    custom: bool,
    info: &'a OperatorInfo,
    op: &'a fb::Operator<'b>,
    tensors: &'a [TensorInfo],
}

impl OpContext<'_, '_> {
    fn input(&self, slot: usize) -> Option<&TensorInfo> {
        let i = *self.info.inputs.get(slot)?;
        self.tensors.get(usize::try_from(i).ok()?)
    }
    fn output(&self, slot: usize) -> Option<&TensorInfo> {
        let i = *self.info.outputs.get(slot)?;
        self.tensors.get(usize::try_from(i).ok()?)
    }
}

/// Per-tensor (scale, zero point), if the tensor has exactly one of each.
fn per_tensor(t: &TensorInfo) -> Option<(f64, i64)> {
    (t.scale.len() == 1 && t.zero_point.len() == 1)
        .then(|| (f64::from(t.scale[0]), t.zero_point[0]))
}

fn near(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(a.abs())
}

fn activation_name(a: fb::ActivationFunctionType) -> String {
    a.variant_name()
        .map_or_else(|| a.0.to_string(), str::to_string)
}

fn padding_name(p: fb::Padding) -> String {
    p.variant_name()
        .map_or_else(|| p.0.to_string(), str::to_string)
}

fn describe_options(op: &fb::Operator<'_>) -> (Option<String>, BTreeMap<String, String>) {
    let kind = op.builtin_options_type();
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    if let Some(o) = op.builtin_options_as_conv_2_doptions() {
        put("padding", padding_name(o.padding()));
        put("stride_w", o.stride_w().to_string());
        put("stride_h", o.stride_h().to_string());
        put(
            "fused_activation_function",
            activation_name(o.fused_activation_function()),
        );
        put("dilation_w_factor", o.dilation_w_factor().to_string());
        put("dilation_h_factor", o.dilation_h_factor().to_string());
    } else if let Some(o) = op.builtin_options_as_depthwise_conv_2_doptions() {
        put("padding", padding_name(o.padding()));
        put("stride_w", o.stride_w().to_string());
        put("stride_h", o.stride_h().to_string());
        put("depth_multiplier", o.depth_multiplier().to_string());
        put(
            "fused_activation_function",
            activation_name(o.fused_activation_function()),
        );
        put("dilation_w_factor", o.dilation_w_factor().to_string());
        put("dilation_h_factor", o.dilation_h_factor().to_string());
    } else if let Some(o) = op.builtin_options_as_pool_2_doptions() {
        put("padding", padding_name(o.padding()));
        put("stride_w", o.stride_w().to_string());
        put("stride_h", o.stride_h().to_string());
        put("filter_width", o.filter_width().to_string());
        put("filter_height", o.filter_height().to_string());
        put(
            "fused_activation_function",
            activation_name(o.fused_activation_function()),
        );
    } else if let Some(o) = op.builtin_options_as_fully_connected_options() {
        put(
            "fused_activation_function",
            activation_name(o.fused_activation_function()),
        );
        put("weights_format", o.weights_format().0.to_string());
        put("keep_num_dims", o.keep_num_dims().to_string());
        put(
            "asymmetric_quantize_inputs",
            o.asymmetric_quantize_inputs().to_string(),
        );
    } else if let Some(o) = op.builtin_options_as_softmax_options() {
        put("beta", o.beta().to_string());
    } else if let Some(o) = op.builtin_options_as_concatenation_options() {
        put("axis", o.axis().to_string());
        put(
            "fused_activation_function",
            activation_name(o.fused_activation_function()),
        );
    } else if let Some(o) = op.builtin_options_as_add_options() {
        put(
            "fused_activation_function",
            activation_name(o.fused_activation_function()),
        );
    } else if let Some(o) = op.builtin_options_as_mul_options() {
        put(
            "fused_activation_function",
            activation_name(o.fused_activation_function()),
        );
    } else if let Some(o) = op.builtin_options_as_reshape_options() {
        put(
            "new_shape",
            format!(
                "{:?}",
                o.new_shape()
                    .map(|v| v.iter().collect::<Vec<_>>())
                    .unwrap_or_default()
            ),
        );
    } else if let Some(o) = op.builtin_options_as_reducer_options() {
        put("keep_dims", o.keep_dims().to_string());
    } else if let Some(o) = op.builtin_options_as_squeeze_options() {
        put(
            "squeeze_dims",
            format!(
                "{:?}",
                o.squeeze_dims()
                    .map(|v| v.iter().collect::<Vec<_>>())
                    .unwrap_or_default()
            ),
        );
    }
    let name = (kind != fb::BuiltinOptions::NONE).then(|| {
        kind.variant_name()
            .map_or_else(|| format!("options#{}", kind.0), str::to_string)
    });
    (name, m)
}

/// The fused activation an op declares, if its options have one.
fn fused_activation(op: &fb::Operator<'_>) -> Option<fb::ActivationFunctionType> {
    op.builtin_options_as_conv_2_doptions()
        .map(|o| o.fused_activation_function())
        .or_else(|| {
            op.builtin_options_as_depthwise_conv_2_doptions()
                .map(|o| o.fused_activation_function())
        })
        .or_else(|| {
            op.builtin_options_as_pool_2_doptions()
                .map(|o| o.fused_activation_function())
        })
        .or_else(|| {
            op.builtin_options_as_fully_connected_options()
                .map(|o| o.fused_activation_function())
        })
        .or_else(|| {
            op.builtin_options_as_add_options()
                .map(|o| o.fused_activation_function())
        })
        .or_else(|| {
            op.builtin_options_as_mul_options()
                .map(|o| o.fused_activation_function())
        })
        .or_else(|| {
            op.builtin_options_as_concatenation_options()
                .map(|o| o.fused_activation_function())
        })
}

const QUANT_OPS: [fb::BuiltinOperator; 15] = [
    fb::BuiltinOperator::CONV_2D,
    fb::BuiltinOperator::DEPTHWISE_CONV_2D,
    fb::BuiltinOperator::FULLY_CONNECTED,
    fb::BuiltinOperator::ADD,
    fb::BuiltinOperator::MUL,
    fb::BuiltinOperator::MAX_POOL_2D,
    fb::BuiltinOperator::AVERAGE_POOL_2D,
    fb::BuiltinOperator::MEAN,
    fb::BuiltinOperator::RESHAPE,
    fb::BuiltinOperator::CONCATENATION,
    fb::BuiltinOperator::SOFTMAX,
    fb::BuiltinOperator::LOGISTIC,
    fb::BuiltinOperator::PAD,
    fb::BuiltinOperator::QUANTIZE,
    fb::BuiltinOperator::DEQUANTIZE,
];

fn lint_op(lints: &mut Lints, c: &OpContext<'_, '_>) {
    use fb::BuiltinOperator as B;
    let at = Some(c.index);
    let name = c.info.op.as_str();
    let count = c.tensors.len();
    for (role, list) in [("input", &c.info.inputs), ("output", &c.info.outputs)] {
        for (slot, &i) in list.iter().enumerate() {
            if (i < -1 || (role == "output" && i < 0)) || (i >= 0 && i as usize >= count) {
                lints.error("tensor-index", at, None, format!("op {} ({name}): {role} {slot} refers to tensor {i}, out of range ({count} tensors)", c.index));
            }
        }
    }
    if c.custom {
        lints.warning(
            "custom-op",
            at,
            None,
            format!("op {} ({name}): custom op; LiteRT runs it only with the op registered, quant only with the plugin that provides its integer kernel", c.index),
        );
        return;
    }
    if !QUANT_OPS.contains(&c.code) {
        lints.warning("unsupported-by-quant", at, None, format!("op {} ({name}): not one of quant's integer ops; `quant_tflite::read` refuses the file", c.index));
    }
    let (dep, full) = (
        i32::from(c.info.deprecated_builtin_code),
        c.info.builtin_code,
    );
    if dep != 0 && full != 0 && dep != full && !(dep == 127 && full >= 127) {
        lints.warning("opcode-fields-differ", at, None, format!("op {} ({name}): deprecated_builtin_code {dep} and builtin_code {full} differ; LiteRT takes the larger", c.index));
    }
    let version = c.info.version;
    let input0 = c.input(0);
    let output0 = c.output(0);
    if version <= 0 {
        lints.error(
            "op-version",
            at,
            None,
            format!(
                "op {} ({name}): version {version} is rejected at load",
                c.index
            ),
        );
    } else if let Some(max) = codes::litert_max_version(c.code)
        && version > max
    {
        lints.error("op-version", at, None, format!("op {} ({name}): version {version} is above LiteRT 2.3's highest ({max}); rejected at load", c.index));
    } else {
        let facts = VersionFacts {
            int8: input0.is_some_and(|t| t.dtype == "i8"),
            per_channel_input: input0.is_some_and(|t| t.scale.len() > 1),
            keep_num_dims: c
                .op
                .builtin_options_as_fully_connected_options()
                .is_some_and(|o| o.keep_num_dims()),
            mul_rescale_at_least_one: false,
        };
        if let Some(expected) = codes::converter_version(c.code, facts)
            && version < expected
        {
            lints.warning("op-version-low", at, None, format!("op {} ({name}): version {version} is below the converter's {expected}; LiteRT 2.3 runs it, older runtimes may not", c.index));
        }
    }
    if let Some(a) = fused_activation(c.op)
        && a.0 > 3
    {
        lints.error(
            "fused-activation",
            at,
            None,
            format!(
                "op {} ({name}): fused activation {} has no integer kernel",
                c.index,
                activation_name(a)
            ),
        );
    }

    let is_conv = matches!(c.code, B::CONV_2D | B::DEPTHWISE_CONV_2D);
    let is_weighted = is_conv || c.code == B::FULLY_CONNECTED;
    match c.code {
        B::CONV_2D => match c.op.builtin_options_as_conv_2_doptions() {
            None => lints.error(
                "missing-options",
                at,
                None,
                format!(
                    "op {} ({name}): no Conv2DOptions; LiteRT rejects it (stride 0)",
                    c.index
                ),
            ),
            Some(o) if o.stride_h() <= 0 || o.stride_w() <= 0 => lints.error(
                "bad-options",
                at,
                None,
                format!(
                    "op {} ({name}): stride {}x{} must be positive",
                    c.index,
                    o.stride_h(),
                    o.stride_w()
                ),
            ),
            Some(_) => {}
        },
        B::DEPTHWISE_CONV_2D => match c.op.builtin_options_as_depthwise_conv_2_doptions() {
            None => lints.error(
                "missing-options",
                at,
                None,
                format!(
                    "op {} ({name}): no DepthwiseConv2DOptions (stride 0)",
                    c.index
                ),
            ),
            Some(o) => {
                if o.stride_h() <= 0 || o.stride_w() <= 0 {
                    lints.error(
                        "bad-options",
                        at,
                        None,
                        format!(
                            "op {} ({name}): stride {}x{} must be positive",
                            c.index,
                            o.stride_h(),
                            o.stride_w()
                        ),
                    );
                }
                let channels = input0.and_then(|t| t.shape.last().copied());
                let filter = c.input(1).and_then(|t| t.shape.get(3).copied());
                if let (Some(ch), Some(f)) = (channels, filter) {
                    let m = o.depth_multiplier();
                    if m == 0 {
                        lints.warning("depth-multiplier", at, None, format!("op {} ({name}): depth_multiplier 0; builtin kernels ignore it, but write the true multiplier {}", c.index, if ch > 0 { f / ch } else { 0 }));
                    } else if i64::from(ch) * i64::from(m) != i64::from(f) {
                        lints.error("depth-multiplier", at, None, format!("op {} ({name}): depth_multiplier {m} × {ch} input channels ≠ {f} filter channels (XNNPACK rejects it)", c.index));
                    }
                }
            }
        },
        B::MAX_POOL_2D | B::AVERAGE_POOL_2D => match c.op.builtin_options_as_pool_2_doptions() {
            None => lints.error(
                "missing-options",
                at,
                None,
                format!(
                    "op {} ({name}): no Pool2DOptions (stride and window 0)",
                    c.index
                ),
            ),
            Some(o)
                if o.stride_h() <= 0
                    || o.stride_w() <= 0
                    || o.filter_height() <= 0
                    || o.filter_width() <= 0 =>
            {
                lints.error(
                    "bad-options",
                    at,
                    None,
                    format!(
                        "op {} ({name}): strides and window must be positive",
                        c.index
                    ),
                )
            }
            Some(_) => {}
        },
        B::CONCATENATION => {
            let activation =
                c.op.builtin_options_as_concatenation_options()
                    .map(|o| o.fused_activation_function());
            if activation.is_some_and(|a| a != fb::ActivationFunctionType::NONE) {
                lints.error("concat-activation", at, None, format!("op {} ({name}): a fused activation on CONCATENATION is rejected by LiteRT 2.3 at allocate_tensors (concatenation.cc: params->activation != kTfLiteActNone)", c.index));
            }
        }
        B::SOFTMAX => {
            let beta = c.op.builtin_options_as_softmax_options().map(|o| o.beta());
            match beta {
                None => lints.error("softmax-beta", at, None, format!("op {} ({name}): no SoftmaxOptions; LiteRT uses beta 0 and returns a flat, wrong output", c.index)),
                Some(0.0) => lints.error("softmax-beta", at, None, format!("op {} ({name}): beta is 0 (missing); LiteRT returns a flat, wrong output", c.index)),
                Some(_) => {}
            }
        }
        _ => {}
    }

    if is_conv && (c.info.inputs.len() < 3 || c.info.inputs[2] < 0) {
        let what = if c.code == B::DEPTHWISE_CONV_2D {
            "the optimized kernel crashes (segmentation fault) at invoke"
        } else {
            "rejected at allocate_tensors"
        };
        lints.error(
            "missing-bias",
            at,
            None,
            format!(
                "op {} ({name}): no bias; {what}; write a zero bias",
                c.index
            ),
        );
    }
    if is_weighted && let (Some(input), Some(weights)) = (input0, c.input(1)) {
        let per_channel = weights.scale.len() > 1;
        if input.dtype == "i8" && weights.dtype == "u8" {
            lints.error(
                "weight-type",
                at,
                Some(weights.index),
                format!(
                    "op {} ({name}): uint8 weights with an int8 input (rejected)",
                    c.index
                ),
            );
        }
        if input.dtype == "u8" && per_channel {
            lints.error(
                "per-channel-uint8",
                at,
                Some(weights.index),
                format!(
                    "op {} ({name}): per-channel weights on a uint8 op (rejected)",
                    c.index
                ),
            );
        }
        if input.dtype == "i8"
            && weights.dtype == "i8"
            && weights.zero_point.iter().any(|&z| z != 0)
        {
            let what = match c.code {
                B::CONV_2D => "rejected at allocate_tensors",
                _ if c.code == B::FULLY_CONNECTED && !per_channel => "XNNPACK rejects it",
                _ => "the kernels silently treat it as 0",
            };
            lints.error(
                "int8-weight-zero-point",
                at,
                Some(weights.index),
                format!(
                    "op {} ({name}): int8 weights with a non-zero zero point; {what}",
                    c.index
                ),
            );
        }
        if let Some(bias) = c.input(2) {
            if bias.dtype != "i32" {
                lints.error(
                    "bias-type",
                    at,
                    Some(bias.index),
                    format!(
                        "op {} ({name}): bias is {}, not int32 (rejected)",
                        c.index, bias.dtype
                    ),
                );
            } else if bias.zero_point.iter().any(|&z| z != 0) {
                lints.error("bias-zero-point", at, Some(bias.index), format!("op {} ({name}): bias zero point is not 0 (ignored by builtin kernels, rejected by XNNPACK)", c.index));
            }
            if let Some((s_in, _)) = per_tensor(input)
                && !bias.scale.is_empty()
                && (weights.scale.len() == bias.scale.len() || weights.scale.len() == 1)
            {
                let off = bias.scale.iter().enumerate().any(|(i, &sb)| {
                    let sw = f64::from(*weights.scale.get(i).unwrap_or(&weights.scale[0]));
                    !near(f64::from(sb), s_in * sw, 1e-5)
                });
                if off {
                    lints.warning("bias-scale", at, Some(bias.index), format!("op {} ({name}): bias scale differs from input scale × weight scale; kernels assume the product", c.index));
                }
            }
        }
    }

    // Output dtype follows the input, except for the converting ops.
    if !matches!(c.code, B::QUANTIZE | B::DEQUANTIZE)
        && let (Some(i), Some(o)) = (input0, output0)
        && i.dtype != o.dtype
        && !matches!(c.code, B::CAST | B::ARG_MAX | B::ARG_MIN | B::SHAPE)
    {
        lints.error(
            "io-dtype",
            at,
            Some(o.index),
            format!(
                "op {} ({name}): output is {} but input is {} (rejected)",
                c.index, o.dtype, i.dtype
            ),
        );
    }
    if matches!(c.code, B::ADD | B::MUL)
        && let (Some(a), Some(b)) = (input0, c.input(1))
        && a.dtype != b.dtype
    {
        lints.error(
            "io-dtype",
            at,
            Some(b.index),
            format!(
                "op {} ({name}): inputs are {} and {} (rejected)",
                c.index, a.dtype, b.dtype
            ),
        );
    }

    // Fixed output parameters.
    if let (Some(i), Some(o)) = (input0, output0) {
        let fixed = match (c.code, i.dtype.as_str()) {
            (B::SOFTMAX, "i8") => Some((
                1.0 / 256.0,
                -128,
                Severity::Error,
                1e-3,
                "rejected at allocate_tensors",
            )),
            (B::SOFTMAX, "u8") => Some((
                1.0 / 256.0,
                0,
                Severity::Warning,
                1e-3,
                "only the builtin kernels honour another scale; the reference kernels compute in 1/256",
            )),
            (B::LOGISTIC, "i8") => Some((
                1.0 / 256.0,
                -128,
                Severity::Error,
                1e-6,
                "rejected by the builtin kernel",
            )),
            (B::LOGISTIC, "u8") => Some((
                1.0 / 256.0,
                0,
                Severity::Error,
                1e-6,
                "silently wrong by over 100 LSB",
            )),
            (B::TANH, "i8") => Some((
                1.0 / 128.0,
                0,
                Severity::Error,
                1e-6,
                "silently wrong by over 100 LSB",
            )),
            (B::TANH, "u8") => Some((
                1.0 / 128.0,
                128,
                Severity::Error,
                1e-6,
                "silently wrong by over 100 LSB",
            )),
            _ => None,
        };
        if let Some((scale, zp, severity, tol, effect)) = fixed
            && let Some((s, z)) = per_tensor(o)
            && (!near(s, scale, tol) || z != zp)
        {
            lints.push(severity, "fixed-output-quantization", at, Some(o.index), format!("op {} ({name}): {} output must be (scale {scale}, zero point {zp}), found ({s}, {z}); {effect}", c.index, i.dtype));
        }
        if matches!(
            c.code,
            B::MAX_POOL_2D | B::AVERAGE_POOL_2D | B::RESHAPE | B::PAD | B::SQUEEZE
        ) && let (Some((si, zi)), Some((so, zo))) = (per_tensor(i), per_tensor(o))
            && (!near(si, so, 1e-6) || zi != zo)
        {
            lints.error("same-quantization", at, Some(o.index), format!("op {} ({name}): output ({so}, {zo}) differs from input ({si}, {zi}); the kernel copies integers, so values are silently wrong", c.index));
        }
    }
    if c.code == B::CONCATENATION
        && let Some(o) = output0
        && o.dtype == "i8"
        && let Some((so, zo)) = per_tensor(o)
    {
        for slot in 0..c.info.inputs.len() {
            if let Some(t) = c.input(slot)
                && let Some((s, z)) = per_tensor(t)
                && (!near(s, so, 1e-6) || z != zo)
            {
                lints.error("concat-quantization", at, Some(t.index), format!("op {} ({name}): int8 input {slot} has ({s}, {z}) but the output has ({so}, {zo}); rejected at allocate_tensors, requantize first", c.index));
            }
        }
    }
}

/// Whether an op reads and writes only integer tensors (QUANTIZE from a
/// graph input and DEQUANTIZE to a graph output excepted).
fn integer_only(c: &OpContext<'_, '_>, graph_inputs: &[i32], graph_outputs: &[i32]) -> bool {
    if c.custom {
        return false;
    }
    let inputs_ok = c.code == fb::BuiltinOperator::QUANTIZE
        && c.info
            .inputs
            .first()
            .is_some_and(|i| graph_inputs.contains(i));
    let outputs_ok = c.code == fb::BuiltinOperator::DEQUANTIZE
        && c.info
            .outputs
            .first()
            .is_some_and(|o| graph_outputs.contains(o));
    let integer = |list: &[i32]| {
        list.iter().filter(|&&i| i >= 0).all(|&i| {
            c.tensors
                .get(i as usize)
                .is_some_and(|t| is_integer_type(&t.dtype))
        })
    };
    (inputs_ok || integer(&c.info.inputs)) && (outputs_ok || integer(&c.info.outputs))
}

/// Warns when the body mixes int8 and uint8 activations.
fn lint_scheme(lints: &mut Lints, operators: &[OperatorInfo], tensors: &[TensorInfo]) {
    let mut int8 = false;
    let mut uint8 = false;
    for op in operators
        .iter()
        .filter(|o| o.op != "QUANTIZE" && o.op != "DEQUANTIZE")
    {
        for &i in op.inputs.iter().take(1) {
            match tensors
                .get(usize::try_from(i).unwrap_or(usize::MAX))
                .map(|t| t.dtype.as_str())
            {
                Some("i8") => int8 = true,
                Some("u8") => uint8 = true,
                _ => {}
            }
        }
    }
    if int8 && uint8 {
        lints.warning(
            "mixed-scheme",
            None,
            None,
            "the body mixes int8 and uint8 ops; use one scheme (QUANTIZE at the edges only)".into(),
        );
    }
}
