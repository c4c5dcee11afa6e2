//! Window geometry of the integer conv and pool ops: TensorFlow's SAME and
//! VALID padding, shared with the float kernels ([`Window2d`]).

use quant_core::integer::{Hw, Padding, TensorIndex};

use super::op::{OpResult, fail};
use crate::kernels::window::{self as float_window, Geometry, Window2d};

/// A validated window (positive kernel, strides and dilations).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    /// Strides `(h, w)`.
    pub stride: [usize; 2],
    /// Dilations `(h, w)`.
    pub dilation: [usize; 2],
    inner: Window2d,
}

/// Validates a window of `kernel` size; errors blame `t`.
pub(crate) fn window(
    padding: Padding,
    stride: Hw,
    dilation: Hw,
    kernel: [usize; 2],
    t: TensorIndex,
) -> OpResult<Window> {
    if [
        stride.h, stride.w, dilation.h, dilation.w, kernel[0], kernel[1],
    ]
    .contains(&0)
    {
        return fail(
            Some(t),
            format!(
                "window {kernel:?}, strides {stride:?} and dilations {dilation:?} must be positive"
            ),
        );
    }
    Ok(Window {
        stride: [stride.h, stride.w],
        dilation: [dilation.h, dilation.w],
        inner: Window2d {
            kernel,
            strides: [stride.h, stride.w],
            dilations: [dilation.h, dilation.w],
            padding: match padding {
                Padding::Same => float_window::Padding::Same,
                Padding::Valid => float_window::Padding::Valid,
            },
        },
    })
}

impl Window {
    /// Output sizes and leading padding over an `h × w` input.
    pub(crate) fn geometry(&self, h: usize, w: usize, t: TensorIndex) -> OpResult<Geometry> {
        self.inner.geometry(h, w).or_else(|e| fail(Some(t), e))
    }

    /// The input position `(iy, ix)` read by tap `(ky, kx)` of output
    /// `(oy, ox)`, or `None` when it falls into the padding.
    pub(crate) fn tap(
        &self,
        g: &Geometry,
        (h, w): (usize, usize),
        (oy, ox): (usize, usize),
        (ky, kx): (usize, usize),
    ) -> Option<(usize, usize)> {
        let iy = (oy * self.stride[0] + ky * self.dilation[0]).checked_sub(g.h.pad_before)?;
        let ix = (ox * self.stride[1] + kx * self.dilation[1]).checked_sub(g.w.pad_before)?;
        (iy < h && ix < w).then_some((iy, ix))
    }
}
