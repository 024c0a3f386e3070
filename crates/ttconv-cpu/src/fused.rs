//! The fused factorized forward: every step of the layer's factorized program run on one tile at a
//! time, with every intermediate in a per-thread workspace that stays in L2.
//!
//! A tile is (batch item, slab of output rows along the first spatial axis). The chain's ops
//! after the 1-D convolution along axis 0 only need the slab's own rows; the ops before it (the
//! input contraction) run on the slab's input rows plus the halo that convolution reads. Tasks
//! are all (item, slab) pairs, so both cores work at batch 1; slabs are only cut (and the halo
//! recomputed) when the batch alone does not give every thread several tasks, or when an
//! item's intermediates would not fit in L2.
//!
//! Every op is one or a few [`gemm_terms`] calls: the 1-D convolution at stride 1 reads shifted
//! rows of its input directly (the positions where every tap is inside in one call per line,
//! the few border positions each with its valid taps only); at stride > 1, or when lines are too
//! short for wide tiles, an im2col along the axis is packed into the workspace first.
//!
//! The ops are the steps of the layer's [`FactorizedProgram`], in its order: where contracting
//! the input channels into the first spatial core (or the last spatial core into the output
//! channels) costs fewer multiply-adds than running the two ops apart, the program's step is one
//! 1-D convolution with the merged core (merged once and cached by the prepared layer). E.g. ranks `(1, 921, 21, 921, 1)` on 256 channels ('same'): the chain runs
//! `256 -> 21 -> 256` convolutions instead of `256 -> 921 -> 21 -> 921 -> 256`. The result is the
//! same convolution with the sums associated differently (equal up to rounding).

use std::cell::RefCell;
use std::mem::MaybeUninit;

use ndarray::{ArrayViewMut2, ArrayViewMut3};
use rayon::prelude::*;
use ttconv::{AxisGeometry, FactorizedProgram, StepOp, StepWeights};

use crate::kernel::{Init, Out, gemm_terms};
use crate::par::{column_tasks, ranges};
use crate::simd::Level;
use crate::taps::valid_outputs;
use crate::{CpuBackend, CpuWeights};

/// Most floats of one intermediate per tile (two live at a time): about 3/4 of the L2.
const TILE_FLOATS: usize = 96 * 1024;
/// Most floats of an im2col-along-axis pack.
const PACK_FLOATS: usize = 64 * 1024;
/// Lines shorter than this many output columns go through the pack (wider GEMM tiles).
const MIN_SHIFTED_COLS: usize = 64;
/// Tasks per thread aimed for.
const TASKS_PER_THREAD: usize = 4;

/// What an op does.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Channel contraction, weight `(cin, cout)`.
    Contract,
    /// 1-D convolution along spatial axis `axis`, weight `(cin, k, cout)`.
    Conv {
        axis: usize,
        k: usize,
        g: AxisGeometry,
    },
}

/// One op of the chain: its weight as a `(K, cout)` row-major matrix.
#[derive(Debug)]
struct Op<'w> {
    kind: Kind,
    w: &'w [f32],
    cin: usize,
    cout: usize,
    /// The SIMD level of its GEMMs.
    simd: Level,
}

/// The chain for one input shape.
#[derive(Debug)]
pub(crate) struct Plan<'w> {
    ops: Vec<Op<'w>>,
    /// Index of the op that convolves axis 0.
    conv0: usize,
    batch: usize,
    cin: usize,
    cout: usize,
    in_sp: Vec<usize>,
    out_sp: Vec<usize>,
    bias: Option<&'w [f32]>,
}

impl<'w> Plan<'w> {
    /// The layer's program translated into this module's ops, reading each step's weight in
    /// place (the layer merged and cached the end cores the program asks for); every GEMM runs
    /// at SIMD level `simd` (supported by the CPU).
    pub(crate) fn new(
        program: &FactorizedProgram,
        w: &StepWeights<'w, CpuBackend>,
        simd: Level,
    ) -> Self {
        let ops: Vec<Op<'w>> = program
            .steps()
            .iter()
            .zip(&w.steps)
            .map(|(step, weight)| {
                debug_assert_eq!(weight.shape(), step.weight_shape().as_slice());
                let kind = match step.op {
                    StepOp::Contract => Kind::Contract,
                    StepOp::ConvAlong {
                        axis,
                        kernel,
                        geometry,
                    } => Kind::Conv {
                        axis,
                        k: kernel,
                        g: geometry,
                    },
                };
                Op {
                    kind,
                    w: weight.as_slice(),
                    cin: step.in_channels(),
                    cout: step.out_channels(),
                    simd,
                }
            })
            .collect();
        let conv0 = ops
            .iter()
            .position(|op| matches!(op.kind, Kind::Conv { axis: 0, .. }))
            .expect("a program convolves spatial axis 0");
        let (xs, ys) = (program.input_shape(), program.output_shape());
        Self {
            ops,
            conv0,
            batch: xs[0],
            cin: xs[1],
            cout: ys[1],
            in_sp: xs[2..].to_vec(),
            out_sp: ys[2..].to_vec(),
            bias: w.bias.map(CpuWeights::as_slice),
        }
    }

    /// `(batch, cout, output spatial shape)`.
    pub(crate) fn output_shape(&self) -> (usize, usize, &[usize]) {
        (self.batch, self.cout, &self.out_sp)
    }

    /// Input rows along axis 0 that output rows `o0..o1` read (clipped to the input).
    fn halo(&self, o0: usize, o1: usize) -> (usize, usize) {
        let Kind::Conv { k, g, .. } = self.ops[self.conv0].kind else {
            unreachable!("conv0 is a convolution");
        };
        let lo = (o0 * g.stride).saturating_sub(g.pad_before);
        let hi = ((o1 - 1) * g.stride + (k - 1) * g.dilation + 1)
            .saturating_sub(g.pad_before)
            .min(self.in_sp[0]);
        (lo.min(hi), hi)
    }

    /// Spatial shape before op `i` (full sizes, axis 0 included).
    fn dims_before(&self, i: usize) -> Vec<usize> {
        let mut dims = self.in_sp.clone();
        for op in &self.ops[..i] {
            if let Kind::Conv { axis, .. } = op.kind {
                dims[axis] = self.out_sp[axis];
            }
        }
        dims
    }

    /// Output rows per slab along axis 0.
    fn slab_rows(&self) -> usize {
        let lo0 = self.out_sp[0];
        let threads = rayon::current_num_threads().max(1);
        let by_tasks = (TASKS_PER_THREAD * threads).div_ceil(self.batch.max(1));
        let mut rows = lo0.div_ceil(by_tasks);
        // Floats per output row of the largest intermediate.
        let per_row = (0..self.ops.len())
            .map(|i| {
                let dims = self.dims_before(i + 1);
                self.ops[i].cout * dims[1..].iter().product::<usize>()
            })
            .max()
            .unwrap_or(1)
            .max(1);
        rows = rows
            .max(1)
            .max(self.min_rows())
            .min((TILE_FLOATS / per_row).max(1));
        let slabs = lo0.div_ceil(rows.max(1));
        lo0.div_ceil(slabs.max(1)).max(1)
    }

    /// Fewest output rows per slab: the recomputed halo stays at most half the slab.
    fn min_rows(&self) -> usize {
        if self.conv0 == 0 {
            return 1;
        }
        let Kind::Conv { k, g, .. } = self.ops[self.conv0].kind else {
            return 1;
        };
        let span = (k - 1) * g.dilation + 1;
        (2 * span.saturating_sub(g.stride))
            .div_ceil(g.stride)
            .max(1)
    }

    /// Floats the workspace of one slab of at most `rows` output rows needs per intermediate.
    fn buffer_floats(&self, rows: usize) -> usize {
        let Kind::Conv { k, g, .. } = self.ops[self.conv0].kind else {
            unreachable!("conv0 is a convolution");
        };
        let in_rows = ((rows - 1) * g.stride + (k - 1) * g.dilation + 1).min(self.in_sp[0]);
        (0..self.ops.len().saturating_sub(1))
            .map(|i| {
                let dims = self.dims_before(i + 1);
                let r = if i < self.conv0 { in_rows } else { rows };
                self.ops[i].cout * r * dims[1..].iter().product::<usize>()
            })
            .max()
            .unwrap_or(0)
    }
}

/// Per-thread scratch, grown on demand and reused by every call.
#[derive(Debug, Default)]
struct Workspace {
    a: Vec<f32>,
    b: Vec<f32>,
    pack: Vec<f32>,
    terms: Vec<(usize, usize)>,
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// Grows `v` to at least `n` elements (never shrinks, so a warm workspace allocates nothing).
pub(crate) fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// Where an op writes: a workspace buffer, or the slab's rows of the layer's output.
#[derive(Debug)]
enum Dst<'s, 'y> {
    Buf(&'s mut [f32]),
    Y(&'s mut ArrayViewMut2<'y, MaybeUninit<f32>>),
}

impl Dst<'_, '_> {
    /// Columns `c0..c0 + n` of the op's output seen as `m` channels of `ld` floats each.
    fn cols(&mut self, c0: usize, ld: usize, m: usize, n: usize) -> Out<'_> {
        match self {
            Dst::Buf(s) => Out::in_slice(s, c0, ld, m, n),
            Dst::Y(v) => {
                assert_eq!(
                    v.dim(),
                    (m, ld),
                    "the slab's output is (cout, slab columns)"
                );
                Out::in_view(v, c0, n)
            }
        }
    }
}

/// Where an op reads or writes: the slice, the offset of channel 0, the channel stride.
#[derive(Clone, Copy, Debug)]
struct Place {
    base: usize,
    cs: usize,
}

/// Runs the plan on `x` (`(batch, cin, in_sp)`, row-major) into `y` (`(batch, cout, out_sp)`),
/// writing every element of `y` (which may start uninitialised): the tasks' slabs cover every
/// output row of every item, and the last op of each slab writes all of its columns for every
/// output channel.
pub(crate) fn forward(plan: &Plan<'_>, x: &[f32], y: ArrayViewMut3<'_, MaybeUninit<f32>>) {
    let rows = plan.slab_rows();
    let r_out: usize = plan.out_sp[1..].iter().product();
    let need = plan.buffer_floats(rows);
    column_tasks(y, rows, r_out)
        .into_par_iter()
        .for_each(|(b, slab, mut yv)| {
            WORKSPACE.with(|ws| {
                let mut ws = ws.borrow_mut();
                let ws = &mut *ws;
                grow(&mut ws.a, need);
                grow(&mut ws.b, need);
                run_slab(
                    plan,
                    x,
                    b,
                    (slab.start, slab.end),
                    plan.halo(slab.start, slab.end),
                    &mut yv,
                    &mut [&mut ws.a[..], &mut ws.b[..]],
                    &mut ws.pack,
                    &mut ws.terms,
                );
            });
        });
}

/// [`forward`] that also keeps the output of every op but the last in `kept[i]`
/// `(batch, cout_i, S_i)`, row-major, for the backward: one task per batch item, each running
/// the whole item (no slabs, so no halo is computed twice and no two tasks write one element).
/// Every element of every intermediate is written.
pub(crate) fn forward_keeping(
    plan: &Plan<'_>,
    x: &[f32],
    mut y: ArrayViewMut3<'_, MaybeUninit<f32>>,
    kept: &mut [ndarray::Array3<f32>],
) {
    debug_assert_eq!(kept.len(), plan.ops.len() - 1);
    let mut per_item: Vec<Vec<&mut [f32]>> = (0..plan.batch).map(|_| Vec::new()).collect();
    for k in kept.iter_mut() {
        let item_len = k.dim().1 * k.dim().2;
        let data = k.as_slice_mut().expect("kept intermediates are row-major");
        for (bufs, chunk) in per_item.iter_mut().zip(data.chunks_mut(item_len.max(1))) {
            bufs.push(chunk);
        }
    }
    let lo0 = plan.out_sp[0];
    y.outer_iter_mut()
        .into_par_iter()
        .zip(per_item.into_par_iter())
        .enumerate()
        .for_each(|(b, (mut yv, mut bufs))| {
            WORKSPACE.with(|ws| {
                let mut ws = ws.borrow_mut();
                let ws = &mut *ws;
                // Every input row, so each kept intermediate has its full layout (the rows
                // past the halo that no op reads included).
                run_slab(
                    plan,
                    x,
                    b,
                    (0, lo0),
                    (0, plan.in_sp[0]),
                    &mut yv,
                    &mut bufs,
                    &mut ws.pack,
                    &mut ws.terms,
                );
            });
        });
}

/// Runs the chain for batch item `b`, output rows `o0..o1` of axis 0, into `target`
/// (`(cout, (o1 - o0) * prod(out_sp[1..]))`, columns contiguous; its rows are the slab's part of
/// each output channel, so the last op writes into the layer's output in place).
///
/// Op `i` (but the last) writes its output into `bufs[i % bufs.len()]` and op `i + 1` reads it
/// there: two buffers ping-pong, one per intermediate keeps every one (`forward_keeping`).
///
/// The ops before the convolution along axis 0 run on input rows `i_lo..i_hi`: the halo
/// (`Plan::halo`) or more.
fn run_slab(
    plan: &Plan<'_>,
    x: &[f32],
    b: usize,
    (o0, o1): (usize, usize),
    (i_lo, i_hi): (usize, usize),
    target: &mut ArrayViewMut2<'_, MaybeUninit<f32>>,
    bufs: &mut [&mut [f32]],
    pack: &mut Vec<f32>,
    terms: &mut Vec<(usize, usize)>,
) {
    let s_in: usize = plan.in_sp.iter().product();
    let n_ops = plan.ops.len();
    debug_assert!(n_ops == 1 || bufs.len() >= 2 || bufs.len() == n_ops - 1);
    // The source (None = x, else the buffer index), its place, and rows/row0 along axis 0.
    let mut src_buf: Option<usize> = None;
    let mut src_place = Place {
        base: b * plan.cin * s_in,
        cs: s_in,
    };
    let mut src_rows = plan.in_sp[0];
    let mut src_row0 = 0usize;
    if plan.conv0 > 0 {
        // The head contraction only needs the halo rows.
        src_place.base += i_lo * plan.in_sp[1..].iter().product::<usize>();
        src_rows = i_hi - i_lo;
        src_row0 = i_lo;
    }
    for (i, op) in plan.ops.iter().enumerate() {
        let dims_in = plan.dims_before(i);
        let dims_out = plan.dims_before(i + 1);
        let (dst_rows, dst_row0) = if i < plan.conv0 {
            (src_rows, src_row0)
        } else {
            (o1 - o0, o0)
        };
        let inner_out: usize = dims_out[1..].iter().product();
        let last = i + 1 == n_ops;
        let dst_buf = (!last).then(|| i % bufs.len());
        let dst_place = Place {
            base: 0,
            cs: dst_rows * inner_out,
        };
        let init = match (last, plan.bias) {
            (true, Some(bias)) => Init::Bias(bias),
            _ => Init::Zero,
        };
        let (src, mut dst): (&[f32], Dst<'_, '_>) = match (src_buf, dst_buf) {
            (None, None) => (x, Dst::Y(&mut *target)),
            (None, Some(d)) => (x, Dst::Buf(&mut *bufs[d])),
            (Some(r), None) => (&*bufs[r], Dst::Y(&mut *target)),
            (Some(r), Some(d)) => {
                let (read, write) = read_write(bufs, r, d);
                (read, Dst::Buf(write))
            }
        };
        match op.kind {
            Kind::Contract => {
                let n = src_rows * dims_in[1..].iter().product::<usize>();
                terms.clear();
                terms.extend((0..op.cin).map(|c| (c * op.cout, src_place.base + c * src_place.cs)));
                gemm_terms(
                    op.simd,
                    op.w,
                    src,
                    terms,
                    dst.cols(dst_place.base, dst_place.cs, op.cout, n),
                    init,
                );
            }
            Kind::Conv { axis, k, g } => {
                let mut din = dims_in.clone();
                din[0] = src_rows;
                let along = Along {
                    outer: din[..axis].iter().product(),
                    inner: din[axis + 1..].iter().product(),
                    lin: din[axis],
                    lout: if axis == 0 { dst_rows } else { dims_out[axis] },
                    in_row0: if axis == 0 { src_row0 } else { 0 },
                    out_row0: if axis == 0 { dst_row0 } else { 0 },
                    l_full: plan.in_sp[axis],
                    k,
                    g,
                };
                conv(
                    op, &along, src, src_place, &mut dst, dst_place, init, terms, pack,
                );
            }
        }
        src_buf = dst_buf;
        src_place = dst_place;
        src_rows = dst_rows;
        src_row0 = dst_row0;
    }
}

/// Buffer `r` to read and buffer `w != r` to write.
fn read_write<'a>(bufs: &'a mut [&mut [f32]], r: usize, w: usize) -> (&'a [f32], &'a mut [f32]) {
    assert_ne!(r, w, "an op never writes the buffer it reads");
    if r < w {
        let (lo, hi) = bufs.split_at_mut(w);
        (&*lo[r], &mut *hi[0])
    } else {
        let (lo, hi) = bufs.split_at_mut(r);
        (&*hi[0], &mut *lo[w])
    }
}

/// The geometry of one convolution along an axis inside a slab.
#[derive(Clone, Copy, Debug)]
struct Along {
    /// Product of the (slab) sizes before the axis.
    outer: usize,
    /// Product of the sizes after the axis.
    inner: usize,
    /// Input rows present in the source along the axis, the first being `in_row0`.
    lin: usize,
    /// Output rows written along the axis, the first being `out_row0`.
    lout: usize,
    in_row0: usize,
    out_row0: usize,
    /// Full input length along the axis (positions outside are padding).
    l_full: usize,
    k: usize,
    g: AxisGeometry,
}

impl Along {
    /// Input position read by absolute output position `p` and tap `t`, if inside.
    fn input(&self, p: usize, t: usize) -> Option<usize> {
        let i = (p * self.g.stride + t * self.g.dilation).checked_sub(self.g.pad_before)?;
        (i < self.l_full).then_some(i)
    }
}

/// One 1-D convolution op on a slab.
fn conv(
    op: &Op<'_>,
    al: &Along,
    src: &[f32],
    sp: Place,
    dst: &mut Dst<'_, '_>,
    dp: Place,
    init: Init<'_>,
    terms: &mut Vec<(usize, usize)>,
    pack: &mut Vec<f32>,
) {
    let (k, c, cout) = (al.k, al.inner, op.cout);
    let s = al.g.stride;
    if s == 1 && al.lout * c >= MIN_SHIFTED_COLS {
        // Absolute output positions where every tap is inside: p >= pad_before and
        // p + (k - 1) * dilation - pad_before < l_full.
        let span = (k - 1) * al.g.dilation;
        let lo = al.g.pad_before.max(al.out_row0);
        let hi = (al.l_full + al.g.pad_before)
            .saturating_sub(span)
            .min(al.out_row0 + al.lout);
        // One call per run of output positions `p0..p0 + len` that read the same taps: the
        // interior block (every tap inside) at once, each border position alone.
        let mut run = |p0: usize, len: usize, terms: &mut Vec<(usize, usize)>| {
            terms.clear();
            for ci in 0..op.cin {
                for t in 0..k {
                    if let Some(i) = al.input(p0, t) {
                        terms.push((
                            (ci * k + t) * cout,
                            sp.base + ci * sp.cs + (i - al.in_row0) * c,
                        ));
                    }
                }
            }
            for a in 0..al.outer {
                gemm_terms(
                    op.simd,
                    op.w,
                    &src[a * al.lin * c..],
                    terms,
                    dst.cols(
                        dp.base + (a * al.lout + p0 - al.out_row0) * c,
                        dp.cs,
                        cout,
                        len * c,
                    ),
                    init,
                );
            }
        };
        if lo < hi {
            run(lo, hi - lo, terms);
        }
        for p in al.out_row0..al.out_row0 + al.lout {
            if !(lo..hi).contains(&p) {
                run(p, 1, terms);
            }
        }
        return;
    }
    // im2col along the axis: pack row (ci, t), column (u - u0) * c + j for output unit
    // u = a * lout + p_local, in chunks of units.
    let rows = op.cin * k;
    let units = al.outer * al.lout;
    let per_chunk = (PACK_FLOATS / (rows * c).max(1)).max(1);
    for ur in ranges(units, per_chunk) {
        let n = ur.len() * c;
        grow(pack, rows * n);
        // Tap by tap and segment by segment (one output line's units inside the chunk), the
        // geometry once for all input channels, whose rows then get the same copy.
        for t in 0..k {
            // Absolute output positions whose tap-`t` input is inside.
            let valid = valid_outputs(&al.g, t, al.l_full, al.out_row0 + al.lout);
            let mut u = ur.start;
            while u < ur.end {
                let (a, pl0) = (u / al.lout, u % al.lout);
                let pl1 = al.lout.min(pl0 + (ur.end - u));
                let col = (u - ur.start) * c;
                let seg_len = (pl1 - pl0) * c;
                // Clamped into the segment: with paddings wider than the kernel, the valid
                // outputs can start past its end (the whole segment reads zeros).
                let lo = valid.start.clamp(al.out_row0 + pl0, al.out_row0 + pl1);
                let hi = valid.end.min(al.out_row0 + pl1).max(lo);
                let (z0, z1) = ((lo - al.out_row0 - pl0) * c, (hi - al.out_row0 - pl0) * c);
                // Input offset of the segment's first valid output, channel 0.
                let from0 = (lo < hi).then(|| {
                    let i0 = lo * s + t * al.g.dilation - al.g.pad_before;
                    sp.base + (a * al.lin + i0 - al.in_row0) * c
                });
                for ci in 0..op.cin {
                    let start = (ci * k + t) * n + col;
                    let seg = &mut pack[start..start + seg_len];
                    seg[..z0].fill(0.0);
                    seg[z1..].fill(0.0);
                    let Some(from0) = from0 else {
                        continue;
                    };
                    let from = from0 + ci * sp.cs;
                    let out = &mut seg[z0..z1];
                    if s == 1 {
                        out.copy_from_slice(&src[from..from + out.len()]);
                    } else if c == 1 {
                        for (j, v) in out.iter_mut().enumerate() {
                            *v = src[from + j * s];
                        }
                    } else {
                        for (j, chunk) in out.chunks_exact_mut(c).enumerate() {
                            let f = from + j * s * c;
                            chunk.copy_from_slice(&src[f..f + c]);
                        }
                    }
                }
                u += pl1 - pl0;
            }
        }
        terms.clear();
        terms.extend((0..rows).map(|r| (r * cout, r * n)));
        gemm_terms(
            op.simd,
            op.w,
            pack,
            terms,
            dst.cols(dp.base + ur.start * c, dp.cs, cout, n),
            init,
        );
    }
}
