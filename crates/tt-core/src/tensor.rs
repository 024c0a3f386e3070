//! The TT format: a tensor stored as a chain of 3-way cores.

use ndarray::{Array2, Array3, ArrayD, ArrayView3, IxDyn, s};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::array::reshape_owned;
use crate::error::{Error, Result};
use crate::rank::check_rank_vector;
use crate::scalar::Scalar;

/// A tensor of shape `(n_0, .., n_{N-1})` in Tensor-Train form.
///
/// Core `G_k` has shape `(r_k, n_k, r_{k+1})` with `r_0 = r_N = 1`, and
/// `T[i_0, .., i_{N-1}] = G_0[:, i_0, :] G_1[:, i_1, :] .. G_{N-1}[:, i_{N-1}, :]`.
/// Construction validates the chain, so every `TtTensor` is consistent.
#[derive(Clone, Debug, PartialEq)]
pub struct TtTensor<T> {
    cores: Vec<Array3<T>>,
}

impl<T: Scalar> TtTensor<T> {
    /// Builds a TT from its cores, checking that there is at least one core, that neighbouring
    /// bonds agree, that the boundary ranks are 1 and that no rank or mode size is 0.
    pub fn new(cores: Vec<Array3<T>>) -> Result<Self> {
        if cores.is_empty() {
            return Err(Error::EmptyShape);
        }
        let last = cores.len() - 1;
        for (k, core) in cores.iter().enumerate() {
            let (rl, n, rr) = core.dim();
            if n == 0 {
                return Err(Error::ZeroDimension {
                    mode: k,
                    shape: cores.iter().map(|c| c.dim().1).collect(),
                });
            }
            if k == 0 && rl != 1 {
                return Err(Error::BoundaryRank { core: 0, rank: rl });
            }
            if k == last && rr != 1 {
                return Err(Error::BoundaryRank { core: k, rank: rr });
            }
            if k > 0 {
                let prev = cores[k - 1].dim().2;
                if prev != rl {
                    return Err(Error::BondMismatch {
                        core: k,
                        prev: k - 1,
                        left: rl,
                        right: prev,
                    });
                }
            }
            if rl == 0 || rr == 0 {
                return Err(Error::ZeroRank {
                    position: if rl == 0 { k } else { k + 1 },
                    ranks: Self::ranks_of(&cores),
                });
            }
        }
        // Cores are kept row-major whatever layout they came in (Fortran order, a transposed
        // view turned owned, ...): every algorithm and every consumer may then take flat slices.
        let cores = cores
            .into_iter()
            .map(|c| {
                if c.is_standard_layout() {
                    c
                } else {
                    c.as_standard_layout().into_owned()
                }
            })
            .collect();
        Ok(Self { cores })
    }

    /// Builds a TT from cores given as dynamic-dimensional arrays (each must be 3-D).
    pub fn from_dyn_cores(cores: Vec<ArrayD<T>>) -> Result<Self> {
        let cores = cores
            .into_iter()
            .enumerate()
            .map(|(k, c)| {
                let shape = c.shape().to_vec();
                c.into_dimensionality::<ndarray::Ix3>()
                    .map_err(|_| Error::CoreNotThreeD { core: k, shape })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(cores)
    }

    fn ranks_of(cores: &[Array3<T>]) -> Vec<usize> {
        let mut r: Vec<usize> = cores.iter().map(|c| c.dim().0).collect();
        r.push(cores.last().map_or(1, |c| c.dim().2));
        r
    }

    /// A TT with i.i.d. N(0, std^2) core entries, reproducible from `seed`.
    pub fn random(shape: &[usize], ranks: &[usize], std: f64, seed: u64) -> Result<Self> {
        if shape.is_empty() {
            return Err(Error::EmptyShape);
        }
        check_rank_vector(shape.len(), ranks)?;
        check_parameter_count(shape, ranks)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let cores = shape
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                Array3::from_shape_simple_fn((ranks[k], n, ranks[k + 1]), || {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    T::from_f64(std * z)
                })
            })
            .collect();
        Self::new(cores)
    }

    /// Number of modes `N`.
    pub fn order(&self) -> usize {
        self.cores.len()
    }

    /// The dense shape `(n_0, .., n_{N-1})`.
    pub fn shape(&self) -> Vec<usize> {
        self.cores.iter().map(|c| c.dim().1).collect()
    }

    /// The rank vector `(1, r_1, .., r_{N-1}, 1)`.
    pub fn ranks(&self) -> Vec<usize> {
        Self::ranks_of(&self.cores)
    }

    /// All cores, `G_k` of shape `(r_k, n_k, r_{k+1})`.
    pub fn cores(&self) -> &[Array3<T>] {
        &self.cores
    }

    /// Core `k`.
    pub fn core(&self, k: usize) -> ArrayView3<'_, T> {
        self.cores[k].view()
    }

    /// Takes the cores out.
    pub fn into_cores(self) -> Vec<Array3<T>> {
        self.cores
    }

    /// Number of stored parameters, `sum_k r_k n_k r_{k+1}`.
    pub fn num_params(&self) -> usize {
        self.cores.iter().map(|c| c.len()).sum()
    }

    /// Number of entries of the dense tensor, `prod_k n_k` (saturating).
    pub fn dense_size(&self) -> usize {
        self.cores
            .iter()
            .fold(1usize, |acc, c| acc.saturating_mul(c.dim().1))
    }

    /// Dense entries per stored parameter: `prod_k n_k / sum_k r_k n_k r_{k+1}`.
    pub fn compression_ratio(&self) -> f64 {
        self.dense_size() as f64 / self.num_params() as f64
    }

    /// Converts every core to another element type.
    pub fn cast<U: Scalar>(&self) -> TtTensor<U> {
        TtTensor {
            cores: self
                .cores
                .iter()
                .map(|c| c.mapv(|v| U::from_f64(v.as_f64())))
                .collect(),
        }
    }

    /// The dense tensor, by left-to-right GEMM contractions:
    /// `M_0 = G_0 (n_0, r_1)`, `M_k = reshape(M_{k-1} G_k, (n_0..n_k, r_{k+1}))`.
    pub fn to_dense(&self) -> Result<ArrayD<T>> {
        let shape = self.shape();
        if shape
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n))
            .is_none()
        {
            return Err(Error::TooLarge(shape));
        }
        let (_, n0, r1) = self.cores[0].dim();
        let mut acc: Array2<T> = self.cores[0]
            .to_shape((n0, r1))
            .expect("core 0 is (1, n0, r1)")
            .to_owned();
        for core in &self.cores[1..] {
            let (rl, n, rr) = core.dim();
            let mat = core.to_shape((rl, n * rr)).expect("contiguous reshape");
            let prod = acc.dot(&mat);
            let rows = prod.nrows() * n;
            acc = reshape_owned(prod, (rows, rr));
        }
        Ok(reshape_owned(acc, IxDyn(&shape)))
    }

    /// Inner product `<A, B> = sum_i A[i] B[i]` computed in TT form (never densified), in f64:
    /// `W_0 = [1]`, `W_{k+1} = sum_i G_k[:, i, :]^T W_k H_k[:, i, :]`.
    pub fn inner(&self, other: &TtTensor<T>) -> Result<f64> {
        if self.shape() != other.shape() {
            return Err(Error::ShapeMismatch {
                left: self.shape(),
                right: other.shape(),
            });
        }
        let mut w = Array2::<f64>::ones((1, 1));
        for (g, h) in self.cores.iter().zip(&other.cores) {
            let (ga, n, gc) = g.dim();
            let (hb, _, hd) = h.dim();
            let g64 = g.mapv(|v| v.as_f64());
            let h64 = h.mapv(|v| v.as_f64());
            // t[a, i, d] = sum_b w[a, b] h[b, i, d]
            let t = w.dot(&h64.to_shape((hb, n * hd)).expect("contiguous"));
            let t = reshape_owned(t, (ga * n, hd));
            // w'[c, d] = sum_{a, i} g[a, i, c] t[a, i, d]
            let gm = reshape_owned(g64, (ga * n, gc));
            w = gm.t().dot(&t);
        }
        Ok(w[[0, 0]])
    }

    /// Frobenius norm `sqrt(<T, T>)`, computed in TT form.
    ///
    /// Uses a right-to-left orthogonalisation so the result is accurate even where `<T, T>`
    /// would lose digits: after it, the norm is that of the first core.
    pub fn norm(&self) -> f64 {
        let tt64: TtTensor<f64> = self.cast();
        let cores = crate::orthogonalize::right_orthogonalize(tt64.into_cores());
        cores[0].iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    /// `alpha * T`, by scaling the first core.
    pub fn scale(&self, alpha: T) -> Self {
        let mut cores = self.cores.clone();
        cores[0].mapv_inplace(|v| v * alpha);
        Self { cores }
    }

    /// `A + B` in TT form: block-diagonal cores, ranks add (`r_k^A + r_k^B` inside).
    /// Use [`crate::tt_round`] afterwards to recompress.
    pub fn add(&self, other: &TtTensor<T>) -> Result<Self> {
        if self.shape() != other.shape() {
            return Err(Error::ShapeMismatch {
                left: self.shape(),
                right: other.shape(),
            });
        }
        let last = self.order() - 1;
        let cores = self
            .cores
            .iter()
            .zip(&other.cores)
            .enumerate()
            .map(|(k, (a, b))| {
                let (ra, n, rb) = a.dim();
                let (sa, _, sb) = b.dim();
                if last == 0 {
                    return a + b;
                }
                if k == 0 {
                    let mut c = Array3::zeros((1, n, rb + sb));
                    c.slice_mut(s![.., .., ..rb]).assign(a);
                    c.slice_mut(s![.., .., rb..]).assign(b);
                    c
                } else if k == last {
                    let mut c = Array3::zeros((ra + sa, n, 1));
                    c.slice_mut(s![..ra, .., ..]).assign(a);
                    c.slice_mut(s![ra.., .., ..]).assign(b);
                    c
                } else {
                    let mut c = Array3::zeros((ra + sa, n, rb + sb));
                    c.slice_mut(s![..ra, .., ..rb]).assign(a);
                    c.slice_mut(s![ra.., .., rb..]).assign(b);
                    c
                }
            })
            .collect();
        Self::new(cores)
    }

    /// Pads every inner bond with `extra` zero slices: the same tensor at ranks `r_k + extra`
    /// (boundary ranks stay 1). Useful to test rounding.
    pub fn pad_ranks(&self, extra: usize) -> Self {
        let last = self.order() - 1;
        let cores = self
            .cores
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let (rl, n, rr) = c.dim();
                let nl = if k == 0 { rl } else { rl + extra };
                let nr = if k == last { rr } else { rr + extra };
                let mut p = Array3::zeros((nl, n, nr));
                p.slice_mut(s![..rl, .., ..rr]).assign(c);
                p
            })
            .collect();
        Self { cores }
    }
}

/// Most parameters a TT built by this crate may hold: `2^31` (8 GiB of f32), so that a rank
/// request that cannot be allocated is an error instead of an aborted process.
pub const MAX_TT_PARAMETERS: usize = 1 << 31;

/// Checks that a TT of `shape` and `ranks` (`shape.len() + 1` entries) would hold at most
/// [`MAX_TT_PARAMETERS`] parameters, `sum_k r_k n_k r_{k+1}` counted without overflow:
/// [`Error::TooManyParameters`] otherwise.
pub fn check_parameter_count(shape: &[usize], ranks: &[usize]) -> Result<()> {
    let params = shape.iter().enumerate().fold(0u128, |acc, (k, &n)| {
        let core = (ranks[k] as u128)
            .saturating_mul(n as u128)
            .saturating_mul(ranks[k + 1] as u128);
        acc.saturating_add(core)
    });
    if params > MAX_TT_PARAMETERS as u128 {
        return Err(Error::TooManyParameters {
            shape: shape.to_vec(),
            ranks: ranks.to_vec(),
            params,
            limit: MAX_TT_PARAMETERS,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn rejects_inconsistent_cores() {
        let a = Array3::<f64>::zeros((1, 2, 3));
        let b = Array3::<f64>::zeros((2, 2, 1));
        assert!(matches!(
            TtTensor::new(vec![a.clone(), b]),
            Err(Error::BondMismatch { core: 1, .. })
        ));
        let c = Array3::<f64>::zeros((2, 2, 1));
        assert!(matches!(
            TtTensor::new(vec![c]),
            Err(Error::BoundaryRank { core: 0, rank: 2 })
        ));
        let d = Array3::<f64>::zeros((3, 2, 2));
        assert!(matches!(
            TtTensor::new(vec![a, d]),
            Err(Error::BoundaryRank { core: 1, rank: 2 })
        ));
        assert!(TtTensor::<f64>::new(vec![]).is_err());
    }

    #[test]
    fn dense_of_rank_one_is_outer_product() {
        let u = [1.0, 2.0];
        let v = [3.0, -1.0, 0.5];
        let g0 = Array3::from_shape_vec((1, 2, 1), u.to_vec()).unwrap();
        let g1 = Array3::from_shape_vec((1, 3, 1), v.to_vec()).unwrap();
        let tt = TtTensor::new(vec![g0, g1]).unwrap();
        let d = tt.to_dense().unwrap();
        for i in 0..2 {
            for j in 0..3 {
                assert_eq!(d[[i, j]], u[i] * v[j]);
            }
        }
        assert_eq!(tt.num_params(), 5);
        assert!((tt.compression_ratio() - 6.0 / 5.0).abs() < 1e-15);
    }

    #[test]
    fn add_scale_and_pad_agree_with_dense() {
        let a = TtTensor::<f64>::random(&[3, 4, 2], &[1, 2, 3, 1], 1.0, 1).unwrap();
        let b = TtTensor::<f64>::random(&[3, 4, 2], &[1, 1, 2, 1], 1.0, 2).unwrap();
        let sum = a.add(&b.scale(-2.0)).unwrap().to_dense().unwrap();
        let expect = a.to_dense().unwrap() - b.to_dense().unwrap() * 2.0;
        assert!((sum - &expect).iter().all(|v| v.abs() < 1e-12));
        let padded = a.pad_ranks(2);
        assert_eq!(padded.ranks(), vec![1, 4, 5, 1]);
        assert!(
            (padded.to_dense().unwrap() - a.to_dense().unwrap())
                .iter()
                .all(|v| v.abs() < 1e-12)
        );
    }
}
