//! Helpers for writing a plugin library in Rust.
//!
//! Implement [`CustomOp`] for each op type (its float kernel, optionally
//! its gradient and its integer kernel), [`Exporter`] for each exporter and
//! [`Matcher`] for each custom layer matcher, then declare the entry point
//! with [`declare_plugin!`](crate::declare_plugin). The generated `extern
//! "C"` functions convert the C views to slices, call your code inside
//! `catch_unwind`, and turn an `Err` into [`STATUS_ERROR`] and a panic into
//! [`STATUS_PANIC`], each with its message, so nothing unwinds into the
//! host.
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
//!
//! `declare_plugin!` also takes `matchers: [...]` after the exporters.

use crate::abi::{
    BackwardFn, ELEM_I8, ELEM_I32, ELEM_U8, ExporterEntry, IntegerFn, MatcherEntry, OpEntry,
    QTensorView, STATUS_ERROR, STATUS_OK, STATUS_PANIC, Sink, TensorView,
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

/// The element type of a quantized tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// uint8 levels (0..=255).
    U8,
    /// int8 levels (−128..=127).
    I8,
    /// int32 values.
    I32,
}

impl Elem {
    fn code(self) -> u32 {
        match self {
            Elem::U8 => ELEM_U8,
            Elem::I8 => ELEM_I8,
            Elem::I32 => ELEM_I32,
        }
    }

    fn from_code(code: u32) -> Result<Elem, String> {
        match code {
            ELEM_U8 => Ok(Elem::U8),
            ELEM_I8 => Ok(Elem::I8),
            ELEM_I32 => Ok(Elem::I32),
            other => Err(format!("unknown element type code {other}")),
        }
    }

    /// The smallest value the type holds.
    pub fn min(self) -> i32 {
        match self {
            Elem::U8 => 0,
            Elem::I8 => -128,
            Elem::I32 => i32::MIN,
        }
    }

    /// The largest value the type holds.
    pub fn max(self) -> i32 {
        match self {
            Elem::U8 => 255,
            Elem::I8 => 127,
            Elem::I32 => i32::MAX,
        }
    }
}

/// The elements of a quantized input.
#[derive(Clone, Copy, Debug)]
pub enum Levels<'a> {
    /// uint8 levels.
    U8(&'a [u8]),
    /// int8 levels.
    I8(&'a [i8]),
    /// int32 values.
    I32(&'a [i32]),
}

impl Levels<'_> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Levels::U8(v) => v.len(),
            Levels::I8(v) => v.len(),
            Levels::I32(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as an i32 (panics if out of range, like slice indexing).
    pub fn get(&self, i: usize) -> i32 {
        match self {
            Levels::U8(v) => i32::from(v[i]),
            Levels::I8(v) => i32::from(v[i]),
            Levels::I32(v) => v[i],
        }
    }
}

/// A quantized input as the plugin sees it: `real = scale · (q − zero_point)`.
#[derive(Clone, Copy, Debug)]
pub struct QTensorRef<'a> {
    /// The dimensions.
    pub shape: &'a [usize],
    /// The elements, row-major.
    pub data: Levels<'a>,
    /// The scale.
    pub scale: f32,
    /// The zero point.
    pub zero_point: i32,
}

/// What the output of an integer kernel must be.
#[derive(Clone, Copy, Debug)]
pub struct QOutputSpec<'a> {
    /// Its element type.
    pub elem: Elem,
    /// The shape the model declares (the batch may differ at run time).
    pub shape: &'a [usize],
    /// The scale the lowering chose.
    pub scale: f32,
    /// The zero point the lowering chose.
    pub zero_point: i32,
}

/// A quantized output allocated by the host.
#[derive(Debug)]
pub enum LevelsMut<'a> {
    /// uint8 levels.
    U8(&'a mut [u8]),
    /// int8 levels.
    I8(&'a mut [i8]),
    /// int32 values.
    I32(&'a mut [i32]),
}

impl LevelsMut<'_> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            LevelsMut::U8(v) => v.len(),
            LevelsMut::I8(v) => v.len(),
            LevelsMut::I32(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `level`, saturated to the type's range, as element `i`
    /// (panics if out of range, like slice indexing).
    pub fn set(&mut self, i: usize, level: i32) {
        match self {
            LevelsMut::U8(v) => v[i] = level.clamp(0, 255) as u8,
            LevelsMut::I8(v) => v[i] = level.clamp(-128, 127) as i8,
            LevelsMut::I32(v) => v[i] = level,
        }
    }
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

    /// Allocates quantized output `index` of element type `elem` (the
    /// output spec's) with `shape`, zeroed, and returns its elements.
    pub fn alloc_quantized(
        &mut self,
        index: usize,
        elem: Elem,
        shape: &[usize],
    ) -> Result<LevelsMut<'_>, String> {
        let len = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("output {index}: shape {shape:?} is too large"))?;
        // SAFETY: the sink's callbacks are the host's, valid for this call.
        let ptr = unsafe {
            (self.sink.alloc_quantized)(
                self.sink.ctx,
                index,
                elem.code(),
                shape.as_ptr(),
                shape.len(),
            )
        };
        if ptr.is_null() {
            return Err(format!(
                "the host refused output {index} of type {elem:?} with shape {shape:?}"
            ));
        }
        // SAFETY: the host returned `len` zeroed elements of type `elem`
        // it keeps alive and does not touch until the call returns.
        Ok(unsafe {
            match elem {
                Elem::U8 => LevelsMut::U8(std::slice::from_raw_parts_mut(ptr.cast(), len)),
                Elem::I8 => LevelsMut::I8(std::slice::from_raw_parts_mut(ptr.cast(), len)),
                Elem::I32 => LevelsMut::I32(std::slice::from_raw_parts_mut(ptr.cast(), len)),
            }
        })
    }

    /// Appends bytes to an exporter's or a matcher's output.
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

    /// Computes output 0 on quantized tensors: allocate it with
    /// [`Outputs::alloc_quantized`] (of `output.elem`) and fill it with
    /// levels for `output.scale` and `output.zero_point`. The default has
    /// no integer kernel.
    fn integer(
        inputs: &[QTensorRef<'_>],
        output: &QOutputSpec<'_>,
        out: &mut Outputs<'_>,
    ) -> Result<(), String> {
        let _ = (inputs, output, out);
        Err(format!("{:?} has no integer kernel", Self::OP_TYPE))
    }

    /// Whether [`CustomOp::integer`] is implemented (the integer executor
    /// only runs ops that say so).
    const HAS_INTEGER: bool = false;
}

/// An exporter implemented by the plugin.
pub trait Exporter {
    /// The exporter's name, as the manifest's `[[exporter]]` declares it.
    const NAME: &'static CStr;

    /// Writes the exported form of the lowered integer model, given as
    /// JSON (see [`crate::abi::ExportFn`]).
    fn export(model_json: &[u8], out: &mut Outputs<'_>) -> Result<(), String>;
}

/// A custom layer matcher implemented by the plugin.
pub trait Matcher {
    /// The matcher's name, as the manifest's `[[matcher]]` declares it.
    const NAME: &'static CStr;

    /// Returns the layers found in the quant graph JSON `graph_json`, as
    /// the JSON array [`crate::abi::MatchFn`] describes.
    fn find(graph_json: &[u8]) -> Result<String, String>;
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

/// Views a C quantized tensor.
///
/// # Safety
/// `v`'s pointers must hold `len` elements of type `elem` and `rank` dimensions.
unsafe fn q_tensor<'a>(v: &QTensorView) -> Result<QTensorRef<'a>, String> {
    let shape = if v.rank == 0 {
        &[][..]
    } else {
        // SAFETY: per the contract.
        unsafe { std::slice::from_raw_parts(v.shape, v.rank) }
    };
    let elem = Elem::from_code(v.elem)?;
    // SAFETY: per the contract (an empty tensor reads nothing).
    let data = unsafe {
        match (elem, v.len) {
            (Elem::U8, 0) => Levels::U8(&[]),
            (Elem::I8, 0) => Levels::I8(&[]),
            (Elem::I32, 0) => Levels::I32(&[]),
            (Elem::U8, n) => Levels::U8(std::slice::from_raw_parts(v.data.cast(), n)),
            (Elem::I8, n) => Levels::I8(std::slice::from_raw_parts(v.data.cast(), n)),
            (Elem::I32, n) => Levels::I32(std::slice::from_raw_parts(v.data.cast(), n)),
        }
    };
    Ok(QTensorRef {
        shape,
        data,
        scale: v.scale,
        zero_point: v.zero_point,
    })
}

unsafe extern "C" fn integer_shim<T: CustomOp>(
    inputs: *const QTensorView,
    n_inputs: usize,
    output: *const QTensorView,
    sink: *const Sink,
) -> i32 {
    // SAFETY: the host passes a valid sink, `n_inputs` valid views and a
    // valid output spec.
    let sink = unsafe { &*sink };
    guarded(sink, |out| {
        let views = if n_inputs == 0 {
            &[][..]
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(inputs, n_inputs) }
        };
        // SAFETY: as above.
        let inputs = views
            .iter()
            .map(|v| unsafe { q_tensor(v) })
            .collect::<Result<Vec<_>, _>>()?;
        // SAFETY: as above.
        let spec = unsafe { q_tensor(&*output) }?;
        // SAFETY: as above.
        let elem = Elem::from_code(unsafe { (*output).elem })?;
        let spec = QOutputSpec {
            elem,
            shape: spec.shape,
            scale: spec.scale,
            zero_point: spec.zero_point,
        };
        T::integer(&inputs, &spec, out)
    })
}

/// The `len` bytes the host passed at `data` (none when `len` is 0).
///
/// # Safety
/// Unless `len` is 0, `data` points to `len` readable bytes that outlive the call.
unsafe fn host_bytes<'a>(data: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(data, len) }
    }
}

unsafe extern "C" fn match_shim<T: Matcher>(
    graph_json: *const u8,
    len: usize,
    sink: *const Sink,
) -> i32 {
    // SAFETY: the host passes a valid sink and `len` bytes.
    let (sink, bytes) = unsafe { (&*sink, host_bytes(graph_json, len)) };
    guarded(sink, |out| {
        let json = T::find(bytes)?;
        out.write(json.as_bytes());
        Ok(())
    })
}

unsafe extern "C" fn export_shim<T: Exporter>(
    model_json: *const u8,
    len: usize,
    sink: *const Sink,
) -> i32 {
    // SAFETY: the host passes a valid sink and `len` bytes.
    let (sink, bytes) = unsafe { (&*sink, host_bytes(model_json, len)) };
    guarded(sink, |out| T::export(bytes, out))
}

/// The table entry of op `T`, with panic-catching shims.
pub const fn op_entry<T: CustomOp>() -> OpEntry {
    let backward: Option<BackwardFn> = if T::HAS_GRADIENT {
        Some(backward_shim::<T>)
    } else {
        None
    };
    let integer: Option<IntegerFn> = if T::HAS_INTEGER {
        Some(integer_shim::<T>)
    } else {
        None
    };
    OpEntry {
        op_type: T::OP_TYPE.as_ptr(),
        forward: forward_shim::<T>,
        backward,
        integer,
    }
}

/// The table entry of matcher `T`, with a panic-catching shim.
pub const fn matcher_entry<T: Matcher>() -> MatcherEntry {
    MatcherEntry {
        name: T::NAME.as_ptr(),
        find: match_shim::<T>,
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
/// exporters: [MyExporter], matchers: [MyMatcher]);` where each op
/// implements [`CustomOp`](crate::author::CustomOp), each exporter
/// [`Exporter`](crate::author::Exporter) and each matcher
/// [`Matcher`](crate::author::Matcher); `matchers` may be left out. The
/// name must equal the manifest's `[plugin] name`.
#[macro_export]
macro_rules! declare_plugin {
    (name: $name:literal, ops: [$($op:ty),* $(,)?], exporters: [$($exporter:ty),* $(,)?] $(,)?) => {
        $crate::declare_plugin!(name: $name, ops: [$($op),*], exporters: [$($exporter),*], matchers: []);
    };
    (name: $name:literal, ops: [$($op:ty),* $(,)?], exporters: [$($exporter:ty),* $(,)?],
     matchers: [$($matcher:ty),* $(,)?] $(,)?) => {
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
            static MATCHERS: &[$crate::abi::MatcherEntry] =
                &[$($crate::author::matcher_entry::<$matcher>()),*];
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
                matchers: MATCHERS.as_ptr(),
                n_matchers: MATCHERS.len(),
            };
            &TABLE
        }
    };
}
