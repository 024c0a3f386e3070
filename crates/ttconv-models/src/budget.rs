//! The global budget: TT ranks for several kernels together so that their total parameter count
//! meets a target, with the smallest total error.
//!
//! The error model is TT-SVD's bound (Oseledets 2011, theorem 2.2): with ranks `r_k`,
//! `||W - TT||_F^2 <= sum_k sum_{i > r_k} sigma_{k,i}^2`, where `sigma_{k,i}` are the singular
//! values of the k-th unfolding of the (permuted) kernel. Trained networks normalise their
//! layers (batch norm, weight decay), so the layers' errors are compared relatively: the
//! objective is `sum_l bound_l / ||W_l||_F^2`, the sum of the layers' squared relative error
//! bounds.
//!
//! Allocation is greedy by marginal gain per parameter: start every bond at rank 1; repeatedly
//! raise the one bond rank whose next singular value removes the most relative squared error per
//! added parameter, among those that still fit the budget, until none fits. Raising `r_k` by one
//! adds `r_{k-1} n_{k-1} + n_k r_{k+1}` parameters. A bond never exceeds the number of singular
//! values of its unfolding, `r_{k-1} n_{k-1}` (what TT-SVD can realise), or the rank cap.

use crate::error::{Error, Result};
use crate::layer_bridge::tt_params;

/// One kernel's input to the allocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Spectrum {
    /// The TT shape `(n_0..n_{N-1})`, i.e. `(in, k_1..k_d, out)`.
    pub shape: Vec<usize>,
    /// For each bond `k = 1..N-1`, the singular values of the k-th unfolding, non-increasing.
    pub singular_values: Vec<Vec<f64>>,
    /// `||W||_F`.
    pub norm: f64,
}

impl Spectrum {
    /// The squared relative error bound at `ranks` (`N + 1` entries).
    pub fn error_bound(&self, ranks: &[usize]) -> f64 {
        let tail: f64 = self
            .singular_values
            .iter()
            .enumerate()
            .map(|(k, sv)| sv.iter().skip(ranks[k + 1]).map(|s| s * s).sum::<f64>())
            .sum();
        if self.norm > 0.0 {
            tail / (self.norm * self.norm)
        } else {
            0.0
        }
    }
}

/// Ranks `[1, r_1, .., r_{N-1}, 1]` per layer whose TT parameters sum to at most `budget`,
/// chosen greedily to minimise the sum of squared relative error bounds (module docs). An error
/// when even rank 1 everywhere does not fit or a spectrum does not match its shape.
pub fn allocate_ranks(
    layers: &[Spectrum],
    budget: usize,
    max_rank: Option<usize>,
) -> Result<Vec<Vec<usize>>> {
    for (l, s) in layers.iter().enumerate() {
        if s.shape.len() < 2 || s.singular_values.len() != s.shape.len() - 1 {
            return Err(Error::Policy(format!(
                "layer {l}: {} spectra for a TT of order {}",
                s.singular_values.len(),
                s.shape.len()
            )));
        }
    }
    let mut ranks: Vec<Vec<usize>> = layers.iter().map(|s| vec![1; s.shape.len() + 1]).collect();
    let mut total: usize = layers
        .iter()
        .zip(&ranks)
        .map(|(s, r)| tt_params(&s.shape, r))
        .sum();
    if total > budget {
        return Err(Error::Policy(format!(
            "the budget of {budget} parameters is below the {total} of rank 1 everywhere"
        )));
    }
    let cap = max_rank.unwrap_or(usize::MAX);
    // A layer never grows to its dense size: its TT form would then be dropped.
    let dense: Vec<usize> = layers.iter().map(|s| s.shape.iter().product()).collect();
    loop {
        // (gain per parameter, layer, bond, cost)
        let mut best: Option<(f64, usize, usize, usize)> = None;
        for (l, s) in layers.iter().enumerate() {
            let norm2 = (s.norm * s.norm).max(f64::MIN_POSITIVE);
            let r = &ranks[l];
            for k in 1..s.shape.len() {
                let next = r[k];
                let sv = &s.singular_values[k - 1];
                if next >= sv.len() || next >= cap || next + 1 > r[k - 1] * s.shape[k - 1] {
                    continue;
                }
                let gain = sv[next] * sv[next] / norm2;
                if gain <= 0.0 {
                    continue;
                }
                let cost = r[k - 1] * s.shape[k - 1] + s.shape[k] * r[k + 1];
                if total + cost > budget || tt_params(&s.shape, r) + cost >= dense[l] {
                    continue;
                }
                let score = gain / cost as f64;
                if best.is_none_or(|b| score > b.0) {
                    best = Some((score, l, k, cost));
                }
            }
        }
        let Some((_, l, k, cost)) = best else {
            break;
        };
        ranks[l][k] += 1;
        total += cost;
    }
    Ok(ranks)
}
