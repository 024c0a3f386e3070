//! Truncated SVD of one unfolding, in f64, through `faer`.
//!
//! Two methods:
//! - the thin SVD (`faer::MatRef::thin_svd`), always accurate;
//! - for `A (m x n)` with `min(m, n) >= GRAM_MIN_DIM`, wide or at most twice as tall as wide:
//!   the eigen-decomposition of the Gram matrix `A A^T (m x m)`, about 3x faster on kernel
//!   unfoldings. Its eigenvalues
//!   `sigma_i^2` are accurate only to about `m * eps * sigma_0^2` in absolute terms, so it is
//!   used only when the result is *resolved*: the smallest kept `sigma^2` and the discarded energy
//!   (and, for tolerance truncation, `delta^2`) lie far above that noise floor. Otherwise the thin
//!   SVD is computed instead; the method used is reported, never a silently worse result.
//!   All eigenvalues are computed (for a tall `A`, only the leading `n` are non-zero and used),
//!   and only the kept eigenvectors (`eigen.rs`: inverse iteration on the tridiagonal form
//!   unless the full decomposition costs less, each result checked). At a fixed rank far below a
//!   Gram size of at least 1024 (`lobpcg.rs`), the kept eigenpairs alone are computed by LOBPCG,
//!   iterated until their energy has converged; only their singular values are then reported.
//!
//! Either way the left factor `U_r` is orthonormal and the carried matrix is `U_r^T A`
//! (= `S_r V_r^T`), so `U_r (U_r^T A)` is the orthogonal projection of `A` and the discarded
//! energy is exactly `||A||_F^2 - ||U_r^T A||_F^2`.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::svd::{ComputeSvdVectors, svd, svd_scratch};
use faer::{Accum, Mat, MatRef, Par};

use crate::eigen::Tridiagonal;
use crate::error::{Error, Result};
use crate::lobpcg;

/// Smallest `min(m, n)` for which the Gram route is tried. Lowered from 96: on the (64,3,3,64)
/// kernels the Gram route of the 64 x 576 and 78 x 192 unfoldings made the `0.1` TT-SVD 1.65x
/// faster (2.9 -> 1.76 ms) and rank 32 1.18x (3.25 -> 2.75 ms), same ranks and errors; the
/// resolution check still sends unresolved spectra to the thin SVD.
pub const GRAM_MIN_DIM: usize = 16;

/// The Gram route `A A^T (m x m)` is also taken for a tall `A (m x n)` up to `m = 2n`: its
/// `m - n` extra eigenvalues are zero (round-off), and the tridiagonal decomposition of the
/// `m x m` Gram matrix with inverse iteration for the kept vectors costs less than faer's thin
/// SVD, whose bidiagonal QR iteration with vectors dominated it. Measured on the last
/// unfolding of a (64,3,3,64) kernel at rank 32 (96 x 64): see docs/perf.md.
const TALL_GRAM_MAX_ASPECT: usize = 2;

/// Below this many `m * n * min(m, n)` flops, factorisations run on one thread: on small
/// unfoldings (a (64,3,3,64) kernel) faer's 2-thread SVD was 1.5-2.5x slower than one thread.
const PARALLEL_MIN_WORK: usize = 1 << 24;

fn parallelism(m: usize, n: usize) -> Par {
    parallelism_for_work(m.saturating_mul(n).saturating_mul(m.min(n)))
}

/// One thread below [`PARALLEL_MIN_WORK`] multiply-adds, faer's global parallelism above.
fn parallelism_for_work(work: usize) -> Par {
    parallelism_within(faer::get_global_parallelism(), work)
}

/// `par` for `work` multiply-adds, or one thread below [`PARALLEL_MIN_WORK`].
pub(crate) fn parallelism_within(par: Par, work: usize) -> Par {
    if work < PARALLEL_MIN_WORK {
        Par::Seq
    } else {
        par
    }
}

/// `a (m, k) @ b (k, n)` for row-major slices, as a row-major `Vec` (`bt`: `b` given as `(n, k)`),
/// written by faer straight into the row-major output.
pub(crate) fn gemm(a: &[f64], m: usize, k: usize, b: &[f64], n: usize, bt: bool) -> Vec<f64> {
    let a = MatRef::from_row_major_slice(a, m, k);
    let b = if bt {
        MatRef::from_row_major_slice(b, n, k).transpose()
    } else {
        MatRef::from_row_major_slice(b, k, n)
    };
    let mut out = vec![0.0; m * n];
    let c = faer::MatMut::from_row_major_slice_mut(&mut out, m, n);
    let par = parallelism_for_work(m.saturating_mul(k).saturating_mul(n));
    matmul(c, Accum::Replace, a, b, 1.0, par);
    out
}

/// When the Gram route's discarded energy may be taken as `||A||^2 - ||C||^2` (`C = U_r^T A`)
/// instead of forming the residual `A - U_r C` (one more `m x r x n` product and a copy of `A`).
///
/// The two differ by `tr(C^T (U_r^T U_r - I) C)`, at most `||U_r^T U_r - I||_F ||C||_F^2`, and
/// by the rounding of the two squared norms, each at most `len * eps` relative to `||A||^2`
/// (`len` entries summed). So the difference is used when it is at least
/// [`DIFFERENCE_MIN_SHARE`] of `||A||^2` (the rounding is then below `1e-7` of it up to 9.4M
/// entries, a 1024x3x3x1024 kernel) and the orthogonality term is at most
/// [`DIFFERENCE_TOLERANCE`] of it: both far inside the 1e-6 relative agreement of the reported
/// errors with TensorLy's.
const DIFFERENCE_MIN_SHARE: f64 = 1e-2;
/// See [`DIFFERENCE_MIN_SHARE`].
const DIFFERENCE_TOLERANCE: f64 = 1e-9;

/// The lower triangle of `X X^T` for `X (m x n)` by faer's triangular product (half the
/// multiply-adds of a full product); the strict upper triangle is left zero.
pub(crate) fn lower_gram(x: MatRef<'_, f64>, par: Par) -> Mat<f64> {
    let m = x.nrows();
    let mut g = Mat::<f64>::zeros(m, m);
    triangular::matmul(
        g.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        x,
        BlockStructure::Rectangular,
        x.transpose(),
        BlockStructure::Rectangular,
        1.0,
        par,
    );
    g
}

/// Side of the square tiles in which [`gram`] mirrors its lower triangle: two 64 x 64 tiles of
/// f64 (64 KiB) stay in L2 while one is read by rows and the other written by columns.
const MIRROR_TILE: usize = 64;

/// `A A^T (m x m)` for `A (m x n)`: [`lower_gram`], mirrored into the upper triangle (the
/// eigenvector check and the eigenvalue routines may read either).
///
/// The mirror goes tile by tile: copied a column at a time, the reads of a row of the
/// column-major lower triangle are `8 m` bytes apart, one cache line each; at `m = 768` that
/// copy took about 6 ms of the 11 ms of the whole Gram matrix.
pub(crate) fn gram(a: MatRef<'_, f64>, par: Par) -> Mat<f64> {
    let mut gram = lower_gram(a, par);
    let m = gram.nrows();
    for j0 in (0..m).step_by(MIRROR_TILE) {
        for i0 in (0..=j0).step_by(MIRROR_TILE) {
            // The tile of rows i0.., columns j0.. of the upper triangle, from its mirror.
            for j in j0..(j0 + MIRROR_TILE).min(m) {
                for i in i0..(i0 + MIRROR_TILE).min(j) {
                    gram[(i, j)] = gram[(j, i)];
                }
            }
        }
    }
    gram
}

/// `||U^T U - I||_F`, a bound on the spectral norm of the orthogonality defect of `U (m x r)`.
pub(crate) fn orthogonality_defect(u: MatRef<'_, f64>) -> f64 {
    let utu = lower_gram(u.transpose(), Par::Seq);
    let mut sum = 0.0;
    for j in 0..utu.ncols() {
        sum += (utu[(j, j)] - 1.0).powi(2);
        for i in j + 1..utu.nrows() {
            sum += 2.0 * utu[(i, j)].powi(2);
        }
    }
    sum.sqrt()
}

/// `||A - U_r C||^2` for the Gram route's factors `U_r (m x r)` and `C = U_r^T A`, given as
/// `carry_t = C^T (n x r)`: `||A||^2 - ||C||^2` where that is safe (see
/// [`DIFFERENCE_MIN_SHARE`]), else the residual, one more `m x r x n` product, to round-off
/// relative to itself.
fn factor_error(a: MatRef<'_, f64>, u: MatRef<'_, f64>, carry_t: MatRef<'_, f64>, par: Par) -> f64 {
    let total = a.squared_norm_l2();
    let captured = carry_t.squared_norm_l2();
    let difference = total - captured;
    if difference >= DIFFERENCE_MIN_SHARE * total
        && orthogonality_defect(u) * captured <= DIFFERENCE_TOLERANCE * difference
    {
        return difference;
    }
    let mut residual = a.to_owned();
    matmul(
        residual.as_mut(),
        Accum::Add,
        u,
        carry_t.transpose(),
        -1.0,
        par,
    );
    residual.norm_l2().powi(2)
}

/// Safety factor between the Gram route's noise floor and the quantities it must resolve.
const GRAM_MARGIN: f64 = 1e4;

/// Which factorisation produced a step's singular values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvdMethod {
    /// Full thin SVD.
    ThinSvd,
    /// Eigen-decomposition of the Gram matrix `A A^T` (checked to be resolved): the smaller one
    /// for a wide unfolding, also taken for one up to twice as tall as wide.
    Gram,
    /// The kept eigenpairs of the Gram matrix `A A^T` by LOBPCG iteration, at a fixed rank far
    /// below its size (`lobpcg.rs`), stopped when the kept energy has converged (checked to be
    /// resolved as [`Self::Gram`] is). Only the kept singular values are computed, so only
    /// those are reported.
    Lobpcg,
    /// Nothing to truncate (the kept rank equals the row count): the left factor is the identity
    /// and the matrix is carried on unchanged, exactly; the singular values are reported from the
    /// Gram matrix's eigenvalues (accurate to about `sqrt(m eps) sigma_0` for the smallest).
    Identity,
}

/// How many singular triplets to keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum KeepRule {
    /// Exactly `min(r, min(m, n))` triplets.
    Rank(usize),
    /// The smallest `r` with `sum_{i >= r} sigma_i^2 <= delta2`, never more than `max_rank`, and
    /// never keeping numerically-zero singular values (`sigma_i <= max(m, n) * eps * sigma_0`).
    Delta {
        /// Squared absolute error allowed at this step.
        delta2: f64,
        /// Upper bound on the kept rank.
        max_rank: usize,
    },
}

/// A truncated SVD `A ~ U_r C` with `C = S_r V_r^T`.
#[derive(Clone, Debug)]
pub(crate) struct Truncated {
    /// Kept rank `r`.
    pub rank: usize,
    /// `U_r`, row-major `(m, r)`, orthonormal columns.
    pub u: Vec<f64>,
    /// `C = S_r V_r^T`, row-major `(r, n)`.
    pub carry: Vec<f64>,
    /// Every computed singular value, non-increasing.
    pub singular_values: Vec<f64>,
    /// `sum_{i >= r} sigma_i^2`.
    pub discarded2: f64,
    /// The method used.
    pub method: SvdMethod,
}

fn choose_rank(sigma2: &[f64], rule: KeepRule, m: usize, n: usize) -> usize {
    let k = sigma2.len();
    match rule {
        KeepRule::Rank(r) => r.min(k).max(1),
        KeepRule::Delta { delta2, max_rank } => {
            let s0 = sigma2.first().copied().unwrap_or(0.0);
            let floor = (m.max(n) as f64 * f64::EPSILON).powi(2) * s0;
            let numerical = sigma2.iter().take_while(|&&s| s > floor).count().max(1);
            // tails[r] = sum_{i >= r} sigma_i^2
            let mut tail = 0.0;
            let mut r = k;
            for i in (0..k).rev() {
                tail += sigma2[i];
                if tail > delta2 {
                    break;
                }
                r = i;
            }
            r.max(1).min(numerical).min(max_rank.max(1))
        }
    }
}

fn tail_sum(sigma2: &[f64], r: usize) -> f64 {
    sigma2[r.min(sigma2.len())..].iter().sum()
}

/// Column-major `Mat` -> row-major `Vec` of its first `cols` columns' transpose or itself.
fn row_major(mat: MatRef<'_, f64>, rows: usize, cols: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        for j in 0..cols {
            out.push(mat[(i, j)]);
        }
    }
    out
}

/// Truncated SVD of the row-major `m x n` matrix `a` under `rule`.
///
/// Signs follow TensorLy's `svd_flip`: the largest-magnitude entry of each column of `U` is made
/// positive (where singular values are distinct this makes the factors unique).
pub(crate) fn truncated_svd(a: &[f64], m: usize, n: usize, rule: KeepRule) -> Result<Truncated> {
    debug_assert_eq!(a.len(), m * n);
    let mat = MatRef::from_row_major_slice(a, m, n);
    if keeps_every_row(rule, m, n) {
        return identity(mat, a);
    }
    if m.min(n) >= GRAM_MIN_DIM
        && m <= TALL_GRAM_MAX_ASPECT * n
        && let Some(t) = row_gram(mat, rule)?
    {
        return Ok(t);
    }
    thin(mat, rule)
}

fn flip_signs(u: &mut Mat<f64>, v_like: &mut Mat<f64>, r: usize) {
    // `v_like` holds the right factor with one *column* per singular triplet.
    for j in 0..r {
        let mut best = 0.0f64;
        let mut sign = 1.0;
        for i in 0..u.nrows() {
            let val = u[(i, j)];
            if val.abs() > best {
                best = val.abs();
                sign = val.signum();
            }
        }
        if sign < 0.0 {
            for i in 0..u.nrows() {
                u[(i, j)] = -u[(i, j)];
            }
            for i in 0..v_like.nrows() {
                v_like[(i, j)] = -v_like[(i, j)];
            }
        }
    }
}

fn thin(a: MatRef<'_, f64>, rule: KeepRule) -> Result<Truncated> {
    let (m, n) = (a.nrows(), a.ncols());
    let k = m.min(n);
    let par = parallelism(m, n);
    let mut diag = Diag::<f64>::zeros(k);
    let mut u_full = Mat::<f64>::zeros(m, k);
    let mut v_full = Mat::<f64>::zeros(n, k);
    let thin = ComputeSvdVectors::Thin;
    let mut mem = MemBuffer::new(svd_scratch::<f64>(
        m,
        n,
        thin,
        thin,
        par,
        Default::default(),
    ));
    svd(
        a,
        diag.as_mut(),
        Some(u_full.as_mut()),
        Some(v_full.as_mut()),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|_| Error::NoConvergence("thin SVD"))?;
    let s: Vec<f64> = diag.column_vector().iter().copied().collect();
    let sigma2: Vec<f64> = s.iter().map(|v| v * v).collect();
    let r = choose_rank(&sigma2, rule, m, n);
    let mut u = u_full.subcols(0, r).to_owned();
    // V is (n, k); carry = S_r V_r^T, built from a scaled copy of V_r.
    let mut v = v_full.subcols(0, r).to_owned();
    flip_signs(&mut u, &mut v, r);
    let mut carry = Vec::with_capacity(r * n);
    for i in 0..r {
        for j in 0..n {
            carry.push(s[i] * v[(j, i)]);
        }
    }
    Ok(Truncated {
        rank: r,
        u: row_major(u.as_ref(), m, r),
        carry,
        discarded2: tail_sum(&sigma2, r),
        singular_values: s,
        method: SvdMethod::ThinSvd,
    })
}

/// Whether `rule` keeps every row of a wide-or-square `m x n` unfolding: then `A = I_m A`, the
/// step is [`SvdMethod::Identity`] and its carried matrix is `A` itself.
pub(crate) fn keeps_every_row(rule: KeepRule, m: usize, n: usize) -> bool {
    matches!(rule, KeepRule::Rank(r) if r >= m && m <= n)
}

/// The [`SvdMethod::Identity`] step of the row-major `m x n` matrix `data`, carried on as it is,
/// with its singular values computed already ([`identity_singular_values`]).
pub(crate) fn identity_step(data: Vec<f64>, m: usize, singular_values: Vec<f64>) -> Truncated {
    let mut u = vec![0.0; m * m];
    for i in 0..m {
        u[i * m + i] = 1.0;
    }
    Truncated {
        rank: m,
        u,
        carry: data,
        singular_values,
        discarded2: 0.0,
        method: SvdMethod::Identity,
    }
}

/// The singular values of the row-major `m x n` matrix `a` (`m <= n`), non-increasing, as the
/// square roots of the eigenvalues of `A A^T` (accurate to about `sqrt(m eps) sigma_0` for the
/// smallest): what an [`SvdMethod::Identity`] step reports.
pub(crate) fn identity_singular_values(a: &[f64], m: usize, n: usize) -> Result<Vec<f64>> {
    let a = MatRef::from_row_major_slice(a, m, n);
    let par = parallelism(m, n);
    // The reduction reads the lower triangle only: no mirrored copy needed.
    let gram = lower_gram(a, par);
    Ok(Tridiagonal::new(gram.as_ref(), par)
        .eigenvalues()?
        .iter()
        .map(|&v| v.max(0.0).sqrt())
        .collect())
}

/// `A = I_m A`: nothing is truncated, so no factorisation is needed.
fn identity(a: MatRef<'_, f64>, data: &[f64]) -> Result<Truncated> {
    let m = a.nrows();
    let singular_values = identity_singular_values(data, m, a.ncols())?;
    Ok(identity_step(data.to_vec(), m, singular_values))
}

/// The Gram route, the eigen-decomposition of `A A^T (m x m)`; `None` when its result would not
/// be resolved. For a tall `A` only the leading `min(m, n)` eigenvalues are singular values
/// squared (the rest are zero up to round-off) and only they are used and reported.
///
/// At a fixed rank far below `m` ([`lobpcg::applies`]) the kept eigenpairs come from the LOBPCG
/// iteration ([`SvdMethod::Lobpcg`]); where it does not converge, or its result is not
/// resolved, from the tridiagonal decomposition, which also gives every eigenvalue.
fn row_gram(a: MatRef<'_, f64>, rule: KeepRule) -> Result<Option<Truncated>> {
    let (m, n) = (a.nrows(), a.ncols());
    let par = parallelism(m, n);
    let gram = gram(a, par);
    // LOBPCG runs on one thread: its products are skinny (`m x m` by `m x l`) and alternate
    // with small sequential steps, so on two threads the workers' wake-ups cost more than they
    // gained (1536 x 1536, r = 24: 228-263 ms on one thread against 233-305 ms on two; the
    // product `G W` alone, 1.8-8.6 ms on two threads inside the iteration, 1.4 ms in isolation).
    // The other thread is free for the work `tt_svd` runs alongside (an identity step).
    let (r, mut u, lam, discarded, method) = match lobpcg_route(gram.as_ref(), rule, Par::Seq) {
        Some((r, u, lam)) => (r, u, lam, None, SvdMethod::Lobpcg),
        None => {
            let Some((r, u, lam, discarded)) = tridiagonal_route(gram.as_ref(), rule, n, par)?
            else {
                return Ok(None);
            };
            (r, u, lam, Some(discarded), SvdMethod::Gram)
        }
    };
    // carry^T = A^T U_r (n x r); its column-major layout is carry in row-major.
    let mut carry_t = Mat::<f64>::zeros(n, r);
    matmul(
        carry_t.as_mut(),
        Accum::Replace,
        a.transpose(),
        u.as_ref(),
        1.0,
        par,
    );
    flip_signs(&mut u, &mut carry_t, r);
    // The discarded energy from the eigenvalues is only accurate to ~m * eps * sigma_0^2;
    // unless every row is kept (a wide unfolding at full rank), the error of the stored factors
    // is measured instead.
    let discarded = match discarded {
        Some(d) if r == m => d,
        _ => factor_error(a, u.as_ref(), carry_t.as_ref(), par),
    };
    let mut carry = Vec::with_capacity(r * n);
    for i in 0..r {
        for j in 0..n {
            carry.push(carry_t[(j, i)]);
        }
    }
    Ok(Some(Truncated {
        rank: r,
        u: row_major(u.as_ref(), m, r),
        carry,
        discarded2: discarded,
        singular_values: lam.iter().map(|l| l.sqrt()).collect(),
        method,
    }))
}

/// The kept eigenpairs of `gram` by LOBPCG iteration, when `rule` fixes a rank the
/// iteration applies to, it converged and its result is resolved (as for the tridiagonal route:
/// the smallest kept eigenvalue and the discarded energy `tr(G) - sum theta_i` far above the
/// Gram matrix's noise floor): `(r, U_r, the r kept eigenvalues)`.
fn lobpcg_route(
    gram: MatRef<'_, f64>,
    rule: KeepRule,
    par: Par,
) -> Option<(usize, Mat<f64>, Vec<f64>)> {
    let m = gram.nrows();
    let KeepRule::Rank(r) = rule else {
        return None;
    };
    if !lobpcg::applies(m, r) {
        return None;
    }
    let leading = lobpcg::leading_eigenpairs(gram, r, par)?;
    let theta: Vec<f64> = leading.values.iter().map(|&l| l.max(0.0)).collect();
    let noise = m as f64 * f64::EPSILON * theta[0];
    let trace: f64 = (0..m).map(|i| gram[(i, i)]).sum();
    let tail = trace - theta.iter().sum::<f64>();
    let resolved = |x: f64| x > GRAM_MARGIN * noise;
    (theta[0] > 0.0 && resolved(theta[r - 1]) && resolved(tail)).then_some((
        r,
        leading.vectors,
        theta,
    ))
}

/// The rank `rule` gives from every eigenvalue of `gram`, and the kept eigenvectors, from its
/// tridiagonal decomposition (`eigen.rs`), when the result is resolved: `(r, U_r, the leading
/// min(m, n) eigenvalues clamped at zero, their tail past r)`. `n` is the unfolding's column
/// count.
#[allow(clippy::type_complexity)]
fn tridiagonal_route(
    gram: MatRef<'_, f64>,
    rule: KeepRule,
    n: usize,
    par: Par,
) -> Result<Option<(usize, Mat<f64>, Vec<f64>, f64)>> {
    let m = gram.nrows();
    // At most `k` eigenvalues are non-zero (`m - k` more for a tall unfolding).
    let k = m.min(n);
    // All eigenvalues (they decide the rank), and only the kept eigenvectors.
    let mut rank: Option<(usize, Vec<f64>, f64)> = None;
    let keep = |raw: &[f64]| {
        let lam: Vec<f64> = raw[..k].iter().map(|&l| l.max(0.0)).collect();
        let lam0 = lam[0];
        if lam0 == 0.0 {
            return None;
        }
        let noise = m as f64 * f64::EPSILON * lam0;
        let resolved = |x: f64| x > GRAM_MARGIN * noise;
        let r = choose_rank(&lam, rule, m, n);
        let ok = resolved(lam[r - 1])
            && (r == k || resolved(tail_sum(&lam, r)))
            && match rule {
                KeepRule::Delta { delta2, .. } => resolved(delta2),
                KeepRule::Rank(_) => true,
            };
        ok.then(|| {
            let discarded = tail_sum(&lam, r);
            rank = Some((r, lam, discarded));
            r
        })
    };
    let Some((_, u)) = Tridiagonal::new(gram, par).leading_eigenpairs(gram, keep)? else {
        return Ok(None);
    };
    // The clamped eigenvalues `keep` ranked, and their tail.
    let (r, lam, discarded) = rank.expect("keep chose the rank");
    Ok(Some((r, u, lam, discarded)))
}

/// Thin QR of the row-major `m x n` matrix `a`: returns `(Q (m, k) row-major, R (k, n) row-major)`
/// with `k = min(m, n)`.
pub(crate) fn thin_qr(a: &[f64], m: usize, n: usize) -> (Vec<f64>, Vec<f64>, usize) {
    let mat = MatRef::from_row_major_slice(a, m, n);
    let qr = mat.qr();
    let k = m.min(n);
    let q = qr.compute_thin_Q();
    let r = qr.thin_R();
    (row_major(q.as_ref(), m, k), row_major(r, k, n), k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconstruct(t: &Truncated, m: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for l in 0..t.rank {
                let u = t.u[i * t.rank + l];
                for j in 0..n {
                    out[i * n + j] += u * t.carry[l * n + j];
                }
            }
        }
        out
    }

    fn matrix(m: usize, n: usize, decay: f64) -> Vec<f64> {
        // Random orthogonal-ish factors with a geometric spectrum: sum_l decay^l x_l y_l^T.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut a = vec![0.0; m * n];
        for l in 0..m.min(n) {
            let w = decay.powi(l as i32);
            let x: Vec<f64> = (0..m).map(|_| rng.random::<f64>() - 0.5).collect();
            let y: Vec<f64> = (0..n).map(|_| rng.random::<f64>() - 0.5).collect();
            for i in 0..m {
                for j in 0..n {
                    a[i * n + j] += w * x[i] * y[j];
                }
            }
        }
        a
    }

    #[test]
    fn gram_and_svd_agree_and_error_is_the_tail() {
        let (m, n) = (128, 300);
        let a = matrix(m, n, 0.9);
        let total: f64 = a.iter().map(|v| v * v).sum();
        let t = truncated_svd(&a, m, n, KeepRule::Rank(20)).unwrap();
        assert_eq!(t.method, SvdMethod::Gram);
        let s = thin(MatRef::from_row_major_slice(&a, m, n), KeepRule::Rank(20)).unwrap();
        let ra = reconstruct(&t, m, n);
        let rs = reconstruct(&s, m, n);
        let diff: f64 = ra.iter().zip(&rs).map(|(x, y)| (x - y).powi(2)).sum();
        assert!(diff.sqrt() < 1e-9 * total.sqrt(), "{diff}");
        let err: f64 = a.iter().zip(&ra).map(|(x, y)| (x - y).powi(2)).sum();
        assert!((err - t.discarded2).abs() < 1e-9 * total);
        assert!((t.discarded2 - s.discarded2).abs() < 1e-9 * total);
    }

    /// The reported discarded energy against the error of the stored factors, relative to that
    /// error itself: a decay of 0.9 at rank 20 of 128 discards about 1.5% of the energy (the
    /// `||A||^2 - ||C||^2` route), 0.6 about 1e-9 of it (the residual route, where the difference
    /// would keep only about 7 digits). The measured error is exact to about
    /// `eps ||A|| / ||A - U C||`, below 1e-11 here, so 1e-8 leaves room for the sums' rounding.
    #[test]
    fn discarded_energy_is_accurate_relative_to_itself() {
        let (m, n) = (128, 300);
        for decay in [0.9, 0.6] {
            let a = matrix(m, n, decay);
            let t = truncated_svd(&a, m, n, KeepRule::Rank(20)).unwrap();
            assert_eq!(t.method, SvdMethod::Gram);
            let ra = reconstruct(&t, m, n);
            let err: f64 = a.iter().zip(&ra).map(|(x, y)| (x - y).powi(2)).sum();
            assert!(
                (err - t.discarded2).abs() <= 1e-8 * err,
                "decay {decay}: measured {err}, reported {}",
                t.discarded2
            );
        }
    }

    /// The LOBPCG route on the case it exists for (a wide Gaussian unfolding: a flat top
    /// spectrum, the kept rank far below the Gram size) against the tridiagonal route on the
    /// same Gram matrix: the same discarded energy to `1e-9` of itself (the iteration stops at
    /// an estimated `1e-10`; the reported figure is the measured error of the stored factors,
    /// exact to round-off), and factors that reproduce it.
    #[test]
    fn lobpcg_route_matches_the_full_route() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let (m, n, r) = (1100, 1300, 20);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let a: Vec<f64> = (0..m * n)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let t = truncated_svd(&a, m, n, KeepRule::Rank(r)).unwrap();
        assert_eq!(t.method, SvdMethod::Lobpcg);
        assert_eq!((t.rank, t.singular_values.len()), (r, r));
        let mat = MatRef::from_row_major_slice(&a, m, n);
        let g = gram(mat, Par::Seq);
        let (_, _, lam, tail) = tridiagonal_route(g.as_ref(), KeepRule::Rank(r), n, Par::Seq)
            .unwrap()
            .unwrap();
        assert!(
            (t.discarded2 - tail).abs() <= 1e-9 * tail,
            "lobpcg {}, full {tail}",
            t.discarded2
        );
        for (s, l) in t.singular_values.iter().zip(&lam) {
            assert!(s * s <= l * (1.0 + 1e-12), "{s} vs {}", l.sqrt());
        }
        let ra = reconstruct(&t, m, n);
        let err: f64 = a.iter().zip(&ra).map(|(x, y)| (x - y).powi(2)).sum();
        assert!((err - t.discarded2).abs() <= 1e-10 * err);
    }

    /// A tall unfolding up to twice as tall as wide takes the Gram route of its `m x m` Gram
    /// matrix: against the thin SVD, the same projection (reconstructions within `1e-9` of
    /// `||A||`), the same discarded energy (`1e-9 ||A||^2`), reported as the measured error of
    /// the stored factors, and `min(m, n)` singular values, at a rank below `n`, at `n` itself
    /// (nothing discarded but round-off) and under a tolerance. Taller ones take the thin SVD.
    #[test]
    fn tall_unfoldings_take_the_gram_route() {
        for (m, n) in [(96, 64), (128, 64)] {
            let a = matrix(m, n, 0.9);
            let total: f64 = a.iter().map(|v| v * v).sum();
            let rules = [
                KeepRule::Rank(32),
                KeepRule::Rank(n),
                KeepRule::Delta {
                    delta2: 1e-3 * total,
                    max_rank: n,
                },
            ];
            for rule in rules {
                let t = truncated_svd(&a, m, n, rule).unwrap();
                let s = thin(MatRef::from_row_major_slice(&a, m, n), rule).unwrap();
                assert_eq!(t.method, SvdMethod::Gram, "{m}x{n} {rule:?}");
                assert_eq!((t.rank, t.singular_values.len()), (s.rank, n));
                for (x, y) in t.singular_values.iter().zip(&s.singular_values) {
                    assert!((x - y).abs() <= 1e-6 * s.singular_values[0], "{x} {y}");
                }
                let ra = reconstruct(&t, m, n);
                let rs = reconstruct(&s, m, n);
                let diff: f64 = ra.iter().zip(&rs).map(|(x, y)| (x - y).powi(2)).sum();
                assert!(diff.sqrt() < 1e-9 * total.sqrt(), "{rule:?}: {diff}");
                let err: f64 = a.iter().zip(&ra).map(|(x, y)| (x - y).powi(2)).sum();
                assert!((err - t.discarded2).abs() <= 1e-9 * total, "{rule:?}");
                assert!(
                    (t.discarded2 - s.discarded2).abs() <= 1e-9 * total,
                    "{rule:?}"
                );
            }
        }
        let (m, n) = (200, 64);
        let a = matrix(m, n, 0.9);
        let t = truncated_svd(&a, m, n, KeepRule::Rank(32)).unwrap();
        assert_eq!(t.method, SvdMethod::ThinSvd);
    }

    #[test]
    fn gram_is_symmetric_and_matches_the_full_product() {
        let (m, n) = (37, 90);
        let a = matrix(m, n, 0.8);
        let mat = MatRef::from_row_major_slice(&a, m, n);
        let g = gram(mat, Par::Seq);
        for i in 0..m {
            for j in 0..m {
                let want: f64 = (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum();
                assert!(
                    (g[(i, j)] - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "{i} {j}"
                );
            }
        }
    }

    #[test]
    fn unresolved_gram_falls_back_to_svd() {
        // Rank-3 matrix, asking for 10: the extra singular values are at round-off level.
        let (m, n) = (100, 150);
        let mut a = vec![0.0; m * n];
        for l in 0..3 {
            for i in 0..m {
                for j in 0..n {
                    a[i * n + j] +=
                        (((l + 1) * i) as f64 * 0.3).sin() * ((j * (l + 2)) as f64).cos();
                }
            }
        }
        let t = truncated_svd(&a, m, n, KeepRule::Rank(10)).unwrap();
        assert_eq!(t.method, SvdMethod::ThinSvd);
        assert_eq!(t.rank, 10);
        let d = truncated_svd(
            &a,
            m,
            n,
            KeepRule::Delta {
                delta2: 0.0,
                max_rank: 50,
            },
        )
        .unwrap();
        assert_eq!(d.rank, 3);
    }

    #[test]
    fn qr_reconstructs() {
        let (m, n) = (7, 4);
        let a = matrix(m, n, 0.5);
        let (q, r, k) = thin_qr(&a, m, n);
        for i in 0..m {
            for j in 0..n {
                let v: f64 = (0..k).map(|l| q[i * k + l] * r[l * n + j]).sum();
                assert!((v - a[i * n + j]).abs() < 1e-10);
            }
        }
    }
}
