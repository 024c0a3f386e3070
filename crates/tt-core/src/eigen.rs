//! The leading eigenpairs of a symmetric matrix, for the Gram route of the truncated SVD
//! (`linalg.rs`), which keeps few of them: all eigenvalues, then only the kept eigenvectors.
//!
//! `A = Q T Q^T` with `T` tridiagonal (faer's blocked Householder tridiagonalization, about
//! `4/3 n^3` flops: the bulk of the work); every eigenvalue of `T` (the rational QL iteration,
//! `O(n^2)`); then, for the `r` eigenvalues the caller keeps, the eigenvectors of `T` by
//! inverse iteration (a pivoted LU of `T - lambda I` and a few `O(n)` solves each, vectors of
//! nearby eigenvalues re-orthogonalised against each other, as LAPACK's `dstein` does), and
//! `U = Q X` (the Householder back-transform of `r` columns, `2 n^2 r` flops). faer's full
//! decomposition of `T` instead computes all `n` eigenvectors (a QR iteration applying a
//! rotation to `n`-long vectors per step, or divide and conquer) and back-transforms them: it is
//! taken only where the re-orthogonalisation inside large clusters of eigenvalues would cost
//! more, or where inverse iteration fails its check.
//!
//! Why hand-written: faer (the crate this workspace uses for dense linear algebra) offers the
//! tridiagonalization, the eigenvalues and the back-transform as public functions, but no subset
//! of eigenvectors (LAPACK's `dstebz` + `dstein`, `dsyevx`); binding LAPACK would add a Fortran
//! build. The inverse iteration is the one piece written here, and every result it gives is
//! checked: the columns must be orthonormal and satisfy `A u = lambda u` to round-off, else the
//! eigenvectors come from faer's full decomposition of `T` instead. [`Tridiagonal`]'s tests
//! compare both routes on random matrices, clustered and repeated spectra included.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::evd::tridiag::{tridiag_in_place, tridiag_in_place_scratch};
use faer::linalg::evd::tridiagonal_self_adjoint_evd;
use faer::linalg::householder::{
    apply_block_householder_sequence_on_the_left_in_place_scratch,
    apply_block_householder_sequence_on_the_left_in_place_with_conj,
};
use faer::linalg::matmul::matmul;
use faer::linalg::qr::no_pivoting::factor::recommended_block_size;
use faer::{Accum, Conj, Mat, MatRef, Par};

use crate::error::{Error, Result};
use crate::linalg::parallelism_within;

/// Solves per eigenvector. With an eigenvalue accurate to round-off one solve already amplifies
/// its eigenvector by about `1 / eps`; the others remove what the start vector and the nearby
/// vectors of its cluster left.
const SOLVES: usize = 3;
/// Eigenvalues closer than this times `||T||_1` form a cluster whose vectors are
/// re-orthogonalised against each other (LAPACK `dstein`'s `ORTOL`).
const CLUSTER_GAP: f64 = 1e-3;
/// The accepted residual `||A u - lambda u||_2` and orthogonality error `|u_i^T u_j - d_ij|`, in
/// units of `n * eps * ||A||` and `n * eps`: a backward-stable decomposition reaches a small
/// multiple of one unit; this margin only rejects a vector that inverse iteration failed on.
const CHECK_UNITS: f64 = 1e3;

/// Smallest size at which the tridiagonalization runs on faer's global parallelism; below it,
/// on one thread. faer's parallel reduction was the slower one up to here on two threads
/// (random Gram matrices, best of 7, `seq / par` ms: 384 4.3 / 8.6, 512 10.0 / 18.8-22.8,
/// 768 35.3-36.7 / 51.1-55.1, 1024 86.5 / 95.6-102.3, 1280 187 / 202, 1408 250 / 239-252, 1536
/// 321-326 / 274-280, 2304 1052-1072 / 741-796): its level-2 half is bound by memory traffic
/// that a second thread shares rather than adds to, and each panel synchronises the threads.
const TRIDIAG_PARALLEL_MIN_DIM: usize = 1408;

/// A symmetric matrix reduced to tridiagonal form `A = Q T Q^T`.
#[derive(Debug)]
pub(crate) struct Tridiagonal {
    /// The lower part holds the Householder basis of `Q` below its first sub-diagonal.
    reduced: Mat<f64>,
    /// The block Householder coefficients of `Q`.
    householder: Mat<f64>,
    /// `T`'s diagonal and sub-diagonal (`n - 1` entries).
    diag: Vec<f64>,
    offdiag: Vec<f64>,
    par: Par,
}

impl Tridiagonal {
    /// Reduces the symmetric `a` (`n x n`, `n >= 1`; only its lower triangle is read). `par` is
    /// the parallelism allowed; the reduction itself takes it only from
    /// [`TRIDIAG_PARALLEL_MIN_DIM`] up.
    pub(crate) fn new(a: MatRef<'_, f64>, par: Par) -> Self {
        let n = a.nrows();
        debug_assert!(n >= 1 && a.ncols() == n);
        let mut reduced = Mat::<f64>::zeros(n, n);
        reduced.copy_from_triangular_lower(a);
        let bs = recommended_block_size::<f64>(n, n);
        let mut householder = Mat::<f64>::zeros(bs, n.saturating_sub(1));
        let reduction_par = if n < TRIDIAG_PARALLEL_MIN_DIM {
            Par::Seq
        } else {
            par
        };
        let mut mem = MemBuffer::new(tridiag_in_place_scratch::<f64>(
            n,
            reduction_par,
            Default::default(),
        ));
        tridiag_in_place(
            reduced.as_mut(),
            householder.as_mut(),
            reduction_par,
            MemStack::new(&mut mem),
            Default::default(),
        );
        let diag = (0..n).map(|i| reduced[(i, i)]).collect();
        let offdiag = (0..n.saturating_sub(1))
            .map(|i| reduced[(i + 1, i)])
            .collect();
        Self {
            reduced,
            householder,
            diag,
            offdiag,
            par,
        }
    }

    fn n(&self) -> usize {
        self.diag.len()
    }

    /// Every eigenvalue of `a` (the matrix this reduced), non-increasing, and the unit
    /// eigenvectors of the leading `r` of them (`n x r`, column `j` for eigenvalue `j`), where
    /// `r = keep(eigenvalues)`; `None` when `keep` says none.
    ///
    /// The eigenvalues come from the rational QL iteration ([`Self::eigenvalues`]), the kept
    /// vectors from inverse iteration, checked (residual and orthogonality; a failed check falls
    /// back to the full decomposition of `T`). The full decomposition gives them instead when
    /// re-orthogonalising the vectors inside clusters would cost more than it
    /// ([`cluster_pairs`]), or when `T` is too close to zero for the solves.
    pub(crate) fn leading_eigenpairs(
        &self,
        a: MatRef<'_, f64>,
        keep: impl FnOnce(&[f64]) -> Option<usize>,
    ) -> Result<Option<(Vec<f64>, Mat<f64>)>> {
        self.leading_eigenpairs_by(a, keep, false)
    }

    /// [`Self::leading_eigenpairs`]; `full_only` takes the full decomposition of `T` for the
    /// vectors (the tests compare both routes).
    fn leading_eigenpairs_by(
        &self,
        a: MatRef<'_, f64>,
        keep: impl FnOnce(&[f64]) -> Option<usize>,
        full_only: bool,
    ) -> Result<Option<(Vec<f64>, Mat<f64>)>> {
        let n = self.n();
        let norm = self.one_norm();
        // A `T` within a few ulps of zero would make the raised pivots subnormal and the solves
        // overflow: its eigenvectors come from the full decomposition.
        let scaled = norm >= f64::MIN_POSITIVE / f64::EPSILON;
        let lambdas = self.eigenvalues()?;
        let Some(r) = keep(&lambdas) else {
            return Ok(None);
        };
        let pairs = cluster_pairs(&lambdas[..r], CLUSTER_GAP * norm);
        let partial = scaled && !full_only && inverse_iteration_pays(n, r, pairs);
        let inverse = partial.then(|| {
            let mut x = self.inverse_iteration(&lambdas[..r]);
            self.back_transform(&mut x);
            x
        });
        let x = match inverse {
            Some(x) if accurate(a, &lambdas[..r], x.as_ref()) => x,
            _ => {
                let vectors = self.full()?.1;
                let mut x = Mat::<f64>::from_fn(n, r, |i, j| vectors[(i, j)]);
                self.back_transform(&mut x);
                x
            }
        };
        Ok(Some((lambdas, x)))
    }

    /// Every eigenvalue of `T`, non-increasing: by the rational QL iteration
    /// ([`rational_ql_eigenvalues`]), or by faer's QR iteration where that does not converge.
    ///
    /// The QL iteration squares the sub-diagonal and forms products of three entries, which
    /// would underflow for `||T||` below about `1e-100` (and overflow above `1e100`): it runs on
    /// `T` scaled by a power of two to `||T||_1` in `[1, 2)`, exactly, and its eigenvalues are
    /// scaled back.
    pub(crate) fn eigenvalues(&self) -> Result<Vec<f64>> {
        let norm = self.one_norm();
        let exponent = norm.log2().floor();
        let scales = (exponent.is_finite() && exponent.abs() <= 1022.0).then(|| {
            (
                power_of_two(-exponent as i32),
                power_of_two(exponent as i32),
            )
        });
        let (down, up) = scales.unwrap_or((1.0, 1.0));
        let diag: Vec<f64> = self.diag.iter().map(|d| d * down).collect();
        let offdiag: Vec<f64> = self.offdiag.iter().map(|e| e * down).collect();
        if let Some(lambdas) = rational_ql_eigenvalues(&diag, &offdiag) {
            return Ok(lambdas.iter().rev().map(|l| l * up).collect());
        }
        let n = self.n();
        let mut s = Diag::<f64>::zeros(n);
        let (d, e) = self.diag_and_offdiag();
        let mut mem = MemBuffer::new(StackReq::all_of(&[
            faer::linalg::temp_mat_scratch::<f64>(n, 1),
            faer::linalg::temp_mat_scratch::<f64>(n, 1),
        ]));
        tridiagonal_self_adjoint_evd(
            d.as_ref(),
            e.as_ref(),
            s.as_mut(),
            None,
            self.par,
            MemStack::new(&mut mem),
            Default::default(),
        )
        .map_err(|_| Error::NoConvergence("tridiagonal eigenvalues"))?;
        Ok(s.column_vector().iter().rev().copied().collect())
    }

    /// `T`'s diagonal and sub-diagonal as faer diagonals (the sub-diagonal padded to `n`).
    fn diag_and_offdiag(&self) -> (Diag<f64>, Diag<f64>) {
        let n = self.n();
        let (mut d, mut e) = (Diag::<f64>::zeros(n), Diag::<f64>::zeros(n));
        for i in 0..n {
            d[i] = self.diag[i];
            e[i] = self.offdiag.get(i).copied().unwrap_or(0.0);
        }
        (d, e)
    }

    /// The eigenvectors of `T` for `lambdas` (non-increasing), `n x r`.
    fn inverse_iteration(&self, lambdas: &[f64]) -> Mat<f64> {
        let n = self.n();
        let norm = self.one_norm();
        let starts = cluster_starts(lambdas, CLUSTER_GAP * norm);
        // Shifts at least this far apart, so two equal eigenvalues get distinct vectors (dstein's
        // perturbation of repeated eigenvalues).
        let separation = 10.0 * f64::EPSILON * norm;
        let mut x = Mat::<f64>::zeros(n, lambdas.len());
        let mut v = vec![0.0; n];
        let mut shift_prev = f64::INFINITY;
        for (j, (&lambda, &cluster_start)) in lambdas.iter().zip(&starts).enumerate() {
            let shift = if shift_prev - lambda < separation {
                shift_prev - separation
            } else {
                lambda
            };
            let lu = TridiagonalLu::new(&self.diag, &self.offdiag, shift, f64::EPSILON * norm);
            start_vector(&mut v, j);
            for _ in 0..SOLVES {
                lu.solve(&mut v);
                for c in cluster_start..j {
                    let dot: f64 = (0..n).map(|i| x[(i, c)] * v[i]).sum();
                    for (i, vi) in v.iter_mut().enumerate() {
                        *vi -= dot * x[(i, c)];
                    }
                }
                normalize(&mut v);
            }
            for (i, &vi) in v.iter().enumerate() {
                x[(i, j)] = vi;
            }
            shift_prev = shift;
        }
        x
    }

    /// `||T||_1` (largest absolute column sum), at least the smallest positive normal float.
    fn one_norm(&self) -> f64 {
        let n = self.n();
        (0..n)
            .map(|i| {
                let below = self.offdiag.get(i).map_or(0.0, |e| e.abs());
                let above = if i > 0 {
                    self.offdiag[i - 1].abs()
                } else {
                    0.0
                };
                self.diag[i].abs() + below + above
            })
            .fold(f64::MIN_POSITIVE, f64::max)
    }

    /// `x <- Q x` (rows 1.. carry the reflectors; row 0 is left as it is).
    fn back_transform(&self, x: &mut Mat<f64>) {
        let n = self.n();
        if n < 2 {
            return;
        }
        let cols = x.ncols();
        // `2 n^2 cols` flops: a few kept vectors are not worth a second thread (at `n = 768`,
        // 21 columns: 0.8 ms on one, 2.0-2.9 ms on two).
        let par = parallelism_within(self.par, n.saturating_mul(n).saturating_mul(cols));
        let bs = self.householder.nrows();
        let mut mem = MemBuffer::new(
            apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(n - 1, bs, cols),
        );
        apply_block_householder_sequence_on_the_left_in_place_with_conj(
            self.reduced.as_ref().submatrix(1, 0, n - 1, n - 1),
            self.householder.as_ref(),
            Conj::No,
            x.as_mut().subrows_mut(1, n - 1),
            par,
            MemStack::new(&mut mem),
        );
    }

    /// faer's full decomposition of `T`: every eigenvalue, non-increasing, and the eigenvectors
    /// of `T` (not yet back-transformed) in the same order.
    fn full(&self) -> Result<(Vec<f64>, Mat<f64>)> {
        let n = self.n();
        let (d, e) = self.diag_and_offdiag();
        let mut s = Diag::<f64>::zeros(n);
        let mut vectors = Mat::<f64>::zeros(n, n);
        let mut mem = MemBuffer::new(faer::linalg::evd::self_adjoint_evd_scratch::<f64>(
            n,
            faer::linalg::evd::ComputeEigenvectors::Yes,
            self.par,
            Default::default(),
        ));
        tridiagonal_self_adjoint_evd(
            d.as_ref(),
            e.as_ref(),
            s.as_mut(),
            Some(vectors.as_mut()),
            self.par,
            MemStack::new(&mut mem),
            Default::default(),
        )
        .map_err(|_| Error::NoConvergence("tridiagonal eigen-decomposition"))?;
        // Non-decreasing order: the largest are the last columns.
        let lambdas = s.column_vector().iter().rev().copied().collect();
        Ok((
            lambdas,
            Mat::<f64>::from_fn(n, n, |i, j| vectors[(i, n - 1 - j)]),
        ))
    }
}

/// Whether inverse iteration for `r` of `n` eigenvectors, `pairs` of them re-orthogonalised
/// ([`cluster_pairs`]), costs less than faer's full decomposition of `T`. Measured with `n`
/// 128-512 (flat and clustered spectra, `r` from `n / 4` to `n`, docs/perf.md): one vector's
/// LU and solves cost about `87 n` ns, one re-orthogonalised pair `3.3 n` ns, and the full
/// decomposition about `107 n^2` ns. So: `25 r + pairs <= 30 n`. Timed again with the
/// back-transform and inverse iteration's check included (`n` 64-512): the rule still picks
/// the faster route but for two near-ties (within 7%).
fn inverse_iteration_pays(n: usize, r: usize, pairs: usize) -> bool {
    r.saturating_mul(25).saturating_add(pairs) <= n.saturating_mul(30)
}

/// For each of the non-increasing `lambdas`, the first index of its cluster: the run of
/// eigenvalues reaching it through steps of at most `gap` (inverse iteration re-orthogonalises
/// their vectors against each other).
fn cluster_starts(lambdas: &[f64], gap: f64) -> Vec<usize> {
    let mut start = 0;
    (0..lambdas.len())
        .map(|j| {
            if j > 0 && lambdas[j - 1] - lambdas[j] > gap {
                start = j;
            }
            start
        })
        .collect()
}

/// How many vector pairs inverse iteration re-orthogonalises for `lambdas` (each vector
/// against the earlier ones of its cluster, [`cluster_starts`]): 0 for well separated
/// eigenvalues, `r (r - 1) / 2` when all `r` form one cluster.
fn cluster_pairs(lambdas: &[f64], gap: f64) -> usize {
    cluster_starts(lambdas, gap)
        .iter()
        .enumerate()
        .map(|(j, &start)| j - start)
        .sum()
}

/// `2^e` for `|e| <= 1022`, exactly.
fn power_of_two(e: i32) -> f64 {
    debug_assert!(e.abs() <= 1022);
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// Most QL sweeps per eigenvalue before [`rational_ql_eigenvalues`] gives up (EISPACK's limit;
/// two or three are typical).
const MAX_QL_SWEEPS: usize = 30;

/// Every eigenvalue of the symmetric tridiagonal matrix with diagonal `diag` (`n`) and
/// sub-diagonal `offdiag` (`n - 1`), non-decreasing; `None` when an eigenvalue needed more than
/// [`MAX_QL_SWEEPS`] sweeps.
///
/// The rational (square-root free) variant of the implicit QL iteration with a Wilkinson-type
/// shift, as in EISPACK's `tqlrat` (Reinsch 1973): it works on the squares `e_i^2` of the
/// sub-diagonal, so a sweep costs a few multiplications and one division per row and no square
/// root, where faer's QR sweep (the fallback) builds a Givens rotation per row. Each eigenvalue
/// is accurate to about `eps * max_i(|d_i| + |e_i|)`, like the QR iteration's. Measured: on the
/// 192-wide Gram matrices of a `64x3x3x64` TT-SVD, faer's eigenvalue pass was about half of the
/// whole decomposition's time.
fn rational_ql_eigenvalues(diag: &[f64], offdiag: &[f64]) -> Option<Vec<f64>> {
    let n = diag.len();
    debug_assert_eq!(offdiag.len(), n.saturating_sub(1));
    let mut d = diag.to_vec();
    // e2[i] = e_i^2 couples rows i and i + 1; e2[n - 1] = 0 ends every search below.
    let mut e2: Vec<f64> = offdiag.iter().map(|e| e * e).chain([0.0]).collect();
    if n == 0 || d.iter().chain(&e2).any(|v| !v.is_finite()) {
        return None;
    }
    // `shift_sum` accumulates the shifts applied to the trailing rows; `scale` is the largest
    // `|d_l| + |e_l|` met so far, `tiny` = eps * scale, the negligible-coupling test on e^2.
    let (mut shift_sum, mut scale, mut tiny, mut tiny2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for l in 0..n {
        let h = d[l].abs() + e2[l].sqrt();
        if scale < h {
            scale = h;
            tiny = f64::EPSILON * scale;
            tiny2 = tiny * tiny;
        }
        // The first negligible coupling at or below row l.
        let m = (l..n).find(|&m| e2[m] <= tiny2).expect("e2[n - 1] is zero");
        if m > l {
            let mut sweeps = 0;
            loop {
                if sweeps == MAX_QL_SWEEPS {
                    return None;
                }
                sweeps += 1;
                // The shift: the eigenvalue of the leading 2 x 2 block nearer to d[l].
                let s = e2[l].sqrt();
                let g = d[l];
                let p = (d[l + 1] - g) / (2.0 * s);
                let r = p.hypot(1.0);
                d[l] = s / (p + r.copysign(p));
                let h = g - d[l];
                for di in &mut d[l + 1..] {
                    *di -= h;
                }
                shift_sum += h;
                // One rational QL sweep from row m up to row l.
                let mut g = d[m];
                if g == 0.0 {
                    g = tiny;
                }
                let mut h = g;
                let mut s = 0.0;
                for i in (l..m).rev() {
                    let p = g * h;
                    let r = p + e2[i];
                    e2[i + 1] = s * r;
                    s = e2[i] / r;
                    d[i + 1] = h + s * (h + d[i]);
                    g = d[i] - e2[i] / g;
                    if g == 0.0 {
                        g = tiny;
                    }
                    h = g * p / r;
                }
                e2[l] = s * g;
                d[l] = h;
                // Converged when the coupling of row l is negligible (the test is written to
                // avoid underflow in h * e2[l]).
                if h == 0.0 || e2[l].abs() <= (tiny2 / h).abs() {
                    break;
                }
                e2[l] *= h;
                if e2[l] == 0.0 {
                    break;
                }
            }
        }
        // Insert d[l] + shift_sum into the sorted d[0..l].
        let value = d[l] + shift_sum;
        let mut i = l;
        while i > 0 && value < d[i - 1] {
            d[i] = d[i - 1];
            i -= 1;
        }
        d[i] = value;
    }
    d.iter().all(|v| v.is_finite()).then_some(d)
}

/// A fixed, item-dependent start vector with components of both signs and no structure that
/// would make it orthogonal to an eigenvector of a structured `T`.
fn start_vector(v: &mut [f64], seed: usize) {
    let mut state = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    for vi in v.iter_mut() {
        // xorshift64*: uniform in [-1, 1).
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        *vi = bits as f64 / (1u64 << 52) as f64 - 1.0;
    }
}

/// Scales `v` to unit 2-norm (a zero vector is left as it is; the checks reject it).
fn normalize(v: &mut [f64]) {
    let scale = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return;
    }
    let norm = scale * v.iter().map(|x| (x / scale).powi(2)).sum::<f64>().sqrt();
    for x in v.iter_mut() {
        *x /= norm;
    }
}

/// Whether the columns of `u` are orthonormal and `A u_j = lambda_j u_j`, both to round-off
/// (see [`CHECK_UNITS`]).
fn accurate(a: MatRef<'_, f64>, lambdas: &[f64], u: MatRef<'_, f64>) -> bool {
    let (n, r) = (a.nrows(), u.ncols());
    let unit = n as f64 * f64::EPSILON;
    let mut gram = Mat::<f64>::zeros(r, r);
    matmul(
        gram.as_mut(),
        Accum::Replace,
        u.transpose(),
        u,
        1.0,
        Par::Seq,
    );
    let orthonormal = (0..r).all(|i| {
        (0..r).all(|j| {
            let want = if i == j { 1.0 } else { 0.0 };
            (gram[(i, j)] - want).abs() <= CHECK_UNITS * unit
        })
    });
    if !orthonormal {
        return false;
    }
    let scale = lambdas
        .iter()
        .fold(0.0f64, |m, l| m.max(l.abs()))
        .max(f64::MIN_POSITIVE);
    // `(A u)^T = u^T A` (`A` symmetric), with the short operand on the left: faer's product ran
    // several times faster that way round (see `lobpcg.rs`, `times_g`).
    let mut au_t = Mat::<f64>::zeros(r, n);
    matmul(
        au_t.as_mut(),
        Accum::Replace,
        u.transpose(),
        a,
        1.0,
        Par::Seq,
    );
    (0..r).all(|j| {
        let res2: f64 = (0..n)
            .map(|i| (au_t[(j, i)] - lambdas[j] * u[(i, j)]).powi(2))
            .sum();
        res2.sqrt() <= CHECK_UNITS * unit * scale
    })
}

/// `T - shift I = P L U` by Gaussian elimination with partial pivoting (LAPACK `dgttrf`): `U`
/// has the diagonal `d` and two super-diagonals `du`, `du2`; `L` the multipliers `dl`; `swap[i]`
/// says whether rows `i` and `i + 1` were exchanged. Pivots smaller than `tiny` are raised to
/// it (`dstein`'s perturbation), so the solves never divide by zero: the shift is an eigenvalue
/// and `T - shift I` singular to round-off, which is the point of inverse iteration.
#[derive(Debug)]
struct TridiagonalLu {
    d: Vec<f64>,
    du: Vec<f64>,
    du2: Vec<f64>,
    dl: Vec<f64>,
    swap: Vec<bool>,
}

impl TridiagonalLu {
    fn new(diag: &[f64], offdiag: &[f64], shift: f64, tiny: f64) -> Self {
        let n = diag.len();
        let mut d: Vec<f64> = diag.iter().map(|a| a - shift).collect();
        let mut du = offdiag.to_vec();
        let mut dl = offdiag.to_vec();
        let mut du2 = vec![0.0; n.saturating_sub(2)];
        let mut swap = vec![false; n.saturating_sub(1)];
        for i in 0..n.saturating_sub(1) {
            if d[i].abs() >= dl[i].abs() {
                let pivot = raised(d[i], tiny);
                d[i] = pivot;
                let fact = dl[i] / pivot;
                dl[i] = fact;
                d[i + 1] -= fact * du[i];
            } else {
                let fact = d[i] / dl[i];
                d[i] = dl[i];
                dl[i] = fact;
                let temp = du[i];
                du[i] = d[i + 1];
                d[i + 1] = temp - fact * d[i + 1];
                if i + 2 < n {
                    du2[i] = du[i + 1];
                    du[i + 1] *= -fact;
                }
                swap[i] = true;
            }
        }
        if let Some(last) = d.last_mut() {
            *last = raised(*last, tiny);
        }
        Self {
            d,
            du,
            du2,
            dl,
            swap,
        }
    }

    /// `b <- (T - shift I)^-1 b`.
    fn solve(&self, b: &mut [f64]) {
        let n = b.len();
        for i in 0..n.saturating_sub(1) {
            if self.swap[i] {
                let temp = b[i];
                b[i] = b[i + 1];
                b[i + 1] = temp - self.dl[i] * b[i];
            } else {
                b[i + 1] -= self.dl[i] * b[i];
            }
        }
        for i in (0..n).rev() {
            let mut v = b[i];
            if i + 1 < n {
                v -= self.du[i] * b[i + 1];
            }
            if i + 2 < n {
                v -= self.du2[i] * b[i + 2];
            }
            b[i] = v / self.d[i];
        }
    }
}

/// `p`, or `tiny` with `p`'s sign when `|p| < tiny`.
fn raised(p: f64, tiny: f64) -> f64 {
    if p.abs() >= tiny {
        p
    } else if p < 0.0 {
        -tiny
    } else {
        tiny
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// `Q diag(spectrum) Q^T` for a random orthogonal `Q` (QR of a Gaussian-like matrix).
    pub(crate) fn with_spectrum(spectrum: &[f64], seed: u64) -> Mat<f64> {
        let n = spectrum.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let g = Mat::<f64>::from_fn(n, n, |_, _| rng.random::<f64>() - 0.5);
        let q = g.qr().compute_Q();
        let qs = Mat::<f64>::from_fn(n, n, |i, j| q[(i, j)] * spectrum[j]);
        let mut a = Mat::<f64>::zeros(n, n);
        matmul(
            a.as_mut(),
            Accum::Replace,
            qs.as_ref(),
            q.transpose(),
            1.0,
            Par::Seq,
        );
        a
    }

    /// The inverse iteration against faer's full decomposition: same eigenvalues, and the same
    /// subspace where the `r`-th eigenvalue is separated from the next.
    fn check(a: &Mat<f64>, r: usize) {
        let n = a.nrows();
        let t = Tridiagonal::new(a.as_ref(), Par::Seq);
        let lam = t.eigenvalues().unwrap();
        let mut u = t.inverse_iteration(&lam[..r]);
        t.back_transform(&mut u);
        assert!(accurate(a.as_ref(), &lam[..r], u.as_ref()), "n {n} r {r}");
        let full = a.self_adjoint_eigen(faer::Side::Lower).unwrap();
        let s = full.S().column_vector();
        for j in 0..n {
            assert!((s[n - 1 - j] - lam[j]).abs() <= 1e-12 * lam[0].abs().max(1.0));
        }
        // Projector onto the kept subspace, both ways: ||U U^T - V V^T|| small when the r-th
        // eigenvalue is separated from the next.
        let v = full.U();
        let v = Mat::<f64>::from_fn(n, r, |i, j| v[(i, n - 1 - j)]);
        if r < n && (lam[r - 1] - lam[r]).abs() > 1e-6 * lam[0].abs() {
            let mut pu = Mat::<f64>::zeros(n, n);
            matmul(
                pu.as_mut(),
                Accum::Replace,
                u.as_ref(),
                u.transpose(),
                1.0,
                Par::Seq,
            );
            matmul(
                pu.as_mut(),
                Accum::Add,
                v.as_ref(),
                v.transpose(),
                -1.0,
                Par::Seq,
            );
            assert!(pu.norm_l2() < 1e-8, "subspaces differ by {}", pu.norm_l2());
        }
        // The public entry, on both of its routes, gives the same eigenvalues and checked
        // vectors.
        for full_only in [false, true] {
            let (l, w) = t
                .leading_eigenpairs_by(a.as_ref(), |_| Some(r), full_only)
                .unwrap()
                .unwrap();
            assert!(
                l.iter()
                    .zip(&lam)
                    .all(|(x, y)| (x - y).abs() <= 1e-12 * lam[0].abs().max(1.0))
            );
            assert!(
                accurate(a.as_ref(), &lam[..r], w.as_ref()),
                "full_only {full_only}"
            );
        }
        assert!(
            t.leading_eigenpairs(a.as_ref(), |_| None)
                .unwrap()
                .is_none()
        );
    }

    /// Far from unit scale the eigenvalues are those of the unit-scale matrix scaled back
    /// (the QL iteration alone would underflow below about `1e-100`): every eigenvalue within
    /// `1e-12 * scale * max|lambda|` of the prescribed spectrum, at scales from `1e-280` to
    /// `1e280`.
    #[test]
    fn eigenvalues_are_right_far_from_unit_scale() {
        let spectrum: Vec<f64> = (0..40).map(|i| 1.0 + (i as f64 * 0.7).sin()).collect();
        let mut want = spectrum.clone();
        want.sort_by(|a, b| b.total_cmp(a));
        for scale in [1e-280, 1e-200, 1e-120, 1e-60, 1.0, 1e150, 1e280] {
            let a = with_spectrum(&spectrum, 9) * faer::Scale(scale);
            let lam = Tridiagonal::new(a.as_ref(), Par::Seq)
                .eigenvalues()
                .unwrap();
            for (got, w) in lam.iter().zip(&want) {
                assert!(
                    (got - w * scale).abs() <= 1e-12 * 2.0 * scale,
                    "scale {scale:e}: {got:e} against {:e}",
                    w * scale
                );
            }
        }
    }

    /// Clusters are runs of eigenvalues at most `gap` apart; each vector is re-orthogonalised
    /// against the earlier ones of its cluster.
    #[test]
    fn cluster_pairs_count_within_runs() {
        let lambdas = [10.0, 9.9995, 9.999, 5.0, 4.9999, 1.0];
        assert_eq!(cluster_starts(&lambdas, 1e-3), vec![0, 0, 0, 3, 3, 5]);
        assert_eq!(cluster_pairs(&lambdas, 1e-3), 1 + 2 + 1);
        assert_eq!(cluster_pairs(&lambdas, 10.0), 15);
        assert_eq!(cluster_pairs(&[], 1.0), 0);
        // Few separated vectors take inverse iteration; all of a large cluster does not.
        assert!(inverse_iteration_pays(768, 21, 0));
        assert!(!inverse_iteration_pays(256, 256, 256 * 255 / 2));
    }

    #[test]
    fn random_spectra_match_the_full_decomposition() {
        let mut rng = StdRng::seed_from_u64(3);
        for &(n, r) in &[(1, 1), (2, 1), (5, 2), (40, 6), (120, 24), (200, 12)] {
            let spectrum: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 10.0).collect();
            check(&with_spectrum(&spectrum, n as u64), r.min(n));
        }
    }

    #[test]
    fn clustered_and_repeated_eigenvalues_give_orthonormal_vectors() {
        // A Gram-like spectrum: a flat bulk, a tight cluster at the top (gaps 1e-9 relative),
        // and an exactly repeated pair.
        let n = 90;
        let mut spectrum: Vec<f64> = (0..n).map(|i| 1.0 + i as f64 * 1e-3).collect();
        for (k, s) in spectrum.iter_mut().rev().take(5).enumerate() {
            *s = 5.0 + k as f64 * 1e-9;
        }
        spectrum[n - 7] = 3.0;
        spectrum[n - 8] = 3.0;
        check(&with_spectrum(&spectrum, 17), 10);
    }

    #[test]
    fn zero_and_negative_spectra_are_handled() {
        let mut spectrum = vec![0.0; 30];
        spectrum[29] = 2.0;
        spectrum[28] = -1.0;
        check(&with_spectrum(&spectrum, 5), 3);
        // The zero matrix: any orthonormal vectors, from the full decomposition.
        let zero = Mat::<f64>::zeros(12, 12);
        let t = Tridiagonal::new(zero.as_ref(), Par::Seq);
        let (l, u) = t
            .leading_eigenpairs(zero.as_ref(), |_| Some(2))
            .unwrap()
            .unwrap();
        assert!(l.iter().all(|&x| x == 0.0));
        assert!(accurate(zero.as_ref(), &[0.0, 0.0], u.as_ref()));
    }

    /// The rational QL eigenvalues against faer's eigenvalues of the same tridiagonal matrices, within `n * eps * ||T||_1` times a small factor (both are
    /// backward stable to about `eps ||T||` per eigenvalue): random, graded over 12 orders of
    /// magnitude, already diagonal (unsorted), with zero couplings splitting it, repeated
    /// eigenvalues (Wilkinson's W21+ has pairs equal to 1e-14), and tridiagonal forms of
    /// Gram-like spectra.
    #[test]
    fn rational_ql_matches_the_qr_iteration() {
        let mut rng = StdRng::seed_from_u64(8);
        let mut cases: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
        for n in [1usize, 2, 3, 7, 40, 193] {
            let d = (0..n).map(|_| rng.random::<f64>() - 0.5).collect();
            let e = (0..n.saturating_sub(1))
                .map(|_| rng.random::<f64>() - 0.5)
                .collect();
            cases.push((d, e));
        }
        let graded: Vec<f64> = (0..60).map(|i| 10f64.powf(-(i as f64) / 5.0)).collect();
        cases.push((graded.clone(), graded[1..].to_vec()));
        cases.push((vec![3.0, -1.0, 2.0, 2.0, 0.0], vec![0.0; 4]));
        let mut split: Vec<f64> = (0..30).map(|i| (i % 4) as f64 * 0.3).collect();
        split[10] = 0.0;
        cases.push(((0..31).map(|i| i as f64 * 0.1).collect(), split));
        let w21: Vec<f64> = (0..21).map(|i| (10 - i as i64).abs() as f64).collect();
        cases.push((w21, vec![1.0; 20]));
        for (k, spectrum) in [
            (0..150).map(|i| 0.9f64.powi(i)).collect::<Vec<f64>>(),
            (0..150).map(|i| if i < 40 { 2.0 } else { 1e-3 }).collect(),
            (0..150)
                .map(|i| if i < 20 { 1.0 + i as f64 } else { 0.0 })
                .collect(),
        ]
        .iter()
        .enumerate()
        {
            let t = Tridiagonal::new(with_spectrum(spectrum, 20 + k as u64).as_ref(), Par::Seq);
            cases.push((t.diag.clone(), t.offdiag.clone()));
        }
        for (c, (d, e)) in cases.iter().enumerate() {
            let n = d.len();
            let got = rational_ql_eigenvalues(d, e).unwrap_or_else(|| panic!("case {c}"));
            let dense = Mat::<f64>::from_fn(n, n, |i, j| match i.abs_diff(j) {
                0 => d[i],
                1 => e[i.min(j)],
                _ => 0.0,
            });
            let want = dense.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
            let norm = (0..n).fold(0.0f64, |m, i| {
                m.max(
                    d[i].abs()
                        + e.get(i).map_or(0.0, |v| v.abs())
                        + if i > 0 { e[i - 1].abs() } else { 0.0 },
                )
            });
            let tol = 8.0 * n as f64 * f64::EPSILON * norm;
            for (i, &g) in got.iter().enumerate() {
                let w = want[i];
                assert!(
                    (g - w).abs() <= tol,
                    "case {c}, eigenvalue {i}: {g} vs {w} (tol {tol:e})"
                );
            }
        }
        assert!(rational_ql_eigenvalues(&[f64::NAN, 1.0], &[1.0]).is_none());
    }

    #[test]
    fn lu_solves_a_tridiagonal_system() {
        let (d, e) = (vec![4.0, -1.0, 0.5, 3.0, 2.0], vec![1.0, 2.0, -1.5, 0.25]);
        let x: Vec<f64> = vec![1.0, -2.0, 0.5, 3.0, -1.0];
        // b = (T - 0.3 I) x
        let n = d.len();
        let b: Vec<f64> = (0..n)
            .map(|i| {
                let mut v = (d[i] - 0.3) * x[i];
                if i > 0 {
                    v += e[i - 1] * x[i - 1];
                }
                if i + 1 < n {
                    v += e[i] * x[i + 1];
                }
                v
            })
            .collect();
        let lu = TridiagonalLu::new(&d, &e, 0.3, 1e-300);
        let mut y = b.clone();
        lu.solve(&mut y);
        for (a, b) in y.iter().zip(&x) {
            assert!((a - b).abs() < 1e-12, "{y:?} vs {x:?}");
        }
    }
}
