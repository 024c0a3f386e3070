//! How a decomposition is truncated, and what it reports back.

use crate::linalg::SvdMethod;
use crate::rank::{RankOptions, RankSpec};
use crate::scalar::times_pow2;

/// The truncation rule of [`crate::tt_svd`] and [`crate::tt_round`].
#[derive(Clone, Debug, PartialEq)]
pub enum Truncation {
    /// Keep ranks resolved from a spec (TensorLy's `tensor_train(tensor, rank)`), each realised
    /// rank capped at `min(r_k * n_k, prod(n_{k+1..}), requested_{k+1})`.
    Rank {
        /// The rank spec.
        spec: RankSpec,
        /// Options of the fraction-based resolution.
        options: RankOptions,
    },
    /// Keep, at each step, the smallest rank whose discarded singular values have squared sum at
    /// most `delta^2`, `delta = rel_error / sqrt(N - 1) * ||T||_F` (Oseledets' delta truncation),
    /// which guarantees `||T - TT||_F <= rel_error * ||T||_F`; optionally capped by `max_rank`
    /// (the guarantee then holds only where the cap did not bind: the report says what was
    /// achieved). Numerically-zero singular values are never kept.
    Tolerance {
        /// Relative Frobenius error allowed, finite and >= 0.
        rel_error: f64,
        /// Optional cap on every bond rank.
        max_rank: Option<usize>,
    },
}

impl Truncation {
    /// Truncation by a rank spec with the default resolution options.
    pub fn rank(spec: RankSpec) -> Self {
        Truncation::Rank {
            spec,
            options: RankOptions::default(),
        }
    }

    /// Truncation by a relative error tolerance.
    pub fn tolerance(rel_error: f64) -> Self {
        Truncation::Tolerance {
            rel_error,
            max_rank: None,
        }
    }

    /// Truncation by a relative error tolerance, every rank capped at `max_rank`.
    pub fn tolerance_capped(rel_error: f64, max_rank: usize) -> Self {
        Truncation::Tolerance {
            rel_error,
            max_rank: Some(max_rank),
        }
    }
}

/// What a TT-SVD or TT-rounding did.
#[derive(Clone, Debug, PartialEq)]
pub struct TruncationReport {
    /// The resolved requested ranks (rank truncation only).
    pub requested_ranks: Option<Vec<usize>>,
    /// The ranks of the returned TT.
    pub ranks: Vec<usize>,
    /// Achieved `||T - TT||_F / ||T||_F`, from the discarded singular values (the projections are
    /// orthogonal, so the squared errors of the steps add up exactly).
    pub rel_error: f64,
    /// Per unfolding step, every singular value computed, non-increasing: all `min(m, n)` of
    /// them, except on a [`SvdMethod::Lobpcg`] step, which computes the kept ones only.
    pub singular_values: Vec<Vec<f64>>,
    /// Per step, the squared Frobenius norm discarded.
    pub discarded: Vec<f64>,
    /// Per step, the factorisation used.
    pub methods: Vec<SvdMethod>,
    /// `||T||_F`.
    pub norm: f64,
}

impl TruncationReport {
    /// An empty report for a decomposition of a tensor of norm `norm`.
    pub(crate) fn start(requested_ranks: Option<Vec<usize>>, norm: f64) -> Self {
        Self {
            requested_ranks,
            ranks: Vec::new(),
            rel_error: 0.0,
            singular_values: Vec::new(),
            discarded: Vec::new(),
            methods: Vec::new(),
            norm,
        }
    }

    /// Records one unfolding step.
    pub(crate) fn push_step(
        &mut self,
        singular_values: Vec<f64>,
        discarded: f64,
        method: SvdMethod,
    ) {
        self.singular_values.push(singular_values);
        self.discarded.push(discarded);
        self.methods.push(method);
    }

    /// Brings the absolute figures (singular values, discarded energy, norm) of a decomposition
    /// computed on data scaled by `2^shift` back to the data's magnitude (`rel_error` is
    /// scale-free and kept; the squared figures of tiny data may underflow to 0).
    pub(crate) fn unscale(&mut self, shift: i32) {
        if shift == 0 {
            return;
        }
        let back = |v: f64, times: i32| times_pow2(v, -shift * times);
        self.singular_values
            .iter_mut()
            .flatten()
            .for_each(|s| *s = back(*s, 1));
        self.discarded.iter_mut().for_each(|d| *d = back(*d, 2));
        self.norm = back(self.norm, 1);
    }

    /// Sets the final ranks and the relative error `sqrt(sum of discarded) / norm`.
    pub(crate) fn finish(&mut self, ranks: Vec<usize>) {
        let discarded: f64 = self.discarded.iter().sum();
        self.rel_error = if self.norm > 0.0 {
            discarded.max(0.0).sqrt() / self.norm
        } else {
            0.0
        };
        self.ranks = ranks;
    }
}
