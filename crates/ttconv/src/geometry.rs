//! Per-axis convolution geometry: stride, dilation and (possibly asymmetric) zero padding.

use crate::error::{Error, Result};

/// How a kernel slides along one spatial axis.
///
/// Output position `p` reads input positions `p * stride + t * dilation - pad_before` for kernel
/// taps `t = 0..k`, positions outside `0..input_len` being zero. The output length is
/// `floor((input_len + pad_before + pad_after - dilation * (k - 1) - 1) / stride) + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AxisGeometry {
    /// Step between output positions, >= 1.
    pub stride: usize,
    /// Spacing between kernel taps, >= 1.
    pub dilation: usize,
    /// Zeros implicitly added before the first input position.
    pub pad_before: usize,
    /// Zeros implicitly added after the last input position.
    pub pad_after: usize,
}

impl Default for AxisGeometry {
    /// [`AxisGeometry::UNIT`].
    fn default() -> Self {
        Self::UNIT
    }
}

impl AxisGeometry {
    /// Stride `stride`, dilation `dilation` and `padding` zeros on both sides.
    pub fn symmetric(stride: usize, padding: usize, dilation: usize) -> Self {
        Self {
            stride,
            dilation,
            pad_before: padding,
            pad_after: padding,
        }
    }

    /// Stride 1, dilation 1, no padding.
    pub const UNIT: Self = Self {
        stride: 1,
        dilation: 1,
        pad_before: 0,
        pad_after: 0,
    };

    /// The extent `dilation * (kernel - 1) + 1` covered by a kernel of `kernel` taps.
    /// Saturates at `usize::MAX` (a span that large fits in no input).
    pub fn span(&self, kernel: usize) -> usize {
        self.dilation
            .saturating_mul(kernel.max(1) - 1)
            .saturating_add(1)
    }

    /// `input_len + pad_before + pad_after`, `None` when it exceeds `isize::MAX` (the longest
    /// axis an array may have, so that every offset along the padded axis is an `isize`).
    pub fn padded_len(&self, input_len: usize) -> Option<usize> {
        input_len
            .checked_add(self.pad_before)?
            .checked_add(self.pad_after)
            .filter(|&p| p <= isize::MAX as usize)
    }

    /// Output length for an input of `input_len` and a kernel of `kernel` taps, `None` when the
    /// dilated kernel does not fit in the padded input (no output position) or the padded length
    /// exceeds `isize::MAX`.
    pub fn output_len(&self, input_len: usize, kernel: usize) -> Option<usize> {
        let padded = self.padded_len(input_len)?;
        let span = self.span(kernel);
        if kernel == 0 || self.stride == 0 || span > padded {
            None
        } else {
            Some((padded - span) / self.stride + 1)
        }
    }

    /// Like [`Self::output_len`], with a typed error naming spatial mode `mode` on failure.
    pub fn checked_output_len(
        &self,
        mode: usize,
        input_len: usize,
        kernel: usize,
    ) -> Result<usize> {
        let zero = |field: &'static str, what: &str| Error::Config {
            field,
            reason: format!("spatial mode {mode}: {what} must be at least 1, got 0"),
        };
        if kernel == 0 {
            return Err(zero("kernel_size", "the kernel size"));
        }
        if self.stride == 0 {
            return Err(zero("stride", "the stride"));
        }
        if self.dilation == 0 {
            return Err(zero("dilation", "the dilation"));
        }
        if self.padded_len(input_len).is_none() {
            return Err(Error::TooLarge {
                what: format!("spatial mode {mode}: input plus padding"),
                detail: format!(
                    "{input_len} + {} + {} exceeds isize::MAX, the longest axis an array may have",
                    self.pad_before, self.pad_after
                ),
            });
        }
        self.output_len(input_len, kernel)
            .ok_or(Error::EmptyOutput {
                mode,
                input: input_len,
                pad_before: self.pad_before,
                pad_after: self.pad_after,
                kernel,
                dilation: self.dilation,
                span: self.span(kernel),
                padded: input_len
                    .saturating_add(self.pad_before)
                    .saturating_add(self.pad_after),
            })
    }
}

/// Output spatial shape of a convolution with per-mode `kernel` sizes and `geometry`.
pub fn output_spatial(
    input_spatial: &[usize],
    kernel: &[usize],
    geometry: &[AxisGeometry],
) -> Result<Vec<usize>> {
    input_spatial
        .iter()
        .zip(kernel)
        .zip(geometry)
        .enumerate()
        .map(|(mode, ((&d, &k), g))| g.checked_output_len(mode, d, k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_len_matches_pytorch_formula() {
        let g = AxisGeometry {
            stride: 2,
            dilation: 2,
            pad_before: 1,
            pad_after: 2,
        };
        // floor((10 + 3 - 2*2 - 1) / 2) + 1 = 5
        assert_eq!(g.output_len(10, 3), Some(5));
        assert_eq!(AxisGeometry::UNIT.output_len(3, 4), None);
        assert_eq!(AxisGeometry::UNIT.output_len(4, 4), Some(1));
        // Huge dilations give no output (not a wrapped span); huge paddings are an error.
        let wide = AxisGeometry::symmetric(1, 0, usize::MAX);
        assert_eq!(wide.output_len(4, 2), None);
        assert!(matches!(
            wide.checked_output_len(0, 4, 2),
            Err(Error::EmptyOutput { .. })
        ));
        let padded = AxisGeometry::symmetric(1, usize::MAX / 2 + 1, 1);
        assert!(matches!(
            padded.checked_output_len(0, 4, 3),
            Err(Error::TooLarge { .. })
        ));
        assert!(AxisGeometry::UNIT.checked_output_len(1, 2, 3).is_err());
        // A zero kernel is named as such, not as a span that does not fit.
        match AxisGeometry::UNIT.checked_output_len(0, 5, 0) {
            Err(Error::Config { field, .. }) => assert_eq!(field, "kernel_size"),
            other => panic!("expected a kernel_size error, got {other:?}"),
        }
    }
}
