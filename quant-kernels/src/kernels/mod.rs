//! Pure kernels: functions from arrays to arrays, with no knowledge of the
//! graph. The executor's op table ([`crate::session`]) adapts nodes to them.

pub mod array;
pub mod batch_norm;
pub mod compare;
pub mod conv;
pub mod depthwise;
pub mod elementwise;
pub mod fake_quant;
mod layout;
pub mod matmul;
pub mod observers;
pub mod optimizers;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod space_to_batch;
pub mod window;
