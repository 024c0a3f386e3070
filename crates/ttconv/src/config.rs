//! Layer configuration: channels, kernel size, rank, implementation, stride, padding, dilation.

use tt_core::{RankOptions, RankSpec};

use crate::error::{Error, Result};
use crate::geometry::AxisGeometry;
use crate::layer::MAX_KERNEL_ELEMENTS;

/// Which algorithm a forward (and backward) pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Implementation {
    /// Channel contraction, one 1-D convolution per spatial mode, channel contraction.
    #[default]
    Factorized,
    /// Reconstruct the dense kernel and run a dense N-D convolution.
    Reconstructed,
    /// Whichever the cost model predicts to be cheaper for the input shape at hand.
    Auto,
}

/// A per-spatial-mode integer setting (stride, dilation, symmetric padding): one value for every
/// mode, or one per mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PerMode {
    /// The same value for every spatial mode.
    All(usize),
    /// One value per spatial mode; the length must equal the order.
    Each(Vec<usize>),
}

impl From<usize> for PerMode {
    fn from(v: usize) -> Self {
        PerMode::All(v)
    }
}

impl From<Vec<usize>> for PerMode {
    fn from(v: Vec<usize>) -> Self {
        PerMode::Each(v)
    }
}

impl From<&[usize]> for PerMode {
    fn from(v: &[usize]) -> Self {
        PerMode::Each(v.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for PerMode {
    fn from(v: [usize; N]) -> Self {
        PerMode::Each(v.to_vec())
    }
}

impl PerMode {
    /// The value of every mode for a layer of order `order`; an error names `field` when a list
    /// has the wrong length.
    pub fn resolve(&self, field: &'static str, order: usize) -> Result<Vec<usize>> {
        match self {
            PerMode::All(v) => Ok(vec![*v; order]),
            PerMode::Each(v) if v.len() == order => Ok(v.clone()),
            PerMode::Each(v) => Err(Error::Config {
                field,
                reason: format!(
                    "expected {order} values (one per spatial mode), got {}",
                    v.len()
                ),
            }),
        }
    }
}

/// Zero padding of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Symmetric padding, the same on every mode.
    All(usize),
    /// Symmetric padding per mode.
    Each(Vec<usize>),
    /// `(before, after)` per mode.
    Asymmetric(Vec<(usize, usize)>),
    /// PyTorch's `padding='same'`: output size = input size (stride 1 only); per mode a total of
    /// `dilation * (k - 1)` zeros, the odd one after.
    Same,
}

impl Default for Padding {
    fn default() -> Self {
        Padding::All(0)
    }
}

impl From<usize> for Padding {
    fn from(v: usize) -> Self {
        Padding::All(v)
    }
}

impl From<Vec<usize>> for Padding {
    fn from(v: Vec<usize>) -> Self {
        Padding::Each(v)
    }
}

impl<const N: usize> From<[usize; N]> for Padding {
    fn from(v: [usize; N]) -> Self {
        Padding::Each(v.to_vec())
    }
}

impl From<Vec<(usize, usize)>> for Padding {
    fn from(v: Vec<(usize, usize)>) -> Self {
        Padding::Asymmetric(v)
    }
}

impl Padding {
    /// `(before, after)` per mode for the given kernel sizes, strides and dilations.
    pub fn resolve(
        &self,
        kernel: &[usize],
        stride: &[usize],
        dilation: &[usize],
    ) -> Result<Vec<(usize, usize)>> {
        let order = kernel.len();
        let wrong_len = |got: usize| Error::Config {
            field: "padding",
            reason: format!("expected {order} values (one per spatial mode), got {got}"),
        };
        match self {
            Padding::All(p) => Ok(vec![(*p, *p); order]),
            Padding::Each(v) if v.len() == order => Ok(v.iter().map(|&p| (p, p)).collect()),
            Padding::Each(v) => Err(wrong_len(v.len())),
            Padding::Asymmetric(v) if v.len() == order => Ok(v.clone()),
            Padding::Asymmetric(v) => Err(wrong_len(v.len())),
            Padding::Same => {
                if let Some(mode) = stride.iter().position(|&s| s != 1) {
                    return Err(Error::Config {
                        field: "padding",
                        reason: format!(
                            "padding 'same' needs stride 1 on every mode (as in PyTorch), got stride {} on mode {mode}",
                            stride[mode]
                        ),
                    });
                }
                kernel
                    .iter()
                    .zip(dilation)
                    .enumerate()
                    .map(|(mode, (&k, &d))| {
                        let total = d.checked_mul(k.max(1) - 1).ok_or_else(|| Error::Config {
                            field: "padding",
                            reason: format!(
                                "padding 'same' on mode {mode}: dilation {d} * (kernel {k} - 1) overflows usize"
                            ),
                        })?;
                        Ok((total / 2, total - total / 2))
                    })
                    .collect()
            }
        }
    }
}

/// How a kernel slides over the input on every spatial mode: stride, zero padding and dilation.
///
/// The default is stride 1, no padding, dilation 1 on every mode; build others with
/// `ConvGeometry { padding: 1.into(), ..Default::default() }` or the setters. Per-mode values
/// are resolved against the kernel by [`Self::resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Stride per mode (>= 1).
    pub stride: PerMode,
    /// Zero padding.
    pub padding: Padding,
    /// Dilation per mode (>= 1).
    pub dilation: PerMode,
}

impl Default for ConvGeometry {
    fn default() -> Self {
        Self {
            stride: PerMode::All(1),
            padding: Padding::All(0),
            dilation: PerMode::All(1),
        }
    }
}

impl ConvGeometry {
    /// Stride 1, no padding, dilation 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the stride.
    pub fn stride(mut self, stride: impl Into<PerMode>) -> Self {
        self.stride = stride.into();
        self
    }

    /// Sets the padding.
    pub fn padding(mut self, padding: impl Into<Padding>) -> Self {
        self.padding = padding.into();
        self
    }

    /// Sets the dilation.
    pub fn dilation(mut self, dilation: impl Into<PerMode>) -> Self {
        self.dilation = dilation.into();
        self
    }

    /// The per-axis geometry for a kernel of sizes `kernel` (one per spatial mode). Errors name
    /// the field: lists of the wrong length, zero stride or dilation, `'same'` padding with a
    /// stride.
    pub fn resolve(&self, kernel: &[usize]) -> Result<Vec<AxisGeometry>> {
        let zero = |field: &'static str, what: String| Error::Config {
            field,
            reason: format!("{what} must be at least 1, got 0"),
        };
        let order = kernel.len();
        let stride = self.stride.resolve("stride", order)?;
        if let Some(m) = stride.iter().position(|&s| s == 0) {
            return Err(zero("stride", format!("stride of mode {m}")));
        }
        let dilation = self.dilation.resolve("dilation", order)?;
        if let Some(m) = dilation.iter().position(|&s| s == 0) {
            return Err(zero("dilation", format!("dilation of mode {m}")));
        }
        let padding = self.padding.resolve(kernel, &stride, &dilation)?;
        Ok((0..order)
            .map(|m| AxisGeometry {
                stride: stride[m],
                dilation: dilation[m],
                pad_before: padding[m].0,
                pad_after: padding[m].1,
            })
            .collect())
    }
}

impl From<&[AxisGeometry]> for ConvGeometry {
    /// The geometry of explicit per-axis values (asymmetric padding kept).
    fn from(axes: &[AxisGeometry]) -> Self {
        Self {
            stride: PerMode::Each(axes.iter().map(|g| g.stride).collect()),
            padding: Padding::Asymmetric(
                axes.iter().map(|g| (g.pad_before, g.pad_after)).collect(),
            ),
            dilation: PerMode::Each(axes.iter().map(|g| g.dilation).collect()),
        }
    }
}

/// The configuration of a [`crate::TtConv`] layer.
///
/// The kernel `W (out, in, k_1..k_d)` is a TT over the permuted shape `(in, k_1..k_d, out)`
/// ([`Self::tt_shape`]); `rank` is resolved on that shape with TensorLy's rules.
#[derive(Clone, Debug, PartialEq)]
pub struct TtConvConfig {
    /// Input channels, >= 1.
    pub in_channels: usize,
    /// Output channels, >= 1.
    pub out_channels: usize,
    /// Kernel size per spatial mode, each >= 1; its length is the order `d >= 1`.
    pub kernel_size: Vec<usize>,
    /// TT rank spec on `(in, k_1..k_d, out)`.
    pub rank: RankSpec,
    /// Options of the rank resolution.
    pub rank_options: RankOptions,
    /// Forward algorithm.
    pub implementation: Implementation,
    /// Stride, padding and dilation.
    pub geometry: ConvGeometry,
    /// Whether the layer adds a bias `(out,)`.
    pub bias: bool,
}

impl TtConvConfig {
    /// A layer `in -> out` with kernel sizes `kernel_size` (one per spatial mode), rank `'same'`,
    /// factorized, stride 1, no padding, dilation 1, no bias.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Into<Vec<usize>>,
    ) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel_size: kernel_size.into(),
            rank: RankSpec::Same,
            rank_options: RankOptions::default(),
            implementation: Implementation::Factorized,
            geometry: ConvGeometry::default(),
            bias: false,
        }
    }

    /// Like [`Self::new`] with a square kernel `k x .. x k` of order `order`.
    pub fn with_order(in_channels: usize, out_channels: usize, k: usize, order: usize) -> Self {
        Self::new(in_channels, out_channels, vec![k; order])
    }

    /// Sets the rank spec.
    pub fn rank(mut self, rank: RankSpec) -> Self {
        self.rank = rank;
        self
    }

    /// Sets the rank resolution options.
    pub fn rank_options(mut self, options: RankOptions) -> Self {
        self.rank_options = options;
        self
    }

    /// Sets the implementation.
    pub fn implementation(mut self, implementation: Implementation) -> Self {
        self.implementation = implementation;
        self
    }

    /// Sets the stride, padding and dilation at once.
    pub fn geometry(mut self, geometry: ConvGeometry) -> Self {
        self.geometry = geometry;
        self
    }

    /// Sets the stride.
    pub fn stride(mut self, stride: impl Into<PerMode>) -> Self {
        self.geometry.stride = stride.into();
        self
    }

    /// Sets the padding.
    pub fn padding(mut self, padding: impl Into<Padding>) -> Self {
        self.geometry.padding = padding.into();
        self
    }

    /// Sets the dilation.
    pub fn dilation(mut self, dilation: impl Into<PerMode>) -> Self {
        self.geometry.dilation = dilation.into();
        self
    }

    /// Turns the bias on or off.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Number of spatial modes `d`.
    pub fn order(&self) -> usize {
        self.kernel_size.len()
    }

    /// The TT shape `(in, k_1..k_d, out)`.
    pub fn tt_shape(&self) -> Vec<usize> {
        let mut s = Vec::with_capacity(self.order() + 2);
        s.push(self.in_channels);
        s.extend_from_slice(&self.kernel_size);
        s.push(self.out_channels);
        s
    }

    /// Checks every field and returns the per-mode geometry. Errors name the field: zero
    /// channels, an empty or zero kernel size, zero stride or dilation, lists of the wrong length,
    /// `'same'` padding with a stride, an invalid rank spec; and the sizes: a dense kernel over
    /// [`MAX_KERNEL_ELEMENTS`], cores over [`tt_core::MAX_TT_PARAMETERS`].
    pub fn validate(&self) -> Result<Vec<AxisGeometry>> {
        let zero = |field: &'static str, what: String| Error::Config {
            field,
            reason: format!("{what} must be at least 1, got 0"),
        };
        if self.in_channels == 0 {
            return Err(zero("in_channels", "the number of input channels".into()));
        }
        if self.out_channels == 0 {
            return Err(zero("out_channels", "the number of output channels".into()));
        }
        let order = self.order();
        if order == 0 {
            return Err(Error::Config {
                field: "kernel_size",
                reason: "expected at least one spatial mode, got an empty kernel size".into(),
            });
        }
        if let Some(m) = self.kernel_size.iter().position(|&k| k == 0) {
            return Err(zero("kernel_size", format!("kernel size of mode {m}")));
        }
        let geometry = self.geometry.resolve(&self.kernel_size)?;
        let shape = self.tt_shape();
        let kernel_elements = shape
            .iter()
            .fold(1u128, |a, &n| a.saturating_mul(n as u128));
        if kernel_elements > MAX_KERNEL_ELEMENTS as u128 {
            return Err(Error::TooLarge {
                what: format!(
                    "the dense kernel ({}, {}, {:?})",
                    self.out_channels, self.in_channels, self.kernel_size
                ),
                detail: format!(
                    "{kernel_elements} entries, over the limit of {MAX_KERNEL_ELEMENTS}"
                ),
            });
        }
        tt_core::check_parameter_count(&shape, &self.resolved_ranks()?)?;
        Ok(geometry)
    }

    /// The rank vector `(1, r_1..r_{d+1}, 1)` of the spec on [`Self::tt_shape`] (TensorLy's
    /// `validate_tt_rank`, not capped: a layer accepts ranks above the unfolding sizes).
    pub fn resolved_ranks(&self) -> Result<Vec<usize>> {
        self.rank
            .resolve_with(&self.tt_shape(), self.rank_options)
            .map_err(|e| Error::Config {
                field: "rank",
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_zero_after() {
        let cfg = TtConvConfig::new(2, 3, vec![4, 3])
            .padding(Padding::Same)
            .dilation([1, 2]);
        let g = cfg.validate().unwrap();
        assert_eq!((g[0].pad_before, g[0].pad_after), (1, 2));
        assert_eq!((g[1].pad_before, g[1].pad_after), (2, 2));
        let strided = cfg.stride(2);
        assert!(matches!(
            strided.validate(),
            Err(Error::Config {
                field: "padding",
                ..
            })
        ));
    }

    #[test]
    fn errors_name_the_field() {
        let field = |c: TtConvConfig| match c.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(field(TtConvConfig::new(0, 3, vec![3])), "in_channels");
        assert_eq!(field(TtConvConfig::new(3, 0, vec![3])), "out_channels");
        assert_eq!(field(TtConvConfig::new(3, 3, vec![])), "kernel_size");
        assert_eq!(field(TtConvConfig::new(3, 3, vec![3, 0])), "kernel_size");
        assert_eq!(field(TtConvConfig::new(3, 3, vec![3]).stride(0)), "stride");
        assert_eq!(
            field(TtConvConfig::new(3, 3, vec![3]).dilation([1, 1])),
            "dilation"
        );
        assert_eq!(
            field(TtConvConfig::new(3, 3, vec![3]).padding([1, 1])),
            "padding"
        );
        assert_eq!(
            field(TtConvConfig::new(3, 3, vec![3]).rank(RankSpec::Explicit(vec![1, 2, 1]))),
            "rank"
        );
        assert_eq!(
            field(TtConvConfig::new(3, 3, vec![3]).rank(RankSpec::Explicit(vec![2, 2, 2, 1]))),
            "rank"
        );
    }
}
