//! Fitting a TT to a quadratic objective on its dense form, by alternating least squares.
//!
//! A TT of shape `(n_0..n_{N-1})` is read as the matrix `M (m, n_{N-1})`, `m = n_0 .. n_{N-2}`
//! (the row-major flattening of the full tensor). The objective is
//!
//! `f(M) = tr(M^T S M) - 2 tr(M^T C) + c0 + lambda ||M - M_0||_F^2`
//!
//! with `S (m, m)` symmetric positive semi-definite, `C (m, n_{N-1})` and a ridge `lambda >= 0`
//! toward an anchor `M_0`. For a linear layer `y = M^T p` fitted to targets `y` over samples `p`,
//! `S = sum p p^T`, `C = sum p y^T` and `c0 = sum ||y||^2`, so `f` is the squared error summed
//! over the samples, computed from the second moments alone.
//!
//! Each sweep updates the cores left to right. Before core `k` is updated, cores `0..k` are
//! left-orthonormal and `k+1..N` right-orthonormal (mixed canonical form), so `M` is linear in
//! `G_k` through an isometry `A_k` and the best `G_k` solves `A_k^T (S + lambda I) A_k g =
//! A_k^T (C + lambda M_0)`, a system whose condition number is at most that of
//! `S + lambda I`. It is solved by conjugate gradients from the current core, so no update ever
//! increases `f`; the core is then orthonormalised (QR) and its `R` factor moved into core `k+1`.

use ndarray::Array3;

use crate::array::reshape_owned;
use crate::error::{Error, Result};
use crate::linalg::{gemm, thin_qr};
use crate::orthogonalize::right_orthogonalize;
use crate::tensor::TtTensor;

/// The quadratic objective of the module docs.
#[derive(Clone, Copy, Debug)]
pub struct Quadratic<'a> {
    /// `S (m, m)`, row-major, symmetric positive semi-definite.
    pub s: &'a [f64],
    /// `C (m, n_{N-1})`, row-major.
    pub c: &'a [f64],
    /// The constant `c0` (so that `f` is the fitted error itself).
    pub c0: f64,
    /// The ridge weight `lambda >= 0`.
    pub ridge: f64,
    /// The ridge's anchor `M_0 (m, n_{N-1})`, row-major; `None` for `M_0 = 0`.
    pub anchor: Option<&'a [f64]>,
}

/// How long to iterate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    /// Left-to-right sweeps over the cores.
    pub sweeps: usize,
    /// Conjugate-gradient iterations per core update, at most.
    pub cg_iterations: usize,
    /// A core update stops when its residual is below this fraction of its right-hand side.
    pub cg_tolerance: f64,
}

impl Default for FitOptions {
    /// 5 sweeps (the first gives most of the gain on convolution layers), 40 CG iterations to a
    /// relative residual of 1e-6.
    fn default() -> Self {
        Self {
            sweeps: 5,
            cg_iterations: 40,
            cg_tolerance: 1e-6,
        }
    }
}

/// What a fit did.
#[derive(Clone, Debug, PartialEq)]
pub struct FitReport {
    /// `f` at the start (the ridge included).
    pub initial: f64,
    /// `f` after each sweep.
    pub after_sweep: Vec<f64>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The fixed parts of one core's subproblem: `L (I, r_k)` and `R (r_{k+1}, J)`.
struct Interfaces<'a> {
    left: &'a [f64],
    i: usize,
    rk: usize,
    n: usize,
    right: &'a [f64],
    rk1: usize,
    j: usize,
}

impl Interfaces<'_> {
    /// `A v`: the full tensor `L v R` as `(I n, J)`, row-major (= `M` flattened).
    fn apply(&self, v: &[f64]) -> Vec<f64> {
        let lv = gemm(self.left, self.i, self.rk, v, self.n * self.rk1, false);
        gemm(&lv, self.i * self.n, self.rk1, self.right, self.j, false)
    }

    /// `A^T x`: `L^T x R^T` as `(r_k, n, r_{k+1})`, row-major.
    fn adjoint(&self, x: &[f64]) -> Vec<f64> {
        let xr = gemm(x, self.i * self.n, self.j, self.right, self.rk1, true);
        // L^T (r_k, I) times xr as (I, n r_{k+1}).
        let lt: Vec<f64> = transpose(self.left, self.i, self.rk);
        gemm(&lt, self.rk, self.i, &xr, self.n * self.rk1, false)
    }
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// `(S + lambda I) M` for `M (m, n)`.
fn apply_s(q: &Quadratic<'_>, mat: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut out = gemm(q.s, m, m, mat, n, false);
    if q.ridge > 0.0 {
        for (o, x) in out.iter_mut().zip(mat) {
            *o += q.ridge * x;
        }
    }
    out
}

/// Fits `tt` to the objective ([`Quadratic`]) by `options.sweeps` ALS sweeps (module docs);
/// returns the fitted TT (same shape; a bond rank can only shrink where it exceeded what its
/// neighbours can carry) and the objective's values.
///
/// Errors: `S`, `C` or the anchor of the wrong size, a negative or non-finite ridge, or a
/// non-finite value in the objective.
pub fn fit_tt(
    tt: &TtTensor<f64>,
    q: &Quadratic<'_>,
    options: &FitOptions,
) -> Result<(TtTensor<f64>, FitReport)> {
    let shape = tt.shape();
    let nn = shape.len();
    if nn < 2 {
        return Err(Error::ShapeMismatch {
            left: shape,
            right: vec![0, 0],
        });
    }
    let n_last = shape[nn - 1];
    let m: usize = shape[..nn - 1].iter().product();
    let bad = |what: &'static str, got: usize, want: usize| Error::OutOfRange {
        what,
        element: "elements",
        detail: format!("{got} given, {want} expected for the TT shape {shape:?}"),
    };
    if q.s.len() != m * m {
        return Err(bad("the fit objective's S", q.s.len(), m * m));
    }
    if q.c.len() != m * n_last {
        return Err(bad("the fit objective's C", q.c.len(), m * n_last));
    }
    if let Some(a) = q.anchor
        && a.len() != m * n_last
    {
        return Err(bad("the fit objective's anchor", a.len(), m * n_last));
    }
    if !(q.ridge.is_finite() && q.ridge >= 0.0) {
        return Err(Error::OutOfRange {
            what: "the fit's ridge",
            element: "f64",
            detail: format!("{} (finite and >= 0 expected)", q.ridge),
        });
    }
    for (what, v) in [
        ("the fit objective's S", q.s),
        ("the fit objective's C", q.c),
        ("the fit objective's anchor", q.anchor.unwrap_or(&[])),
    ] {
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite { what, index });
        }
    }
    // (C + lambda M_0) and c0 + lambda ||M_0||^2.
    let mut c = q.c.to_vec();
    let mut c0 = q.c0;
    if let Some(a) = q.anchor {
        for (ci, ai) in c.iter_mut().zip(a) {
            *ci += q.ridge * ai;
        }
        c0 += q.ridge * dot(a, a);
    }
    let objective = |mat: &[f64]| -> f64 {
        let sm = apply_s(q, mat, m, n_last);
        dot(mat, &sm) - 2.0 * dot(mat, &c) + c0
    };
    let initial = objective(
        tt.to_dense()?
            .as_slice()
            .expect("a fresh dense tensor is standard"),
    );
    let mut cores: Vec<Array3<f64>> = tt.cores().to_vec();
    let mut after_sweep = Vec::with_capacity(options.sweeps);
    for _ in 0..options.sweeps {
        cores = right_orthogonalize(cores);
        // rights[k] = cores k+1.. merged as (r_{k+1}, J_k); rights[N-1] = [1].
        let mut rights: Vec<Vec<f64>> = vec![vec![1.0]; nn];
        for k in (0..nn - 1).rev() {
            let (r, nk, _) = cores[k + 1].dim();
            let jk1: usize = shape[k + 2..].iter().product();
            let core = cores[k + 1].as_standard_layout().into_owned();
            let g = core.as_slice().expect("standard layout");
            rights[k] = gemm(g, r * nk, cores[k + 1].dim().2, &rights[k + 1], jk1, false);
        }
        let mut left: Vec<f64> = vec![1.0];
        let mut value = initial;
        for k in 0..nn {
            let (rk, n, rk1) = cores[k].dim();
            let i: usize = shape[..k].iter().product();
            let j: usize = shape[k + 1..].iter().product();
            let ifs = Interfaces {
                left: &left,
                i,
                rk,
                n,
                right: &rights[k],
                rk1,
                j,
            };
            let b = ifs.adjoint(&c);
            let h = |v: &[f64]| ifs.adjoint(&apply_s(q, &ifs.apply(v), m, n_last));
            let x0 = cores[k]
                .as_standard_layout()
                .into_owned()
                .into_raw_vec_and_offset()
                .0;
            let (x, f) = conjugate_gradients(&h, &b, x0, c0, options);
            value = f;
            let core = Array3::from_shape_vec((rk, n, rk1), x).expect("the core's size");
            if k + 1 < nn {
                // Left-orthonormalise core k and carry R into core k+1.
                let flat = core.into_raw_vec_and_offset().0;
                let (qm, r, kk) = thin_qr(&flat, rk * n, rk1);
                let (_, n1, r2) = cores[k + 1].dim();
                let next = cores[k + 1].as_standard_layout().into_owned();
                let next = gemm(
                    &r,
                    kk,
                    rk1,
                    next.as_slice().expect("standard"),
                    n1 * r2,
                    false,
                );
                cores[k + 1] = Array3::from_shape_vec((kk, n1, r2), next).expect("R G_{k+1}");
                left = gemm(&left, i, rk, &qm, n * kk, false);
                cores[k] = reshape_owned(
                    ndarray::Array2::from_shape_vec((rk * n, kk), qm).expect("Q"),
                    (rk, n, kk),
                );
            } else {
                cores[k] = core;
            }
        }
        after_sweep.push(value);
    }
    Ok((
        TtTensor::new(cores)?,
        FitReport {
            initial,
            after_sweep,
        },
    ))
}

/// Minimises `x^T H x - 2 b^T x + c0` from `x0` by conjugate gradients; returns `x` and the
/// objective there. The iterates minimise over growing Krylov spaces that contain `x0`, so the
/// objective never increases.
fn conjugate_gradients(
    h: &dyn Fn(&[f64]) -> Vec<f64>,
    b: &[f64],
    mut x: Vec<f64>,
    c0: f64,
    options: &FitOptions,
) -> (Vec<f64>, f64) {
    let hx = h(&x);
    let mut r: Vec<f64> = b.iter().zip(&hx).map(|(bi, hi)| bi - hi).collect();
    let mut p = r.clone();
    let mut rs = dot(&r, &r);
    let target = options.cg_tolerance * dot(b, b).sqrt();
    for _ in 0..options.cg_iterations {
        if rs.sqrt() <= target {
            break;
        }
        let hp = h(&p);
        let php = dot(&p, &hp);
        if php.is_nan() || php <= 0.0 {
            break;
        }
        let alpha = rs / php;
        for ((xi, ri), (pi, hpi)) in x.iter_mut().zip(r.iter_mut()).zip(p.iter().zip(&hp)) {
            *xi += alpha * pi;
            *ri -= alpha * hpi;
        }
        let rs_new = dot(&r, &r);
        let beta = rs_new / rs;
        rs = rs_new;
        for (pi, ri) in p.iter_mut().zip(&r) {
            *pi = ri + beta * *pi;
        }
    }
    // f(x) = x^T H x - 2 b^T x + c0 with H x = b - r.
    let f = -dot(&x, b) - dot(&x, &r) + c0;
    (x, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RankSpec, Truncation, tt_svd};
    use ndarray::ArrayD;

    fn random_tt(shape: &[usize], ranks: &[usize], seed: u64) -> TtTensor<f64> {
        TtTensor::random(shape, ranks, 1.0, seed).unwrap()
    }

    #[test]
    fn with_identity_moments_als_is_at_least_as_good_as_tt_svd() {
        // S = I, C = target, c0 = ||target||^2: f = ||M - target||^2.
        let shape = [4usize, 3, 5];
        let target = random_tt(&shape, &[1, 4, 5, 1], 1).to_dense().unwrap();
        let m = 12;
        let mut s = vec![0.0; m * m];
        for i in 0..m {
            s[i * m + i] = 1.0;
        }
        let t = target.as_slice().unwrap();
        let q = Quadratic {
            s: &s,
            c: t,
            c0: dot(t, t),
            ridge: 0.0,
            anchor: None,
        };
        let start = tt_svd(
            target.view(),
            &Truncation::rank(RankSpec::Explicit(vec![1, 2, 2, 1])),
        )
        .unwrap()
        .0;
        let (fitted, report) = fit_tt(&start, &q, &FitOptions::default()).unwrap();
        let svd_err = report.initial;
        let als_err = *report.after_sweep.last().unwrap();
        assert!(als_err <= svd_err * (1.0 + 1e-9), "{als_err} > {svd_err}");
        for w in report.after_sweep.windows(2) {
            assert!(
                w[1] <= w[0] * (1.0 + 1e-9),
                "a sweep increased f: {:?}",
                report.after_sweep
            );
        }
        // The reported value is the objective of the returned TT.
        let d = fitted.to_dense().unwrap();
        let direct: f64 = d.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum();
        assert!(
            (direct - als_err).abs() <= 1e-9 * dot(t, t),
            "{direct} vs {als_err}"
        );
    }

    #[test]
    fn a_representable_target_under_correlated_moments_is_recovered() {
        // y = M*^T p with M* a rank-(2,2) TT; S from correlated samples: ALS from a random
        // start reaches f ~ 0 and M*.
        let shape = [3usize, 4, 2];
        let truth = random_tt(&shape, &[1, 2, 2, 1], 2).to_dense().unwrap();
        let (m, n) = (12, 2);
        let samples = 200;
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let mut p = vec![0.0; samples * m];
        for s in 0..samples {
            let common = next();
            for i in 0..m {
                p[s * m + i] = next() + 0.8 * common;
            }
        }
        let t = truth.as_slice().unwrap();
        let y = gemm(&p, samples, m, t, n, false);
        let pt = transpose(&p, samples, m);
        let s = gemm(&pt, m, samples, &p, m, false);
        let c = gemm(&pt, m, samples, &y, n, false);
        let q = Quadratic {
            s: &s,
            c: &c,
            c0: dot(&y, &y),
            ridge: 0.0,
            anchor: None,
        };
        let start = random_tt(&shape, &[1, 2, 2, 1], 3);
        let options = FitOptions {
            sweeps: 30,
            cg_iterations: 100,
            cg_tolerance: 1e-12,
        };
        let (fitted, report) = fit_tt(&start, &q, &options).unwrap();
        let last = *report.after_sweep.last().unwrap();
        assert!(
            last <= 1e-10 * dot(&y, &y),
            "f = {last}, ||y||^2 = {}",
            dot(&y, &y)
        );
        let d: ArrayD<f64> = fitted.to_dense().unwrap();
        let err: f64 = d
            .iter()
            .zip(t)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        assert!(err <= 1e-4 * dot(t, t).sqrt(), "M differs by {err}");
    }

    #[test]
    fn bad_objectives_are_errors() {
        let tt = random_tt(&[2, 3], &[1, 2, 1], 4);
        let s = vec![0.0; 4];
        let c = vec![0.0; 6];
        let q = Quadratic {
            s: &s,
            c: &c,
            c0: 0.0,
            ridge: 0.0,
            anchor: None,
        };
        assert!(fit_tt(&tt, &q, &FitOptions::default()).is_ok());
        let short = vec![0.0; 3];
        assert!(fit_tt(&tt, &Quadratic { s: &short, ..q }, &FitOptions::default()).is_err());
        assert!(fit_tt(&tt, &Quadratic { ridge: -1.0, ..q }, &FitOptions::default()).is_err());
        let nan = vec![f64::NAN; 6];
        assert!(fit_tt(&tt, &Quadratic { c: &nan, ..q }, &FitOptions::default()).is_err());
    }
}
