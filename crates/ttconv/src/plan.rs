//! The factorized plan: which steps of the chain a backend runs for one input shape.
//!
//! The plain chain is `contract (in -> r_1)`, one 1-D convolution per spatial mode
//! `(r_{j+1} -> r_{j+2})`, `contract (r_{d+1} -> out)`. When a rank exceeds what it connects
//! (e.g. TensorLy's `'same'` ranks `(921, 21, 921)` on a 256-channel layer), contracting first
//! costs more than convolving directly with the merged core, so the plan may merge:
//! - the head: `G_0 G_1` as one core `(in, k_1, r_2)`, the first convolution reading the input
//!   channels directly, when `in * k_1 * r_2 * S_1 < in * r_1 * S_0 + r_1 * k_1 * r_2 * S_1`;
//! - the tail: `G_d G_{d+1}` as one core `(r_d, k_d, out)`, the last convolution writing the
//!   output channels, when `r_d * k_d * out < r_d * k_d * r_{d+1} + r_{d+1} * out` (same
//!   positions on both sides), and not for `d = 1` when the head is merged (that would be the
//!   dense convolution).
//!
//! `S_j` is the spatial size after mode `j` (see [`crate::cost`]). Both merges give the same
//! result up to rounding; the cost model and every backend follow this plan.

use crate::cost::LayerShape;
use crate::geometry::output_spatial;

/// Which ends of the factorized chain are merged into their neighbouring convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FactorizedPlan {
    /// `G_0` merged into the first spatial core.
    pub merge_head: bool,
    /// `G_{d+1}` merged into the last spatial core.
    pub merge_tail: bool,
}

impl FactorizedPlan {
    /// The plan for a layer shape; the plain chain where output sizes cannot be computed (the
    /// caller reports that error).
    pub fn for_shape(s: &LayerShape<'_>) -> Self {
        let d = s.kernel_size.len();
        let Ok(out_sp) = output_spatial(s.input_spatial, s.kernel_size, s.geometry) else {
            return Self::default();
        };
        if d == 0 || s.ranks.len() != d + 3 {
            return Self::default();
        }
        let prod = |v: &[usize]| v.iter().map(|&x| x as u128).product::<u128>();
        let s0 = prod(s.input_spatial);
        let s1 = prod(&out_sp[..1]) * prod(&s.input_spatial[1..]);
        let (cin, cout) = (s.in_channels as u128, s.out_channels as u128);
        let r = |i: usize| s.ranks[i] as u128;
        let k = |j: usize| s.kernel_size[j] as u128;
        let merge_head = cin * k(0) * r(2) * s1 < cin * r(1) * s0 + r(1) * k(0) * r(2) * s1;
        let (rd, re) = (r(d), r(d + 1));
        let merge_tail =
            (d >= 2 || !merge_head) && rd * k(d - 1) * cout < rd * k(d - 1) * re + re * cout;
        Self {
            merge_head,
            merge_tail,
        }
    }
}
