//! Dense 2-D 3x3 convolution with unit stride and dilation by Winograd's F(2x2, 3x3).
//!
//! Each 2x2 block of outputs at `(2i, 2j)` reads a 4x4 tile `d` of the (zero-padded) input at
//! padded position `(2i, 2j)`. With `B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]`,
//! `G = [[1,0,0],[1/2,1/2,1/2],[1/2,-1/2,1/2],[0,0,1]]` and `A^T = [[1,1,1,0],[0,1,-1,-1]]`:
//!
//! `Y_o = A^T [ sum_c (G g_{o,c} G^T) .* (B^T d_c B) ] A`
//!
//! so, for each of the 16 positions `xi` of the 4x4 transform domain,
//! `M_xi (out, tiles) = U_xi (out, cin) V_xi (cin, tiles)` with `U = G g G^T` (the kernel,
//! transformed once and cached in the weight) and `V = B^T d B` (the input). That is 16 GEMMs of
//! `out x cin x tiles` instead of 9 of the same size for im2col: 4 multiply-adds per output and
//! input channel pair instead of 9, for the price of the two transforms (linear in the data).
//!
//! Rounding: every transform entry is a sum of at most 4 terms with coefficients of magnitude
//! 1/2 or 1, so `U` and `V` carry a relative error of a few ulps, and the output transform adds
//! at most 4 terms more; the tests bound the error against the f64 oracle.

use ndarray::{Array3, ArrayView1, ArrayView2, ArrayView3, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::conv_dense::DenseShape;
use crate::gemm::gemm;

/// Transform-domain positions.
const XI: usize = 16;

/// Tiles per task: the task's `V` (16 x cin x tiles) and `M` (16 x out x tiles) blocks aim at
/// this many floats together.
const BLOCK_FLOATS: usize = 192 * 1024;

/// The plan of one convolution.
#[derive(Debug)]
pub(crate) struct Winograd {
    cin: usize,
    in_spatial: [usize; 2],
    out_spatial: [usize; 2],
    pad: [usize; 2],
    /// Tiles per axis: `ceil(out / 2)`.
    tiles: [usize; 2],
}

impl Winograd {
    /// The plan for `shape`, or `None` unless it is 2-D, 3x3, stride 1 and dilation 1.
    pub(crate) fn new(shape: &DenseShape) -> Option<Self> {
        let unit = shape
            .geometry
            .iter()
            .all(|g| g.stride == 1 && g.dilation == 1);
        if shape.kernel != [3, 3] || !unit || shape.out_spatial.contains(&0) {
            return None;
        }
        let out = [shape.out_spatial[0], shape.out_spatial[1]];
        Some(Self {
            cin: shape.cin,
            in_spatial: [shape.in_spatial[0], shape.in_spatial[1]],
            out_spatial: out,
            pad: [shape.geometry[0].pad_before, shape.geometry[1].pad_before],
            tiles: [out[0].div_ceil(2), out[1].div_ceil(2)],
        })
    }

    fn tile_count(&self) -> usize {
        self.tiles[0] * self.tiles[1]
    }
}

/// `U_xi[o, c]` for every `xi`, `(16, out, cin)` flattened: `U = G g G^T` of each 3x3 kernel
/// slice `g = kernel[o, c]` (`kernel` as `(out, cin * 9)`).
pub(crate) fn transform_kernel(kernel: ArrayView2<'_, f32>) -> Vec<f32> {
    let (out, rows) = kernel.dim();
    let cin = rows / 9;
    let mut u = vec![0.0f32; XI * out * cin];
    for o in 0..out {
        for c in 0..cin {
            let g = |i: usize, j: usize| kernel[[o, c * 9 + i * 3 + j]];
            // t = G g (4 x 3), then U = t G^T (4 x 4).
            let mut t = [[0.0f32; 3]; 4];
            for j in 0..3 {
                let (a, b, cc) = (g(0, j), g(1, j), g(2, j));
                t[0][j] = a;
                t[1][j] = 0.5 * (a + b + cc);
                t[2][j] = 0.5 * (a - b + cc);
                t[3][j] = cc;
            }
            for (i, row) in t.iter().enumerate() {
                let (a, b, cc) = (row[0], row[1], row[2]);
                let v = [a, 0.5 * (a + b + cc), 0.5 * (a - b + cc), cc];
                for (j, &val) in v.iter().enumerate() {
                    u[((i * 4 + j) * out + o) * cin + c] = val;
                }
            }
        }
    }
    u
}

/// `B^T d B` of a 4x4 tile.
fn transform_tile(d: &[[f32; 4]; 4]) -> [[f32; 4]; 4] {
    // s = B^T d (rows), then s B (columns).
    let mut s = [[0.0f32; 4]; 4];
    for j in 0..4 {
        s[0][j] = d[0][j] - d[2][j];
        s[1][j] = d[1][j] + d[2][j];
        s[2][j] = d[2][j] - d[1][j];
        s[3][j] = d[1][j] - d[3][j];
    }
    let mut v = [[0.0f32; 4]; 4];
    for i in 0..4 {
        v[i][0] = s[i][0] - s[i][2];
        v[i][1] = s[i][1] + s[i][2];
        v[i][2] = s[i][2] - s[i][1];
        v[i][3] = s[i][1] - s[i][3];
    }
    v
}

/// `A^T m A` of a 4x4 block: the 2x2 outputs.
fn transform_output(m: &[[f32; 4]; 4]) -> [[f32; 2]; 2] {
    let mut s = [[0.0f32; 4]; 2];
    for j in 0..4 {
        s[0][j] = m[0][j] + m[1][j] + m[2][j];
        s[1][j] = m[1][j] - m[2][j] - m[3][j];
    }
    let mut y = [[0.0f32; 2]; 2];
    for i in 0..2 {
        y[i][0] = s[i][0] + s[i][1] + s[i][2];
        y[i][1] = s[i][1] - s[i][2] - s[i][3];
    }
    y
}

/// The forward of `x (B, cin, D_0 * D_1)` with the transformed kernel `u` (of
/// [`transform_kernel`]) for `out` output channels; returns `(B, out, out_0 * out_1)`.
pub(crate) fn forward(
    x: ArrayView3<'_, f32>,
    u: &[f32],
    out: usize,
    bias: Option<ArrayView1<'_, f32>>,
    plan: &Winograd,
) -> Array3<f32> {
    let batch = x.dim().0;
    let [oh, ow] = plan.out_spatial;
    let mut y = Array3::<f32>::zeros((batch, out, oh * ow));
    let cin = plan.cin;
    if batch == 0 || out == 0 {
        return y;
    }
    let tiles = plan.tile_count();
    let per_tile = XI * (cin + out);
    let block = (BLOCK_FLOATS / per_tile.max(1)).clamp(16, tiles.max(16));
    let xs = x.as_slice().expect("activations are in standard layout");
    let [ih, iw] = plan.in_spatial;
    let in_item = cin * ih * iw;
    // Tasks: (item, block of tiles); each computes its outputs into a buffer of its own, then the
    // buffers are written to `y` (disjoint output positions per task).
    let tasks: Vec<(usize, usize)> = (0..batch)
        .flat_map(|b| (0..tiles).step_by(block).map(move |t0| (b, t0)))
        .collect();
    let results: Vec<(usize, usize, Vec<f32>)> = tasks
        .into_par_iter()
        .map(|(b, t0)| {
            let n = block.min(tiles - t0);
            let xb = &xs[b * in_item..(b + 1) * in_item];
            // V (16, cin, n).
            let mut v = vec![0.0f32; XI * cin * n];
            for c in 0..cin {
                let plane = &xb[c * ih * iw..(c + 1) * ih * iw];
                for k in 0..n {
                    let t = t0 + k;
                    let (ti, tj) = (t / plan.tiles[1], t % plan.tiles[1]);
                    let mut d = [[0.0f32; 4]; 4];
                    for (r, row) in d.iter_mut().enumerate() {
                        let i = (2 * ti + r) as isize - plan.pad[0] as isize;
                        if i < 0 || i as usize >= ih {
                            continue;
                        }
                        for (s, val) in row.iter_mut().enumerate() {
                            let j = (2 * tj + s) as isize - plan.pad[1] as isize;
                            if j >= 0 && (j as usize) < iw {
                                *val = plane[i as usize * iw + j as usize];
                            }
                        }
                    }
                    let tv = transform_tile(&d);
                    for (xi, val) in tv.iter().flatten().enumerate() {
                        v[(xi * cin + c) * n + k] = *val;
                    }
                }
            }
            // M_xi = U_xi V_xi, (16, out, n).
            let mut m = vec![0.0f32; XI * out * n];
            for xi in 0..XI {
                let a =
                    ArrayView2::from_shape((out, cin), &u[xi * out * cin..(xi + 1) * out * cin])
                        .expect("U_xi is (out, cin)");
                let bm = ArrayView2::from_shape((cin, n), &v[xi * cin * n..(xi + 1) * cin * n])
                    .expect("V_xi is (cin, n)");
                let c =
                    ArrayViewMut2::from_shape((out, n), &mut m[xi * out * n..(xi + 1) * out * n])
                        .expect("M_xi is (out, n)");
                gemm(c, false, a, bm);
            }
            // The 2x2 outputs of each tile, (out, n, 4).
            let mut yb = vec![0.0f32; out * n * 4];
            for o in 0..out {
                for k in 0..n {
                    let mut mm = [[0.0f32; 4]; 4];
                    for (xi, val) in mm.iter_mut().flatten().enumerate() {
                        *val = m[(xi * out + o) * n + k];
                    }
                    let y2 = transform_output(&mm);
                    let base = (o * n + k) * 4;
                    yb[base..base + 4].copy_from_slice(&[y2[0][0], y2[0][1], y2[1][0], y2[1][1]]);
                }
            }
            (b, t0, yb)
        })
        .collect();
    for (b, t0, yb) in results {
        let n = yb.len() / (out * 4);
        let mut item = y.index_axis_mut(Axis(0), b);
        for o in 0..out {
            let bo = bias.as_ref().map_or(0.0, |bv| bv[o]);
            let mut row = item.index_axis_mut(Axis(0), o);
            let row = row.as_slice_mut().expect("a fresh array is contiguous");
            for k in 0..n {
                let t = t0 + k;
                let (ti, tj) = (t / plan.tiles[1], t % plan.tiles[1]);
                for (q, &val) in yb[(o * n + k) * 4..(o * n + k) * 4 + 4].iter().enumerate() {
                    let (i, j) = (2 * ti + q / 2, 2 * tj + q % 2);
                    if i < oh && j < ow {
                        row[i * ow + j] = val + bo;
                    }
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::DenseCase;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against the f64 oracle (`DenseCase::check`: within 1e-5 of the scale of the sums) on
        /// 3x3 stride-1 cases with any padding, odd and even sizes, tiles cut at every edge. The
        /// transforms add sums of at most 4 terms with coefficients 1/2 and 1 on each side of
        /// the f32 GEMMs (module docs), a few ulps of that scale.
        #[test]
        fn forward_matches_the_oracle(
            batch in 1usize..=2,
            cin in 1usize..=6,
            cout in 1usize..=6,
            first in (1usize..=11, Just(3usize), Just(1usize), 0usize..=2, 0usize..=2, Just(1usize)),
            last in (1usize..=11, Just(3usize), Just(1usize), 0usize..=2, 0usize..=2, Just(1usize)),
            bias in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let Some(c) = DenseCase::new(batch, cin, cout, &[first, last], bias, seed) else {
                return Ok(());
            };
            let plan = Winograd::new(&c.dense_shape()).expect("3x3, unit stride and dilation");
            let u = transform_kernel(c.kernel_matrix());
            let got = forward(c.x3(), &u, cout, c.bias.as_ref().map(|b| b.view()), &plan);
            c.check(&got)?;
        }
    }

    #[test]
    fn applicability() {
        let g = |stride, dilation| ttconv::AxisGeometry {
            stride,
            dilation,
            pad_before: 1,
            pad_after: 1,
        };
        let plan = |k: &[usize], geo: &[ttconv::AxisGeometry]| {
            Winograd::new(&DenseShape::new(2, &vec![8; k.len()], k, geo).unwrap())
        };
        assert!(plan(&[3, 3], &[g(1, 1), g(1, 1)]).is_some());
        assert!(plan(&[3, 3], &[g(2, 1), g(1, 1)]).is_none());
        assert!(plan(&[3, 3], &[g(1, 2), g(1, 1)]).is_none());
        assert!(plan(&[5, 5], &[g(1, 1), g(1, 1)]).is_none());
        assert!(plan(&[3], &[g(1, 1)]).is_none());
    }
}
