//! Example quant plugin library: a new op type, `HardSwish`, with its float
//! kernel, its gradient and its integer kernel; a custom layer matcher
//! (`dense-hardswish`) that finds the dense layers using it; and an
//! exporter (`op-census`) of lowered integer models. Its manifest,
//! `plugin.toml`, declares all three and a target that runs `HardSwish`.
//!
//! `HardSwish(x) = x · relu6(x + 3) / 6` (MobileNetV3), whose derivative is
//! 0 below −3, 1 above 3 and `(2x + 3) / 6` in between.

use quant_plugin_api::author::{
    CustomOp, Exporter, Matcher, Outputs, QOutputSpec, QTensorRef, TensorRef,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::ffi::CStr;

/// The `HardSwish` op: one input, one output of the same shape.
pub struct HardSwish;

fn hard_swish(x: f32) -> f32 {
    x * (x + 3.0).clamp(0.0, 6.0) / 6.0
}

fn hard_swish_grad(x: f32) -> f32 {
    if x < -3.0 {
        0.0
    } else if x > 3.0 {
        1.0
    } else {
        (2.0 * x + 3.0) / 6.0
    }
}

fn single<T: Copy>(inputs: &[T]) -> Result<T, String> {
    match inputs {
        [x] => Ok(*x),
        _ => Err(format!("HardSwish takes 1 input, got {}", inputs.len())),
    }
}

impl CustomOp for HardSwish {
    const OP_TYPE: &'static CStr = c"HardSwish";
    const HAS_GRADIENT: bool = true;
    const HAS_INTEGER: bool = true;

    fn forward(inputs: &[TensorRef<'_>], out: &mut Outputs<'_>) -> Result<(), String> {
        let x = single(inputs)?;
        let y = out.alloc(0, x.shape)?;
        for (y, &x) in y.iter_mut().zip(x.data) {
            *y = hard_swish(x);
        }
        Ok(())
    }

    fn backward(
        inputs: &[TensorRef<'_>],
        dy: TensorRef<'_>,
        grads: &mut Outputs<'_>,
    ) -> Result<(), String> {
        let x = single(inputs)?;
        if dy.shape != x.shape {
            return Err(format!(
                "dy has shape {:?}, the input {:?}",
                dy.shape, x.shape
            ));
        }
        let dx = grads.alloc(0, x.shape)?;
        for ((dx, &x), &dy) in dx.iter_mut().zip(x.data).zip(dy.data) {
            *dx = dy * hard_swish_grad(x);
        }
        Ok(())
    }

    /// Each output level: dequantize the input level, apply HardSwish in
    /// float32, requantize to the output's scale and zero point (rounding
    /// half away from zero, saturating).
    fn integer(
        inputs: &[QTensorRef<'_>],
        output: &QOutputSpec<'_>,
        out: &mut Outputs<'_>,
    ) -> Result<(), String> {
        let x = single(inputs)?;
        if !(output.scale.is_finite() && output.scale > 0.0) {
            return Err(format!("output scale {} is not positive", output.scale));
        }
        let mut y = out.alloc_quantized(0, output.elem, x.shape)?;
        for i in 0..x.data.len() {
            let real = x.scale * (x.data.get(i) - x.zero_point) as f32;
            let level = (hard_swish(real) / output.scale).round() as i32 + output.zero_point;
            y.set(i, level);
        }
        Ok(())
    }
}

/// The `dense-hardswish` matcher: `MatMul(x, weights) → Add/AddV2/BiasAdd →
/// HardSwish`, with weights a variable or constant. The bias add is the
/// layer's activation (so the layer lowers to a FULLY_CONNECTED with its
/// own output range) and the HardSwish is quantized after it as a
/// post-activation op (so it lowers to a CUSTOM op).
pub struct DenseHardSwish;

impl Matcher for DenseHardSwish {
    const NAME: &'static CStr = c"dense-hardswish";

    fn find(graph_json: &[u8]) -> Result<String, String> {
        let doc: Value =
            serde_json::from_slice(graph_json).map_err(|e| format!("graph JSON: {e}"))?;
        let nodes = doc["nodes"]
            .as_array()
            .ok_or("graph JSON: no `nodes` array")?;
        let by_name: HashMap<&str, &Value> = nodes
            .iter()
            .filter_map(|n| Some((n["name"].as_str()?, n)))
            .collect();
        let op = |name: &str| by_name.get(name).and_then(|n| n["op"].as_str());
        let input = |node: &Value, i: usize| -> Option<String> {
            node["inputs"]
                .as_array()?
                .get(i)?
                .as_str()
                .map(str::to_string)
        };
        let mut layers = Vec::new();
        for node in nodes.iter().filter(|n| n["op"] == "HardSwish") {
            let Some(bias) = input(node, 0) else { continue };
            if !matches!(op(&bias), Some("Add" | "AddV2" | "BiasAdd")) {
                continue;
            }
            let bias_node = by_name[bias.as_str()];
            let Some(matmul) = [input(bias_node, 0), input(bias_node, 1)]
                .into_iter()
                .flatten()
                .find(|i| op(i) == Some("MatMul"))
            else {
                continue;
            };
            let Some(weights) = input(by_name[matmul.as_str()], 1) else {
                continue;
            };
            let source = weights.split(':').next().unwrap_or_default();
            if !matches!(op(source), Some("Variable" | "VariableV2" | "Const")) {
                continue;
            }
            layers.push(json!({
                "layer": matmul,
                "weights": weights,
                "activation": bias,
                "bias": bias,
                "post_bypass": node["name"],
            }));
        }
        Ok(Value::Array(layers).to_string())
    }
}

/// The `op-census` exporter: reads the lowered integer model and writes
/// one line per op, `<TFLite op name or custom op type> <count>`, sorted.
pub struct OpCensus;

impl Exporter for OpCensus {
    const NAME: &'static CStr = c"op-census";

    fn export(model_json: &[u8], out: &mut Outputs<'_>) -> Result<(), String> {
        let model: Value =
            serde_json::from_slice(model_json).map_err(|e| format!("model JSON: {e}"))?;
        let ops = model["ops"]
            .as_array()
            .ok_or("model JSON: no `ops` array")?;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for op in ops {
            let kind = &op["kind"];
            let name = match kind["op"].as_str() {
                Some("CUSTOM") => kind["name"].as_str(),
                other => other,
            }
            .ok_or("model JSON: an op has no `kind.op`")?;
            *counts.entry(name.to_string()).or_default() += 1;
        }
        for (op, count) in counts {
            out.write(format!("{op} {count}\n").as_bytes());
        }
        Ok(())
    }
}

quant_plugin_api::declare_plugin!(
    name: c"custom-op",
    ops: [HardSwish],
    exporters: [OpCensus],
    matchers: [DenseHardSwish],
);
