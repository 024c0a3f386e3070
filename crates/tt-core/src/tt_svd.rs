//! TT-SVD (Oseledets 2011): a dense tensor to TT form, by rank or by error tolerance.

use ndarray::{Array3, ArrayViewD};

use crate::error::{Error, Result};
use crate::linalg::{
    KeepRule, Truncated, identity_singular_values, identity_step, keeps_every_row, truncated_svd,
};
use crate::scalar::{Scalar, times_pow2};
use crate::tensor::TtTensor;
use crate::truncation::{Truncation, TruncationReport};

/// The per-step rule of a truncation, once the tensor's shape and norm are known.
pub(crate) enum StepRule {
    Ranks(Vec<usize>),
    Delta { delta2: f64, max_rank: usize },
}

impl StepRule {
    pub(crate) fn new(truncation: &Truncation, shape: &[usize], norm: f64) -> Result<Self> {
        match truncation {
            Truncation::Rank { spec, options } => {
                Ok(StepRule::Ranks(spec.resolve_with(shape, *options)?))
            }
            Truncation::Tolerance {
                rel_error,
                max_rank,
            } => {
                if !rel_error.is_finite() || *rel_error < 0.0 {
                    return Err(Error::InvalidTolerance(*rel_error));
                }
                if *max_rank == Some(0) {
                    return Err(Error::ZeroRank {
                        position: 1,
                        ranks: vec![0],
                    });
                }
                let steps = shape.len().saturating_sub(1).max(1) as f64;
                let delta = rel_error / steps.sqrt() * norm;
                Ok(StepRule::Delta {
                    delta2: delta * delta,
                    max_rank: max_rank.unwrap_or(usize::MAX),
                })
            }
        }
    }

    /// The rule of the step that produces bond `k + 1`, for an `m x n` unfolding.
    pub(crate) fn keep(&self, k: usize, m: usize, n: usize) -> KeepRule {
        match self {
            StepRule::Ranks(r) => KeepRule::Rank(r[k + 1].min(m).min(n)),
            StepRule::Delta { delta2, max_rank } => KeepRule::Delta {
                delta2: *delta2,
                max_rank: *max_rank,
            },
        }
    }

    pub(crate) fn requested(&self) -> Option<Vec<usize>> {
        match self {
            StepRule::Ranks(r) => Some(r.clone()),
            StepRule::Delta { .. } => None,
        }
    }
}

/// Decomposes a dense tensor into TT form.
///
/// Left to right: unfold the carried matrix to `(r_k * n_k, rest)`, keep the leading singular
/// triplets, core `k` = `U_r` reshaped to `(r_k, n_k, r_{k+1})`, carry `S_r V_r^T` on. The SVDs run
/// in f64 whatever `T` is. Errors: an empty shape, a zero dimension, a non-finite entry, a bad rank
/// spec or tolerance.
pub fn tt_svd<T: Scalar>(
    tensor: ArrayViewD<'_, T>,
    truncation: &Truncation,
) -> Result<(TtTensor<T>, TruncationReport)> {
    let shape = tensor.shape().to_vec();
    if shape.is_empty() {
        return Err(Error::EmptyShape);
    }
    if let Some(mode) = shape.iter().position(|&n| n == 0) {
        return Err(Error::ZeroDimension { mode, shape });
    }
    let mut carry: Vec<f64> = Vec::with_capacity(tensor.len());
    for (index, v) in tensor.iter().enumerate() {
        let v = v.as_f64();
        if !v.is_finite() {
            return Err(Error::NonFinite {
                what: "tensor",
                index,
            });
        }
        carry.push(v);
    }
    // Magnitude never changes the answer: data whose squares would underflow or overflow f64
    // is scaled by an exact power of two first, and the scale goes back into the cores.
    let shift = magnitude_shift(&carry);
    scale_pow2(&mut carry, shift);
    let norm = carry.iter().map(|v| v * v).sum::<f64>().sqrt();
    let rule = StepRule::new(truncation, &shape, norm)?;
    let order = shape.len();
    let mut ranks = vec![1usize; order + 1];
    let mut cores = Vec::with_capacity(order);
    let mut report = TruncationReport::start(rule.requested(), norm);
    // Step k's result when it was computed alongside step k - 1.
    let mut ready: Option<Truncated> = None;
    for k in 0..order - 1 {
        let m = ranks[k] * shape[k];
        let n = carry.len() / m;
        let keep = rule.keep(k, m, n);
        let t = match ready.take() {
            Some(t) => t,
            // Step k keeps every row: `A = I A`, so the carry goes on unchanged and step k + 1
            // reads the same data. Only the singular values step k reports need any work (the
            // eigenvalues of an `m x m` Gram matrix), and they run alongside step k + 1: a
            // `'same'` TT of a 512x3x3x512 kernel spends 30-40 ms on them, in a step k + 1
            // whose 1536-wide LOBPCG leaves the second thread idle.
            None if keeps_every_row(keep, m, n) && k + 2 < order => {
                let (m1, n1) = (m * shape[k + 1], n / shape[k + 1]);
                let keep1 = rule.keep(k + 1, m1, n1);
                let (singular_values, next) = rayon::join(
                    || identity_singular_values(&carry, m, n),
                    || truncated_svd(&carry, m1, n1, keep1),
                );
                ready = Some(next?);
                identity_step(std::mem::take(&mut carry), m, singular_values?)
            }
            None => truncated_svd(&carry, m, n, keep)?,
        };
        ranks[k + 1] = t.rank;
        cores.push(core_from::<f64>(&t.u, ranks[k], shape[k], t.rank));
        report.push_step(t.singular_values, t.discarded2, t.method);
        carry = t.carry;
    }
    cores.push(core_from::<f64>(
        &carry,
        ranks[order - 1],
        shape[order - 1],
        1,
    ));
    report.finish(ranks);
    report.unscale(shift);
    let cores = cast_cores::<T>(cores, -shift)?;
    Ok((TtTensor::new(cores)?, report))
}

/// The power of two that brings the largest magnitude of `data` near 1 when squares of it would
/// underflow or overflow f64 (`|x| < 2^-300` or `|x| > 2^300`), else 0 (no scaling).
pub(crate) fn magnitude_shift(data: &[f64]) -> i32 {
    let max = data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if max == 0.0 || (max >= 2f64.powi(-300) && max <= 2f64.powi(300)) {
        0
    } else {
        -(max.log2().floor() as i32)
    }
}

/// Multiplies every entry by `2^shift` (exact: two factors, each a representable power of two).
pub(crate) fn scale_pow2(data: &mut [f64], shift: i32) {
    if shift == 0 {
        return;
    }
    data.iter_mut().for_each(|v| *v = times_pow2(*v, shift));
}

/// Casts f64 cores to `T` after multiplying the tensor by `2^exponent`. The factor goes into the
/// last core (TensorLy's convention: left-orthonormal cores, the norm in the last one) unless
/// that core would then leave `T`'s range; then the magnitude is spread evenly over the cores in
/// powers of two (the tensor is the same). An error when even that does not fit `T`.
pub(crate) fn cast_cores<T: Scalar>(
    mut cores: Vec<Array3<f64>>,
    exponent: i32,
) -> Result<Vec<Array3<T>>> {
    let fits = |cores: &[Array3<f64>]| {
        cores
            .iter()
            .all(|c| c.iter().all(|&v| T::from_f64(v).is_finite()))
    };
    let last = cores.len() - 1;
    let mut simple = cores[last].clone();
    scale_pow2(simple.as_slice_mut().expect("row-major core"), exponent);
    if fits(&cores[..last]) && fits(std::slice::from_ref(&simple)) {
        cores[last] = simple;
    } else {
        // log2 of each core's largest magnitude, and of the whole product after scaling.
        let log_max: Vec<i32> = cores
            .iter()
            .map(|c| {
                let m = c.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                if m > 0.0 { m.log2().floor() as i32 } else { 0 }
            })
            .collect();
        let total: i32 = log_max.iter().sum::<i32>() + exponent;
        let n = cores.len() as i32;
        let target = total.div_euclid(n);
        let mut given = 0;
        for (k, core) in cores.iter_mut().enumerate() {
            let shift = if k == last {
                exponent - given
            } else {
                target - log_max[k]
            };
            given += shift;
            scale_pow2(core.as_slice_mut().expect("row-major core"), shift);
        }
        if !fits(&cores) {
            return Err(Error::OutOfRange {
                what: "the decomposition's cores",
                element: T::NAME,
                detail: format!("a product of magnitude 2^{total} spread over {n} cores"),
            });
        }
    }
    Ok(cores.into_iter().map(|c| c.mapv(T::from_f64)).collect())
}

/// A core `(r_left, n, r_right)` from row-major f64 data, cast to `T`.
pub(crate) fn core_from<T: Scalar>(data: &[f64], rl: usize, n: usize, rr: usize) -> Array3<T> {
    Array3::from_shape_vec((rl, n, rr), data.iter().map(|&v| T::from_f64(v)).collect())
        .expect("core data has r_left * n * r_right entries")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::SvdMethod;
    use crate::rank::RankSpec;

    #[test]
    fn exact_on_low_rank_input() {
        let tt = TtTensor::<f64>::random(&[4, 5, 3, 4], &[1, 3, 4, 2, 1], 1.0, 7).unwrap();
        let dense = tt.to_dense().unwrap();
        let (back, report) = tt_svd(dense.view(), &Truncation::rank(RankSpec::Uniform(6))).unwrap();
        assert_eq!(report.ranks, vec![1, 4, 6, 4, 1]);
        let err = (&back.to_dense().unwrap() - &dense)
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt();
        assert!(err < 1e-10 * report.norm);
        let (tol, rep) = tt_svd(dense.view(), &Truncation::tolerance(1e-9)).unwrap();
        assert_eq!(rep.ranks, vec![1, 3, 4, 2, 1]);
        assert_eq!(tol.ranks(), rep.ranks);
    }

    /// A step that keeps every row runs its singular values alongside the next step: the result
    /// must be the one the steps give one after the other, each on the carry the previous one
    /// left (ranks, cores, reported singular values, errors and methods), with the identity step
    /// first, second (after a truncated first step) and chained (two in a row), and wide Gram-
    /// route unfoldings after it.
    #[test]
    fn identity_steps_alongside_the_next_give_the_sequential_result() {
        let cases: [(&[usize], &[usize]); 3] = [
            (&[20, 3, 3, 20], &[1, 20, 9, 14, 1]),
            (&[12, 5, 4, 30], &[1, 6, 30, 11, 1]),
            (&[4, 5, 6, 40], &[1, 4, 20, 17, 1]),
        ];
        for (shape, ranks) in cases {
            let dense = TtTensor::<f64>::random(shape, &[1, 4, 7, 5, 1], 1.0, 3)
                .unwrap()
                .to_dense()
                .unwrap()
                .mapv(|v| v + 1e-3 * (v * 1e4).sin());
            let spec = Truncation::rank(RankSpec::Explicit(ranks.to_vec()));
            let (tt, report) = tt_svd(dense.view(), &spec).unwrap();
            assert!(
                report.methods.contains(&SvdMethod::Identity),
                "{shape:?}: {:?}",
                report.methods
            );
            // The steps one after the other.
            let mut carry: Vec<f64> = dense.iter().copied().collect();
            let mut rl = 1;
            for k in 0..shape.len() - 1 {
                let m = rl * shape[k];
                let n = carry.len() / m;
                let t = truncated_svd(&carry, m, n, KeepRule::Rank(ranks[k + 1].min(m).min(n)))
                    .unwrap();
                assert_eq!(report.ranks[k + 1], t.rank, "{shape:?} step {k}");
                assert_eq!(report.methods[k], t.method, "{shape:?} step {k}");
                assert_eq!(
                    report.singular_values[k], t.singular_values,
                    "{shape:?} step {k}"
                );
                assert_eq!(report.discarded[k], t.discarded2, "{shape:?} step {k}");
                let core = core_from::<f64>(&t.u, rl, shape[k], t.rank);
                assert_eq!(tt.core(k), core.view(), "{shape:?} core {k}");
                rl = t.rank;
                carry = t.carry;
            }
            let last = core_from::<f64>(&carry, rl, shape[shape.len() - 1], 1);
            assert_eq!(tt.core(shape.len() - 1), last.view(), "{shape:?} last core");
        }
    }

    #[test]
    fn rejects_bad_input() {
        let z = ndarray::ArrayD::<f64>::zeros(ndarray::IxDyn(&[2, 0, 3]));
        assert!(tt_svd(z.view(), &Truncation::rank(RankSpec::Same)).is_err());
        let mut x = ndarray::ArrayD::<f32>::ones(ndarray::IxDyn(&[2, 3]));
        x[[1, 1]] = f32::NAN;
        assert!(matches!(
            tt_svd(x.view(), &Truncation::rank(RankSpec::Same)),
            Err(Error::NonFinite { index: 4, .. })
        ));
        let y = ndarray::ArrayD::<f64>::ones(ndarray::IxDyn(&[2, 3]));
        assert!(tt_svd(y.view(), &Truncation::tolerance(-1.0)).is_err());
        assert!(tt_svd(y.view(), &Truncation::tolerance(f64::INFINITY)).is_err());
        assert!(tt_svd(y.view(), &Truncation::rank(RankSpec::Uniform(0))).is_err());
    }

    /// Relative Frobenius error of `tt` against `dense`, in f64, both divided by `dense`'s largest
    /// magnitude first (so that the test's own squares neither underflow nor overflow).
    fn actual_error<T: Scalar>(tt: &TtTensor<T>, dense: &ndarray::ArrayD<f64>) -> f64 {
        let back = tt.cast::<f64>().to_dense().unwrap();
        let max = dense.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let num: f64 = back
            .iter()
            .zip(dense)
            .map(|(a, b)| ((a - b) / max).powi(2))
            .sum();
        let den: f64 = dense.iter().map(|b| (b / max).powi(2)).sum();
        (num / den).sqrt()
    }

    #[test]
    fn magnitude_never_changes_the_answer() {
        let tt = TtTensor::<f64>::random(&[4, 5, 3], &[1, 3, 2, 1], 1.0, 11).unwrap();
        let unit = tt.to_dense().unwrap();
        let spec = Truncation::rank(RankSpec::Uniform(3));
        let (_, reference) = tt_svd(unit.view(), &spec).unwrap();
        // Squares that underflow (1e-170), that come near it (1e-155) and that overflow (1e200).
        for scale in [1e-170, 1e-155, 1e200] {
            let dense = unit.mapv(|v| v * scale);
            let (back, report) = tt_svd(dense.view(), &spec).unwrap();
            assert_eq!(report.ranks, reference.ranks, "scale {scale}");
            let err = actual_error(&back, &dense);
            assert!(err < 1e-12, "scale {scale}: actual error {err}");
            assert!((report.rel_error - reference.rel_error).abs() < 1e-12);
            assert!((report.norm / scale - reference.norm).abs() < 1e-9 * reference.norm);
        }
    }

    /// The same on unfoldings large enough for the Gram route, whose eigenvalues are the
    /// squares of the data's scale (1e-60 data: a 1e-120 Gram matrix), by rank and by
    /// tolerance (which chooses the ranks from those eigenvalues).
    #[test]
    fn magnitude_never_changes_the_gram_route() {
        let tt = TtTensor::<f64>::random(&[20, 9, 20], &[1, 6, 6, 1], 1.0, 4).unwrap();
        let unit = tt.to_dense().unwrap();
        for spec in [
            Truncation::rank(RankSpec::Uniform(5)),
            Truncation::tolerance(0.3),
        ] {
            let (_, reference) = tt_svd(unit.view(), &spec).unwrap();
            assert!(reference.methods.contains(&SvdMethod::Gram));
            for scale in [1e-60, 1e-120, 1e120] {
                let dense = unit.mapv(|v| v * scale);
                let (back, report) = tt_svd(dense.view(), &spec).unwrap();
                assert_eq!(report.ranks, reference.ranks, "scale {scale:e}");
                assert_eq!(report.methods, reference.methods, "scale {scale:e}");
                assert!((report.rel_error - reference.rel_error).abs() < 1e-12);
                assert!((actual_error(&back, &dense) - reference.rel_error).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn f32_cores_near_the_top_of_the_range_stay_finite() {
        // Two adjacent f32::MAX entries: the norm (4.8e38) exceeds f32, so the cores cannot carry
        // it in the last core alone.
        let mut dense = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[3, 4, 2]));
        dense[[0, 0, 0]] = f32::MAX;
        dense[[0, 0, 1]] = f32::MAX;
        dense[[2, 3, 1]] = 1.0;
        let (tt, report) = tt_svd(dense.view(), &Truncation::rank(RankSpec::Same)).unwrap();
        assert!(tt.cores().iter().all(|c| c.iter().all(|v| v.is_finite())));
        let err = actual_error(&tt, &dense.mapv(f64::from));
        assert!(
            err < 1e-6,
            "actual error {err}, reported {}",
            report.rel_error
        );
    }
}
