//! The gradient of a linear functional of a TT with respect to its cores.
//!
//! For a dense tensor `G` of the TT's shape, `L(cores) = <G, T(cores)>` is linear in each core,
//! and `dL/dG_k[a, i, b] = sum_{p, q} Left_k[p, a] G[p, i, q] Right_k[b, q]`, where `Left_k` is
//! cores `0..k` contracted and unfolded to `(n_0..n_{k-1}, r_k)` and `Right_k` cores `k+1..N`
//! unfolded to `(r_{k+1}, n_{k+1}..)`. A layer uses it to turn the gradient of its dense kernel
//! into core gradients.
//!
//! Computed by one left-to-right sweep: `H_0 = G` unfolded `(n_0, rest)`,
//! `H_{k+1} = G_k^T H_k` (unfolded `(r_k n_k, r_{k+1})^T (r_k n_k, rest_{k+1})`), and
//! `dL/dG_k = H_k Right_k^T`, so the large tensor is contracted once per core instead of once
//! with each full left product. GEMMs in f64 through faer, parallel above a size threshold.

use ndarray::{Array3, ArrayViewD};

use crate::error::{Error, Result};
use crate::linalg::gemm;
use crate::scalar::Scalar;
use crate::tensor::TtTensor;

impl<T: Scalar> TtTensor<T> {
    /// `dL/dG_k` for every core of `L = <g, T>`, `g` a dense tensor of this TT's shape; computed in
    /// f64, returned in `T` with the cores' shapes. Errors on a shape mismatch.
    pub fn project_dense_gradient(&self, g: ArrayViewD<'_, T>) -> Result<Vec<Array3<T>>> {
        let shape = self.shape();
        if g.shape() != shape.as_slice() {
            return Err(Error::ShapeMismatch {
                left: shape,
                right: g.shape().to_vec(),
            });
        }
        let cores: Vec<(Vec<f64>, usize, usize, usize)> = self
            .cores()
            .iter()
            .map(|c| {
                let (rl, n, rr) = c.dim();
                (c.iter().map(|v| v.as_f64()).collect(), rl, n, rr)
            })
            .collect();
        let order = cores.len();
        // right[k]: Right_k as (r_{k+1}, prod n_{k+1..}) row-major.
        let mut right: Vec<Vec<f64>> = vec![Vec::new(); order];
        right[order - 1] = vec![1.0];
        let mut cols = 1;
        for k in (0..order - 1).rev() {
            let (ref c, rl, n, rr) = cores[k + 1];
            // (rl * n, rr) @ (rr, cols) -> (rl, n * cols)
            right[k] = gemm(c, rl * n, rr, &right[k + 1], cols, false);
            cols *= n;
        }
        let mut h: Vec<f64> = g.iter().map(|v| v.as_f64()).collect();
        let mut grads = Vec::with_capacity(order);
        for (k, (c, rl, n, rr)) in cores.iter().enumerate() {
            let rest = h.len() / (rl * n);
            // dL/dG_k = H_k (rl * n, rest) @ Right_k^T (rest, rr)
            let gk = gemm(&h, rl * n, rest, &right[k], *rr, true);
            grads.push(
                Array3::from_shape_vec((*rl, *n, *rr), gk.into_iter().map(T::from_f64).collect())
                    .expect("gradient has the core's shape"),
            );
            if k + 1 < order {
                // H_{k+1} = G_k^T (rr, rl * n) @ H_k (rl * n, rest)
                let ct: Vec<f64> = {
                    let mut t = vec![0.0; rl * n * rr];
                    for i in 0..rl * n {
                        for j in 0..*rr {
                            t[j * rl * n + i] = c[i * rr + j];
                        }
                    }
                    t
                };
                h = gemm(&ct, *rr, rl * n, &h, rest, false);
            }
        }
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_finite_differences_of_the_linear_functional() {
        let tt = TtTensor::<f64>::random(&[3, 4, 2, 3], &[1, 2, 3, 2, 1], 1.0, 5).unwrap();
        let g = TtTensor::<f64>::random(&[3, 4, 2, 3], &[1, 3, 3, 3, 1], 1.0, 6)
            .unwrap()
            .to_dense()
            .unwrap();
        let grads = tt.project_dense_gradient(g.view()).unwrap();
        let value = |t: &TtTensor<f64>| -> f64 {
            t.to_dense()
                .unwrap()
                .iter()
                .zip(g.iter())
                .map(|(a, b)| a * b)
                .sum()
        };
        let base = value(&tt);
        for (k, grad) in grads.iter().enumerate() {
            assert_eq!(grad.dim(), tt.cores()[k].dim());
            for idx in 0..grad.len() {
                let mut cores = tt.cores().to_vec();
                cores[k].as_slice_mut().unwrap()[idx] += 1.0;
                let moved = value(&TtTensor::new(cores).unwrap());
                // Linear in each core: the unit step is exact.
                let expect = moved - base;
                assert!(
                    (grad.as_slice().unwrap()[idx] - expect).abs() < 1e-9 * (1.0 + expect.abs())
                );
            }
        }
        let wrong = ndarray::ArrayD::<f64>::zeros(ndarray::IxDyn(&[3, 4, 2]));
        assert!(tt.project_dense_gradient(wrong.view()).is_err());
    }
}
