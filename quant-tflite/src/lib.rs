//! # quant-tflite
//!
//! The TFLite flatbuffer writer and reader for quant's lowered integer
//! graphs (uint8 per-tensor as in the paper, int8 per-channel as current
//! TFLite), so LiteRT runs what quant exports and quant runs `.tflite` files
//! it did not write.
//!
//! Status: not built yet (issue 6). It depends on quant-core.
