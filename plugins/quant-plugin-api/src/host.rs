//! The host side: loading plugins and registering what they provide.
//!
//! [`load_plugins`] reads and validates every manifest, checks that no two
//! plugins (or a plugin and quant) register the same name, and only then
//! opens the libraries: a bad manifest anywhere means nothing is loaded.
//! Opening a library checks its entry point, the ABI handshake and that its
//! table provides exactly the ops and exporters its manifest declares.
//! Libraries are never unloaded (their handles are leaked), so the
//! function pointers taken from them stay valid for the process's life.

use crate::abi::{
    ABI_VERSION, BackwardFn, ELEM_I8, ELEM_I32, ELEM_U8, ENTRY_POINT, EntryFn, ExportFn, ForwardFn,
    IntegerFn, MatchFn, QTensorView, STATUS_OK, STATUS_PANIC, Sink, TensorView,
};
use crate::error::{PluginError, Problem};
use crate::manifest::{Manifest, ShapeRule, check_distinct};
use quant_core::integer::IntModel;
use quant_core::ops::{Arity, OpSpec};
use quant_core::{DType, Graph, NodeId, OpRegistry, OutletId, OutputFact, Tensor};
use quant_kernels::integer::{
    CustomKernel, CustomKernels, QBuffer, QData, QOutput, QOutputSpec, QTensor,
};
use quant_kernels::session::{Kernel, KernelCtx, KernelRegistry, Value};
use quant_passes::patterns::{LayerCaptures, LayerPattern, PatternRegistry};
use quant_passes::target::{Target, TargetRegistry};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One op type a library implements.
#[derive(Clone, Copy, Debug)]
struct OpFns {
    forward: ForwardFn,
    backward: Option<BackwardFn>,
    integer: Option<IntegerFn>,
}

/// A loaded plugin: its validated manifest and, if it has one, its library.
#[derive(Debug)]
pub struct Plugin {
    manifest: Manifest,
    ops: BTreeMap<String, OpFns>,
    exporters: BTreeMap<String, ExportFn>,
    matchers: BTreeMap<String, MatchFn>,
}

/// The suffix of the op type that computes a custom op's gradient: op
/// `HardSwish` gets `HardSwishGrad(x_0, ..., x_{n-1}, dy) -> (dx_0, ..., dx_{n-1})`.
pub const GRAD_SUFFIX: &str = "Grad";

/// Loads one plugin: validates its manifest, then opens its library.
pub fn load_manifest(path: &Path) -> Result<Plugin, PluginError> {
    let manifest = Manifest::from_path(path)?;
    check_distinct(std::slice::from_ref(&manifest), &TargetRegistry::builtin())?;
    Plugin::open(manifest)
}

/// Loads several plugins: every manifest is validated and checked for
/// names clashing with another plugin's or quant's own before any library
/// is opened.
pub fn load_plugins(paths: &[PathBuf]) -> Result<Plugins, PluginError> {
    let manifests = paths
        .iter()
        .map(|p| Manifest::from_path(p))
        .collect::<Result<Vec<_>, _>>()?;
    check_distinct(&manifests, &TargetRegistry::builtin())?;
    let mut plugins = Plugins::builtin();
    for manifest in manifests {
        let plugin = Plugin::open(manifest)?;
        plugins.add(plugin)?;
    }
    Ok(plugins)
}

fn c_str(ptr: *const c_char, what: &str) -> Result<String, Problem> {
    if ptr.is_null() {
        return Err(Problem::Table(format!("{what} is a null pointer")));
    }
    // SAFETY: non-null; the ABI requires NUL-terminated static strings.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map(str::to_string)
        .map_err(|_| Problem::Table(format!("{what} is not UTF-8")))
}

impl Plugin {
    fn open(manifest: Manifest) -> Result<Plugin, PluginError> {
        let mut plugin = Plugin {
            manifest,
            ops: BTreeMap::new(),
            exporters: BTreeMap::new(),
            matchers: BTreeMap::new(),
        };
        let Some(path) = plugin.manifest.library.clone() else {
            return Ok(plugin);
        };
        let err = |problem| PluginError::new(&plugin.manifest.path, problem);
        let library_problem = |problem: String| Problem::Library {
            path: path.clone(),
            problem,
        };
        // SAFETY: loading a library runs its initialisers; the manifest
        // (validated, optionally SHA-256-pinned) vouches for it.
        let library = unsafe { libloading::Library::new(path.as_os_str()) }
            .map_err(|e| err(library_problem(format!("cannot be loaded: {e}"))))?;
        // Never unloaded: every pointer taken from it stays valid.
        let library: &'static libloading::Library = Box::leak(Box::new(library));
        // SAFETY: the symbol's type is the ABI's entry point type.
        let entry = unsafe { library.get::<EntryFn>(ENTRY_POINT) }.map_err(|e| {
            err(library_problem(format!(
                "has no entry point `{ENTRY_POINT}` (built for another ABI?): {e}"
            )))
        })?;
        // SAFETY: the entry point takes the host's ABI version and returns a
        // static table or null.
        let table = unsafe { entry(ABI_VERSION) };
        if table.is_null() {
            return Err(err(Problem::Table("the entry point returned null".into())));
        }
        // SAFETY: non-null and static per the ABI.
        let table = unsafe { &*table };
        if table.abi_version != ABI_VERSION {
            return Err(err(Problem::AbiMismatch {
                found: table.abi_version,
                expected: ABI_VERSION,
                by: "the library",
            }));
        }
        let name = c_str(table.name, "the plugin name").map_err(err)?;
        if name != plugin.manifest.name {
            return Err(err(Problem::Table(format!(
                "the library is plugin `{name}`, the manifest says `{}`",
                plugin.manifest.name
            ))));
        }
        let entries = |ptr: *const u8, n: usize, what: &str| -> Result<(), Problem> {
            if n > 0 && ptr.is_null() {
                return Err(Problem::Table(format!("{n} {what} at a null pointer")));
            }
            Ok(())
        };
        entries(table.ops.cast(), table.n_ops, "ops").map_err(err)?;
        entries(table.exporters.cast(), table.n_exporters, "exporters").map_err(err)?;
        entries(table.matchers.cast(), table.n_matchers, "matchers").map_err(err)?;
        for i in 0..table.n_ops {
            // SAFETY: `ops` holds `n_ops` entries.
            let entry = unsafe { &*table.ops.add(i) };
            let op = c_str(entry.op_type, "an op type").map_err(err)?;
            plugin.ops.insert(
                op,
                OpFns {
                    forward: entry.forward,
                    backward: entry.backward,
                    integer: entry.integer,
                },
            );
        }
        for i in 0..table.n_exporters {
            // SAFETY: `exporters` holds `n_exporters` entries.
            let entry = unsafe { &*table.exporters.add(i) };
            let name = c_str(entry.name, "an exporter name").map_err(err)?;
            plugin.exporters.insert(name, entry.export);
        }
        for i in 0..table.n_matchers {
            // SAFETY: `matchers` holds `n_matchers` entries.
            let entry = unsafe { &*table.matchers.add(i) };
            let name = c_str(entry.name, "a matcher name").map_err(err)?;
            plugin.matchers.insert(name, entry.find);
        }
        let declared: Vec<&str> = plugin
            .manifest
            .ops
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        let provided: Vec<&str> = plugin.ops.keys().map(String::as_str).collect();
        compare("op", &declared, &provided).map_err(err)?;
        let declared: Vec<&str> = plugin
            .manifest
            .exporters
            .iter()
            .map(String::as_str)
            .collect();
        let provided: Vec<&str> = plugin.exporters.keys().map(String::as_str).collect();
        compare("exporter", &declared, &provided).map_err(err)?;
        let declared: Vec<&str> = plugin
            .manifest
            .matchers
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        let provided: Vec<&str> = plugin.matchers.keys().map(String::as_str).collect();
        compare("matcher", &declared, &provided).map_err(err)?;
        Ok(plugin)
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether custom op `op` has a gradient kernel.
    pub fn has_gradient(&self, op: &str) -> bool {
        self.ops.get(op).is_some_and(|f| f.backward.is_some())
    }

    /// Whether custom op `op` has an integer kernel.
    pub fn has_integer_kernel(&self, op: &str) -> bool {
        self.ops.get(op).is_some_and(|f| f.integer.is_some())
    }

    /// Runs exporter `name` on the lowered integer model `model` (handed
    /// to the library as JSON, see [`crate::abi::ExportFn`]), returning the
    /// file's bytes.
    pub fn export(&self, name: &str, model: &IntModel) -> Result<Vec<u8>, PluginError> {
        let err = |problem| PluginError::new(&self.manifest.path, problem);
        let export = self.exporters.get(name).ok_or_else(|| {
            err(Problem::Table(format!(
                "the plugin has no exporter `{name}`"
            )))
        })?;
        let json = serde_json::to_vec(model).map_err(|e| {
            err(Problem::Call {
                function: format!("exporter `{name}`"),
                message: format!("the model cannot be serialized: {e}"),
            })
        })?;
        let mut state = CallState::new(0);
        let sink = state.sink();
        // SAFETY: the bytes and the sink outlive the call.
        let status = unsafe { export(json.as_ptr(), json.len(), &sink) };
        state
            .finish(status)
            .map_err(|message| {
                err(Problem::Call {
                    function: format!("exporter `{name}`"),
                    message,
                })
            })
            .map(|_| state.bytes)
    }
}

/// Checks that a library provides exactly what its manifest declares.
fn compare(what: &str, declared: &[&str], provided: &[&str]) -> Result<(), Problem> {
    if let Some(missing) = declared.iter().find(|d| !provided.contains(d)) {
        return Err(Problem::Table(format!(
            "the manifest declares {what} `{missing}`, which the library does not provide"
        )));
    }
    if let Some(extra) = provided.iter().find(|p| !declared.contains(p)) {
        return Err(Problem::Table(format!(
            "the library provides {what} `{extra}`, which the manifest does not declare"
        )));
    }
    Ok(())
}

/// The host state of one call into a plugin.
struct CallState {
    outputs: Vec<Option<(Vec<usize>, Vec<f32>)>>,
    error: Option<String>,
    bytes: Vec<u8>,
    /// The element type of an integer kernel's output 0, and the output.
    quantized: Option<(u32, Option<QOutput>)>,
}

/// The most elements one plugin output may have (16 GiB of f32).
const MAX_OUTPUT_ELEMENTS: usize = 1 << 32;

/// The shape a plugin asks an output to have, and its element count, if
/// it is not larger than [`MAX_OUTPUT_ELEMENTS`].
///
/// # Safety
/// Unless `rank` is 0, `shape` points to `rank` readable `usize`s.
unsafe fn output_shape(shape: *const usize, rank: usize) -> Option<(Vec<usize>, usize)> {
    let shape = if rank == 0 {
        Vec::new()
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(shape, rank) }.to_vec()
    };
    let len = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
    (len <= MAX_OUTPUT_ELEMENTS).then_some((shape, len))
}

unsafe extern "C" fn host_alloc(
    ctx: *mut c_void,
    index: usize,
    shape: *const usize,
    rank: usize,
) -> *mut f32 {
    // SAFETY: `ctx` is the `CallState` of this call.
    let state = unsafe { &mut *ctx.cast::<CallState>() };
    let Some(slot) = state.outputs.get_mut(index) else {
        return std::ptr::null_mut();
    };
    if slot.is_some() || (rank > 0 && shape.is_null()) {
        return std::ptr::null_mut();
    }
    // SAFETY: the plugin passes `rank` dimensions at `shape`.
    let Some((shape, len)) = (unsafe { output_shape(shape, rank) }) else {
        return std::ptr::null_mut();
    };
    let mut data = vec![0.0f32; len];
    let ptr = data.as_mut_ptr();
    *slot = Some((shape, data));
    ptr
}

unsafe extern "C" fn host_alloc_quantized(
    ctx: *mut c_void,
    index: usize,
    elem: u32,
    shape: *const usize,
    rank: usize,
) -> *mut c_void {
    // SAFETY: `ctx` is the `CallState` of this call.
    let state = unsafe { &mut *ctx.cast::<CallState>() };
    let Some((expected, slot)) = state.quantized.as_mut() else {
        return std::ptr::null_mut();
    };
    if index != 0 || elem != *expected || slot.is_some() || (rank > 0 && shape.is_null()) {
        return std::ptr::null_mut();
    }
    // SAFETY: the plugin passes `rank` dimensions at `shape`.
    let Some((shape, len)) = (unsafe { output_shape(shape, rank) }) else {
        return std::ptr::null_mut();
    };
    let mut data = match elem {
        ELEM_U8 => QBuffer::U8(vec![0; len]),
        ELEM_I8 => QBuffer::I8(vec![0; len]),
        ELEM_I32 => QBuffer::I32(vec![0; len]),
        _ => return std::ptr::null_mut(),
    };
    let ptr: *mut c_void = match &mut data {
        QBuffer::U8(v) => v.as_mut_ptr().cast(),
        QBuffer::I8(v) => v.as_mut_ptr().cast(),
        QBuffer::I32(v) => v.as_mut_ptr().cast(),
    };
    // Moving the Vec into the state keeps its heap buffer where it is.
    *slot = Some(QOutput { shape, data });
    ptr
}

unsafe extern "C" fn host_error(ctx: *mut c_void, message: *const u8, len: usize) {
    // SAFETY: `ctx` is the `CallState` of this call.
    let state = unsafe { &mut *ctx.cast::<CallState>() };
    let text = if message.is_null() || len == 0 {
        String::new()
    } else {
        // SAFETY: the plugin passes `len` bytes.
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(message, len) }).into_owned()
    };
    state.error = Some(text);
}

unsafe extern "C" fn host_write(ctx: *mut c_void, data: *const u8, len: usize) {
    // SAFETY: `ctx` is the `CallState` of this call.
    let state = unsafe { &mut *ctx.cast::<CallState>() };
    if !data.is_null() && len > 0 {
        // SAFETY: the plugin passes `len` bytes.
        state
            .bytes
            .extend_from_slice(unsafe { std::slice::from_raw_parts(data, len) });
    }
}

impl CallState {
    fn new(outputs: usize) -> CallState {
        CallState {
            outputs: vec![None; outputs],
            error: None,
            bytes: Vec::new(),
            quantized: None,
        }
    }

    /// The callbacks, bound to this state (which must not move during the call).
    fn sink(&mut self) -> Sink {
        Sink {
            ctx: (self as *mut CallState).cast(),
            alloc: host_alloc,
            error: host_error,
            write: host_write,
            alloc_quantized: host_alloc_quantized,
        }
    }

    /// `Err(message)` if a call returned a failing `status`.
    fn status(&mut self, status: i32) -> Result<(), String> {
        if status == STATUS_OK {
            return Ok(());
        }
        let message = self.error.take().unwrap_or_default();
        Err(match (status, message.is_empty()) {
            (STATUS_PANIC, true) => "panicked".into(),
            (_, true) => format!("failed with status {status}"),
            (_, false) => message,
        })
    }

    /// The outputs after a call that returned `status`.
    fn finish(&mut self, status: i32) -> Result<Vec<Tensor>, String> {
        self.status(status)?;
        self.outputs
            .iter_mut()
            .enumerate()
            .map(|(i, slot)| {
                let (shape, data) = slot
                    .take()
                    .ok_or_else(|| format!("output {i} was not produced"))?;
                Tensor::from_vec(&shape, data).map_err(|e| format!("output {i}: {e}"))
            })
            .collect()
    }
}

/// Contiguous f32 copies of tensors, viewable through the ABI.
struct Inputs {
    shapes: Vec<Vec<usize>>,
    data: Vec<Vec<f32>>,
}

impl Inputs {
    fn new(tensors: &[&Tensor]) -> Result<Inputs, String> {
        let mut shapes = Vec::new();
        let mut data = Vec::new();
        for (i, t) in tensors.iter().enumerate() {
            let a = t
                .array::<f32>()
                .map_err(|e| format!("input {i}: plugin kernels take f32 tensors: {e}"))?;
            shapes.push(a.shape().to_vec());
            data.push(a.iter().copied().collect());
        }
        Ok(Inputs { shapes, data })
    }

    fn views(&self) -> Vec<TensorView> {
        self.shapes
            .iter()
            .zip(&self.data)
            .map(|(shape, data)| TensorView {
                data: data.as_ptr(),
                len: data.len(),
                shape: shape.as_ptr(),
                rank: shape.len(),
            })
            .collect()
    }
}

/// Calls a forward kernel.
fn call_forward(f: ForwardFn, inputs: &[&Tensor], outputs: usize) -> Result<Vec<Tensor>, String> {
    let inputs = Inputs::new(inputs)?;
    let views = inputs.views();
    let mut state = CallState::new(outputs);
    let sink = state.sink();
    // SAFETY: the views and the sink outlive the call.
    let status = unsafe { f(views.as_ptr(), views.len(), &sink) };
    state.finish(status)
}

/// Calls a gradient kernel; `inputs` ends with `dy`.
fn call_backward(f: BackwardFn, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let inputs = Inputs::new(inputs)?;
    let mut views = inputs.views();
    let dy = views
        .pop()
        .ok_or_else(|| "a gradient op needs dy as its last input".to_string())?;
    let mut state = CallState::new(views.len());
    let sink = state.sink();
    // SAFETY: the views and the sink outlive the call.
    let status = unsafe { f(views.as_ptr(), views.len(), &dy, &sink) };
    state.finish(status)
}

/// The ABI element code of a quantized element type.
fn elem_code(dtype: DType) -> Option<u32> {
    match dtype {
        DType::U8 => Some(ELEM_U8),
        DType::I8 => Some(ELEM_I8),
        DType::I32 => Some(ELEM_I32),
        _ => None,
    }
}

/// Calls an integer kernel.
fn call_integer(
    f: IntegerFn,
    inputs: &[QTensor<'_>],
    spec: &QOutputSpec,
) -> Result<QOutput, String> {
    let views: Vec<QTensorView> = inputs
        .iter()
        .map(|t| {
            let (data, elem, len): (*const c_void, u32, usize) = match t.data {
                QData::U8(d) => (d.as_ptr().cast(), ELEM_U8, d.len()),
                QData::I8(d) => (d.as_ptr().cast(), ELEM_I8, d.len()),
                QData::I32(d) => (d.as_ptr().cast(), ELEM_I32, d.len()),
            };
            QTensorView {
                data,
                elem,
                len,
                shape: t.shape.as_ptr(),
                rank: t.shape.len(),
                scale: t.scale,
                zero_point: t.zero_point,
            }
        })
        .collect();
    let elem = elem_code(spec.dtype)
        .ok_or_else(|| format!("the output type {} is not u8, i8 or i32", spec.dtype))?;
    let output = QTensorView {
        data: std::ptr::null(),
        elem,
        len: 0,
        shape: spec.shape.as_ptr(),
        rank: spec.shape.len(),
        scale: spec.scale,
        zero_point: spec.zero_point,
    };
    let mut state = CallState::new(0);
    state.quantized = Some((elem, None));
    let sink = state.sink();
    // SAFETY: the views, the output spec and the sink outlive the call.
    let status = unsafe { f(views.as_ptr(), views.len(), &output, &sink) };
    state.status(status)?;
    state
        .quantized
        .take()
        .and_then(|(_, out)| out)
        .ok_or_else(|| "output 0 was not produced".to_string())
}

/// Calls a matcher on `graph` and resolves the node names it answers with.
fn call_matcher(f: MatchFn, graph: &Graph) -> Result<Vec<LayerCaptures>, String> {
    let json = quant_core::serialize::json::to_json(graph);
    let mut state = CallState::new(0);
    let sink = state.sink();
    // SAFETY: the bytes and the sink outlive the call.
    let status = unsafe { f(json.as_ptr(), json.len(), &sink) };
    state.status(status)?;
    let raw: Vec<RawCaptures> = serde_json::from_slice(&state.bytes)
        .map_err(|e| format!("the answer is not a JSON array of layers: {e}"))?;
    raw.iter()
        .enumerate()
        .map(|(i, r)| r.resolve(graph).map_err(|m| format!("layer {i}: {m}")))
        .collect()
}

/// One layer as a matcher names it (see [`crate::abi::MatchFn`]).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaptures {
    layer: String,
    weights: String,
    activation: String,
    bias: Option<String>,
    bypass: Option<String>,
    post_bypass: Option<String>,
}

impl RawCaptures {
    fn resolve(&self, graph: &Graph) -> Result<LayerCaptures, String> {
        let node = |role: &str, name: &str| -> Result<NodeId, String> {
            graph
                .id(name)
                .ok_or_else(|| format!("`{role}` names `{name}`, which is not a node of the graph"))
        };
        let optional =
            |role: &str, name: &Option<String>| name.as_deref().map(|n| node(role, n)).transpose();
        let layer = node("layer", &self.layer)?;
        let weights = match self.weights.rsplit_once(':') {
            Some((name, slot)) if !slot.is_empty() && slot.bytes().all(|b| b.is_ascii_digit()) => {
                let id = node("weights", name)?;
                let slot: usize = slot
                    .parse()
                    .map_err(|_| format!("`weights` output `{slot}` is not a number"))?;
                let outputs = graph.node(id).outputs().len();
                if slot >= outputs {
                    return Err(format!(
                        "`weights` names output {slot} of `{name}`, which has {outputs}"
                    ));
                }
                OutletId::new(id, slot)
            }
            _ => OutletId::new(node("weights", &self.weights)?, 0),
        };
        Ok(LayerCaptures {
            layer,
            weights,
            activation: node("activation", &self.activation)?,
            bias: optional("bias", &self.bias)?,
            bypass: optional("bypass", &self.bypass)?,
            post_bypass: optional("post_bypass", &self.post_bypass)?,
        })
    }
}

fn kernel_inputs<'a>(ctx: &'a KernelCtx<'_>) -> Result<Vec<&'a Tensor>, String> {
    (0..ctx.node().inputs().len())
        .map(|i| ctx.input(i))
        .collect()
}

/// Everything registered: quant's built-ins and the loaded plugins'.
#[derive(Clone)]
pub struct Plugins {
    plugins: Vec<Arc<Plugin>>,
    targets: TargetRegistry,
    patterns: PatternRegistry,
    ops: OpRegistry,
    kernels: KernelRegistry,
    integer_kernels: CustomKernels,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugins")
            .field("plugins", &self.plugins)
            .field("targets", &self.targets)
            .field("patterns", &self.patterns)
            .finish_non_exhaustive()
    }
}

impl Plugins {
    /// Only quant's own targets, patterns, ops and kernels.
    pub fn builtin() -> Plugins {
        Plugins {
            plugins: Vec::new(),
            targets: TargetRegistry::builtin(),
            patterns: PatternRegistry::builtin(),
            ops: OpRegistry::builtin().clone(),
            kernels: KernelRegistry::builtin(),
            integer_kernels: CustomKernels::new(),
        }
    }

    /// Registers a loaded plugin's targets, patterns, op types and kernels.
    pub fn add(&mut self, plugin: Plugin) -> Result<(), PluginError> {
        let path = plugin.manifest.path.clone();
        let err = |problem| PluginError::new(&path, problem);
        if let Some(other) = self
            .plugins
            .iter()
            .find(|p| p.manifest.name == plugin.manifest.name)
        {
            return Err(err(Problem::Duplicate {
                what: "plugin",
                name: plugin.manifest.name.clone(),
                other: other.manifest.path.display().to_string(),
            }));
        }
        // Work on copies so a refused plugin leaves nothing behind.
        let mut targets = self.targets.clone();
        let mut patterns = self.patterns.clone();
        let mut ops = self.ops.clone();
        let mut kernels = self.kernels.clone();
        let mut integer_kernels = self.integer_kernels.clone();
        for target in &plugin.manifest.targets {
            targets
                .register(target.clone())
                .map_err(|e| err(Problem::Invalid(e.to_string())))?;
        }
        for pattern in &plugin.manifest.patterns {
            patterns
                .register(pattern.clone())
                .map_err(|e| err(Problem::Invalid(e.to_string())))?;
        }
        let name = plugin.manifest.name.clone();
        for m in &plugin.manifest.matchers {
            let f = plugin.matchers.get(&m.name).copied().ok_or_else(|| {
                err(Problem::Table(format!(
                    "matcher `{}` has no function",
                    m.name
                )))
            })?;
            let label = format!("plugin `{name}`: matcher `{}`", m.name);
            let find: quant_passes::patterns::MatchFn = Arc::new(move |graph: &Graph| {
                call_matcher(f, graph).map_err(|e| format!("{label}: {e}"))
            });
            let pattern = LayerPattern::from_fn(&m.name, &m.description, find)
                .map_err(|e| err(Problem::Invalid(e.to_string())))?;
            patterns
                .register(pattern)
                .map_err(|e| err(Problem::Invalid(e.to_string())))?;
        }
        for op in &plugin.manifest.ops {
            let fns =
                plugin.ops.get(&op.name).copied().ok_or_else(|| {
                    err(Problem::Table(format!("op `{}` has no kernel", op.name)))
                })?;
            let outputs = op.outputs;
            let spec = match op.shape {
                ShapeRule::SameAsInput0 => {
                    OpSpec::new(&op.name, Arity::Exact(op.inputs), outputs, |ctx| {
                        ctx.same_as_input0()
                    })
                }
                ShapeRule::Unknown => {
                    OpSpec::new(&op.name, Arity::Exact(op.inputs), outputs, move |_| {
                        Ok(vec![OutputFact::default(); outputs])
                    })
                }
            };
            ops.register(spec).map_err(|e| err(Problem::Invalid(e)))?;
            let label = format!("plugin `{name}`: op `{}` forward", op.name);
            let forward: Kernel = Arc::new(move |ctx: &KernelCtx<'_>| {
                let inputs = kernel_inputs(ctx)?;
                call_forward(fns.forward, &inputs, outputs)
                    .map(|ts| ts.into_iter().map(Value::new).collect())
                    .map_err(|m| format!("{label}: {m}"))
            });
            kernels.register(&op.name, forward);
            if let Some(integer) = fns.integer {
                let label = format!("plugin `{name}`: op `{}` integer kernel", op.name);
                let kernel: CustomKernel =
                    Arc::new(move |inputs: &[QTensor<'_>], spec: &QOutputSpec| {
                        call_integer(integer, inputs, spec).map_err(|m| format!("{label}: {m}"))
                    });
                integer_kernels.insert(op.name.clone(), kernel);
            }
            if let Some(backward) = fns.backward {
                let grad = format!("{}{GRAD_SUFFIX}", op.name);
                let n = op.inputs;
                ops.register(OpSpec::new(&grad, Arity::Exact(n + 1), n, move |ctx| {
                    (0..n).map(|i| ctx.input(i).cloned()).collect()
                }))
                .map_err(|e| err(Problem::Invalid(e)))?;
                let label = format!("plugin `{name}`: op `{}` gradient", op.name);
                let kernel: Kernel = Arc::new(move |ctx: &KernelCtx<'_>| {
                    let inputs = kernel_inputs(ctx)?;
                    call_backward(backward, &inputs)
                        .map(|ts| ts.into_iter().map(Value::new).collect())
                        .map_err(|m| format!("{label}: {m}"))
                });
                kernels.register(&grad, kernel);
            }
        }
        self.targets = targets;
        self.patterns = patterns;
        self.ops = ops;
        self.kernels = kernels;
        self.integer_kernels = integer_kernels;
        self.plugins.push(Arc::new(plugin));
        Ok(())
    }

    /// The loaded plugins, in load order.
    pub fn iter(&self) -> impl Iterator<Item = &Plugin> {
        self.plugins.iter().map(|p| &**p)
    }

    /// Every target: the built-in ones and the plugins'.
    pub fn targets(&self) -> &TargetRegistry {
        &self.targets
    }

    /// The layer patterns: the plugins' (tried first) and the built-in stages.
    pub fn patterns(&self) -> &PatternRegistry {
        &self.patterns
    }

    /// The integer kernels of the plugin op types that have one, for
    /// [`quant_kernels::integer::IntExecutor::with_custom_kernels`] (they
    /// run the models' CUSTOM ops).
    pub fn integer_kernels(&self) -> &CustomKernels {
        &self.integer_kernels
    }

    /// Every op type: the built-in ones, the plugins' and their gradient ops.
    pub fn ops(&self) -> &OpRegistry {
        &self.ops
    }

    /// Every kernel: the built-in ones and the plugins' (for
    /// [`quant_kernels::session::Session::with_kernels`]).
    pub fn kernels(&self) -> &KernelRegistry {
        &self.kernels
    }

    /// The plugin op types with a gradient kernel, for
    /// [`quant_passes::GradientOptions::gradient_ops`]: the gradients pass
    /// then differentiates them with their `<op>Grad` op.
    pub fn gradient_ops(&self) -> BTreeSet<String> {
        self.iter()
            .flat_map(|p| {
                p.ops
                    .iter()
                    .filter(|(_, f)| f.backward.is_some())
                    .map(|(op, _)| op.clone())
            })
            .collect()
    }

    /// The plugin providing exporter `name`, if a plugin does.
    pub fn exporter_plugin(&self, name: &str) -> Option<&Plugin> {
        self.iter().find(|p| p.exporters.contains_key(name))
    }
}

/// A target that no exporter can write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "target `{target}` cannot be exported: no exporter writes {weight_bits}-bit weights with {activation_bits}-bit activations (the target has no `exporter`); it can still be trained and evaluated with fake quantization"
)]
pub struct NotExportable {
    /// The target.
    pub target: String,
    /// Its weight bits.
    pub weight_bits: u32,
    /// Its activation bits.
    pub activation_bits: u32,
}

/// The exporter that writes `target`, or why none can.
pub fn exporter_for(target: &Target) -> Result<&str, NotExportable> {
    target.exporter.as_deref().ok_or_else(|| NotExportable {
        target: target.name.clone(),
        weight_bits: target.weight_bits,
        activation_bits: target.activation_bits,
    })
}
