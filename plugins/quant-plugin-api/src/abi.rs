//! The C ABI between quant and a plugin library (version 2).
//!
//! A library exports one function, [`ENTRY_POINT`]
//! (`quant_plugin_v1`), of type [`EntryFn`]: called once with the host's
//! [`ABI_VERSION`], it returns a pointer to a static [`PluginTable`] that
//! lives as long as the library (which the host never unloads). Only C
//! types cross the boundary: integers, `f32`, pointers, NUL-terminated
//! UTF-8 strings and `extern "C"` function pointers. Nothing is freed across
//! it: the host allocates every output through the [`Sink`] callbacks.
//!
//! The entry point's symbol keeps its name across ABI versions; the
//! table's first field, [`PluginTable::abi_version`], says which version
//! the library speaks, and the host refuses any other (a version 1 library
//! is refused with an ABI version mismatch, not misread).
//!
//! A library provides, per op type ([`OpEntry`]): a float kernel
//! ([`ForwardFn`]), optionally a gradient ([`BackwardFn`]) and an integer
//! kernel ([`IntegerFn`], run by the integer executor on the op's `CUSTOM`
//! op in a lowered model); exporters ([`ExportFn`], given the lowered
//! integer model as JSON); and custom layer matchers ([`MatchFn`], given
//! the graph as JSON, answering with the layers they find as JSON).
//!
//! Every function a library exports must catch panics (a panic unwinding
//! into the host is undefined behaviour); the helpers of
//! [`crate::author`] do it for Rust plugins, turning a panic into
//! [`STATUS_PANIC`] and an error message.
//!
//! Changes from version 1: [`OpEntry::integer`], [`Sink::alloc_quantized`],
//! [`PluginTable::matchers`] / [`PluginTable::n_matchers`], and
//! [`ExportFn`] receives the lowered integer model (JSON) instead of the
//! float graph.

use std::ffi::{c_char, c_void};

/// The version of this ABI. A library built against another version is
/// refused (the manifest's `abi` and the table's `abi_version` must both
/// equal it).
pub const ABI_VERSION: u32 = 2;

/// The name of the entry point every library exports (the same for every
/// ABI version).
pub const ENTRY_POINT: &str = "quant_plugin_v1";

/// Success.
pub const STATUS_OK: i32 = 0;
/// The function failed and reported why through [`Sink::error`].
pub const STATUS_ERROR: i32 = 1;
/// The function panicked; the panic was caught and its message reported
/// through [`Sink::error`].
pub const STATUS_PANIC: i32 = 2;

/// The entry point: `host_abi` is the host's [`ABI_VERSION`]; the result
/// points to a table valid until the process exits (null refuses to load).
pub type EntryFn = unsafe extern "C" fn(host_abi: u32) -> *const PluginTable;

/// A read-only f32 tensor, row-major.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TensorView {
    /// `len` elements.
    pub data: *const f32,
    /// The element count (the product of the shape).
    pub len: usize,
    /// `rank` dimensions.
    pub shape: *const usize,
    /// The number of dimensions.
    pub rank: usize,
}

/// [`QTensorView::elem`]: uint8 levels.
pub const ELEM_U8: u32 = 1;
/// [`QTensorView::elem`]: int8 levels.
pub const ELEM_I8: u32 = 2;
/// [`QTensorView::elem`]: int32 values.
pub const ELEM_I32: u32 = 3;

/// A quantized tensor, row-major: `real = scale · (q − zero_point)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct QTensorView {
    /// `len` elements of type `elem` (null for an output spec).
    pub data: *const c_void,
    /// The element type: [`ELEM_U8`], [`ELEM_I8`] or [`ELEM_I32`].
    pub elem: u32,
    /// The element count (the product of the shape; 0 for an output spec).
    pub len: usize,
    /// `rank` dimensions.
    pub shape: *const usize,
    /// The number of dimensions.
    pub rank: usize,
    /// The scale (0 for an int32 tensor without quantization parameters).
    pub scale: f32,
    /// The zero point.
    pub zero_point: i32,
}

/// Callbacks into the host for one call of a plugin function.
#[repr(C)]
pub struct Sink {
    /// Opaque host state; pass it back to every callback.
    pub ctx: *mut c_void,
    /// Allocates output `index` with `shape` (`rank` dimensions), zeroed;
    /// returns its `product(shape)` elements, or null if `index` is out of
    /// range, already allocated, or the size overflows.
    pub alloc: unsafe extern "C" fn(
        ctx: *mut c_void,
        index: usize,
        shape: *const usize,
        rank: usize,
    ) -> *mut f32,
    /// Records an error message (`len` bytes of UTF-8).
    pub error: unsafe extern "C" fn(ctx: *mut c_void, message: *const u8, len: usize),
    /// Appends `len` bytes to an exporter's or a matcher's output.
    pub write: unsafe extern "C" fn(ctx: *mut c_void, data: *const u8, len: usize),
    /// Allocates quantized output `index` of an integer kernel with `shape`
    /// (`rank` dimensions) and element type `elem`, which must be the
    /// output spec's; returns its `product(shape)` zeroed elements of that
    /// type, or null if `index` is out of range or already allocated,
    /// `elem` is not the spec's, or the size overflows.
    pub alloc_quantized: unsafe extern "C" fn(
        ctx: *mut c_void,
        index: usize,
        elem: u32,
        shape: *const usize,
        rank: usize,
    ) -> *mut c_void,
}

/// A float forward kernel: reads `n_inputs` inputs, allocates and fills
/// each output through `sink`; returns a `STATUS_*` code.
pub type ForwardFn =
    unsafe extern "C" fn(inputs: *const TensorView, n_inputs: usize, sink: *const Sink) -> i32;

/// A gradient kernel: given the inputs and the gradient `dy` of output 0,
/// allocates through `sink` output `i` = the gradient with respect to input
/// `i` (shaped like it), for every input; returns a `STATUS_*` code.
pub type BackwardFn = unsafe extern "C" fn(
    inputs: *const TensorView,
    n_inputs: usize,
    dy: *const TensorView,
    sink: *const Sink,
) -> i32;

/// An integer kernel: runs the op on quantized tensors. Reads `n_inputs`
/// inputs (each with its own scale and zero point) and `output`, the spec
/// of output 0 (its element type, the shape the model declares, and the
/// scale and zero point the lowering chose, from the fake quant that
/// follows the op in the eval graph; `data` is null); allocates output 0
/// through [`Sink::alloc_quantized`] with that element type and fills it;
/// returns a `STATUS_*` code.
pub type IntegerFn = unsafe extern "C" fn(
    inputs: *const QTensorView,
    n_inputs: usize,
    output: *const QTensorView,
    sink: *const Sink,
) -> i32;

/// An exporter: reads `len` bytes of the lowered integer model as JSON
/// (`quant_core::integer::IntModel`'s serde form, documented in
/// `quant_core::integer`: `{"tensors", "ops", "inputs", "outputs",
/// "description"}`, each op `{"kind": {"op": "<TFLite name>" or "CUSTOM",
/// ...}, "inputs", "outputs"}`) and writes the exported file through
/// [`Sink::write`]; returns a `STATUS_*` code.
pub type ExportFn =
    unsafe extern "C" fn(model_json: *const u8, len: usize, sink: *const Sink) -> i32;

/// A custom layer matcher: reads `len` bytes of quant graph JSON (the
/// graph being rewritten, `format_version` 1) and writes, through
/// [`Sink::write`], a JSON array of the layers it finds, each
/// `{"layer": "<node>", "weights": "<node>" or "<node>:<output>",
/// "activation": "<node>"}` with optional `"bias"`, `"bypass"` and
/// `"post_bypass"` node names (the roles of
/// `quant_passes::patterns::LayerCaptures`); returns a `STATUS_*` code.
pub type MatchFn =
    unsafe extern "C" fn(graph_json: *const u8, len: usize, sink: *const Sink) -> i32;

/// One op type a library implements.
#[repr(C)]
pub struct OpEntry {
    /// The op type (NUL-terminated), as the manifest's `[[op]]` declares it.
    pub op_type: *const c_char,
    /// The float kernel.
    pub forward: ForwardFn,
    /// The gradient kernel, if the op is differentiable.
    pub backward: Option<BackwardFn>,
    /// The integer kernel, if the op can run in a lowered integer model.
    pub integer: Option<IntegerFn>,
}

/// One custom layer matcher a library implements.
#[repr(C)]
pub struct MatcherEntry {
    /// The matcher's name (NUL-terminated), as the manifest's `[[matcher]]`
    /// declares it.
    pub name: *const c_char,
    /// The match function.
    pub find: MatchFn,
}

/// One exporter a library implements.
#[repr(C)]
pub struct ExporterEntry {
    /// The exporter's name (NUL-terminated), as the manifest's
    /// `[[exporter]]` declares it.
    pub name: *const c_char,
    /// The export function.
    pub export: ExportFn,
}

/// What a library provides.
#[repr(C)]
pub struct PluginTable {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// The plugin's name (NUL-terminated); must equal the manifest's.
    pub name: *const c_char,
    /// `n_ops` op entries.
    pub ops: *const OpEntry,
    /// The number of op entries.
    pub n_ops: usize,
    /// `n_exporters` exporter entries.
    pub exporters: *const ExporterEntry,
    /// The number of exporter entries.
    pub n_exporters: usize,
    /// `n_matchers` matcher entries.
    pub matchers: *const MatcherEntry,
    /// The number of matcher entries.
    pub n_matchers: usize,
}

// SAFETY: the tables are immutable static data (string literals and
// function pointers) that no one writes after construction.
unsafe impl Sync for OpEntry {}
// SAFETY: as above.
unsafe impl Sync for ExporterEntry {}
// SAFETY: as above.
unsafe impl Sync for MatcherEntry {}
// SAFETY: as above.
unsafe impl Sync for PluginTable {}
