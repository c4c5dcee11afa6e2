//! Integer kernels and the integer executor: LiteRT 2.3's reference
//! arithmetic (reference semantics §7.10, kernel set R), bit for bit.
//!
//! - [`fixed_point`]: QuantizeMultiplier, SRDHM, RDBPOT, MBQM and the
//!   fused-activation clamp ranges;
//! - one file per op family: `conv`, `depthwise`, `fully_connected`, `add`,
//!   `mul`, `pool` (max and average), `mean`, `softmax`, `logistic`,
//!   `concatenation`, `pad`, `quantize` (QUANTIZE and DEQUANTIZE),
//!   `reshape`; `custom` runs CUSTOM ops (plugin op types) with kernels
//!   the caller registers ([`CustomKernels`]);
//! - [`IntExecutor`]: validates an [`IntModel`](quant_core::integer::IntModel)
//!   up front and runs it on any batch size.
//!
//! # Design note
//!
//! Activations are stored as their 8-bit levels (`u8`/`i8`); the kernels
//! are generic over the two types. Every weighted layer keeps its weights
//! as `q_w − Z_w` in i16 (exact: within ±255). CONV_2D and FULLY_CONNECTED
//! have two paths selected by [`KernelPath`]: direct scalar loops (the
//! reference, the definition) and a fast path (CONV_2D: im2col rows times
//! a pre-packed filter in a register-blocked i16 GEMM, see `gemm`;
//! FULLY_CONNECTED: an exact i16 dot product, see `dot`; both AVX2
//! `vpmaddwd` when the CPU has it); the
//! two give identical integers because every accumulation wraps modulo
//! 2^32 in both. CONV_2D's fast path and DEPTHWISE_CONV_2D requantize
//! blocks of accumulators with an AVX2 MBQM that equals the scalar one
//! (see `requant`); both vector kernels are tested against their scalar
//! definitions. Parallelism is rayon's global pool, over output rows.
//!
//! Edge cases the C code leaves undefined (int32 overflow of a left shift,
//! a float outside the int32 range) wrap or saturate here, documented where
//! they occur.

mod add;
mod concatenation;
mod conv;
mod custom;
mod depthwise;
mod dot;
mod elementwise;
mod executor;
pub mod fixed_point;
mod fully_connected;
mod gemm;
mod layer;
mod logistic;
mod mean;
mod mul;
mod op;
mod pad;
mod pool;
mod quantize;
mod requant;
mod reshape;
mod softmax;
mod value;
mod window;

pub use custom::{CustomKernel, CustomKernels, QBuffer, QData, QOutput, QOutputSpec, QTensor};
pub use executor::{IntError, IntExecutor};
pub use softmax::{exp_on_negative_values, one_over_one_plus_x};
pub use value::QType;

/// Which CONV_2D / FULLY_CONNECTED kernels an [`IntExecutor`] runs (both
/// compute the same integers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelPath {
    /// Direct scalar loops: the reference definition.
    Reference,
    /// im2col and the exact i16 dot product (AVX2 when available). The default.
    #[default]
    Fast,
}
