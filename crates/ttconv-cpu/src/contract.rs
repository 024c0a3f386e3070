//! Channel contractions (1x1 convolutions) and their gradients, as GEMMs per batch item.
//!
//! The activation `(B, c, D_1..D_d)` is viewed as `(B, c, S)` with `S = prod(D)`; item `b` is the
//! row-major matrix `x_b (c, S)`.

use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3, Axis, s};
use rayon::prelude::*;

use crate::gemm::gemm;
use crate::par::{chunk_len, column_tasks, reduction_groups, row_block, sum_partials};

/// `y_b (m, S) = lhs (m, c) * x_b (c, S) + bias` for every batch item of `x` `(B, c, S)`;
/// `bias`, if given, has `m` entries. Returns `(B, m, S)`.
///
/// The forward contraction is `lhs = w^T`, its input gradient `lhs = w`. Tasks are (batch item,
/// block of spatial columns), so both cores work even at batch 1.
pub(crate) fn channel_gemm(
    x: ArrayView3<'_, f32>,
    lhs: ArrayView2<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
) -> Array3<f32> {
    let (batch, c, spatial) = x.dim();
    let m = lhs.nrows();
    debug_assert_eq!(lhs.ncols(), c);
    let mut y = Array3::<f32>::zeros((batch, m, spatial));
    let chunk = chunk_len(batch, spatial, m * c, usize::MAX);
    column_tasks(y.view_mut(), chunk, 1)
        .into_par_iter()
        .for_each(|(b, cols, mut yb)| {
            if let Some(bias) = &bias {
                for (mut row, &v) in yb.outer_iter_mut().zip(bias) {
                    row.fill(v);
                }
            }
            gemm(
                yb,
                bias.is_some(),
                lhs,
                x.slice(s![b, .., cols.start..cols.end]),
            );
        });
    y
}

/// `gw (c_in, c_out) = sum_b x_b (c_in, S) * gy_b^T (S, c_out)` for `x` `(B, c_in, S)` and
/// `gy` `(B, c_out, S)` (same `B`, `S`), reduced deterministically over blocks of columns; the
/// rows of `gw` are split too when there are few blocks (a large `gw` from little data).
pub(crate) fn weight_grad(x: ArrayView3<'_, f32>, gy: ArrayView3<'_, f32>) -> Array2<f32> {
    let (batch, cin, spatial) = x.dim();
    let cout = gy.dim().1;
    let groups = reduction_groups(batch, spatial, cin * cout, cin * cout);
    let rows = row_block(cin, groups.len(), batch * spatial * cout);
    sum_partials(&groups, (cin, cout), rows, |group, r, mut acc| {
        for (b, cols) in group {
            let xb = x.slice(s![*b, r.start..r.end, cols.start..cols.end]);
            let gyb = gy.slice(s![*b, .., cols.start..cols.end]);
            gemm(acc.view_mut(), true, xb, gyb.t());
        }
    })
}

/// `gb[o] = sum_{b, s} gy[b, o, s]` for `gy` `(B, out, S)`, each row summed with ndarray's
/// pairwise sum and the per-item sums added in f64.
pub(crate) fn bias_grad(gy: ArrayView3<'_, f32>) -> Array1<f32> {
    let (_, out, _) = gy.dim();
    let sums: Vec<f32> = (0..out)
        .into_par_iter()
        .map(|o| {
            gy.index_axis(Axis(1), o)
                .outer_iter()
                .map(|row| f64::from(row.sum()))
                .sum::<f64>() as f32
        })
        .collect();
    Array1::from(sums)
}
