//! Example quant plugin library: a new op type, `HardSwish`, with its float
//! kernel and gradient, plus an exporter (`op-census`). Its manifest,
//! `plugin.toml`, declares the op, the exporter and a layer pattern
//! (`MatMul → Add → HardSwish`) that quantizes layers using it.
//!
//! `HardSwish(x) = x · relu6(x + 3) / 6` (MobileNetV3), whose derivative is
//! 0 below −3, 1 above 3 and `(2x + 3) / 6` in between.

use quant_plugin_api::author::{CustomOp, Exporter, Outputs, TensorRef};
use std::collections::BTreeMap;
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

fn single<'a>(inputs: &[TensorRef<'a>]) -> Result<TensorRef<'a>, String> {
    match inputs {
        [x] => Ok(*x),
        _ => Err(format!("HardSwish takes 1 input, got {}", inputs.len())),
    }
}

impl CustomOp for HardSwish {
    const OP_TYPE: &'static CStr = c"HardSwish";
    const HAS_GRADIENT: bool = true;

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
}

/// The `op-census` exporter: one line per op type, `<op> <count>`, sorted.
pub struct OpCensus;

impl Exporter for OpCensus {
    const NAME: &'static CStr = c"op-census";

    fn export(graph_json: &[u8], out: &mut Outputs<'_>) -> Result<(), String> {
        let doc: serde_json::Value =
            serde_json::from_slice(graph_json).map_err(|e| format!("graph JSON: {e}"))?;
        let nodes = doc["nodes"]
            .as_array()
            .ok_or("graph JSON: no `nodes` array")?;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for node in nodes {
            let op = node["op"]
                .as_str()
                .ok_or("graph JSON: a node has no `op`")?;
            *counts.entry(op).or_default() += 1;
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
);
