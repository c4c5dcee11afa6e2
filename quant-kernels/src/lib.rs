//! # quant-kernels
//!
//! CPU kernels and the executor for [`quant_core::Graph`]s:
//!
//! - [`kernels`]: float kernels forward and backward (NHWC), the fake-quant
//!   kernels with TensorFlow's exact arithmetic and their straight-through
//!   gradients, and the range-observer arithmetic;
//! - [`gemm`]: the one matrix-multiply entry point every conv and matmul uses;
//! - [`session`]: the executor (feeds, fetches, variables, the quantization
//!   step counter), parallel on rayon's global pool.
//! - [`integer`]: the integer kernels with LiteRT 2.3's reference
//!   arithmetic and [`integer::IntExecutor`], which runs a lowered
//!   [`quant_core::integer::IntModel`].

pub mod gemm;
pub mod integer;
pub mod kernels;
pub mod session;
