//! Pure kernels: functions from arrays to arrays, with no knowledge of the
//! graph. The executor's op table ([`crate::session`]) adapts nodes to them.

pub mod window;
