//! TT-SVD (Oseledets 2011): a dense tensor to TT form, by rank or by error tolerance.

use ndarray::{Array3, ArrayViewD};

use crate::error::{Error, Result};
use crate::linalg::{KeepRule, truncated_svd};
use crate::scalar::Scalar;
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
    let norm = carry.iter().map(|v| v * v).sum::<f64>().sqrt();
    let rule = StepRule::new(truncation, &shape, norm)?;
    let order = shape.len();
    let mut ranks = vec![1usize; order + 1];
    let mut cores = Vec::with_capacity(order);
    let mut report = TruncationReport::start(rule.requested(), norm);
    for k in 0..order - 1 {
        let m = ranks[k] * shape[k];
        let n = carry.len() / m;
        let t = truncated_svd(&carry, m, n, rule.keep(k, m, n))?;
        ranks[k + 1] = t.rank;
        cores.push(core_from(&t.u, ranks[k], shape[k], t.rank));
        report.push_step(t.singular_values, t.discarded2, t.method);
        carry = t.carry;
    }
    cores.push(core_from(&carry, ranks[order - 1], shape[order - 1], 1));
    report.finish(ranks);
    Ok((TtTensor::new(cores)?, report))
}

/// A core `(r_left, n, r_right)` from row-major f64 data, cast to `T`.
pub(crate) fn core_from<T: Scalar>(data: &[f64], rl: usize, n: usize, rr: usize) -> Array3<T> {
    Array3::from_shape_vec((rl, n, rr), data.iter().map(|&v| T::from_f64(v)).collect())
        .expect("core data has r_left * n * r_right entries")
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
