//! Helpers for NHWC arrays shared by the windowed kernels.

use ndarray::{ArrayBase, ArrayView4, Data, Ix4};

/// The `[n, h, w, c]` dimensions of a 4-D view.
pub(crate) fn dims(a: &ArrayView4<f32>) -> [usize; 4] {
    let (n, h, w, c) = a.dim();
    [n, h, w, c]
}

/// The contiguous data of a 4-D array the caller has put in standard layout
/// (with `as_standard_layout` or by building it): an invariant, not input.
pub(crate) fn slice<S: Data<Elem = f32>>(a: &ArrayBase<S, Ix4>) -> &[f32] {
    a.as_slice().expect("standard layout")
}
