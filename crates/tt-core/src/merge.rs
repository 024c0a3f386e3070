//! Contraction of two neighbouring TT cores over their shared bond.

use ndarray::{Array4, ArrayView3};

use crate::error::{Error, Result};
use crate::linalg::gemm;
use crate::scalar::Scalar;

/// `M[a, i, j, b] = sum_r L[a, i, r] R[r, j, b]` for neighbouring cores `L (p, n, r)` and
/// `R (r, m, q)`, returned as `(p, n, m, q)`: one GEMM `(p n, r) x (r, m q)` accumulated in f64
/// (faer, on several threads when large enough) and rounded once to `T`. Any memory layout of
/// the inputs; [`Error::BondMismatch`] when `L`'s right rank is not `R`'s left rank.
pub fn merge_cores<T: Scalar>(
    left: ArrayView3<'_, T>,
    right: ArrayView3<'_, T>,
) -> Result<Array4<T>> {
    let (p, n, r) = left.dim();
    let (r2, m, q) = right.dim();
    if r != r2 {
        return Err(Error::BondMismatch {
            core: 1,
            prev: 0,
            left: r2,
            right: r,
        });
    }
    // `iter` walks the logical (row-major) order whatever the layout.
    let a: Vec<f64> = left.iter().map(|v| v.as_f64()).collect();
    let b: Vec<f64> = right.iter().map(|v| v.as_f64()).collect();
    let c = gemm(&a, p * n, r, &b, m * q, false);
    let out: Vec<T> = c.into_iter().map(T::from_f64).collect();
    Ok(Array4::from_shape_vec((p, n, m, q), out).expect("(p n) x (m q) entries"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, ShapeBuilder};

    #[test]
    fn merges_like_the_sum_in_any_layout() {
        let l = Array3::from_shape_fn((2, 3, 4), |(a, i, r)| {
            (a * 12 + i * 4 + r) as f64 * 0.1 - 1.0
        });
        let r = Array3::from_shape_fn((4, 5, 2), |(r, j, b)| {
            ((r * 10 + j * 2 + b) % 7) as f64 - 3.0
        });
        let mut rf = Array3::<f64>::zeros((4, 5, 2).f());
        rf.assign(&r);
        for right in [r.view(), rf.view()] {
            let m = merge_cores(l.view(), right).unwrap();
            for ((a, i, j, b), v) in m.indexed_iter() {
                let want: f64 = (0..4).map(|k| l[[a, i, k]] * r[[k, j, b]]).sum();
                assert!((v - want).abs() < 1e-12);
            }
        }
        assert!(merge_cores(l.view(), l.view()).is_err());
    }
}
