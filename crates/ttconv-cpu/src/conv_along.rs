//! 1-D convolution along one spatial axis, mixing channels, and its gradients, as shifted GEMMs.
//!
//! The activation is viewed as `(B, r, A, L, C)`: `A` the product of the spatial axes before the
//! convolved one, `L` its length, `C` the product of the axes after it; item `b` is the matrix
//! `x_b (r, A * L * C)` whose column `(a * L + l) * C + c` is one spatial position. For one tap
//! `t` the convolution is a GEMM
//! `y[b, :, a, p, c] += core[:, t, :]^T x[b, :, a, p * stride + t * dilation - pad_before, c]`
//! over the output positions `p` whose input position is inside (padding is never built: those
//! positions are simply skipped). With stride 1 the columns of one line `a` form one contiguous
//! run in `x` and in `y`; with `C = 1` a run of stride `stride` in `x`; otherwise one GEMM per
//! position `p` (or per `c`, whichever is longer). Adjacent runs that continue each other in both
//! operands are merged into one GEMM.

use std::ops::Range;

use ndarray::{Array3, ArrayView2, ArrayView3, ArrayViewMut2, Axis, s};
use rayon::prelude::*;
use ttconv::AxisGeometry;

use crate::gemm::{cols, cols_mut, gemm};
use crate::par::{chunk_len, column_tasks, reduction_groups, sum_partials};
use crate::taps::{outputs_reading, tap_offset, valid_outputs};

/// The geometry of a convolution along one axis, on the `(B, r, A, L, C)` view.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lines {
    /// `A`: product of the spatial sizes before the axis.
    pub outer: usize,
    /// `C`: product of the spatial sizes after the axis.
    pub inner: usize,
    /// `L`: input length along the axis.
    pub len_in: usize,
    /// Output length along the axis.
    pub len_out: usize,
    /// Kernel taps.
    pub kernel: usize,
    /// Stride, dilation, padding.
    pub geometry: AxisGeometry,
}

impl Lines {
    /// The `(B, r, A, L, C)` view of an activation of shape `sh` `(B, r, D..)` along spatial
    /// axis `axis`, with output length `len_out` along it.
    pub(crate) fn along(
        sh: &[usize],
        axis: usize,
        len_out: usize,
        kernel: usize,
        geometry: AxisGeometry,
    ) -> Self {
        Self {
            outer: sh[2..axis + 2].iter().product(),
            inner: sh[axis + 3..].iter().product(),
            len_in: sh[axis + 2],
            len_out,
            kernel,
            geometry,
        }
    }
}

/// `n` positions read and written by one GEMM: input columns `x0 + j * xs`, output columns
/// `y0 + j * ys` (absolute column indices of the per-item matrices), `j < n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    x0: usize,
    xs: usize,
    y0: usize,
    ys: usize,
    n: usize,
}

/// Merges runs that continue each other in both operands before handing them on.
struct Merger<F: FnMut(Run)> {
    pending: Option<Run>,
    sink: F,
}

impl<F: FnMut(Run)> Merger<F> {
    fn push(&mut self, r: Run) {
        if r.n == 0 {
            return;
        }
        if let Some(p) = &mut self.pending {
            // The strides the merged run would have: those of whichever run has several
            // positions, else the step from `p` to `r`.
            let (xs, ys) = if p.n > 1 {
                (p.xs, p.ys)
            } else if r.n > 1 {
                (r.xs, r.ys)
            } else {
                (r.x0.wrapping_sub(p.x0), r.y0.wrapping_sub(p.y0))
            };
            let strides_agree = r.n == 1 || (r.xs == xs && r.ys == ys);
            if strides_agree
                && xs > 0
                && ys > 0
                && r.x0 > p.x0
                && r.y0 > p.y0
                && p.x0 + p.n * xs == r.x0
                && p.y0 + p.n * ys == r.y0
            {
                p.xs = xs;
                p.ys = ys;
                p.n += r.n;
                return;
            }
        }
        if let Some(p) = self.pending.replace(r) {
            (self.sink)(p);
        }
    }

    fn finish(mut self) {
        if let Some(p) = self.pending.take() {
            (self.sink)(p);
        }
    }
}

impl Lines {
    /// Emits the runs of tap `t` for line `a` and output positions `p` (all valid).
    fn emit(&self, t: usize, a: usize, p: Range<usize>, out: &mut Merger<impl FnMut(Run)>) {
        let c = self.inner;
        if p.is_empty() || c == 0 {
            return;
        }
        let s = self.geometry.stride;
        let l0 = (p.start * s) as isize + tap_offset(&self.geometry, t);
        debug_assert!(l0 >= 0);
        let x0 = (a * self.len_in + l0 as usize) * c;
        let y0 = (a * self.len_out + p.start) * c;
        let np = p.len();
        if s == 1 {
            out.push(Run {
                x0,
                xs: 1,
                y0,
                ys: 1,
                n: np * c,
            });
        } else if c == 1 {
            out.push(Run {
                x0,
                xs: s,
                y0,
                ys: 1,
                n: np,
            });
        } else if c >= np {
            for j in 0..np {
                out.push(Run {
                    x0: x0 + j * s * c,
                    xs: 1,
                    y0: y0 + j * c,
                    ys: 1,
                    n: c,
                });
            }
        } else {
            for k in 0..c {
                out.push(Run {
                    x0: x0 + k,
                    xs: s * c,
                    y0: y0 + k,
                    ys: c,
                    n: np,
                });
            }
        }
    }

    /// The runs of tap `t` whose output positions lie in the output lines `q` (flattened
    /// `a * len_out + p`).
    fn runs_for_outputs(&self, t: usize, q: Range<usize>, sink: impl FnMut(Run)) {
        let mut out = Merger {
            pending: None,
            sink,
        };
        let lo = self.len_out;
        if !q.is_empty() && lo > 0 {
            let valid = valid_outputs(&self.geometry, t, self.len_in, lo);
            for a in q.start / lo..=(q.end - 1) / lo {
                let start = q.start.saturating_sub(a * lo).max(valid.start);
                let end = (q.end - a * lo).min(valid.end);
                if start < end {
                    self.emit(t, a, start..end, &mut out);
                }
            }
        }
        out.finish();
    }

    /// The runs of tap `t` whose input positions lie in the input lines `q` (flattened
    /// `a * len_in + l`).
    fn runs_for_inputs(&self, t: usize, q: Range<usize>, sink: impl FnMut(Run)) {
        let mut out = Merger {
            pending: None,
            sink,
        };
        let li = self.len_in;
        if !q.is_empty() && li > 0 {
            for a in q.start / li..=(q.end - 1) / li {
                let start = q.start.saturating_sub(a * li);
                let end = (q.end - a * li).min(li);
                let p = outputs_reading(&self.geometry, t, start..end, self.len_out);
                self.emit(t, a, p, &mut out);
            }
        }
        out.finish();
    }
}

/// Forward: `x` `(B, r_in, A * L * C)`, `core` `(r_in, k, r_out)`, returns
/// `y` `(B, r_out, A * L_out * C)`. Tasks: (batch item, block of output lines).
pub(crate) fn forward(
    x: ArrayView3<'_, f32>,
    core: ArrayView3<'_, f32>,
    lines: Lines,
) -> Array3<f32> {
    let (batch, r_in, _) = x.dim();
    let r_out = core.dim().2;
    let c = lines.inner;
    let units = lines.outer * lines.len_out;
    let mut y = Array3::<f32>::zeros((batch, r_out, units * c));
    let chunk = chunk_len(batch, units, r_in * r_out * lines.kernel * c, usize::MAX);
    column_tasks(y.view_mut(), chunk, c)
        .into_par_iter()
        .for_each(|(b, q, mut yb)| {
            let xb = x.index_axis(Axis(0), b);
            let base = q.start * c;
            for t in 0..lines.kernel {
                let wt = core.index_axis(Axis(1), t).reversed_axes(); // (r_out, r_in)
                lines.runs_for_outputs(t, q.clone(), |r| {
                    gemm(
                        cols_mut(&mut yb, r.y0 - base, r.ys, r.n),
                        true,
                        wt,
                        cols(&xb, r.x0, r.xs, r.n),
                    );
                });
            }
        });
    y
}

/// Input gradient (transposed convolution): `gy` `(B, r_out, A * L_out * C)`, `core`
/// `(r_in, k, r_out)`, returns `gx` `(B, r_in, A * L * C)`. Tasks: (batch item, block of input
/// lines), each scattering every tap into its own block.
pub(crate) fn grad_input(
    gy: ArrayView3<'_, f32>,
    core: ArrayView3<'_, f32>,
    lines: Lines,
) -> Array3<f32> {
    let (batch, r_out, _) = gy.dim();
    let r_in = core.dim().0;
    let c = lines.inner;
    let units = lines.outer * lines.len_in;
    let mut gx = Array3::<f32>::zeros((batch, r_in, units * c));
    let chunk = chunk_len(batch, units, r_in * r_out * lines.kernel * c, usize::MAX);
    column_tasks(gx.view_mut(), chunk, c)
        .into_par_iter()
        .for_each(|(b, q, mut gxb)| {
            grad_input_lines(gy.index_axis(Axis(0), b), core, &lines, q, &mut gxb);
        });
    gx
}

/// One item's input gradient on input lines `q`: adds every tap's contribution from `gyb`
/// `(r_out, A * L_out * C)` into `gxb` `(r_in, q.len() * C)`, the item's columns of those lines
/// (zeroed by the caller).
pub(crate) fn grad_input_lines(
    gyb: ArrayView2<'_, f32>,
    core: ArrayView3<'_, f32>,
    lines: &Lines,
    q: Range<usize>,
    gxb: &mut ArrayViewMut2<'_, f32>,
) {
    let base = q.start * lines.inner;
    for t in 0..lines.kernel {
        let wt = core.index_axis(Axis(1), t); // (r_in, r_out)
        lines.runs_for_inputs(t, q.clone(), |r| {
            gemm(
                cols_mut(gxb, r.x0 - base, r.xs, r.n),
                true,
                wt,
                cols(&gyb, r.y0, r.ys, r.n),
            );
        });
    }
}

/// Core gradient: `x` `(B, r_in, A * L * C)`, `gy` `(B, r_out, A * L_out * C)`, returns
/// `gcore` `(r_in, k, r_out)` with `gcore[:, t, :] = sum x_t gy^T` over the valid positions of
/// tap `t`, reduced deterministically over groups of output lines.
pub(crate) fn grad_weight(
    x: ArrayView3<'_, f32>,
    gy: ArrayView3<'_, f32>,
    lines: Lines,
) -> Array3<f32> {
    let (batch, r_in, _) = x.dim();
    let r_out = gy.dim().1;
    let k = lines.kernel;
    let units = lines.outer * lines.len_out;
    let groups = reduction_groups(
        batch,
        units,
        r_in * r_out * k * lines.inner,
        r_in * k * r_out,
    );
    let total = sum_partials(&groups, (r_in, k * r_out), r_in, |group, _, mut acc| {
        for (b, q) in group {
            let (xb, gyb) = (x.index_axis(Axis(0), *b), gy.index_axis(Axis(0), *b));
            grad_weight_lines(xb, gyb, &lines, q.clone(), &mut acc);
        }
    });
    total
        .into_shape_with_order((r_in, k, r_out))
        .expect("standard layout (r_in, k * r_out) reshapes to (r_in, k, r_out)")
}

/// One item's core gradient over output lines `q`: adds `x_t gy^T` for every tap `t` into
/// `acc` `(r_in, k * r_out)` (tap `t` in columns `t * r_out..`), from `xb` `(r_in, A * L * C)`
/// and `gyb` `(r_out, A * L_out * C)`.
pub(crate) fn grad_weight_lines(
    xb: ArrayView2<'_, f32>,
    gyb: ArrayView2<'_, f32>,
    lines: &Lines,
    q: Range<usize>,
    acc: &mut ArrayViewMut2<'_, f32>,
) {
    let r_out = gyb.nrows();
    for t in 0..lines.kernel {
        let mut acc_t = acc.slice_mut(s![.., t * r_out..(t + 1) * r_out]);
        lines.runs_for_outputs(t, q.clone(), |r| {
            gemm(
                acc_t.view_mut(),
                true,
                cols(&xb, r.x0, r.xs, r.n),
                cols(&gyb, r.y0, r.ys, r.n).reversed_axes(),
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merger_joins_continuing_runs_only() {
        let mut got = Vec::new();
        let mut m = Merger {
            pending: None,
            sink: |r| got.push(r),
        };
        m.push(Run {
            x0: 0,
            xs: 1,
            y0: 10,
            ys: 1,
            n: 4,
        });
        m.push(Run {
            x0: 4,
            xs: 1,
            y0: 14,
            ys: 1,
            n: 2,
        });
        m.push(Run {
            x0: 7,
            xs: 1,
            y0: 16,
            ys: 1,
            n: 2,
        });
        m.push(Run {
            x0: 9,
            xs: 2,
            y0: 18,
            ys: 1,
            n: 1,
        });
        m.finish();
        assert_eq!(
            got,
            vec![
                Run {
                    x0: 0,
                    xs: 1,
                    y0: 10,
                    ys: 1,
                    n: 6
                },
                Run {
                    x0: 7,
                    xs: 1,
                    y0: 16,
                    ys: 1,
                    n: 3
                },
            ]
        );
    }
}
