//! Geometry of 2-D windowed ops (convolutions and pooling) in NHWC.

/// How a windowed op pads its input, as in TensorFlow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Output size `ceil(in / stride)`; the total padding
    /// `max((out − 1)·stride + effective_kernel − in, 0)` is split with the
    /// smaller half before (top/left) and the larger after.
    Same,
    /// No padding.
    Valid,
    /// Explicit `[[top, bottom], [left, right]]` padding.
    Explicit([[usize; 2]; 2]),
}

/// Window parameters of a 2-D op over NHWC data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window2d {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides along H and W.
    pub strides: [usize; 2],
    /// Dilations along H and W (1 for pooling).
    pub dilations: [usize; 2],
    /// Padding.
    pub padding: Padding,
}

/// The resolved geometry along one spatial dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axis {
    /// Output size.
    pub out: usize,
    /// Padding before the first input element.
    pub pad_before: usize,
}

/// The resolved geometry of a window over an `h × w` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Along H.
    pub h: Axis,
    /// Along W.
    pub w: Axis,
}

impl Window2d {
    /// The effective (dilated) kernel extent along dimension `d` (0 = H, 1 = W).
    pub fn effective_kernel(&self, d: usize) -> usize {
        (self.kernel[d].max(1) - 1) * self.dilations[d] + 1
    }

    fn axis(&self, d: usize, input: usize) -> Result<Axis, String> {
        let (stride, eff) = (self.strides[d], self.effective_kernel(d));
        if stride == 0 || self.dilations[d] == 0 {
            return Err("strides and dilations must be positive".into());
        }
        match self.padding {
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = ((out.max(1) - 1) * stride + eff).saturating_sub(input);
                Ok(Axis {
                    out,
                    pad_before: total / 2,
                })
            }
            Padding::Valid | Padding::Explicit(_) => {
                let (before, after) = match self.padding {
                    Padding::Explicit(p) => (p[d][0], p[d][1]),
                    _ => (0, 0),
                };
                let padded = input + before + after;
                if padded < eff {
                    return Err(format!(
                        "a window of {eff} does not fit an input of {padded}"
                    ));
                }
                Ok(Axis {
                    out: (padded - eff) / stride + 1,
                    pad_before: before,
                })
            }
        }
    }

    /// Output sizes and leading padding for an `h × w` input.
    pub fn geometry(&self, h: usize, w: usize) -> Result<Geometry, String> {
        Ok(Geometry {
            h: self.axis(0, h)?,
            w: self.axis(1, w)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_extra_row_after() {
        let win = Window2d {
            kernel: [3, 3],
            strides: [2, 2],
            dilations: [1, 1],
            padding: Padding::Same,
        };
        // in 8, stride 2: out 4, total pad (3·2 + 3) − 8 = 1 → before 0.
        assert_eq!(
            win.geometry(8, 7).unwrap().h,
            Axis {
                out: 4,
                pad_before: 0
            }
        );
        // in 7: out 4, total pad 2 → before 1.
        assert_eq!(
            win.geometry(8, 7).unwrap().w,
            Axis {
                out: 4,
                pad_before: 1
            }
        );
        let dilated = Window2d {
            dilations: [2, 2],
            strides: [1, 1],
            ..win
        };
        assert_eq!(
            dilated.geometry(5, 5).unwrap().h,
            Axis {
                out: 5,
                pad_before: 2
            }
        );
        let valid = Window2d {
            padding: Padding::Valid,
            ..dilated
        };
        assert_eq!(
            valid.geometry(5, 5).unwrap().h,
            Axis {
                out: 1,
                pad_before: 0
            }
        );
    }
}
