//! Helpers for writing a plugin library in Rust.
//!
//! Implement [`CustomOp`] for each op type (and [`Exporter`] for each
//! exporter), then declare the entry point with
//! [`declare_plugin!`](crate::declare_plugin). The generated `extern "C"` functions convert the
//! C views to slices, call your code inside `catch_unwind`, and turn an
//! `Err` into [`STATUS_ERROR`] and a panic into [`STATUS_PANIC`], each with
//! its message, so nothing unwinds into the host.
//!
//! ```
//! use quant_plugin_api::author::{CustomOp, Outputs, TensorRef};
//!
//! struct Double;
//! impl CustomOp for Double {
//!     const OP_TYPE: &'static std::ffi::CStr = c"Double";
//!     fn forward(inputs: &[TensorRef<'_>], out: &mut Outputs<'_>) -> Result<(), String> {
//!         let x = inputs[0];
//!         let y = out.alloc(0, x.shape)?;
//!         for (y, x) in y.iter_mut().zip(x.data) {
//!             *y = 2.0 * x;
//!         }
//!         Ok(())
//!     }
//! }
//! quant_plugin_api::declare_plugin!(name: c"double", ops: [Double], exporters: []);
//! ```

use crate::abi::{
    BackwardFn, ExporterEntry, OpEntry, STATUS_ERROR, STATUS_OK, STATUS_PANIC, Sink, TensorView,
};
use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// An input tensor as the plugin sees it.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// The dimensions.
    pub shape: &'a [usize],
    /// The elements, row-major.
    pub data: &'a [f32],
}

/// The outputs of one call, allocated by the host.
pub struct Outputs<'a> {
    sink: &'a Sink,
}

impl Outputs<'_> {
    /// Allocates output `index` with `shape` (zeroed) and returns its elements.
    pub fn alloc(&mut self, index: usize, shape: &[usize]) -> Result<&mut [f32], String> {
        let len = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("output {index}: shape {shape:?} is too large"))?;
        // SAFETY: the sink's callbacks are the host's, valid for this call.
        let ptr = unsafe { (self.sink.alloc)(self.sink.ctx, index, shape.as_ptr(), shape.len()) };
        if ptr.is_null() {
            return Err(format!(
                "the host refused output {index} with shape {shape:?}"
            ));
        }
        // SAFETY: the host returned `len` zeroed f32s it keeps alive and does
        // not touch until the call returns.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }

    /// Appends bytes to an exporter's output.
    pub fn write(&mut self, bytes: &[u8]) {
        // SAFETY: the sink's callbacks are the host's, valid for this call.
        unsafe { (self.sink.write)(self.sink.ctx, bytes.as_ptr(), bytes.len()) }
    }
}

/// An op type implemented by the plugin.
pub trait CustomOp {
    /// The op type, as the manifest's `[[op]]` declares it.
    const OP_TYPE: &'static CStr;

    /// Computes the outputs from the inputs.
    fn forward(inputs: &[TensorRef<'_>], out: &mut Outputs<'_>) -> Result<(), String>;

    /// Computes, into output `i`, the gradient with respect to input `i`
    /// given `dy`, the gradient of output 0. The default has no gradient.
    fn backward(
        inputs: &[TensorRef<'_>],
        dy: TensorRef<'_>,
        grads: &mut Outputs<'_>,
    ) -> Result<(), String> {
        let _ = (inputs, dy, grads);
        Err(format!("{:?} has no gradient", Self::OP_TYPE))
    }

    /// Whether [`CustomOp::backward`] is implemented (the host only
    /// differentiates ops that say so).
    const HAS_GRADIENT: bool = false;
}

/// An exporter implemented by the plugin.
pub trait Exporter {
    /// The exporter's name, as the manifest's `[[exporter]]` declares it.
    const NAME: &'static CStr;

    /// Writes the exported form of the quant graph JSON `graph_json`.
    fn export(graph_json: &[u8], out: &mut Outputs<'_>) -> Result<(), String>;
}

/// Runs `f` with panics caught: `Ok` becomes [`STATUS_OK`], `Err(message)`
/// [`STATUS_ERROR`] and a panic [`STATUS_PANIC`], the message reported
/// through `sink`. Use it around the body of any hand-written `extern "C"`
/// plugin function.
pub fn guarded(sink: &Sink, f: impl FnOnce(&mut Outputs<'_>) -> Result<(), String>) -> i32 {
    let mut out = Outputs { sink };
    let (status, message) = match catch_unwind(AssertUnwindSafe(|| f(&mut out))) {
        Ok(Ok(())) => return STATUS_OK,
        Ok(Err(message)) => (STATUS_ERROR, message),
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".into());
            (STATUS_PANIC, format!("panicked: {text}"))
        }
    };
    // SAFETY: the sink's callbacks are the host's, valid for this call.
    unsafe { (sink.error)(sink.ctx, message.as_ptr(), message.len()) };
    status
}

/// Views `n` C tensors as [`TensorRef`]s.
///
/// # Safety
/// `views` must point to `n` valid views whose data outlive the call.
unsafe fn tensors<'a>(views: *const TensorView, n: usize) -> Vec<TensorRef<'a>> {
    if n == 0 {
        return Vec::new();
    }
    // SAFETY: per the contract, `views` holds `n` views.
    let views = unsafe { std::slice::from_raw_parts(views, n) };
    // SAFETY: each view's pointers hold `len` and `rank` elements.
    views.iter().map(|v| unsafe { tensor(v) }).collect()
}

/// # Safety
/// `v`'s pointers must hold `len` and `rank` elements.
unsafe fn tensor<'a>(v: &TensorView) -> TensorRef<'a> {
    let part = |ptr: *const f32, len| {
        if len == 0 {
            &[][..]
        } else {
            // SAFETY: per the contract.
            unsafe { std::slice::from_raw_parts(ptr, len) }
        }
    };
    let shape = if v.rank == 0 {
        &[][..]
    } else {
        // SAFETY: per the contract.
        unsafe { std::slice::from_raw_parts(v.shape, v.rank) }
    };
    TensorRef {
        shape,
        data: part(v.data, v.len),
    }
}

unsafe extern "C" fn forward_shim<T: CustomOp>(
    inputs: *const TensorView,
    n_inputs: usize,
    sink: *const Sink,
) -> i32 {
    // SAFETY: the host passes a valid sink and `n_inputs` valid views.
    let sink = unsafe { &*sink };
    guarded(sink, |out| {
        // SAFETY: as above.
        let inputs = unsafe { tensors(inputs, n_inputs) };
        T::forward(&inputs, out)
    })
}

unsafe extern "C" fn backward_shim<T: CustomOp>(
    inputs: *const TensorView,
    n_inputs: usize,
    dy: *const TensorView,
    sink: *const Sink,
) -> i32 {
    // SAFETY: the host passes a valid sink, `n_inputs` valid views and a valid `dy`.
    let sink = unsafe { &*sink };
    guarded(sink, |out| {
        // SAFETY: as above.
        let (inputs, dy) = unsafe { (tensors(inputs, n_inputs), tensor(&*dy)) };
        T::backward(&inputs, dy, out)
    })
}

unsafe extern "C" fn export_shim<T: Exporter>(
    graph_json: *const u8,
    len: usize,
    sink: *const Sink,
) -> i32 {
    // SAFETY: the host passes a valid sink and `len` bytes.
    let sink = unsafe { &*sink };
    guarded(sink, |out| {
        let bytes = if len == 0 {
            &[][..]
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(graph_json, len) }
        };
        T::export(bytes, out)
    })
}

/// The table entry of op `T`, with panic-catching shims.
pub const fn op_entry<T: CustomOp>() -> OpEntry {
    let backward: Option<BackwardFn> = if T::HAS_GRADIENT {
        Some(backward_shim::<T>)
    } else {
        None
    };
    OpEntry {
        op_type: T::OP_TYPE.as_ptr(),
        forward: forward_shim::<T>,
        backward,
    }
}

/// The table entry of exporter `T`, with a panic-catching shim.
pub const fn exporter_entry<T: Exporter>() -> ExporterEntry {
    ExporterEntry {
        name: T::NAME.as_ptr(),
        export: export_shim::<T>,
    }
}

/// Declares a library's entry point ([`crate::abi::ENTRY_POINT`]) and its
/// static table: `declare_plugin!(name: c"my-plugin", ops: [OpA, OpB],
/// exporters: [MyExporter]);` where each op implements
/// [`CustomOp`](crate::author::CustomOp) and each exporter
/// [`Exporter`](crate::author::Exporter). The name must equal the
/// manifest's `[plugin] name`.
#[macro_export]
macro_rules! declare_plugin {
    (name: $name:literal, ops: [$($op:ty),* $(,)?], exporters: [$($exporter:ty),* $(,)?] $(,)?) => {
        /// The plugin's entry point (quant plugin ABI).
        ///
        /// # Safety
        /// Callable from any thread; it only returns a pointer to static data.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn quant_plugin_v1(
            _host_abi: u32,
        ) -> *const $crate::abi::PluginTable {
            static OPS: &[$crate::abi::OpEntry] = &[$($crate::author::op_entry::<$op>()),*];
            static EXPORTERS: &[$crate::abi::ExporterEntry] =
                &[$($crate::author::exporter_entry::<$exporter>()),*];
            static TABLE: $crate::abi::PluginTable = $crate::abi::PluginTable {
                abi_version: $crate::abi::ABI_VERSION,
                name: {
                    let name: &'static ::std::ffi::CStr = $name;
                    name.as_ptr()
                },
                ops: OPS.as_ptr(),
                n_ops: OPS.len(),
                exporters: EXPORTERS.as_ptr(),
                n_exporters: EXPORTERS.len(),
            };
            &TABLE
        }
    };
}
