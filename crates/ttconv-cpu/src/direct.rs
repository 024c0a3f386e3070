//! Dense N-D convolution by a direct AVX-512 kernel: no im2col, no packing of the input.
//!
//! Each input item is copied once into a zero-padded array `x_pad (cin, P_1..P_d)`
//! (`P_j = D_j + pad_before_j + pad_after_j`) whose spatial axes are flattened with the row-major
//! strides `PS` of `P`. Output position `o` and tap `t` read flat index `g(o) + off(t)` with
//! `g(o) = sum_j o_j PS_j` and `off(t) = sum_j t_j dil_j PS_j`. On the flat *grid*
//! `g = g(first) .. g(last)`, the convolution is the GEMM
//! `y'[oc, g] = sum_{c, t} K[oc, (c, t)] * x_pad[c * prod(P) + off(t) + g]`: its right operand
//! is read straight from `x_pad`, one offset per reduction index `k = (c, t)`.
//!
//! The micro-kernel keeps a tile of [`MR`] = 8 output channels by [`NR`] = 48 consecutive grid
//! positions in 24 AVX-512 registers; per `k` it loads three vectors of 16 grid positions at
//! `x_pad + offset[k] + g0` and broadcasts [`MR`] weights of the kernel, packed once per layer
//! (`K` rows of [`MR`] floats per block of channels, [`pack_weights`]; cached in the weights).
//! The tile is written to the output positions it covers: grid points with `o_j >= out_j` on some
//! axis are no output and are dropped. That *waste* (with the last tile's rounding,
//! [`Direct::grid_ratio`]) is 4% at 56 x 56 with a 3 x 3 kernel and padding 1, 22% at 14 x 14 and
//! 96% at 7 x 7, where the backend takes im2col instead.
//!
//! Strides: each padded axis is first split into `s_j` phase planes (space-to-depth), which makes
//! the convolution unit-stride over the planes (see [`Direct::new`]); the planes are what the
//! offsets point into.
//!
//! Why: im2col + GEMM copies `cin * prod(k)` floats per output position, and the GEMM library
//! packs them again; here each input float is read from cache by every tile that needs it. See
//! docs/perf.md for the measured gain. Only at SIMD level AVX-512 (`Direct::new` returns `None`
//! below it, and the im2col paths run): an AVX2 version of the tile (16 registers: four passes
//! of 4 channels x 24 positions per 8 x 48 tile) ran 2-3x slower than the row im2col with faer's
//! GEMM, see docs/perf.md.

use std::mem::MaybeUninit;
use std::ops::Range;

use ndarray::{Array3, ArrayView1, ArrayView2, ArrayView3};
use rayon::prelude::*;

use crate::conv_dense::DenseShape;
use crate::par::{chunk_len, column_tasks, scratch, unwritten_output};
use crate::simd::Level;
use crate::taps::row_major_taps;

/// Output channels per tile (broadcast weights).
const MR: usize = 8;
/// 16-lane vectors of grid positions per tile.
const NV: usize = 3;
/// Grid positions per tile.
const NR: usize = 16 * NV;
/// Zero floats after each padded item: the last tile of an item reads up to `NR - 1` positions
/// past the last output's grid index (twice that for margin).
const SLACK: usize = 2 * NR;
/// Floats of input a task's block of positions aims to keep in L2 (half of 1 MiB).
const BLOCK_INPUT_FLOATS: usize = 128 * 1024;
/// Phase-plane positions per channel allowed beyond 4x the input and output positions (small
/// maps with their padding ring always qualify: a 1x1 map padded to 3x3 is 9 positions).
const MAX_PADDING_ONLY_GRID: usize = 4096;

/// The geometry of one dense convolution on the flat grid of its phase planes.
#[derive(Debug)]
pub(crate) struct Direct {
    cin: usize,
    in_spatial: Vec<usize>,
    pad_before: Vec<usize>,
    /// The convolution's strides `s_j`.
    strides: Vec<usize>,
    /// Row-major strides of the phase-plane shape `Q` (`Q_j = ceil(P_j / s_j)`), and `prod(Q)`.
    padded_strides: Vec<usize>,
    padded_size: usize,
    /// Planes per item: `prod(s) * cin`, phase-major.
    planes: usize,
    out_spatial: Vec<usize>,
    out_size: usize,
    /// Per reduction index `k = c * taps + t`: the flat offset of the plane and shift tap `t`
    /// of channel `c` reads (see the module docs).
    offsets: Vec<usize>,
    /// The largest in-plane shift of a tap, and the largest entry of `offsets`.
    max_tap_offset: usize,
    max_offset: usize,
}

impl Direct {
    /// The plan for the convolution of `shape` when the backend's kernels run at SIMD level
    /// `simd`, or `None` when it does not apply: an empty operand, or a level below AVX-512.
    ///
    /// Strides: axis `j` of the padded input is split into `s_j` phase planes (padded index
    /// `i = q s_j + phi`), so tap `t_j` (padded offset `a = t_j dil_j`) of output `o_j` reads
    /// plane `a mod s_j` at `o_j + a div s_j`: a unit-stride convolution over the planes, whose
    /// grid is `Q_j = ceil(P_j / s_j)` long.
    pub(crate) fn new(shape: &DenseShape, simd: Level) -> Option<Self> {
        let (cin, in_spatial, out_spatial) = (shape.cin, &shape.in_spatial, &shape.out_spatial);
        let (kernel, geometry) = (&shape.kernel, &shape.geometry);
        let d = in_spatial.len();
        if d == 0
            || cin == 0
            || in_spatial.contains(&0)
            || out_spatial.contains(&0)
            || geometry.iter().any(|g| g.stride == 0)
            || simd < Level::Avx512
            || !simd.supported()
        {
            return None;
        }
        let strides: Vec<usize> = geometry.iter().map(|g| g.stride).collect();
        let phase_len: Vec<usize> = (0..d)
            .map(|j| {
                (in_spatial[j] + geometry[j].pad_before + geometry[j].pad_after)
                    .div_ceil(strides[j])
            })
            .collect();
        // Huge paddings (a 'same' padding of a huge dilation) can multiply past usize too.
        let mut padded_strides = vec![1usize; d];
        for j in (0..d - 1).rev() {
            padded_strides[j] = padded_strides[j + 1].checked_mul(phase_len[j + 1])?;
        }
        let padded_size = phase_len
            .iter()
            .try_fold(1usize, |a, &n| a.checked_mul(n))?;
        // Strides past the axis lengths can multiply past usize: no phase layout then.
        let phases = strides.iter().try_fold(1usize, |a, &s| a.checked_mul(s))?;
        // The phase planes hold `prod(s_j * ceil(P_j / s_j))` positions per channel: about the
        // padded input `prod(P_j)` when strides are below the axis lengths, but up to the product
        // of the strides when they exceed them (stride 10^6 on a 5-long axis would ask for 10^6
        // planes). Past twice the padded input the layout does not pay: the im2col paths run.
        let padded_input = (0..d).try_fold(1usize, |a, j| {
            a.checked_mul(in_spatial[j] + geometry[j].pad_before + geometry[j].pad_after)
        })?;
        let grid = phases.checked_mul(padded_size)?;
        if grid > padded_input.saturating_mul(2) {
            return None;
        }
        // The planes hold the padding itself: a padding far wider than the input (with a stride
        // that keeps the output small) would ask for scratch out of all proportion to the
        // activations; the im2col paths, which never store padding, run those.
        let in_positions: usize = in_spatial.iter().product();
        let out_positions: usize = out_spatial.iter().product();
        if grid > (in_positions + out_positions).saturating_mul(4) + MAX_PADDING_ONLY_GRID {
            return None;
        }
        // Per tap: (phase index, in-plane shift).
        let tap_planes: Vec<(usize, usize)> = row_major_taps(kernel)
            .map(|t| {
                let (mut phase, mut shift) = (0, 0);
                for j in 0..d {
                    let a = t[j] * geometry[j].dilation;
                    phase = phase * strides[j] + a % strides[j];
                    shift += (a / strides[j]) * padded_strides[j];
                }
                (phase, shift)
            })
            .collect();
        let offsets: Vec<usize> = (0..cin)
            .flat_map(|c| {
                tap_planes
                    .iter()
                    .map(move |&(phase, shift)| (phase * cin + c) * padded_size + shift)
            })
            .collect();
        Some(Self {
            cin,
            in_spatial: in_spatial.to_vec(),
            pad_before: geometry.iter().map(|g| g.pad_before).collect(),
            strides,
            padded_strides,
            padded_size,
            planes: phases * cin,
            out_size: out_spatial.iter().product(),
            out_spatial: out_spatial.to_vec(),
            max_tap_offset: tap_planes.iter().map(|p| p.1).max().unwrap_or(0),
            max_offset: offsets.iter().copied().max().unwrap_or(0),
            offsets,
        })
    }

    /// Grid positions the tiles of one item compute per output position (>= 1): the grid
    /// stretch from the first to the last output, rounded up to whole tiles.
    pub(crate) fn grid_ratio(&self) -> f64 {
        let span = self.grid_index(self.out_size - 1) + 1;
        (span.div_ceil(NR) * NR) as f64 / self.out_size as f64
    }

    /// The reduction length `K = cin * prod(k)`.
    fn depth(&self) -> usize {
        self.offsets.len()
    }

    /// The flat grid index `g(o)` of output position `q` (row-major over the output shape).
    fn grid_index(&self, q: usize) -> usize {
        let mut rest = q;
        let mut p = 0;
        for j in (0..self.out_spatial.len()).rev() {
            p += (rest % self.out_spatial[j]) * self.padded_strides[j];
            rest /= self.out_spatial[j];
        }
        p
    }

    /// Floats per item: its planes, then [`SLACK`].
    fn item_len(&self) -> usize {
        self.planes * self.padded_size + SLACK
    }

    /// Copies item `xb` (`cin x in_size`, row-major) into `dst` ([`Self::item_len`] floats):
    /// padded index `i_j + pad_j = q_j s_j + phi_j` of channel `c` goes to plane
    /// `(phase(phi) * cin + c)` at `q`; everything else is zero.
    fn pad_item(&self, xb: &[f32], dst: &mut [f32]) {
        dst.fill(0.0);
        let d = self.in_spatial.len();
        let last = self.in_spatial[d - 1];
        let in_size: usize = self.in_spatial.iter().product();
        let (s_last, pad_last) = (self.strides[d - 1], self.pad_before[d - 1]);
        for c in 0..self.cin {
            let src = &xb[c * in_size..(c + 1) * in_size];
            for (line, values) in src.chunks_exact(last).enumerate() {
                // Phase and in-plane offset of the line (leading axes).
                let mut rest = line;
                let (mut phase, mut at, mut scale) = (0, 0, 1);
                for j in (0..d - 1).rev() {
                    let p = rest % self.in_spatial[j] + self.pad_before[j];
                    rest /= self.in_spatial[j];
                    phase += (p % self.strides[j]) * scale;
                    scale *= self.strides[j];
                    at += (p / self.strides[j]) * self.padded_strides[j];
                }
                if s_last == 1 {
                    let start = (phase * self.cin + c) * self.padded_size + at + pad_last;
                    dst[start..start + last].copy_from_slice(values);
                    continue;
                }
                // Along the last axis: input `w` has phase `(w + pad) mod s` and lands at
                // `(w + pad) div s`; each phase is a strided run of the line.
                for ph_last in 0..s_last {
                    let w0 = (ph_last + s_last - pad_last % s_last) % s_last;
                    if w0 >= last {
                        continue;
                    }
                    let ph = phase * s_last + ph_last;
                    let start =
                        (ph * self.cin + c) * self.padded_size + at + (w0 + pad_last) / s_last;
                    let run = values[w0..].iter().step_by(s_last);
                    for (d, &v) in dst[start..].iter_mut().zip(run) {
                        *d = v;
                    }
                }
            }
        }
    }

    /// The runs of output positions `q` along the last axis, as `(grid start, length, offset
    /// of the run's first position from q.start)`, in order.
    fn runs(&self, q: Range<usize>) -> Vec<(usize, usize, usize)> {
        let last = self.out_spatial[self.out_spatial.len() - 1];
        let mut runs = Vec::new();
        let mut at = q.start;
        while at < q.end {
            let len = (last - at % last).min(q.end - at);
            runs.push((self.grid_index(at), len, at - q.start));
            at += len;
        }
        runs
    }
}

/// The kernel `(out, K)` packed for the micro-kernel: for each block of [`MR`] output channels,
/// `K` rows of [`MR`] floats (`packed[(blk * K + k) * MR + r] = kernel[blk * MR + r, k]`, zero
/// past `out`).
pub(crate) fn pack_weights(kernel: ArrayView2<'_, f32>) -> Vec<f32> {
    let (out, depth) = kernel.dim();
    let blocks = out.div_ceil(MR);
    let mut packed = vec![0.0; blocks * depth * MR];
    for (o, row) in kernel.outer_iter().enumerate() {
        let (blk, r) = (o / MR, o % MR);
        for (k, &v) in row.iter().enumerate() {
            packed[(blk * depth + k) * MR + r] = v;
        }
    }
    packed
}

/// Forward: `x` `(B, cin, in_size)` (standard layout), the kernel packed by [`pack_weights`] for
/// `out` output channels, optional `bias` `(out,)`; returns `(B, out, out_size)`.
///
/// Tasks: (batch item, block of output positions sized so its input stays in L2); each runs every
/// block of [`MR`] channels over its stretch of the grid, tile by tile.
pub(crate) fn forward(
    x: ArrayView3<'_, f32>,
    packed: &[f32],
    out: usize,
    bias: Option<ArrayView1<'_, f32>>,
    plan: &Direct,
) -> Array3<f32> {
    let batch = x.dim().0;
    if batch == 0 || out == 0 || plan.out_size == 0 {
        return Array3::zeros((batch, out, plan.out_size));
    }
    // Not zeroed: the tasks cover every output position of every item, and each tile's scatter
    // writes every channel of the positions it holds.
    let mut y = unwritten_output((batch, out, plan.out_size));
    let depth = plan.depth();
    assert_eq!(
        packed.len(),
        out.div_ceil(MR) * depth * MR,
        "packed kernel size"
    );
    let item = plan.item_len();
    let in_item = plan.cin * plan.in_spatial.iter().product::<usize>();
    let xs = x.as_slice().expect("activations are in standard layout");
    let mut padded = scratch::take(batch * item);
    padded
        .par_chunks_mut(item)
        .zip(xs.par_chunks(in_item))
        .for_each(|(dst, xb)| plan.pad_item(xb, dst));

    let max_cols = (BLOCK_INPUT_FLOATS / plan.cin).saturating_sub(plan.max_tap_offset);
    let chunk = chunk_len(batch, plan.out_size, out * depth, max_cols.max(NR));
    // Per block of channels: its rows and the tile's initial values (the bias, or zero).
    let blocks: Vec<(usize, [f32; MR])> = (0..out.div_ceil(MR))
        .map(|blk| {
            let rows = MR.min(out - blk * MR);
            let mut init = [0f32; MR];
            if let Some(bias) = &bias {
                for (r, v) in init.iter_mut().take(rows).enumerate() {
                    *v = bias[blk * MR + r];
                }
            }
            (rows, init)
        })
        .collect();
    let padded_ref = &padded;
    column_tasks(y.view_mut(), chunk, 1)
        .into_par_iter()
        .for_each(|(b, q, mut yb)| {
            let xp = &padded_ref[b * item..(b + 1) * item];
            let runs = plan.runs(q.clone());
            let g0 = plan.grid_index(q.start);
            let g1 = plan.grid_index(q.end - 1) + 1;
            // Every tile reads `xp[t0 + offset + 0..NR]` with `t0 < g1` and
            // `offset <= (planes - 1) * prod(Q) + max_tap_offset`; since
            // `g1 - 1 + max_tap_offset < prod(Q)`, the last index is below
            // `planes * prod(Q) + NR - 1 < item`.
            assert!(g1 - 1 + plan.max_tap_offset < plan.padded_size && NR <= SLACK);
            let mut tile = [[0f32; NR]; MR];
            let mut first_run = 0;
            let mut t0 = g0;
            // Tile by tile, every block of channels: the tile's input stays in L1 while the
            // weights (contiguous, K x MR per block) stream from L2.
            while t0 < g1 {
                while first_run < runs.len() && runs[first_run].0 + runs[first_run].1 <= t0 {
                    first_run += 1;
                }
                for (blk, (w, (rows, init))) in
                    packed.chunks_exact(depth * MR).zip(&blocks).enumerate()
                {
                    micro_tile(
                        w,
                        &xp[t0..],
                        &plan.offsets,
                        plan.max_offset,
                        init,
                        &mut tile,
                    );
                    // Scatter the tile's lanes onto the output positions they hold.
                    for &(g, len, qoff) in &runs[first_run..] {
                        if g >= t0 + NR {
                            break;
                        }
                        let (lo, hi) = (g.max(t0), (g + len).min(t0 + NR));
                        let dst = qoff + lo - g;
                        for (r, lanes) in tile.iter().take(*rows).enumerate() {
                            let mut row = yb.row_mut(blk * MR + r);
                            let row = row.as_slice_mut().expect("output rows are contiguous");
                            for (d, &v) in row[dst..dst + hi - lo]
                                .iter_mut()
                                .zip(&lanes[lo - t0..hi - t0])
                            {
                                *d = MaybeUninit::new(v);
                            }
                        }
                    }
                }
                t0 += NR;
            }
        });
    scratch::give(padded);
    // SAFETY: every element was written above (see the comment at the allocation).
    #[allow(unsafe_code)]
    unsafe {
        y.assume_init()
    }
}

/// One tile: `tile[r][j] = init[r] + sum_k w[k * MR + r] * x[offsets[k] + j]`, `r < MR`,
/// `j < NR`.
///
/// `max_offset` is the largest entry of `offsets`. Panics unless `max_offset + NR <= x.len()` and
/// `w.len() >= offsets.len() * MR` (the unchecked loads below rely on it; the caller's
/// `max_offset` is checked in debug builds).
fn micro_tile(
    w: &[f32],
    x: &[f32],
    offsets: &[usize],
    max_offset: usize,
    init: &[f32; MR],
    tile: &mut [[f32; NR]; MR],
) {
    debug_assert_eq!(offsets.iter().copied().max(), Some(max_offset));
    assert!(max_offset + NR <= x.len() && w.len() >= offsets.len() * MR);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `Direct::new` only plans this path at SIMD level AVX-512, which it checked
        // the CPU supports (the `target_feature` contract of `avx512::tile`), and the assertion
        // above bounds every load `tile` makes: `x[offsets[k] .. offsets[k] + NR]` and
        // `w[k * MR .. (k + 1) * MR]`.
        #[allow(unsafe_code)]
        unsafe {
            avx512::tile(w.as_ptr(), x.as_ptr(), offsets, init, tile)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the direct path is only planned on x86-64 with AVX-512");
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps,
    };

    use super::{MR, NR, NV};

    /// See [`super::micro_tile`]. 24 accumulators (`MR` rows x `NV` 16-lane vectors) stay in
    /// registers through the whole reduction.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `x + offsets[k] + 0..NR` and `w + k * MR + 0..MR` must be
    /// readable for every `k < offsets.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        w: *const f32,
        x: *const f32,
        offsets: &[usize],
        init: &[f32; MR],
        tile: &mut [[f32; NR]; MR],
    ) {
        let mut acc: [[__m512; NV]; MR] = [[_mm512_set1_ps(0.0); NV]; MR];
        for (r, a) in acc.iter_mut().enumerate() {
            *a = [_mm512_set1_ps(init[r]); NV];
        }
        for (k, &off) in offsets.iter().enumerate() {
            let mut b = [_mm512_set1_ps(0.0); NV];
            for (v, bv) in b.iter_mut().enumerate() {
                // SAFETY: `x[off + 16 v .. off + 16 (v + 1)]` is in bounds by the caller's
                // contract (`16 * NV = NR`).
                *bv = unsafe { _mm512_loadu_ps(x.add(off + 16 * v)) };
            }
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: `k * MR + r` is in bounds by the caller's contract.
                let wr = _mm512_set1_ps(unsafe { *w.add(k * MR + r) });
                for (av, bv) in a.iter_mut().zip(&b) {
                    *av = _mm512_fmadd_ps(wr, *bv, *av);
                }
            }
        }
        for (a, row) in acc.iter().zip(tile.iter_mut()) {
            for (v, av) in a.iter().enumerate() {
                // SAFETY: each row holds NR = 16 NV floats.
                unsafe { _mm512_storeu_ps(row.as_mut_ptr().add(16 * v), *av) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Axis, DenseCase};
    use ndarray::Array2;
    use proptest::prelude::*;
    use ttconv::AxisGeometry;

    /// One random convolution: `(batch, cin, cout, per axis (size, kernel, dilation, padding
    /// before, after, stride), bias, seed)`; `cout` up to `3 * MR + 1` so every tail of a block
    /// of channels occurs, sizes up to 12 so tiles span several grid lines and end past the
    /// last output.
    #[allow(clippy::type_complexity)]
    fn case() -> impl Strategy<Value = (usize, usize, usize, Vec<Axis>, bool, u64)> {
        (
            1usize..=2,
            1usize..=6,
            1usize..=3 * MR + 1,
            prop::collection::vec(
                (
                    1usize..=12,
                    1usize..=3,
                    1usize..=2,
                    0usize..=2,
                    0usize..=2,
                    1usize..=3,
                ),
                1..=3,
            ),
            any::<bool>(),
            any::<u64>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// The direct kernel against the f64 oracle (tolerance as in the crate's integration
        /// tests: 1e-5 of the larger of the largest output and the terms' root-sum-square).
        #[test]
        fn forward_matches_the_oracle((batch, cin, cout, axes, bias, seed) in case()) {
            let Some(c) = DenseCase::new(batch, cin, cout, &axes, bias, seed) else {
                return Ok(());
            };
            let Some(plan) = Direct::new(&c.dense_shape(), Level::detected()) else {
                println!("skipped: this CPU has no AVX-512F, the direct kernel never runs here");
                return Ok(());
            };
            // Capped below AVX-512, the backend never plans it.
            prop_assert!(Direct::new(&c.dense_shape(), Level::Avx2).is_none());
            let packed = pack_weights(c.kernel_matrix());
            let got = forward(c.x3(), &packed, cout, c.bias.as_ref().map(|b| b.view()), &plan);
            c.check(&got)?;
        }
    }

    #[test]
    fn packing_puts_each_channel_block_k_major() {
        let out = MR + 2;
        let kernel = Array2::from_shape_fn((out, 3), |(o, k)| (o * 10 + k) as f32);
        let packed = pack_weights(kernel.view());
        assert_eq!(packed.len(), 2 * 3 * MR);
        for o in 0..2 * MR {
            for k in 0..3 {
                let want = if o < out { (o * 10 + k) as f32 } else { 0.0 };
                assert_eq!(
                    packed[((o / MR) * 3 + k) * MR + o % MR],
                    want,
                    "channel {o}, k {k}"
                );
            }
        }
    }

    #[test]
    fn grid_index_follows_the_padded_strides() {
        let g = AxisGeometry {
            stride: 1,
            dilation: 1,
            pad_before: 1,
            pad_after: 1,
        };
        let shape = DenseShape::new(2, &[5, 6], &[3, 3], &[g, g]).unwrap();
        assert_eq!(shape.out_spatial, [5, 6]);
        if let Some(plan) = Direct::new(&shape, Level::detected()) {
            assert_eq!(plan.grid_index(0), 0);
            assert_eq!(plan.grid_index(7), 8 + 1); // (1, 1) on an 8-wide padded grid
            assert_eq!(plan.offsets[9 + 4], 7 * 8 + 8 + 1); // channel 1, tap (1, 1)
            assert_eq!(plan.runs(4..9), vec![(4, 2, 0), (8, 3, 2)]);
        }
    }
}
