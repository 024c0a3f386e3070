//! Dense 2-D convolution with unit stride along the first axis, by an im2col over the last axis
//! only: the taps of the first axis become column offsets of GEMM operands.
//!
//! For each input item, `R` has one row per `(c, t_1)` (input channel, tap along the last axis)
//! and one column per point of the *grid* `(P_0, out_1)`, `P_0 = D_0 + pad_before_0 +
//! pad_after_0` the padded height:
//! `R[(c, t_1), (i, w)] = x[c, i - pad_0, w * stride_1 + t_1 * dil_1 - pad_1]` (zero in the
//! padding). Output position `o = (o_0, o_1)` and first-axis tap `t_0` read grid point
//! `(o_0 + t_0 dil_0, o_1)`, i.e. flat grid index `o + off(t_0)` with `off(t_0) = t_0 dil_0 out_1`
//! (the grid's last axis is the output's, so output positions and grid columns coincide). So for
//! every `t_0`, `y[:, q] += K_{t_0} (out, cin * k_1) * R[:, q + off(t_0)]`: one GEMM per tap of
//! the first axis whose right operand is a window of `R`, no copy per tap.
//!
//! Why: the full im2col copies `cin * k_0 * k_1` floats per output position, and faer then packs
//! the same data again for its micro-kernel (it packs the left operand of its transposed problem
//! whenever there are more than 12 output channels); `R` holds `cin * k_1` per position, 3x less
//! for a 3 x 3 kernel. Measured (2 threads, batch 8, 3 x 3, same padding): 64 channels at 56 x 56
//! 5.2 -> 4.7-4.9 ms, 128 at 28 x 28 4.8-5.2 -> 4.5-4.7 ms. Not taken for small images (blocks
//! stay within an item and need several 96-wide GEMM tiles: 14 x 14 lost 19%, 7 x 7 2x) nor in
//! 3-D, where the same construction (9 GEMMs of `k = 3 cin` for 3 x 3 x 3) measured 2.98 against
//! im2col's 2.74 ms (32 channels, 8 x 28 x 28): faer still packs every tap's operand, and the
//! output block is reloaded once per GEMM.

use std::ops::Range;

use ndarray::{Array3, ArrayView1, ArrayView2, ArrayView3, Axis, ShapeBuilder};
use rayon::prelude::*;
use ttconv::AxisGeometry;

use crate::conv_dense::DenseShape;
use crate::gemm::{GEMM_TILE, gemm, tile_aligned};
use crate::par::{chunk_len, column_tasks, scratch};
use crate::taps::valid_outputs;

/// Floats of a task's slab of `R` the block size aims for: half of the 1 MiB L2.
const SLAB_FLOATS: usize = 128 * 1024;
/// Fewest output positions per item: blocks stay within one item and need several GEMM tiles.
const MIN_POSITIONS: usize = 4 * GEMM_TILE;

/// The geometry of one 2-D dense convolution on the grid of `R`.
#[derive(Debug)]
pub(crate) struct RowIm2col {
    cin: usize,
    /// Input `(D_0, D_1)` and output `(out_0, out_1)` sizes.
    in_spatial: [usize; 2],
    out_spatial: [usize; 2],
    geometry: [AxisGeometry; 2],
    /// Taps along the last axis.
    k_last: usize,
    /// Per first-axis tap `t_0`: `off(t_0) = t_0 dil_0 out_1`.
    offsets: Vec<usize>,
}

impl RowIm2col {
    /// The plan for the convolution of `shape` (an input `(B, cin, D_0, D_1)`), or `None` when it does not apply or is not expected to pay: not 2-D, a
    /// first-axis stride other than 1, fewer than [`MIN_POSITIONS`] output positions, an
    /// empty operand.
    pub(crate) fn new(shape: &DenseShape) -> Option<Self> {
        let (cin, in_spatial, out_spatial) = (shape.cin, &shape.in_spatial, &shape.out_spatial);
        let (kernel, geometry) = (&shape.kernel, &shape.geometry);
        if in_spatial.len() != 2
            || cin == 0
            || in_spatial.contains(&0)
            || geometry[0].stride != 1
            || out_spatial[0] * out_spatial[1] < MIN_POSITIONS
        {
            return None;
        }
        let offsets = (0..kernel[0])
            .map(|t| t * geometry[0].dilation * out_spatial[1])
            .collect();
        Some(Self {
            cin,
            in_spatial: [in_spatial[0], in_spatial[1]],
            out_spatial: [out_spatial[0], out_spatial[1]],
            geometry: [geometry[0], geometry[1]],
            k_last: kernel[1],
            offsets,
        })
    }

    /// Rows of `R`: `cin * k_1`.
    fn rows(&self) -> usize {
        self.cin * self.k_last
    }

    /// Fills `r` (`rows` rows of `ld >= cols.len()` floats, row-major) with the grid columns
    /// `cols` of `R` for item `xb` (`cin x D_0 D_1`, row-major).
    fn fill(&self, xb: &[f32], cols: Range<usize>, r: &mut [f32], ld: usize) {
        let [in_0, in_1] = self.in_spatial;
        let out_1 = self.out_spatial[1];
        let (g0, g1) = (&self.geometry[0], &self.geometry[1]);
        if cols.is_empty() {
            return;
        }
        let lines = cols.start / out_1..(cols.end - 1) / out_1 + 1;
        for c in 0..self.cin {
            let xc = &xb[c * in_0 * in_1..(c + 1) * in_0 * in_1];
            for t in 0..self.k_last {
                let row = &mut r[(c * self.k_last + t) * ld..][..cols.len()];
                let valid = valid_outputs(g1, t, in_1, out_1);
                // Input position of output `w` along the last axis: `w * stride + shift`.
                let shift = (t * g1.dilation) as isize - g1.pad_before as isize;
                for line in lines.clone() {
                    // The part of this grid line inside `cols`, as positions `w` along it.
                    let w0 = cols.start.max(line * out_1) - line * out_1;
                    let w1 = cols.end.min((line + 1) * out_1) - line * out_1;
                    let dst = &mut row[line * out_1 + w0 - cols.start..][..w1 - w0];
                    let (lo, hi) = (valid.start.clamp(w0, w1), valid.end.clamp(w0, w1));
                    // Input row `line - pad_0`, if not in the padding.
                    let input_row = line
                        .checked_sub(g0.pad_before)
                        .filter(|&i| i < in_0 && lo < hi);
                    let Some(i) = input_row else {
                        dst.fill(0.0);
                        continue;
                    };
                    dst[..lo - w0].fill(0.0);
                    dst[hi - w0..].fill(0.0);
                    // In range: `lo..hi` lies inside `valid`.
                    let src0 = ((i * in_1 + lo * g1.stride) as isize + shift) as usize;
                    let out = &mut dst[lo - w0..hi - w0];
                    if g1.stride == 1 {
                        out.copy_from_slice(&xc[src0..src0 + out.len()]);
                    } else {
                        for (k, v) in out.iter_mut().enumerate() {
                            *v = xc[src0 + k * g1.stride];
                        }
                    }
                }
            }
        }
    }
}

/// Forward: `x` `(B, cin, D_0 D_1)` (standard layout), `kernel` `(out, cin * k_0 * k_1)`
/// (columns `(c, t_0, t_1)` row-major), optional `bias` `(out,)`; returns `(B, out, out_0 out_1)`.
///
/// Tasks: (batch item, block of output positions); each fills the slab of `R` its block reads
/// (its columns plus the largest first-axis offset, sized for the L2) and runs one GEMM per
/// first-axis tap on windows of it, straight into `y`.
pub(crate) fn forward(
    x: ArrayView3<'_, f32>,
    kernel: ArrayView2<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    plan: &RowIm2col,
) -> Array3<f32> {
    let batch = x.dim().0;
    let out = kernel.dim().0;
    let out_size = plan.out_spatial[0] * plan.out_spatial[1];
    let mut y = Array3::<f32>::zeros((batch, out, out_size));
    if batch == 0 || out == 0 {
        return y;
    }
    let rows = plan.rows();
    let k_first = plan.offsets.len();
    // K_t (out, cin * k_1) for every first-axis tap t: the kernel's columns (c, t, t_1).
    let taps = k_first * plan.k_last;
    let per_tap = Array3::from_shape_fn((k_first, out, rows), |(t, o, r)| {
        let (c, tl) = (r / plan.k_last, r % plan.k_last);
        kernel[[o, c * taps + t * plan.k_last + tl]]
    });
    let in_item = x.dim().2 * plan.cin;
    let max_off = plan.offsets.last().copied().unwrap_or(0);
    let by_slab = (SLAB_FLOATS / rows.max(1)).saturating_sub(max_off);
    let chunk = chunk_len(
        batch,
        out_size,
        out * rows * k_first,
        by_slab.max(2 * GEMM_TILE),
    );
    let chunk = tile_aligned(chunk);
    let xs = x.as_slice().expect("activations are in standard layout");
    column_tasks(y.view_mut(), chunk, 1)
        .into_par_iter()
        .for_each(|(b, q, mut yb)| {
            let xb = &xs[b * in_item..(b + 1) * in_item];
            let n = q.len();
            let ld = n + max_off;
            let mut slab = scratch::take(rows * ld);
            plan.fill(xb, q.start..q.start + ld, &mut slab, ld);
            if let Some(bias) = &bias {
                for (mut row, &v) in yb.outer_iter_mut().zip(bias) {
                    row.fill(v);
                }
            }
            for (t, &start) in plan.offsets.iter().enumerate() {
                // (rows, n) with row stride `ld`: the last row ends at
                // `(rows - 1) * ld + start + n <= rows * ld`.
                let len = (rows - 1) * ld + n;
                let window =
                    ArrayView2::from_shape((rows, n).strides((ld, 1)), &slab[start..start + len])
                        .expect("the tap's window lies inside the slab");
                let acc = t > 0 || bias.is_some();
                gemm(yb.view_mut(), acc, per_tap.index_axis(Axis(0), t), window);
            }
            scratch::give(slab);
        });
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::DenseCase;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Called directly (the backend prefers the direct kernel where AVX-512 exists), on
        /// 2-D images of at least 384 positions with any stride along the last axis, against the
        /// f64 oracle.
        #[test]
        fn forward_matches_the_oracle(
            batch in 1usize..=2,
            cin in 1usize..=4,
            cout in 1usize..=5,
            first in (20usize..=28, 1usize..=3, 1usize..=2, 0usize..=2, 0usize..=2, Just(1usize)),
            last in (24usize..=40, 1usize..=3, 1usize..=2, 0usize..=2, 0usize..=2, 1usize..=3),
            bias in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let Some(c) = DenseCase::new(batch, cin, cout, &[first, last], bias, seed) else {
                return Ok(());
            };
            let Some(plan) = RowIm2col::new(&c.dense_shape()) else {
                return Ok(());
            };
            let got = forward(c.x3(), c.kernel_matrix(), c.bias.as_ref().map(|b| b.view()), &plan);
            c.check(&got)?;
        }
    }

    #[test]
    fn offsets_and_applicability() {
        let g = AxisGeometry {
            stride: 1,
            dilation: 2,
            pad_before: 1,
            pad_after: 1,
        };
        let last = AxisGeometry {
            stride: 2,
            dilation: 1,
            ..g
        };
        let plan = |spatial: &[usize], geometry: &[AxisGeometry]| {
            let kernel = vec![3; spatial.len()];
            RowIm2col::new(&DenseShape::new(3, spatial, &kernel, geometry).unwrap())
        };
        // Output 38 x 20: the first axis's dilation 2 spans 5 rows, offsets 2 rows of 20 apart.
        assert_eq!(
            plan(&[40, 40], &[g, last]).unwrap().offsets,
            vec![0, 40, 80]
        );
        let strided = AxisGeometry { stride: 2, ..g };
        assert!(plan(&[40, 40], &[strided, g]).is_none());
        assert!(plan(&[14, 14], &[g, g]).is_none());
        assert!(plan(&[900], &[g]).is_none());
    }
}
