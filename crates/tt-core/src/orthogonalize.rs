//! Right-to-left orthogonalisation of TT cores (a QR sweep), shared by the TT norm and by
//! TT-rounding.

use ndarray::{Array2, Array3};

use crate::array::reshape_owned;
use crate::linalg::thin_qr;

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
