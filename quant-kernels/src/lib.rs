//! # quant-kernels
//!
//! CPU kernels and the executor for [`quant_core::Graph`]s. This crate will own:
//!
//! - float kernels forward and backward (Conv2D, DepthwiseConv2dNative,
//!   MatMul, BiasAdd, activations, pooling, batch norm, softmax
//!   cross-entropy, ...);
//! - the fake-quant kernels with TensorFlow's exact arithmetic and their
//!   straight-through gradients, and the range observers (last value, EMA);
//! - integer kernels with LiteRT's reference arithmetic;
//! - the `Session` executor (feeds, fetches, variables, the quantization
//!   step), parallel on rayon's global pool.
//!
//! Status: not built yet (issue 3). It depends on quant-core only.
