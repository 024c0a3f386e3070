//! TT-rounding: recompress a TT without densifying it.

use ndarray::{Array2, Array3};

use crate::array::reshape_owned;
use crate::error::{Error, Result};
use crate::linalg::{thin_qr, truncated_svd};
use crate::scalar::Scalar;
use crate::tensor::TtTensor;
use crate::truncation::{Truncation, TruncationReport};
use crate::tt_svd::{StepRule, core_from};

/// Right-to-left orthogonalisation: afterwards cores `1..N` are right-orthonormal
/// (`G_k` reshaped `(r_k, n_k r_{k+1})` has orthonormal rows) and the tensor is unchanged, so its
/// norm is the Frobenius norm of core 0. Bond ranks may shrink to `min(r_k, n_k r_{k+1})`.
pub(crate) fn right_orthogonalize(mut cores: Vec<Array3<f64>>) -> Vec<Array3<f64>> {
    for k in (1..cores.len()).rev() {
        let (rl, n, rr) = cores[k].dim();
        // M = G_k as (rl, n*rr); QR of M^T = Q R, so M = R^T Q^T.
        let mt: Vec<f64> = {
            let m = cores[k]
                .to_shape((rl, n * rr))
                .expect("contiguous core")
                .to_owned();
            m.t().iter().copied().collect()
        };
        let (q, r, kk) = thin_qr(&mt, n * rr, rl);
        let q = Array2::from_shape_vec((n * rr, kk), q).expect("Q is (n*rr, k)");
        cores[k] = reshape_owned(q.reversed_axes(), (kk, n, rr));
        let rmat = Array2::from_shape_vec((kk, rl), r).expect("R is (k, rl)");
        let (pl, pn, pr) = cores[k - 1].dim();
        let prev = cores[k - 1]
            .to_shape((pl * pn, pr))
            .expect("contiguous core")
            .dot(&rmat.t());
        cores[k - 1] = reshape_owned(prev, (pl, pn, kk));
    }
    cores
}

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
