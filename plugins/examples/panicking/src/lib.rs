//! Test plugin: its `Explode` op panics on every call, to show that the
//! panic is caught inside the plugin and reaches the host as an error.

use quant_plugin_api::author::{CustomOp, Outputs, TensorRef};
use std::ffi::CStr;

/// An op whose kernel always panics.
pub struct Explode;

impl CustomOp for Explode {
    const OP_TYPE: &'static CStr = c"Explode";

    fn forward(_inputs: &[TensorRef<'_>], _out: &mut Outputs<'_>) -> Result<(), String> {
        panic!("Explode always panics")
    }
}

quant_plugin_api::declare_plugin!(name: c"panicking", ops: [Explode], exporters: []);
