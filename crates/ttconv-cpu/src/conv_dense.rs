//! Dense N-D convolution (any number of spatial axes) and its gradients, by im2col + GEMM.
//!
//! The im2col matrix of batch item `b` has one row per `(c, t_1..t_d)` (`rows = in * prod(k)`,
//! the column order of the kernel viewed as a matrix `(out, rows)`) and one column per output
//! position `q` (row-major over the output spatial shape):
//! `col[(c, t), q] = x[b, c, p(q) * stride + t * dilation - pad_before]`, zero in the padding.
//! It is only ever built for a block of output positions sized to stay in L2
//! ([`SCRATCH_BYTES`]), in a per-task buffer. Then
//! - forward: `y_b[:, block] = K (out, rows) * col`;
//! - kernel gradient: `gK += gy_b[:, block] * col^T`, reduced deterministically;
//! - input gradient: `colG = K^T gy_b[:, block]`, scattered back (col2im) into `gx_b`; tasks own
//!   disjoint blocks of input channels, so the scatters never race.
//!
//! A pointwise convolution (every kernel size 1, stride 1, no padding) skips im2col: it is the
//! channel contraction.

use std::ops::Range;

use ndarray::{Array2, Array3, ArrayView1, ArrayView2, ArrayView3, Axis, s};
use rayon::prelude::*;
use ttconv::{AxisGeometry, Result, output_spatial};

use crate::contract::{channel_gemm, weight_grad};
use crate::gemm::{GEMM_TILE, gemm, tile_aligned};
use crate::par::{
    SCRATCH_BYTES, blocks_per_item, chunk_len, column_tasks, ranges, reduction_groups, row_tasks,
    scratch, sum_partials,
};
use crate::taps::{row_major_taps, tap_offset, valid_outputs};

/// Fewest output positions per im2col block, however many rows (keeps the GEMMs wide).
const MIN_BLOCK_COLS: usize = 32;

/// The sizes of one dense convolution, validated once by the backend's entry points: an input
/// `(B, cin, in_spatial)`, kernel sizes and per-axis geometry (all of length `d >= 1`), and the
/// output spatial shape they give. Every dense algorithm ([`Dense`], `RowIm2col`, `Direct`)
/// plans from this one value.
#[derive(Clone, Debug)]
pub(crate) struct DenseShape {
    /// Input channels.
    pub(crate) cin: usize,
    /// Input spatial shape.
    pub(crate) in_spatial: Vec<usize>,
    /// Output spatial shape.
    pub(crate) out_spatial: Vec<usize>,
    /// Kernel size per axis.
    pub(crate) kernel: Vec<usize>,
    /// Stride, dilation and padding per axis.
    pub(crate) geometry: Vec<AxisGeometry>,
}

impl DenseShape {
    /// Checks that the lengths agree and the geometry is valid, and computes the output shape.
    pub(crate) fn new(
        cin: usize,
        in_spatial: &[usize],
        kernel: &[usize],
        geometry: &[AxisGeometry],
    ) -> Result<Self> {
        let d = geometry.len();
        if d == 0 || in_spatial.len() != d || kernel.len() != d {
            return Err(crate::check::shape(
                "conv_dense",
                format!("{d} >= 1 spatial axes in the input, the kernel and the geometry"),
                &[in_spatial.len(), kernel.len(), d],
            ));
        }
        crate::check::geometry(geometry)?;
        let out_spatial = output_spatial(in_spatial, kernel, geometry)?;
        Ok(Self {
            cin,
            in_spatial: in_spatial.to_vec(),
            out_spatial,
            kernel: kernel.to_vec(),
            geometry: geometry.to_vec(),
        })
    }
}

/// The geometry of one dense convolution, with the tables im2col needs.
#[derive(Debug)]
pub(crate) struct Dense {
    /// Input channels.
    cin: usize,
    /// Input spatial shape and its product.
    in_spatial: Vec<usize>,
    in_size: usize,
    /// Output spatial shape and its product.
    out_spatial: Vec<usize>,
    out_size: usize,
    /// Kernel taps `prod(k)`.
    taps: usize,
    /// Per-axis geometry.
    geometry: Vec<AxisGeometry>,
    /// Row-major strides of the input spatial shape.
    in_strides: Vec<usize>,
    /// Per tap (row-major over the kernel shape), `t_j * dilation_j - pad_before_j` per axis.
    offsets: Vec<isize>,
    /// Per tap, the valid output range along the last axis.
    last_valid: Vec<Range<usize>>,
    /// Every kernel size 1, stride 1 and no padding.
    pointwise: bool,
}

/// A run of consecutive output positions along the last axis: block column `col`, last-axis
/// positions `p`, and the output multi-index of the other axes (`outer`, `d - 1` entries).
struct Run {
    col: usize,
    p: Range<usize>,
    outer: Vec<usize>,
}

impl Dense {
    /// Tables for the convolution of `shape`.
    pub(crate) fn new(shape: &DenseShape) -> Self {
        let (cin, in_spatial, out_spatial) = (shape.cin, &shape.in_spatial, &shape.out_spatial);
        let (kernel, geometry) = (&shape.kernel, &shape.geometry);
        let d = in_spatial.len();
        let taps: usize = kernel.iter().product();
        let mut in_strides = vec![1usize; d];
        for j in (0..d.saturating_sub(1)).rev() {
            in_strides[j] = in_strides[j + 1] * in_spatial[j + 1];
        }
        let mut offsets = Vec::with_capacity(taps * d);
        let mut last_valid = Vec::with_capacity(taps);
        for t in row_major_taps(kernel) {
            for j in 0..d {
                offsets.push(tap_offset(&geometry[j], t[j]));
            }
            last_valid.push(valid_outputs(
                &geometry[d - 1],
                t[d - 1],
                in_spatial[d - 1],
                out_spatial[d - 1],
            ));
        }
        let pointwise = kernel.iter().all(|&k| k == 1)
            && geometry
                .iter()
                .all(|g| g.stride == 1 && g.pad_before == 0 && g.pad_after == 0);
        Self {
            cin,
            in_size: in_spatial.iter().product(),
            in_spatial: in_spatial.to_vec(),
            out_size: out_spatial.iter().product(),
            out_spatial: out_spatial.to_vec(),
            taps,
            geometry: geometry.to_vec(),
            in_strides,
            offsets,
            last_valid,
            pointwise,
        }
    }

    /// Every kernel size 1, stride 1 and no padding (a channel contraction).
    pub(crate) fn is_pointwise(&self) -> bool {
        self.pointwise
    }

    fn d(&self) -> usize {
        self.in_spatial.len()
    }

    /// Rows of the im2col matrix, `cin * prod(k)`.
    fn rows(&self) -> usize {
        self.cin * self.taps
    }

    /// The runs along the last axis covering the output positions `q`, in order.
    fn runs(&self, q: Range<usize>) -> Vec<Run> {
        let d = self.d();
        let last = self.out_spatial[d - 1];
        let mut runs = Vec::new();
        if q.is_empty() || last == 0 {
            return runs;
        }
        for outer in q.start / last..=(q.end - 1) / last {
            let start = q.start.saturating_sub(outer * last);
            let end = (q.end - outer * last).min(last);
            let mut idx = vec![0usize; d - 1];
            let mut rest = outer;
            for j in (0..d - 1).rev() {
                idx[j] = rest % self.out_spatial[j];
                rest /= self.out_spatial[j];
            }
            runs.push(Run {
                col: outer * last + start - q.start,
                p: start..end,
                outer: idx,
            });
        }
        runs
    }

    /// For every `(tap, run)` (tap-major): the input offset of the run's position on the other
    /// axes, or `None` when that position falls in the padding.
    fn bases(&self, runs: &[Run]) -> Vec<Option<usize>> {
        let d = self.d();
        let mut out = Vec::with_capacity(self.taps * runs.len());
        for tap in 0..self.taps {
            let offs = &self.offsets[tap * d..(tap + 1) * d];
            for run in runs {
                let mut base = 0usize;
                let mut inside = true;
                for j in 0..d - 1 {
                    let i = (run.outer[j] * self.geometry[j].stride) as isize + offs[j];
                    if i < 0 || i as usize >= self.in_spatial[j] {
                        inside = false;
                        break;
                    }
                    base += i as usize * self.in_strides[j];
                }
                out.push(inside.then_some(base));
            }
        }
        out
    }

    /// Walks the im2col block of output positions `q` restricted to input channels `channels`:
    /// calls `f(row, block columns, Some(start))` for every stretch of entries read from the
    /// input (entry `j` of the stretch is input element `start + j * stride_last`) and
    /// `f(row, block columns, None)` for every stretch of padding. Rows and input offsets are
    /// relative to the first channel of `channels` (row `(c - c0) * taps + tap`, input offset
    /// `(c - c0) * in_size + position`).
    fn for_each_stretch(
        &self,
        channels: Range<usize>,
        q: Range<usize>,
        mut f: impl FnMut(usize, Range<usize>, Option<usize>),
    ) {
        let d = self.d();
        let runs = self.runs(q);
        let bases = self.bases(&runs);
        let s_last = self.geometry[d - 1].stride;
        for (ci, _) in channels.enumerate() {
            for tap in 0..self.taps {
                let row = ci * self.taps + tap;
                let lv = &self.last_valid[tap];
                let off = self.offsets[tap * d + d - 1];
                for (run, base) in runs.iter().zip(&bases[tap * runs.len()..]) {
                    let cols = run.col..run.col + run.p.len();
                    let lo = run.p.start.max(lv.start);
                    let hi = run.p.end.min(lv.end);
                    let Some(base) = base.filter(|_| lo < hi) else {
                        f(row, cols, None);
                        continue;
                    };
                    let (a, b) = (cols.start + lo - run.p.start, cols.start + hi - run.p.start);
                    if a > cols.start {
                        f(row, cols.start..a, None);
                    }
                    // In range by construction: `lo * s_last + off` is a valid last-axis index.
                    let start = (ci * self.in_size + base) as isize + (lo * s_last) as isize + off;
                    f(row, a..b, Some(start as usize));
                    if b < cols.end {
                        f(row, b..cols.end, None);
                    }
                }
            }
        }
    }

    /// Fills the first `q.len()` columns of `col` (`rows` rows of `ld >= q.len()` floats,
    /// row-major) with the im2col block of output positions `q` of one batch item `xb`
    /// (`cin x in_size`, row-major).
    fn im2col(&self, xb: &[f32], q: Range<usize>, col: &mut [f32], ld: usize) {
        debug_assert!(ld >= q.len());
        let s = self.geometry[self.d() - 1].stride;
        self.for_each_stretch(0..self.cin, q, |row, cols, start| {
            let dst = &mut col[row * ld + cols.start..row * ld + cols.end];
            match start {
                None => dst.fill(0.0),
                Some(start) if s == 1 => dst.copy_from_slice(&xb[start..start + dst.len()]),
                Some(start) => {
                    for (j, v) in dst.iter_mut().enumerate() {
                        *v = xb[start + j * s];
                    }
                }
            }
        });
    }

    /// Adds the block `col` (`channels.len() * taps x q.len()`, row-major) back onto the input
    /// positions it was read from: `gx` is `channels.len() x in_size`, row-major (col2im).
    fn col2im_add(&self, col: &[f32], channels: Range<usize>, q: Range<usize>, gx: &mut [f32]) {
        let n = q.len();
        let s = self.geometry[self.d() - 1].stride;
        self.for_each_stretch(channels, q, |row, cols, start| {
            let Some(start) = start else { return };
            let src = &col[row * n + cols.start..row * n + cols.end];
            if s == 1 {
                for (g, v) in gx[start..start + src.len()].iter_mut().zip(src) {
                    *g += v;
                }
            } else {
                for (j, v) in src.iter().enumerate() {
                    gx[start + j * s] += v;
                }
            }
        });
    }

    /// Output positions per im2col block with `rows` rows: the L2 budget, at least
    /// [`MIN_BLOCK_COLS`].
    fn block_cols(rows: usize) -> usize {
        (SCRATCH_BYTES / (4 * rows.max(1))).max(MIN_BLOCK_COLS)
    }
}

/// Forward: `x` `(B, cin, in_size)` (standard layout), `kernel` `(out, cin * taps)`, optional
/// `bias` `(out,)`; returns `(B, out, out_size)`.
///
/// Tasks: blocks of output positions (a multiple of [`GEMM_TILE`] where possible). When an item
/// has fewer than two tiles of positions (late ResNet stages: 7 x 7 = 49), a block spans batch
/// items, so the GEMM is not starved in its SIMD direction (512 channels at 7 x 7: 280 ->
/// 330 GFLOP/s per item whole; more across items).
pub(crate) fn forward(
    x: ArrayView3<'_, f32>,
    kernel: ArrayView2<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geo: &Dense,
) -> Array3<f32> {
    if geo.pointwise {
        return channel_gemm(x, kernel, bias);
    }
    if geo.out_size < 2 * GEMM_TILE && x.dim().0 > 1 {
        return forward_across_items(x, kernel, bias, geo);
    }
    let batch = x.dim().0;
    let (out, rows) = kernel.dim();
    let mut y = Array3::<f32>::zeros((batch, out, geo.out_size));
    let cols = Dense::block_cols(rows).max(2 * GEMM_TILE);
    let chunk = chunk_len(batch, geo.out_size, out * rows, cols);
    let chunk = tile_aligned(chunk);
    column_tasks(y.view_mut(), chunk, 1)
        .into_par_iter()
        .for_each(|(b, q, mut yb)| {
            let n = q.len();
            with_block(rows * n, |buf| {
                let xb = x.index_axis(Axis(0), b);
                let xb = xb.as_slice().expect("activations are in standard layout");
                geo.im2col(xb, q, buf, n);
                let col =
                    ArrayView2::from_shape((rows, n), &*buf).expect("buffer holds rows * n floats");
                if let Some(bias) = &bias {
                    for (mut row, &v) in yb.outer_iter_mut().zip(bias) {
                        row.fill(v);
                    }
                }
                gemm(yb, bias.is_some(), kernel, col);
            });
        });
    y
}

/// [`forward`] with blocks of columns running over the flattened `(item, position)` index: each
/// block's im2col holds the segments of every item it covers side by side, its GEMM writes a
/// block `(out, n)`, and the blocks are copied into place at the end.
fn forward_across_items(
    x: ArrayView3<'_, f32>,
    kernel: ArrayView2<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geo: &Dense,
) -> Array3<f32> {
    let batch = x.dim().0;
    let (out, rows) = kernel.dim();
    let m = geo.out_size;
    let total = batch * m;
    let threads = rayon::current_num_threads().max(1);
    let n = total.div_ceil(4 * threads).div_ceil(GEMM_TILE) * GEMM_TILE;
    let n = n.min(Dense::block_cols(rows).max(2 * GEMM_TILE)).max(1);
    let blocks: Vec<Range<usize>> = ranges(total, n).collect();
    let results: Vec<Array2<f32>> = blocks
        .par_iter()
        .map(|g| {
            let n = g.len();
            with_block(rows * n, |buf| {
                block_across_items(x, kernel, bias, geo, g, buf)
            })
        })
        .collect();
    let mut y = Array3::<f32>::zeros((batch, out, m));
    for (g, yb) in blocks.iter().zip(&results) {
        let mut at = g.start;
        while at < g.end {
            let (b, p) = (at / m, at % m);
            let len = (m - p).min(g.end - at);
            let c0 = at - g.start;
            y.slice_mut(s![b, .., p..p + len])
                .assign(&yb.slice(s![.., c0..c0 + len]));
            at += len;
        }
    }
    y
}

/// One block of [`forward_across_items`]: the output block `(out, g.len())` of the flattened
/// `(item, position)` range `g` (`m` positions per item), with `buf` (`rows * g.len()` floats)
/// as its im2col block.
fn block_across_items(
    x: ArrayView3<'_, f32>,
    kernel: ArrayView2<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geo: &Dense,
    g: &Range<usize>,
    buf: &mut [f32],
) -> Array2<f32> {
    let (out, rows) = kernel.dim();
    let (m, n) = (geo.out_size, g.len());
    let mut at = g.start;
    while at < g.end {
        let (b, p) = (at / m, at % m);
        let len = (m - p).min(g.end - at);
        let xb = x.index_axis(Axis(0), b);
        let xb = xb.as_slice().expect("activations are in standard layout");
        let c0 = at - g.start;
        geo.im2col(xb, p..p + len, &mut buf[c0..], n);
        at += len;
    }
    let col = ArrayView2::from_shape((rows, n), &*buf).expect("buffer holds rows * n floats");
    let mut yb = Array2::<f32>::zeros((out, n));
    if let Some(bias) = &bias {
        for (mut row, &v) in yb.outer_iter_mut().zip(bias) {
            row.fill(v);
        }
    }
    gemm(yb.view_mut(), bias.is_some(), kernel, col);
    yb
}

/// Runs `f` on an im2col block of `len` floats taken from the scratch pool (arbitrary contents:
/// `f` overwrites what it reads): allocating a block per task made the kernel map and zero fresh
/// pages on every call.
fn with_block<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = scratch::take(len);
    let r = f(&mut buf);
    scratch::give(buf);
    r
}

/// Input gradient: `gy` `(B, out, out_size)` (standard layout), `kernel` `(out, cin * taps)`;
/// returns `gx` `(B, cin, in_size)`. Tasks: (batch item, block of input channels), each walking
/// the output positions block by block: `colG = K[:, block rows]^T gy_b[:, q]`, then col2im.
pub(crate) fn grad_input(
    gy: ArrayView3<'_, f32>,
    kernel: ArrayView2<'_, f32>,
    geo: &Dense,
) -> Array3<f32> {
    if geo.pointwise {
        return channel_gemm(gy, kernel.t(), None);
    }
    let batch = gy.dim().0;
    let taps = geo.taps;
    let mut gx = Array3::<f32>::zeros((batch, geo.cin, geo.in_size));
    let cblk = geo.cin.div_ceil(blocks_per_item(batch, geo.cin)).max(1);
    let qblk = Dense::block_cols(cblk * taps);
    row_tasks(gx.view_mut(), cblk)
        .into_par_iter()
        .for_each(|(b, channels, mut gxb)| {
            let rows = channels.len() * taps;
            let lhs = kernel
                .slice(s![.., channels.start * taps..channels.end * taps])
                .reversed_axes();
            let gyb = gy.index_axis(Axis(0), b);
            let gxb = gxb
                .as_slice_mut()
                .expect("a block of whole rows is contiguous");
            for q in ranges(geo.out_size, qblk) {
                let n = q.len();
                with_block(rows * n, |buf| {
                    let col = ndarray::ArrayViewMut2::from_shape((rows, n), &mut *buf)
                        .expect("buffer holds rows * n floats");
                    gemm(col, false, lhs, gyb.slice(s![.., q.start..q.end]));
                    geo.col2im_add(buf, channels.clone(), q, gxb);
                });
            }
        });
    gx
}

/// Kernel gradient: `x` `(B, cin, in_size)` (standard layout), `gy` `(B, out, out_size)`;
/// returns `gK` `(out, cin * taps)` = `sum_b sum_blocks gy_b[:, q] col_b(q)^T`, reduced
/// deterministically over groups of output positions.
pub(crate) fn grad_weight(
    x: ArrayView3<'_, f32>,
    gy: ArrayView3<'_, f32>,
    geo: &Dense,
) -> Array2<f32> {
    if geo.pointwise {
        return weight_grad(gy, x);
    }
    let batch = x.dim().0;
    let out = gy.dim().1;
    let rows = geo.rows();
    let qblk = Dense::block_cols(rows);
    let groups = reduction_groups(batch, geo.out_size, out * rows, out * rows);
    sum_partials(&groups, (out, rows), out, |group, _, mut acc| {
        for (b, q) in group {
            let xb = x.index_axis(Axis(0), *b);
            let xb = xb.as_slice().expect("activations are in standard layout");
            let gyb = gy.index_axis(Axis(0), *b);
            for r in ranges(q.len(), qblk) {
                let sub = q.start + r.start..q.start + r.end;
                let n = sub.len();
                with_block(rows * n, |buf| {
                    geo.im2col(xb, sub.clone(), buf, n);
                    let col = ArrayView2::from_shape((rows, n), &*buf)
                        .expect("buffer holds rows * n floats");
                    gemm(
                        acc.view_mut(),
                        true,
                        gyb.slice(s![.., sub.start..sub.end]),
                        col.t(),
                    );
                });
            }
        }
    })
}
