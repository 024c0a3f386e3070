//! TT-rounding: recompress a TT without densifying it.

use ndarray::{Array2, Array3};

use crate::array::reshape_owned;
use crate::error::{Error, Result};
use crate::linalg::truncated_svd;
use crate::orthogonalize::right_orthogonalize;
use crate::scalar::Scalar;
use crate::tensor::TtTensor;
use crate::truncation::{Truncation, TruncationReport};
use crate::tt_svd::{StepRule, core_from};

/// Recompresses `tt` under `truncation`: right-to-left QR orthogonalisation, then left-to-right
/// truncated SVDs of each core (never the dense tensor). With the right part orthonormal, each
/// step sees the singular values of the full unfolding, so delta truncation keeps its guarantee
/// `||T - round(T)||_F <= eps ||T||_F`. A TT with redundant (e.g. zero-padded) bonds comes back at
/// its minimal numerical ranks under a tolerance truncation.
pub fn tt_round<T: Scalar>(
    tt: &TtTensor<T>,
    truncation: &Truncation,
) -> Result<(TtTensor<T>, TruncationReport)> {
    let shape = tt.shape();
    let order = shape.len();
    let cores64 = tt.cast::<f64>().into_cores();
    let mut offset = 0;
    for core in &cores64 {
        if let Some(i) = core.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "TT core",
                index: offset + i,
            });
        }
        offset += core.len();
    }
    let mut cores = right_orthogonalize(cores64);
    let norm = cores[0].iter().map(|v| v * v).sum::<f64>().sqrt();
    let rule = StepRule::new(truncation, &shape, norm)?;
    let mut report = TruncationReport::start(rule.requested(), norm);
    let mut out: Vec<Array3<T>> = Vec::with_capacity(order);
    for k in 0..order - 1 {
        let (rl, n, rr) = cores[k].dim();
        let data: Vec<f64> = cores[k].iter().copied().collect();
        let t = truncated_svd(&data, rl * n, rr, rule.keep(k, rl * n, rr))?;
        out.push(core_from(&t.u, rl, n, t.rank));
        let carry = Array2::from_shape_vec((t.rank, rr), t.carry).expect("carry is (r, rr)");
        let (nl, nn, nr) = cores[k + 1].dim();
        let next = carry.dot(&cores[k + 1].to_shape((nl, nn * nr)).expect("contiguous"));
        cores[k + 1] = reshape_owned(next, (t.rank, nn, nr));
        report.push_step(t.singular_values, t.discarded2, t.method);
    }
    out.push(cores[order - 1].mapv(T::from_f64));
    let result = TtTensor::new(out)?;
    report.finish(result.ranks());
    Ok((result, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_a_padded_tt_recovers_it() {
        let tt = TtTensor::<f64>::random(&[3, 4, 5, 2], &[1, 2, 3, 2, 1], 1.0, 3).unwrap();
        let padded = tt.pad_ranks(3);
        let (back, report) = tt_round(&padded, &Truncation::tolerance(1e-12)).unwrap();
        assert_eq!(back.ranks(), tt.ranks());
        assert!(report.rel_error < 1e-12);
        let diff = (back.to_dense().unwrap() - tt.to_dense().unwrap())
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt();
        assert!(diff < 1e-10 * tt.norm());
    }
}
