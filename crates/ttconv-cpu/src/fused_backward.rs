//! The fused factorized backward: the program's steps walked in reverse one batch item at a
//! time, every intermediate gradient in a per-thread workspace that stays in L2.
//!
//! For item `b` and step `i` (from the last), with `g` the gradient of the step's output
//! (`gy[b]` for the last step, read in place) and `z = kept[i][b]` its input kept by the
//! training forward:
//! - the weight gradient `dw_i += z g^T` (a contraction: `(in, S) x (S, out)`; a convolution:
//!   one such product per tap over the positions where that tap reads inside the input) goes
//!   into the partial sum of the item's group;
//! - the input gradient `w_i g` (a contraction), or the transposed 1-D convolution (a
//!   convolution), replaces `g` for the next step, in the other workspace buffer; step 0 writes
//!   the item's part of `dL/dx` instead (when asked for).
//!
//! Against the primitives one by one ([`ttconv::FactorizedProgram::backward`]) this removes the
//! rayon barrier between steps, keeps each intermediate gradient in the cache that produced it,
//! and allocates none of them (a warm workspace is reused by every call). The GEMMs are the
//! primitives' own per-item ones ([`crate::conv_along::grad_input_lines`],
//! [`crate::conv_along::grad_weight_lines`], [`gemm`]), so both give the same sums up to the
//! order of the reduction over the batch.
//!
//! Tasks are groups of consecutive items, at most [`MAX_PARTIALS`] of them and a fixed number
//! for a given batch (never the thread count): each group adds into its own partial sum, and the
//! partials are added in group order, so the result does not depend on the thread count or on
//! scheduling. With fewer than two items there is only one task: the backend then runs the
//! primitives, which split an item's positions over the cores.

use std::cell::RefCell;
use std::ops::Range;

use ndarray::{Array3, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis, Ix2, Ix3};
use rayon::prelude::*;
use ttconv::{FactorizedProgram, StepOp, StepWeights};

use crate::CpuBackend;
use crate::conv_along::{Lines, grad_input_lines, grad_weight_lines};
use crate::fused::grow;
use crate::gemm::gemm;
use crate::par::{MAX_PARTIALS, PARTIALS_BYTES, ranges, scratch, sum_in_order};

/// What a step's backward computes, with its weight.
#[derive(Debug)]
enum Op<'w> {
    /// Contraction, weight `(in, out)`.
    Contract(ArrayView2<'w, f32>),
    /// 1-D convolution, core `(in, k, out)` on the `(r, A, L, C)` view of its input.
    Conv(ArrayView3<'w, f32>, Lines),
}

/// One step of the reverse walk.
#[derive(Debug)]
struct Step<'w> {
    op: Op<'w>,
    cin: usize,
    cout: usize,
    /// Positions of the step's input and output.
    s_in: usize,
    s_out: usize,
    /// Where the step's weight gradient lies in a partial sum of all of them.
    grad: Range<usize>,
}

/// The reverse walk for one program: its steps with their weights and the layout of the
/// gradients.
#[derive(Debug)]
pub(crate) struct Plan<'w> {
    steps: Vec<Step<'w>>,
    batch: usize,
    /// Floats of all weight gradients together.
    grad_len: usize,
}

impl<'w> Plan<'w> {
    /// The program's steps with their weights (each of its step's weight shape, which the
    /// caller checked: [`crate::check::program_operands`]).
    pub(crate) fn new(program: &FactorizedProgram, weights: &StepWeights<'w, CpuBackend>) -> Self {
        let mut grad_len = 0;
        let steps = program
            .steps()
            .iter()
            .zip(&weights.steps)
            .map(|(step, w)| {
                let (cin, cout) = (step.in_channels(), step.out_channels());
                let op = match step.op {
                    StepOp::Contract => Op::Contract(
                        w.view()
                            .into_dimensionality::<Ix2>()
                            .expect("a contraction's weight is (in, out)"),
                    ),
                    StepOp::ConvAlong {
                        axis,
                        kernel,
                        geometry,
                    } => {
                        let len_out = step.output_shape[axis + 2];
                        Op::Conv(
                            w.view()
                                .into_dimensionality::<Ix3>()
                                .expect("a convolution's weight is (in, k, out)"),
                            Lines::along(&step.input_shape, axis, len_out, kernel, geometry),
                        )
                    }
                };
                let len = w.as_slice().len();
                grad_len += len;
                Step {
                    op,
                    cin,
                    cout,
                    s_in: step.input_shape[2..].iter().product(),
                    s_out: step.output_shape[2..].iter().product(),
                    grad: grad_len - len..grad_len,
                }
            })
            .collect();
        Self {
            steps,
            batch: program.input_shape()[0],
            grad_len,
        }
    }

    /// Floats of the largest intermediate gradient of one item (the input gradient of a step
    /// after the first).
    fn buffer_floats(&self) -> usize {
        self.steps[1..]
            .iter()
            .map(|s| s.cin * s.s_in)
            .max()
            .unwrap_or(0)
    }

    /// The groups of items, each one task with its own partial sum: as many as the items allow,
    /// at most [`MAX_PARTIALS`], fewer when their partials would exceed [`PARTIALS_BYTES`].
    fn groups(&self) -> usize {
        let by_memory = (PARTIALS_BYTES / (4 * self.grad_len).max(1)).max(1);
        self.batch.min(MAX_PARTIALS).min(by_memory).max(1)
    }
}

/// Per-thread intermediate gradients, grown on demand and reused by every call.
#[derive(Debug, Default)]
struct Workspace {
    a: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// The backward of `plan` from the kept step inputs `kept[i]` `(batch, in_i, S_in_i)` and
/// `gy` `(batch, out, S_out)`: returns `dL/dx` `(batch, in_0, S_in_0)` when `input_grad`, and
/// every step's weight gradient, flat and row-major, in step order.
pub(crate) fn backward(
    plan: &Plan<'_>,
    kept: &[ArrayView3<'_, f32>],
    gy: ArrayView3<'_, f32>,
    input_grad: bool,
) -> (Option<Array3<f32>>, Vec<Vec<f32>>) {
    let first = &plan.steps[0];
    let mut gx = input_grad.then(|| Array3::<f32>::zeros((plan.batch, first.cin, first.s_in)));
    let per_group = plan.batch.div_ceil(plan.groups());
    let need = plan.buffer_floats();
    let groups: Vec<Range<usize>> = ranges(plan.batch, per_group).collect();
    // Each group owns its items' rows of `dL/dx` (when asked for) and one partial sum.
    let mut gx_parts: Vec<Option<ArrayViewMut3<'_, f32>>> = match &mut gx {
        Some(gx) => gx
            .axis_chunks_iter_mut(Axis(0), per_group)
            .map(Some)
            .collect(),
        None => groups.iter().map(|_| None).collect(),
    };
    let partials: Vec<Vec<f32>> = groups
        .par_iter()
        .zip(gx_parts.par_iter_mut())
        .map(|(items, gx_part)| {
            let mut partial = scratch::take(plan.grad_len);
            partial.fill(0.0);
            WORKSPACE.with(|ws| {
                let mut ws = ws.borrow_mut();
                let ws = &mut *ws;
                grow(&mut ws.a, need);
                grow(&mut ws.b, need);
                for (j, b) in items.clone().enumerate() {
                    let gx_item = gx_part.as_mut().map(|p| p.index_axis_mut(Axis(0), j));
                    item(plan, kept, gy, b, gx_item, &mut partial, ws);
                }
            });
            partial
        })
        .collect();
    drop(gx_parts);
    let total = sum_in_order(partials);
    let grads = plan
        .steps
        .iter()
        .map(|s| total[s.grad.clone()].to_vec())
        .collect();
    scratch::give(total);
    (gx, grads)
}

/// Which buffer holds the gradient of the current step's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upstream {
    /// `gy` itself (the last step).
    Gy,
    A,
    B,
}

/// The reverse walk for item `b`: adds its weight gradients into `partial` and writes its input
/// gradient into `gx_item` `(in_0, S_in_0)` when given.
fn item(
    plan: &Plan<'_>,
    kept: &[ArrayView3<'_, f32>],
    gy: ArrayView3<'_, f32>,
    b: usize,
    mut gx_item: Option<ArrayViewMut2<'_, f32>>,
    partial: &mut [f32],
    ws: &mut Workspace,
) {
    let mut upstream = Upstream::Gy;
    for (i, step) in plan.steps.iter().enumerate().rev() {
        let out_len = step.cout * step.s_out;
        // Step 0 writes `dL/dx`; the others the workspace buffer `g` is not in.
        let in_len = if i > 0 { step.cin * step.s_in } else { 0 };
        let (g, buf): (&[f32], &mut [f32]) = match upstream {
            Upstream::Gy => (
                gy.index_axis(Axis(0), b)
                    .to_slice()
                    .expect("gy is row-major"),
                &mut ws.a[..in_len],
            ),
            Upstream::A => (&ws.a[..out_len], &mut ws.b[..in_len]),
            Upstream::B => (&ws.b[..out_len], &mut ws.a[..in_len]),
        };
        let g = ArrayView2::from_shape((step.cout, step.s_out), g).expect("sized above");
        let z = kept[i].index_axis(Axis(0), b);
        let acc = &mut partial[step.grad.clone()];
        match &step.op {
            Op::Contract(_) => {
                let acc = ArrayViewMut2::from_shape((step.cin, step.cout), acc).expect("sized");
                gemm(acc, true, z, g.t());
            }
            Op::Conv(core, lines) => {
                let k = core.dim().1;
                let mut acc =
                    ArrayViewMut2::from_shape((step.cin, k * step.cout), acc).expect("sized");
                grad_weight_lines(z, g, lines, 0..lines.outer * lines.len_out, &mut acc);
            }
        }
        if i == 0 && gx_item.is_none() {
            break;
        }
        let mut dst = match (i, gx_item.as_mut()) {
            (0, Some(gx)) => gx.view_mut(),
            _ => ArrayViewMut2::from_shape((step.cin, step.s_in), buf).expect("sized above"),
        };
        match &step.op {
            Op::Contract(w) => gemm(dst, false, *w, g),
            Op::Conv(core, lines) => {
                dst.fill(0.0);
                grad_input_lines(g, *core, lines, 0..lines.outer * lines.len_in, &mut dst);
            }
        }
        upstream = match upstream {
            Upstream::Gy | Upstream::B => Upstream::A,
            Upstream::A => Upstream::B,
        };
    }
}
