//! Test plugin: its `Explode` op panics on every call (float and integer
//! kernels), to show that the panic is caught inside the plugin and reaches
//! the host as an error; its `ghost` matcher answers with a node the graph
//! does not have, to show that the host refuses it by name.

use quant_plugin_api::author::{CustomOp, Matcher, Outputs, QOutputSpec, QTensorRef, TensorRef};
use std::ffi::CStr;

/// An op whose kernels always panic.
pub struct Explode;

impl CustomOp for Explode {
    const OP_TYPE: &'static CStr = c"Explode";
    const HAS_INTEGER: bool = true;

    fn forward(_inputs: &[TensorRef<'_>], _out: &mut Outputs<'_>) -> Result<(), String> {
        panic!("Explode always panics")
    }

    fn integer(
        _inputs: &[QTensorRef<'_>],
        _output: &QOutputSpec<'_>,
        _out: &mut Outputs<'_>,
    ) -> Result<(), String> {
        panic!("Explode panics on integers too")
    }
}

/// A matcher that reports a layer made of nodes that do not exist.
pub struct Ghost;

impl Matcher for Ghost {
    const NAME: &'static CStr = c"ghost";

    fn find(_graph_json: &[u8]) -> Result<String, String> {
        Ok(r#"[{"layer": "no/such/MatMul", "weights": "no/such/weights", "activation": "no/such/act"}]"#.into())
    }
}

quant_plugin_api::declare_plugin!(
    name: c"panicking",
    ops: [Explode],
    exporters: [],
    matchers: [Ghost],
);
