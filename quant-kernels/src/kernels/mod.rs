//! Pure kernels: functions from arrays to arrays, with no knowledge of the
//! graph. The executor's op table ([`crate::session`]) adapts nodes to them.

pub mod conv;
pub mod depthwise;
pub mod fake_quant;
pub mod matmul;
pub mod pool;
pub mod window;
