//! The `r` leading eigenpairs of a large symmetric positive semi-definite matrix `G (m x m)` by
//! LOBPCG (locally optimal block preconditioned conjugate gradient, Knyazev 2001; here without a
//! preconditioner), for the Gram route of a truncated SVD at a fixed rank far below the Gram
//! size (`linalg.rs`): the 1536 x 1536 Gram matrix of a `512x3x3x512` kernel's middle unfolding,
//! of which a `'same'` TT keeps 24 eigenvectors.
//!
//! A block of `l > r` Ritz vectors ([`block_width`]) `X (m x l)` is improved in each
//! iteration by Rayleigh-Ritz over `S = [X, W, P]`: `W` the residuals `G X - X diag(theta)`,
//! `P` the previous step's move out of its `X`, both made orthonormal and orthogonal to what
//! precedes them in `S`. The top `l` eigenpairs `(theta, Y)` of `S^T G S` give the new
//! `X = S Y`, `G X = (G S) Y` and `P = S_{W,P} Y_{W,P}`. Only `G [W, P]` is multiplied out per
//! iteration (`2 m^2 2l` flops); the full decomposition (`eigen.rs`) costs `4/3 m^3` flops,
//! memory-bound, for its tridiagonalization alone. The block is wider than the kept rank because
//! the rate depends on the gap after the block: on random kernels the 24th and 25th eigenvalues
//! of the 1536-wide Gram matrix are 0.1% apart, the 24th and 33rd about 2.5%.
//!
//! **When it stops.** `S` contains the previous `X`, so the sum `S_j` of the top `r` Ritz values
//! (the largest energy `tr(U^T G U)` over `r`-dimensional subspaces of `span S`, Ky Fan) never
//! decreases, and it tends to the optimum `sum_{i < r} lambda_i`. The convergence is geometric,
//! so the gain still to come after `S_j` is estimated from the last two increments
//! `d_{j-1}, d_j` as `d_j rho / (1 - rho)`, `rho = d_j / d_{j-1}`. The iteration stops when that
//! estimate is at most [`ENERGY_TOLERANCE`] of the discarded energy `tr(G) - S_j`, and gives up
//! after [`MAX_ITERATIONS`] (the caller then runs the full decomposition). The energy, not the
//! vectors, is what must converge: a truncated SVD's error is its discarded energy, and on flat
//! spectra the kept vectors are ill-determined while their energy is not. The kept vectors are
//! checked for orthonormality, and the caller measures the error of the factors it stores: the
//! reported error is always the error of the result.
//!
//! Why hand-written: faer (this workspace's dense linear algebra) has no partial or iterative
//! eigensolver; every product and factorisation here is faer's.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::linalg::{lower_gram, orthogonality_defect};

/// Smallest number of Ritz vectors carried beyond the kept ones.
const MIN_EXTRA: usize = 8;
/// Smallest `m / l`: `S` has up to `3 l` columns, and past about a tenth of `m` its products and
/// solves cost a fair share of the full decomposition.
const MIN_SIZE_RATIO: usize = 10;
/// Smallest Gram size for this route. At 768 (a `256x3x3x256` kernel, r = 21) it took 0.10-0.14
/// s against 0.06-0.08 s for the full decomposition on two threads (one iteration's small
/// products and Rayleigh-Ritz solve cost a fixed few ms); at 1536 it wins.
const MIN_DIM: usize = 1024;
/// The iteration gives up after this many steps (random `768`- and `1536`-wide Gram matrices of
/// kernel unfoldings converged in 19 and 23).
const MAX_ITERATIONS: usize = 60;
/// The estimated energy still to gain, relative to the discarded energy, at which the iteration
/// stops. A truncated SVD's relative error is `sqrt(discarded / ||A||^2)`, so an energy short by
/// this share moves the error by half of it: `5e-11` relative, far inside the `1e-6` agreement
/// with TensorLy the decompositions are held to.
const ENERGY_TOLERANCE: f64 = 1e-10;
/// The largest geometric ratio of successive increments trusted for the estimate.
const MAX_RATE: f64 = 0.9;
/// A direction of a new block whose norm, once made orthogonal to the basis, falls below this
/// share of its scale is dropped: it lay (numerically) in the basis already.
const DROP: f64 = 1e-10;
/// The same for `P`, whose image `G P` is carried along rather than multiplied out: the
/// normalisation amplifies the image's rounding by up to `1 / DROP_IMPLICIT`, so about
/// `1e-10 ||G||`, below what the stopping rule resolves; the final check recomputes `G U`.
const DROP_IMPLICIT: f64 = 1e-6;
/// Accepted `||U^T U - I||_F` of the returned vectors (the basis is orthonormal to round-off;
/// this only rejects a failed iteration).
const MAX_ORTHOGONALITY_DEFECT: f64 = 1e-10;
/// The random start's seed: a fixed one, so that a decomposition is reproducible.
const SEED: u64 = 0x005E_ED0F_B10C;

/// The `r` leading Ritz pairs of `G` once their energy has converged.
#[derive(Debug)]
pub(crate) struct Leading {
    /// `theta_0 >= .. >= theta_{r-1}`: lower bounds of the leading eigenvalues (Cauchy
    /// interlacing), converged in sum.
    pub values: Vec<f64>,
    /// `U (m x r)`, orthonormal columns, `U^T G U = diag(values)`.
    pub vectors: Mat<f64>,
}

/// The block width for `r` kept eigenpairs: `r + max(8, r / 3)`. On the 1536-wide Gram matrix
/// of a random `512x3x3x512` kernel (r = 24) a block of 32 took 23 iterations and a block of 48
/// took 16, but each iteration of the wider block cost more than the 7 iterations saved.
fn block_width(r: usize) -> usize {
    r + MIN_EXTRA.max(r / 3)
}

/// Whether this route is worth trying for `r` of `m` eigenpairs (see [`MIN_DIM`],
/// [`MIN_SIZE_RATIO`]).
pub(crate) fn applies(m: usize, r: usize) -> bool {
    r >= 1 && m >= MIN_DIM && block_width(r).saturating_mul(MIN_SIZE_RATIO) <= m
}

/// The `r` leading eigenpairs of the symmetric positive semi-definite `g (m x m)` (both triangles
/// filled), or `None` when the iteration did not converge within [`MAX_ITERATIONS`], or its
/// vectors failed the orthonormality check or the energy check.
///
/// Blocks of vectors travel with their images under `G` as *pairs*: one `2m x k` matrix, the
/// vectors `V` in rows `0..m` and `G V` in rows `m..2m`, so that every combination of vectors
/// (a Rayleigh-Ritz rotation, a Gram-Schmidt step) is one product that updates both.
pub(crate) fn leading_eigenpairs(g: MatRef<'_, f64>, r: usize, par: Par) -> Option<Leading> {
    let m = g.nrows();
    debug_assert_eq!(g.ncols(), m);
    let l = block_width(r);
    if r == 0 || 3 * l > m {
        return None;
    }
    let trace: f64 = (0..m).map(|i| g[(i, i)]).sum();
    let mut rng = StdRng::seed_from_u64(SEED);
    let start = orthonormal_complement(&[], random(m, l, &mut rng), m, 0.0, DROP);
    if start.ncols() < l {
        return None;
    }
    let mut step = rayleigh_ritz(with_image(g, start, par).as_ref(), l)?;
    let mut sums = vec![step.top_sum(r)];
    // The pair of P: its image is carried along (every change of P is a combination of vectors
    // whose images are known), so that only G W is multiplied out per iteration.
    let mut p: Option<Mat<f64>> = None;
    let mut done = false;
    for _ in 0..MAX_ITERATIONS {
        // W: the residuals G x_i - theta_i x_i; at round-off level they are noise, dropped.
        let mut res = step.x.subrows(m, m).to_owned();
        for (j, &th) in step.theta.iter().enumerate() {
            res.col_mut(j)
                .iter_mut()
                .zip(step.x.col(j).iter())
                .for_each(|(v, &x)| *v -= th * x);
        }
        let noise = m as f64 * f64::EPSILON * step.theta[0].abs();
        let w = orthonormal_complement(&[step.x.as_ref()], res, m, noise, DROP);
        let w = with_image(g, w, par);
        let p_orth = p.take().map(|p| {
            orthonormal_complement(&[step.x.as_ref(), w.as_ref()], p, m, 0.0, DROP_IMPLICIT)
        });
        let (kw, kp) = (w.ncols(), p_orth.as_ref().map_or(0, |p| p.ncols()));
        if kw + kp == 0 {
            // span X is invariant to round-off: its Ritz pairs are eigenpairs.
            done = true;
            break;
        }
        let mut s = Mat::<f64>::zeros(2 * m, l + kw + kp);
        s.subcols_mut(0, l).copy_from(&step.x);
        s.subcols_mut(l, kw).copy_from(&w);
        if let Some(p) = &p_orth {
            s.subcols_mut(l + kw, kp).copy_from(p);
        }
        let next = rayleigh_ritz(s.as_ref(), l)?;
        // P: the move out of the old X, `S_{W,P} Y_{W,P}`, with its image.
        let mut moved = Mat::<f64>::zeros(2 * m, l);
        matmul(
            moved.as_mut(),
            Accum::Replace,
            s.subcols(l, kw + kp),
            next.y.subrows(l, kw + kp),
            1.0,
            Par::Seq,
        );
        p = Some(moved);
        step = next;
        sums.push(step.top_sum(r));
        if converged(&sums, trace) {
            done = true;
            break;
        }
    }
    if !done {
        return None;
    }
    let vectors = step.x.submatrix(0, 0, m, r).to_owned();
    if orthogonality_defect(vectors.as_ref()) > MAX_ORTHOGONALITY_DEFECT {
        return None;
    }
    // The carried images against G itself: the kept energy `tr(U^T G U)` must be the one the
    // iteration converged to (a drift of the carried G P would show here).
    let gu = times_g(g, vectors.as_ref(), par);
    let values: Vec<f64> = (0..r)
        .map(|j| {
            vectors
                .col(j)
                .iter()
                .zip(gu.col(j).iter())
                .map(|(u, v)| u * v)
                .sum()
        })
        .collect();
    let kept: f64 = values.iter().sum();
    let discarded = (trace - kept).max(0.0);
    let drift = (kept - step.top_sum(r)).abs();
    // The two sums' own rounding: `m` terms per value.
    let rounding = m as f64 * f64::EPSILON * kept.abs();
    (drift <= ENERGY_TOLERANCE * discarded + rounding).then_some(Leading { values, vectors })
}

/// One Rayleigh-Ritz step's result: the top `l` Ritz pairs over a basis `S`.
struct RitzBlock {
    /// The pair of `X = S Y (m x l)`: rows `0..m` `X`, rows `m..2m` `G X`.
    x: Mat<f64>,
    /// The Ritz values, non-increasing.
    theta: Vec<f64>,
    /// `Y (k x l)`, the coordinates of `X` in `S`.
    y: Mat<f64>,
}

impl RitzBlock {
    fn top_sum(&self, r: usize) -> f64 {
        self.theta[..r].iter().sum()
    }
}

/// The top `l` Ritz pairs of `G` over the orthonormal columns of `S (m x k)`, given as the pair
/// `s (2m x k)`; `None` when the projected eigenproblem failed.
fn rayleigh_ritz(s: MatRef<'_, f64>, l: usize) -> Option<RitzBlock> {
    let (m, k) = (s.nrows() / 2, s.ncols());
    let mut t = Mat::<f64>::zeros(k, k);
    matmul(
        t.as_mut(),
        Accum::Replace,
        s.subrows(0, m).transpose(),
        s.subrows(m, m),
        1.0,
        Par::Seq,
    );
    for j in 0..k {
        for i in j + 1..k {
            let v = 0.5 * (t[(i, j)] + t[(j, i)]);
            t[(i, j)] = v;
            t[(j, i)] = v;
        }
    }
    let evd = t.self_adjoint_eigen(Side::Lower).ok()?;
    // Eigenvalues non-decreasing: the top l are the last columns.
    let y = Mat::<f64>::from_fn(k, l, |i, j| evd.U()[(i, k - 1 - j)]);
    let theta: Vec<f64> = (0..l).map(|j| evd.S()[k - 1 - j]).collect();
    let mut x = Mat::<f64>::zeros(2 * m, l);
    matmul(x.as_mut(), Accum::Replace, s, y.as_ref(), 1.0, Par::Seq);
    Some(RitzBlock { x, theta, y })
}

/// The pair `(2m x k)` of `v (m x k)`: `v` above `G v`.
fn with_image(g: MatRef<'_, f64>, v: Mat<f64>, par: Par) -> Mat<f64> {
    let (m, k) = v.shape();
    let mut pair = Mat::<f64>::zeros(2 * m, k);
    pair.subrows_mut(m, m)
        .copy_from(times_g(g, v.as_ref(), par));
    pair.subrows_mut(0, m).copy_from(v);
    pair
}

/// `G v` for `v (m x k)`, computed as `(v^T G)^T` (`G` is symmetric): faer's product with the
/// short operand on the left ran about 3x faster at `m = 1536`, `k = 24` (1.3 against 4.4 ms).
fn times_g(g: MatRef<'_, f64>, v: MatRef<'_, f64>, par: Par) -> Mat<f64> {
    let mut out_t = Mat::<f64>::zeros(v.ncols(), g.nrows());
    matmul(out_t.as_mut(), Accum::Replace, v.transpose(), g, 1.0, par);
    out_t.transpose().to_owned()
}

/// An orthonormal basis of the part of `span V` orthogonal to the orthonormal blocks `bases`
/// (pairs, `2m x k_b`): `v` holds `V` in its first `m` rows, and below them, when it has `2m`
/// rows, `G V`, which every combination updates too. Two passes of block classical
/// Gram-Schmidt, then the eigen-decomposition of the small Gram matrix `V^T V = E diag(mu) E^T`
/// (`v E mu^{-1/2}`, twice). Directions whose norm is at most `drop` of the largest column of
/// `V`, or at most `floor`, are dropped: they lay in the bases, or are noise (an image is carried
/// only where `drop` keeps the amplification of its rounding, `1 / drop`, small). May return
/// fewer columns than `v` has, or none.
fn orthonormal_complement(
    bases: &[MatRef<'_, f64>],
    mut v: Mat<f64>,
    m: usize,
    floor: f64,
    drop: f64,
) -> Mat<f64> {
    let par = Par::Seq;
    let rows = v.nrows();
    let scale = (0..v.ncols()).fold(0.0f64, |s, j| s.max(v.subrows(0, m).col(j).norm_l2()));
    if scale == 0.0 || !scale.is_finite() {
        return Mat::zeros(rows, 0);
    }
    for _ in 0..2 {
        for basis in bases {
            let mut coeff = Mat::<f64>::zeros(basis.ncols(), v.ncols());
            matmul(
                coeff.as_mut(),
                Accum::Replace,
                basis.subrows(0, m).transpose(),
                v.subrows(0, m),
                1.0,
                par,
            );
            matmul(
                v.as_mut(),
                Accum::Add,
                basis.subrows(0, rows),
                coeff.as_ref(),
                -1.0,
                par,
            );
        }
    }
    let threshold = (drop * scale).max(floor);
    for pass in 0..2 {
        let k = v.ncols();
        if k == 0 {
            // Everything was dropped (faer's eigen-decomposition of a 0 x 0 matrix underflows
            // an index).
            break;
        }
        // V^T V: its lower triangle is what the eigen-decomposition reads.
        let vtv = lower_gram(v.subrows(0, m).transpose(), par);
        let Ok(evd) = vtv.self_adjoint_eigen(Side::Lower) else {
            return Mat::zeros(rows, 0);
        };
        // After the first pass the columns are orthonormal: only round-off is left to remove.
        let cut = if pass == 0 {
            threshold * threshold
        } else {
            0.25
        };
        let kept: Vec<usize> = (0..k).filter(|&i| evd.S()[i] > cut).collect();
        let scaled = Mat::<f64>::from_fn(k, kept.len(), |i, j| {
            evd.U()[(i, kept[j])] / evd.S()[kept[j]].sqrt()
        });
        let mut next = Mat::<f64>::zeros(rows, kept.len());
        matmul(
            next.as_mut(),
            Accum::Replace,
            v.as_ref(),
            scaled.as_ref(),
            1.0,
            par,
        );
        v = next;
    }
    v
}

/// `m x k` standard normal entries.
fn random(m: usize, k: usize, rng: &mut StdRng) -> Mat<f64> {
    Mat::<f64>::from_fn(m, k, |_, _| StandardNormal.sample(rng))
}

/// Whether the top-`r` Ritz sums, one per iteration (non-decreasing up to round-off), have
/// converged: the estimated gain still to come at most [`ENERGY_TOLERANCE`] of `trace - S_j`.
fn converged(sums: &[f64], trace: f64) -> bool {
    let &[.., s0, s1, s2] = sums else {
        return false;
    };
    let discarded = (trace - s2).max(0.0);
    let (d0, d1) = (s1 - s0, s2 - s1);
    // The sums' own rounding: a Rayleigh-Ritz solve is accurate to about `m eps ||G||`.
    let noise = 64.0 * f64::EPSILON * s2.abs();
    if d1 <= noise {
        // Stationary to round-off, twice in a row.
        return d0 <= noise.max(ENERGY_TOLERANCE * discarded);
    }
    if d0 <= 0.0 {
        return false;
    }
    let rate = d1 / d0;
    rate <= MAX_RATE && d1 * rate / (1.0 - rate) <= ENERGY_TOLERANCE * discarded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eigen::tests::with_spectrum;
    use crate::linalg::gram;

    /// `A A^T` for a Gaussian `A (m x 2m)`: the flat top spectrum of a random kernel's unfolding.
    fn gaussian_gram(m: usize, seed: u64) -> Mat<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        gram(random(m, 2 * m, &mut rng).as_ref(), Par::Seq)
    }

    /// Against faer's full decomposition: the kept energy within `1e-9` of the discarded energy
    /// (the iteration stops at an estimated `1e-10` of it; the margin covers the estimate being
    /// an extrapolation) plus the solves' round-off (`1e-12` of the trace); every Ritz value at
    /// most its eigenvalue (interlacing, up to round-off); orthonormal vectors whose Rayleigh
    /// quotients are the values returned.
    fn check(g: &Mat<f64>, r: usize, what: &str) {
        let m = g.nrows();
        let got = leading_eigenpairs(g.as_ref(), r, Par::Seq)
            .unwrap_or_else(|| panic!("{what}: no result"));
        let lam: Vec<f64> = g
            .self_adjoint_eigenvalues(Side::Lower)
            .unwrap()
            .into_iter()
            .rev()
            .collect();
        let trace: f64 = lam.iter().sum();
        let optimum: f64 = lam[..r].iter().sum();
        let kept: f64 = got.values.iter().sum();
        let slack = 1e-9 * (trace - optimum).max(0.0) + 1e-12 * trace;
        assert!(
            (optimum - kept).abs() <= slack,
            "{what}: kept {kept}, optimum {optimum}, slack {slack:e}"
        );
        for (j, (&t, &l)) in got.values.iter().zip(&lam).enumerate() {
            assert!(
                t <= l + 1e-12 * lam[0],
                "{what}: theta_{j} {t} > lambda_{j} {l}"
            );
        }
        assert!(
            orthogonality_defect(got.vectors.as_ref()) <= 1e-12,
            "{what}"
        );
        let gu = times_g(g.as_ref(), got.vectors.as_ref(), Par::Seq);
        for j in 0..r {
            let q: f64 = (0..m).map(|i| got.vectors[(i, j)] * gu[(i, j)]).sum();
            assert!(
                (q - got.values[j]).abs() <= 1e-12 * lam[0],
                "{what}: value {j}"
            );
        }
    }

    #[test]
    fn matches_the_full_decomposition_on_varied_spectra() {
        let m = 240;
        check(&gaussian_gram(m, 1), 16, "gaussian gram, flat top");
        check(&gaussian_gram(m, 2), 5, "gaussian gram, r = 5");
        let decay: Vec<f64> = (0..m).map(|i| 0.95f64.powi(i as i32)).collect();
        check(&with_spectrum(&decay, 3), 16, "geometric decay");
        // A cluster across the cut: every 16-dimensional subspace of the top 20 is optimal.
        let cluster: Vec<f64> = (0..m).map(|i| if i < 20 { 2.0 } else { 1.0 }).collect();
        check(&with_spectrum(&cluster, 4), 16, "cluster across the cut");
        let steps: Vec<f64> = (0..m)
            .map(|i| match i {
                0..10 => 3.0,
                10..20 => 2.0,
                _ => 1.0 / (1.0 + i as f64),
            })
            .collect();
        check(
            &with_spectrum(&steps, 5),
            16,
            "repeated eigenvalues at the cut",
        );
        let low_rank: Vec<f64> = (0..m)
            .map(|i| if i < 12 { 1.0 + i as f64 } else { 0.0 })
            .collect();
        check(&with_spectrum(&low_rank, 6), 16, "rank 12, 16 kept");
        let scalar = Mat::<f64>::from_fn(m, m, |i, j| if i == j { 7.0 } else { 0.0 });
        check(&scalar, 16, "a multiple of the identity");
    }

    #[test]
    fn refuses_blocks_too_wide_for_the_matrix() {
        let g = gaussian_gram(60, 7);
        // r = 16 needs a block of 24 and a basis of up to 72 columns.
        assert!(leading_eigenpairs(g.as_ref(), 16, Par::Seq).is_none());
        assert!(leading_eigenpairs(g.as_ref(), 0, Par::Seq).is_none());
        assert!(!applies(1000, 24) && applies(1536, 24) && !applies(1536, 200));
    }

    #[test]
    fn stops_on_a_small_extrapolated_gain_only() {
        let trace = 10.0;
        // Increments 1e-6, 1e-8: rate 0.01, estimated remaining 1e-10, discarded ~9.
        assert!(converged(&[1.0, 1.0 + 1e-6, 1.0 + 1e-6 + 1e-8], trace));
        // The same last increment at rate 0.95: the estimate is 19x it, above 1e-10 * 9.
        assert!(!converged(&[1.0, 1.0 + 1.05e-8, 1.0 + 2.05e-8], trace));
        // Growing increments never stop the iteration.
        assert!(!converged(&[1.0, 1.0 + 1e-12, 1.0 + 1e-11], trace));
        // Stationary twice to round-off: stop.
        assert!(converged(&[1.0, 1.0, 1.0], trace));
        // Fewer than three sums: no estimate yet.
        assert!(!converged(&[1.0, 1.0], trace));
    }
}
