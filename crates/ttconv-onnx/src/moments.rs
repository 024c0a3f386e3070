//! Second moments of a convolution's input patches and outputs over calibration data: all that
//! fitting its kernel to those outputs needs.
//!
//! A Conv computes `y[n, o, q] = b[o] + sum_i M[i, o] p_{n,q}[i]` where `p_{n,q}` is the input
//! patch under output position `q` of sample `n`, flattened over `(c, t_1..t_d)` row-major (the
//! TT layout `(in, k_1..k_d)` of the kernel's modes), and `M (in k_1..k_d, out)` the kernel in
//! that layout. Over all positions `P`:
//!
//! `sum ||M^T p + b - y||^2 = tr(M^T S M) + 2 b^T M^T sp + P ||b||^2 - 2 tr(M^T C) - 2 b^T sy + yy`
//!
//! with `S = sum p p^T`, `C = sum p y^T`, `sp = sum p`, `sy = sum y`, `yy = sum ||y||^2`.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};
use ndarray::ArrayD;
use ttconv::{AxisGeometry, output_spatial};

use crate::error::{Error, Result};

/// Rows of patches built at a time (bounds the scratch to `ROWS * m` f64).
const ROWS: usize = 2048;

/// The moments of the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// Patch length `in k_1..k_d`.
    pub m: usize,
    /// Output channels.
    pub out: usize,
    /// `S (m, m)`, row-major.
    pub s: Vec<f64>,
    /// `C (m, out)`, row-major.
    pub c: Vec<f64>,
    /// `sum p`.
    pub sp: Vec<f64>,
    /// `sum y`.
    pub sy: Vec<f64>,
    /// `sum ||y||^2`.
    pub yy: f64,
    /// Positions summed.
    pub count: f64,
}

fn gemm_tn(dst: &mut [f64], a: &[f64], b: &[f64], rows: usize, m: usize, n: usize) {
    // dst (m, n) += a^T (m, rows) b (rows, n).
    let a = MatRef::from_row_major_slice(a, rows, m).transpose();
    let b = MatRef::from_row_major_slice(b, rows, n);
    let dst = MatMut::from_row_major_slice_mut(dst, m, n);
    matmul(dst, Accum::Add, a, b, 1.0, faer::get_global_parallelism());
}

impl Moments {
    /// Zero moments for patches of length `m` and `out` output channels.
    pub fn new(m: usize, out: usize) -> Self {
        Self {
            m,
            out,
            s: vec![0.0; m * m],
            c: vec![0.0; m * out],
            sp: vec![0.0; m],
            sy: vec![0.0; out],
            yy: 0.0,
            count: 0.0,
        }
    }

    /// Adds the patches of `x (N, in, D..)` under `kernel` and `geometry`, paired with the
    /// outputs `y (N, out, D'..)` they should produce; an error when the shapes do not agree.
    pub fn add(
        &mut self,
        x: &ArrayD<f32>,
        y: &ArrayD<f32>,
        kernel: &[usize],
        geometry: &[AxisGeometry],
    ) -> Result<()> {
        let d = kernel.len();
        let bad = |reason: String| Error::invalid("calibration activations", reason);
        if x.ndim() != d + 2 || y.ndim() != d + 2 || x.shape()[0] != y.shape()[0] {
            return Err(bad(format!(
                "input {:?} and output {:?} for a kernel of order {d}",
                x.shape(),
                y.shape()
            )));
        }
        let cin = x.shape()[1];
        let taps: usize = kernel.iter().product();
        if cin * taps != self.m || y.shape()[1] != self.out {
            return Err(bad(format!(
                "input {:?}, output {:?}: patches of {} values and {} channels expected",
                x.shape(),
                y.shape(),
                self.m,
                self.out
            )));
        }
        let in_sp = &x.shape()[2..];
        let out_sp = output_spatial(in_sp, kernel, geometry)?;
        if out_sp != y.shape()[2..] {
            return Err(bad(format!(
                "output spatial size {:?}, the Conv's geometry gives {out_sp:?}",
                &y.shape()[2..]
            )));
        }
        let x = x.as_standard_layout();
        let y = y.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let ys = y.as_slice().expect("standard layout");
        let positions: usize = out_sp.iter().product();
        let in_size: usize = in_sp.iter().product();
        // Strides of the input's spatial axes, and each tap's offsets.
        let mut in_stride = vec![1usize; d];
        for j in (0..d.saturating_sub(1)).rev() {
            in_stride[j] = in_stride[j + 1] * in_sp[j + 1];
        }
        let tap_index: Vec<Vec<usize>> = (0..taps).map(|t| unravel(t, kernel)).collect();
        let (m, out) = (self.m, self.out);
        let mut p = vec![0.0f64; ROWS * m];
        let mut yr = vec![0.0f64; ROWS * out];
        for n in 0..x.shape()[0] {
            let mut q0 = 0;
            while q0 < positions {
                let rows = ROWS.min(positions - q0);
                p[..rows * m].fill(0.0);
                for r in 0..rows {
                    let q = unravel(q0 + r, &out_sp);
                    let row = &mut p[r * m..(r + 1) * m];
                    for (t, ti) in tap_index.iter().enumerate() {
                        // The input position of this tap, or none in the padding.
                        let mut offset = 0usize;
                        let mut inside = true;
                        for j in 0..d {
                            let g = &geometry[j];
                            let pos = (q[j] * g.stride + ti[j] * g.dilation) as isize
                                - g.pad_before as isize;
                            if pos < 0 || pos as usize >= in_sp[j] {
                                inside = false;
                                break;
                            }
                            offset += pos as usize * in_stride[j];
                        }
                        if inside {
                            for c in 0..cin {
                                row[c * taps + t] = f64::from(xs[(n * cin + c) * in_size + offset]);
                            }
                        }
                    }
                    for o in 0..out {
                        let v = f64::from(ys[(n * out + o) * positions + q0 + r]);
                        yr[r * out + o] = v;
                        self.sy[o] += v;
                        self.yy += v * v;
                    }
                    for (s, v) in self.sp.iter_mut().zip(row.iter()) {
                        *s += v;
                    }
                }
                gemm_tn(&mut self.s, &p[..rows * m], &p[..rows * m], rows, m, m);
                gemm_tn(&mut self.c, &p[..rows * m], &yr[..rows * out], rows, m, out);
                q0 += rows;
            }
            self.count += positions as f64;
        }
        Ok(())
    }

    /// Adds `other`'s sums (same `m` and `out`).
    pub fn merge(&mut self, other: &Moments) {
        for (a, b) in self.s.iter_mut().zip(&other.s) {
            *a += b;
        }
        for (a, b) in self.c.iter_mut().zip(&other.c) {
            *a += b;
        }
        for (a, b) in self.sp.iter_mut().zip(&other.sp) {
            *a += b;
        }
        for (a, b) in self.sy.iter_mut().zip(&other.sy) {
            *a += b;
        }
        self.yy += other.yy;
        self.count += other.count;
    }

    /// The moments of the patches and outputs minus their means (what the kernel is fitted to
    /// when the bias is refitted: the best bias for any `M` is `(sy - M^T sp) / P`).
    pub fn centered(&self) -> Moments {
        let mut c = self.clone();
        let n = self.count.max(1.0);
        for i in 0..self.m {
            for j in 0..self.m {
                c.s[i * self.m + j] -= self.sp[i] * self.sp[j] / n;
            }
            for o in 0..self.out {
                c.c[i * self.out + o] -= self.sp[i] * self.sy[o] / n;
            }
        }
        c.yy -= self.sy.iter().map(|v| v * v).sum::<f64>() / n;
        c.sp.fill(0.0);
        c.sy.fill(0.0);
        c
    }

    /// The bias that is best for the kernel `M (m, out)`: `(sy - M^T sp) / P`.
    pub fn best_bias(&self, mmat: &[f64]) -> Vec<f64> {
        let n = self.count.max(1.0);
        (0..self.out)
            .map(|o| {
                let mp: f64 = (0..self.m)
                    .map(|i| mmat[i * self.out + o] * self.sp[i])
                    .sum();
                (self.sy[o] - mp) / n
            })
            .collect()
    }

    /// `sum ||M^T p + b - y||^2` over the positions (module docs).
    pub fn squared_error(&self, mmat: &[f64], bias: Option<&[f64]>) -> f64 {
        let (m, out) = (self.m, self.out);
        let mut sm = vec![0.0; m * out];
        let smat = MatRef::from_row_major_slice(&self.s, m, m);
        let mm = MatRef::from_row_major_slice(mmat, m, out);
        matmul(
            MatMut::from_row_major_slice_mut(&mut sm, m, out),
            Accum::Replace,
            smat,
            mm,
            1.0,
            faer::get_global_parallelism(),
        );
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let mut e = dot(mmat, &sm) - 2.0 * dot(mmat, &self.c) + self.yy;
        if let Some(b) = bias {
            let mtsp: Vec<f64> = (0..out)
                .map(|o| (0..m).map(|i| mmat[i * out + o] * self.sp[i]).sum())
                .collect();
            e += 2.0 * dot(b, &mtsp) + self.count * dot(b, b) - 2.0 * dot(b, &self.sy);
        }
        e.max(0.0)
    }
}

/// The row-major multi-index of flat index `i` in `dims`.
fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for j in (0..dims.len()).rev() {
        idx[j] = i % dims[j];
        i /= dims[j];
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn the_moments_give_the_direct_squared_error_of_a_conv() {
        // A 2-D conv with stride, dilation and asymmetric padding, computed directly.
        let (n, cin, cout) = (2usize, 3usize, 4usize);
        let kernel = [2usize, 3];
        let geometry = [
            AxisGeometry {
                stride: 2,
                dilation: 1,
                pad_before: 1,
                pad_after: 0,
            },
            AxisGeometry {
                stride: 1,
                dilation: 2,
                pad_before: 0,
                pad_after: 2,
            },
        ];
        let in_sp = [5usize, 6];
        let mut seed = 1u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let x = ArrayD::from_shape_simple_fn(IxDyn(&[n, cin, in_sp[0], in_sp[1]]), &mut rnd);
        let out_sp = output_spatial(&in_sp, &kernel, &geometry).unwrap();
        let y = ArrayD::from_shape_simple_fn(IxDyn(&[n, cout, out_sp[0], out_sp[1]]), &mut rnd);
        let m = cin * 6;
        let mmat: Vec<f64> = (0..m * cout).map(|_| f64::from(rnd())).collect();
        let bias: Vec<f64> = (0..cout).map(|_| f64::from(rnd())).collect();
        let mut mo = Moments::new(m, cout);
        mo.add(&x, &y, &kernel, &geometry).unwrap();
        // Direct: y_hat[o] = b[o] + sum_{c, t} M[(c, t), o] x[c, q*s + t*dil - pad].
        let mut direct = 0.0f64;
        for b in 0..n {
            for q0 in 0..out_sp[0] {
                for q1 in 0..out_sp[1] {
                    for o in 0..cout {
                        let mut acc = bias[o];
                        for c in 0..cin {
                            for t0 in 0..2 {
                                for t1 in 0..3 {
                                    let i0 = (q0 * 2 + t0) as isize - 1;
                                    let i1 = (q1 + t1 * 2) as isize;
                                    if !(0..5).contains(&i0) || i1 >= 6 {
                                        continue;
                                    }
                                    let w = mmat[(c * 6 + t0 * 3 + t1) * cout + o];
                                    acc += w * f64::from(x[[b, c, i0 as usize, i1 as usize]]);
                                }
                            }
                        }
                        direct += (acc - f64::from(y[[b, o, q0, q1]])).powi(2);
                    }
                }
            }
        }
        let via = mo.squared_error(&mmat, Some(&bias));
        assert!(
            (via - direct).abs() <= 1e-9 * direct.max(1.0),
            "{via} vs {direct}"
        );
        // Centered moments with the best bias give the same error as the uncentered ones.
        let best = mo.best_bias(&mmat);
        let e_uncentered = mo.squared_error(&mmat, Some(&best));
        let e_centered = mo.centered().squared_error(&mmat, None);
        assert!((e_uncentered - e_centered).abs() <= 1e-9 * e_uncentered.max(1.0));
        assert!(e_uncentered <= via);
        // Wrong shapes are errors.
        assert!(mo.add(&x, &x, &kernel, &geometry).is_err());
    }
}
