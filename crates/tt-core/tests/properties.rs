//! Property tests of tt-core (proptest): exactness on low-rank input, the delta-truncation
//! guarantee and minimality, rank caps, rounding of padded TTs, TT-form norm / inner product, and
//! errors (never panics) on bad input. Case counts keep the whole file well under 30 s.

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tt_core::{
    Error, RankOptions, RankSpec, Rounding, SvdMethod, Truncation, TruncationReport, TtTensor,
    cap_ranks, tt_round, tt_svd,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// `n` cases, or `$PROPTEST_CASES` when set (for longer soak runs).
fn config(n: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn frob(a: &ArrayD<f64>) -> f64 {
    a.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn frob_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

fn prod(s: &[usize]) -> usize {
    s.iter().product()
}

/// Ranks no TT of this shape can exceed: `r_{k+1} <= r_k n_k` (left) and `r_k <= n_k r_{k+1}`
/// (right), applied to `ranks` in both directions. A random Gaussian TT with feasible ranks has
/// exactly those ranks (with probability 1), so they are its minimal ranks.
fn feasible(shape: &[usize], ranks: &[usize]) -> Vec<usize> {
    let mut r = ranks.to_vec();
    for k in 0..shape.len() {
        r[k + 1] = r[k + 1].min(r[k] * shape[k]);
    }
    for k in (0..shape.len()).rev() {
        r[k] = r[k].min(shape[k] * r[k + 1]);
    }
    r
}

/// `m x n` of the unfolding at TT-SVD step `k` (producing bond `k + 1`), given the kept ranks.
fn unfolding(shape: &[usize], ranks: &[usize], k: usize) -> (usize, usize) {
    (ranks[k] * shape[k], prod(&shape[k + 1..]))
}

/// `sum_{i >= r} s_i^2`.
fn tail(s: &[f64], r: usize) -> f64 {
    s[r.min(s.len())..].iter().map(|v| v * v).sum()
}

/// A shape of 2..=5 modes of sizes 1..=6, and inner ranks 1..=4 (rank vector with 1 at both ends).
fn shape_and_ranks() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(1usize..=6, 2..=5).prop_flat_map(|shape| {
        let inner = prop::collection::vec(1usize..=4, shape.len() - 1);
        (Just(shape), inner).prop_map(|(shape, inner)| {
            let mut ranks = vec![1];
            ranks.extend(inner);
            ranks.push(1);
            (shape, ranks)
        })
    })
}

/// A dense tensor with a decaying spectrum: a random TT of the given ranks plus `noise` times
/// i.i.d. N(0, 1) entries scaled to the TT's RMS, so tolerance truncation has real choices.
fn noisy_low_rank(shape: &[usize], ranks: &[usize], noise: f64, seed: u64) -> ArrayD<f64> {
    let tt = TtTensor::<f64>::random(shape, ranks, 1.0, seed).unwrap();
    let mut dense = tt.to_dense().unwrap();
    let rms = frob(&dense) / (dense.len() as f64).sqrt();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    for v in dense.iter_mut() {
        let z: f64 = rng.sample(rand_distr::StandardNormal);
        *v += noise * rms * z;
    }
    dense
}

/// Checks the delta rule at every step of a tolerance truncation: the discarded tail is within
/// `delta^2` (unless only numerically-zero values were discarded beyond it, which the rule never
/// keeps) and one rank less would not have been (unless `r == 1` or the rank hit `max_rank`).
fn assert_delta_rule(
    shape: &[usize],
    report: &TruncationReport,
    rel_error: f64,
    max_rank: Option<usize>,
) -> Result<(), TestCaseError> {
    let order = shape.len();
    let delta = rel_error / ((order - 1) as f64).sqrt() * report.norm;
    let delta2 = delta * delta;
    // Relative slack for the round-off of summing squared singular values in a different order
    // (and, on the Gram route, of squaring sqrt(eigenvalue)).
    let slack = 1e-9 * delta2 + 1e-28 * report.norm * report.norm;
    for k in 0..order - 1 {
        let s = &report.singular_values[k];
        let r = report.ranks[k + 1];
        let (m, n) = unfolding(shape, &report.ranks, k);
        prop_assert!(r <= m.min(n), "step {k}: rank {r} > min({m}, {n})");
        if let Some(cap) = max_rank {
            prop_assert!(r <= cap, "step {k}: rank {r} > max_rank {cap}");
        }
        let zero_floor = m.max(n) as f64 * f64::EPSILON * s[0];
        let only_zeros_beyond = s.get(r).is_none_or(|&v| v <= zero_floor);
        prop_assert!(
            tail(s, r) <= delta2 + slack || only_zeros_beyond || max_rank == Some(r),
            "step {k}: kept {r}, tail {:e} > delta^2 {delta2:e} (s = {s:?})",
            tail(s, r)
        );
        let capped = max_rank == Some(r);
        prop_assert!(
            r == 1 || capped || tail(s, r - 1) > delta2 - slack,
            "step {k}: kept {r}, but {} would do: tail {:e} <= delta^2 {delta2:e} (s = {s:?})",
            r - 1,
            tail(s, r - 1)
        );
    }
    Ok(())
}

/// Relative accuracy of the reported error. From thin SVDs it is the sum of the discarded squared
/// singular values; on the Gram route it is the norm of the explicit residual `A - U_r U_r^T A`
/// (the route is taken only when that residual is far above round-off). Both are at round-off
/// level relative to the error itself, amplified by the condition of the subtraction: 1e-9.
fn reported_error_rtol(_report: &TruncationReport) -> f64 {
    1e-9
}

/// The dense tensor of the TT with cores `|G_k|`: an entrywise bound on the terms summed.
fn abs_dense(tt: &TtTensor<f64>) -> ArrayD<f64> {
    let cores = tt.cores().iter().map(|c| c.mapv(f64::abs)).collect();
    TtTensor::new(cores).unwrap().to_dense().unwrap()
}

fn rel_err_of(dense: &ArrayD<f64>, tt: &TtTensor<f64>) -> f64 {
    frob_diff(dense, &tt.to_dense().unwrap()) / frob(dense)
}

// ---------------------------------------------------------------------------------------------
// Exactness, tolerance, caps

proptest! {
    #![proptest_config(config(256))]

    /// A random TT of ranks r, densified and decomposed with requested ranks >= r, comes back
    /// to 1e-10 relative, at TensorLy's capped ranks.
    #[test]
    fn exact_recovery_with_ranks_at_least_r(
        (shape, ranks) in shape_and_ranks(),
        extra in prop::collection::vec(0usize..=2, 4),
        uniform in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let tt = TtTensor::<f64>::random(&shape, &ranks, 1.0, seed).unwrap();
        let dense = tt.to_dense().unwrap();
        let order = shape.len();
        let spec = if uniform {
            RankSpec::Uniform(ranks.iter().max().unwrap() + extra[0])
        } else {
            let mut r = ranks.clone();
            for k in 1..order {
                r[k] += extra[k - 1];
            }
            RankSpec::Explicit(r)
        };
        let requested = spec.resolve(&shape).unwrap();
        let (back, report) = tt_svd(dense.view(), &Truncation::rank(spec)).unwrap();
        prop_assert_eq!(back.ranks(), cap_ranks(&shape, &requested));
        prop_assert_eq!(&report.ranks, &back.ranks());
        let err = rel_err_of(&dense, &back);
        prop_assert!(err <= 1e-10, "relative error {err:e}");
        prop_assert!(report.rel_error <= 1e-10, "reported {:e}", report.rel_error);
    }

    /// Tolerance truncation meets `||T - TT|| <= eps ||T||` (checked densely), keeps at each step
    /// the smallest rank the delta rule allows, and reports the error it achieved.
    #[test]
    fn tolerance_truncation_meets_bound_minimally(
        (shape, ranks) in shape_and_ranks(),
        eps in prop_oneof![Just(0.0), 1e-8f64..1e-3, 1e-3f64..0.7],
        noise in prop_oneof![Just(0.0), 1e-6f64..1e-2, 1e-2f64..1.0],
        max_rank in prop::option::weighted(0.3, 1usize..=4),
        seed in any::<u64>(),
    ) {
        let dense = noisy_low_rank(&shape, &ranks, noise, seed);
        let truncation = match max_rank {
            None => Truncation::tolerance(eps),
            Some(cap) => Truncation::tolerance_capped(eps, cap),
        };
        let (tt, report) = tt_svd(dense.view(), &truncation).unwrap();
        prop_assert_eq!(&report.ranks, &tt.ranks());
        let measured = rel_err_of(&dense, &tt);
        // Round-off of the dense reconstruction: a few ulps of ||T||.
        let roundoff = 1e-12;
        if max_rank.is_none() {
            prop_assert!(measured <= eps + roundoff, "measured {measured:e} > eps {eps:e}");
        }
        prop_assert!(
            (measured - report.rel_error).abs() <= 1e-9 * report.rel_error + roundoff,
            "measured {measured:e}, reported {:e}", report.rel_error
        );
        assert_delta_rule(&shape, &report, eps, max_rank)?;
    }

    /// Ranks never exceed `min(r_k n_k, prod n_{k+1..}, requested)`; by rank they equal it.
    #[test]
    fn ranks_never_exceed_caps(
        shape in prop::collection::vec(1usize..=6, 1..=5),
        spec_pick in 0usize..4,
        r in 1usize..=40,
        fraction in 0.01f64..3.0,
        eps in 0.0f64..0.5,
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let dense = ArrayD::from_shape_simple_fn(IxDyn(&shape), || rng.random::<f64>() - 0.5);
        let order = shape.len();
        let explicit: Vec<usize> = (0..=order)
            .map(|k| if k == 0 || k == order { 1 } else { 1 + (r * (k + 3)) % 9 })
            .collect();
        let truncation = match spec_pick {
            0 => Truncation::rank(RankSpec::Uniform(r)),
            1 => Truncation::rank(RankSpec::Fraction(fraction)),
            2 => Truncation::rank(RankSpec::Explicit(explicit)),
            _ => Truncation::tolerance_capped(eps, r),
        };
        let (tt, report) = tt_svd(dense.view(), &truncation).unwrap();
        let got = tt.ranks();
        let requested = report.requested_ranks.clone().unwrap_or_else(|| {
            let mut v = vec![r; order + 1];
            v[0] = 1;
            v[order] = 1;
            v
        });
        let caps = cap_ranks(&shape, &requested);
        prop_assert_eq!(got[0], 1);
        prop_assert_eq!(got[order], 1);
        for k in 0..order - 1 {
            prop_assert!(got[k + 1] <= got[k] * shape[k]);
            prop_assert!(got[k + 1] <= prod(&shape[k + 1..]));
            prop_assert!(got[k + 1] <= requested[k + 1]);
            prop_assert!(got[k + 1] >= 1);
        }
        if report.requested_ranks.is_some() {
            // Random dense data is full rank: the rank form realises the caps exactly.
            prop_assert_eq!(got, caps);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rounding, norm, inner product

proptest! {
    #![proptest_config(config(256))]

    /// `tt_round` of a zero-padded TT recovers the original (feasible, hence minimal) ranks and
    /// the tensor, by tolerance; by the original ranks it recovers the tensor too.
    #[test]
    fn rounding_a_padded_tt_recovers_it(
        (shape, ranks) in shape_and_ranks(),
        extra in 1usize..=3,
        seed in any::<u64>(),
    ) {
        let ranks = feasible(&shape, &ranks);
        let tt = TtTensor::<f64>::random(&shape, &ranks, 1.0, seed).unwrap();
        let dense = tt.to_dense().unwrap();
        let padded = tt.pad_ranks(extra);
        prop_assert!(padded.ranks().iter().zip(&ranks).all(|(p, r)| p >= r));
        let (back, report) = tt_round(&padded, &Truncation::tolerance(1e-12)).unwrap();
        prop_assert_eq!(back.ranks(), ranks.clone());
        prop_assert_eq!(&report.ranks, &ranks);
        prop_assert!(rel_err_of(&dense, &back) <= 1e-10);
        let (by_rank, _) = tt_round(&padded, &Truncation::rank(RankSpec::Explicit(ranks.clone()))).unwrap();
        prop_assert_eq!(by_rank.ranks(), ranks);
        prop_assert!(rel_err_of(&dense, &by_rank) <= 1e-10);
    }

    /// Rounding by tolerance keeps the guarantee without densifying, and the delta rule.
    #[test]
    fn rounding_meets_tolerance(
        (shape, ranks) in shape_and_ranks(),
        eps in 0.0f64..0.6,
        seed in any::<u64>(),
    ) {
        // A sum of two TTs: ranks add, so there is something to compress.
        let a = TtTensor::<f64>::random(&shape, &ranks, 1.0, seed).unwrap();
        let b = TtTensor::<f64>::random(&shape, &ranks, 0.3, seed.wrapping_add(1)).unwrap();
        let sum = a.add(&b).unwrap();
        let dense = sum.to_dense().unwrap();
        let (rounded, report) = tt_round(&sum, &Truncation::tolerance(eps)).unwrap();
        let measured = rel_err_of(&dense, &rounded);
        prop_assert!(measured <= eps + 1e-12, "measured {measured:e} > eps {eps:e}");
        prop_assert!((measured - report.rel_error).abs() <= 1e-9 * report.rel_error + 1e-12);
        // The rule is checked on the ranks actually produced (`report.ranks`), the unfolding of
        // step k being (r_k n_k) x r_{k+1}^{orth}; only the kept-rank logic is checked here.
        let order = shape.len();
        let delta2 = (eps / ((order - 1) as f64).sqrt() * report.norm).powi(2);
        let slack = 1e-9 * delta2 + 1e-28 * report.norm * report.norm;
        for k in 0..order - 1 {
            let s = &report.singular_values[k];
            let r = report.ranks[k + 1];
            let zero_floor = 1e-13 * s[0];
            prop_assert!(tail(s, r) <= delta2 + slack || s.get(r).is_none_or(|&v| v <= zero_floor));
            prop_assert!(r == 1 || tail(s, r - 1) > delta2 - slack);
        }
    }

    /// Norm and inner product in TT form equal the dense ones. Both sides are sums of products of
    /// core entries, so their round-off is bounded relative to the same sums of *absolute*
    /// products (the TT with `|G_k|` cores), not to the result, which can cancel (e.g. a 1x1 TT
    /// of rank 4 is a sum of 4 products).
    #[test]
    fn norm_and_inner_match_dense(
        (shape, ranks) in shape_and_ranks(),
        other_ranks in prop::collection::vec(1usize..=4, 4),
        scale in -3.0f64..3.0,
        seed in any::<u64>(),
    ) {
        let order = shape.len();
        let mut rb = vec![1];
        rb.extend(&other_ranks[..order - 1]);
        rb.push(1);
        let a = TtTensor::<f64>::random(&shape, &ranks, 1.0, seed).unwrap();
        let b = TtTensor::<f64>::random(&shape, &rb, 1.0, seed.wrapping_mul(3).wrapping_add(7)).unwrap();
        let (da, db) = (a.to_dense().unwrap(), b.to_dense().unwrap());
        let na = frob(&da);
        let (abs_a, abs_b) = (abs_dense(&a), abs_dense(&b));
        let (ma, mb) = (frob(&abs_a), frob(&abs_b));
        let tol = 1e-12;
        prop_assert!((a.norm() - na).abs() <= tol * ma, "norm {} vs {na}", a.norm());
        let dot: f64 = da.iter().zip(db.iter()).map(|(x, y)| x * y).sum();
        let abs_dot: f64 = abs_a.iter().zip(abs_b.iter()).map(|(x, y)| x * y).sum();
        let inner = a.inner(&b).unwrap();
        prop_assert!((inner - dot).abs() <= tol * abs_dot, "inner {inner} vs {dot}");
        prop_assert!((a.inner(&a).unwrap() - na * na).abs() <= tol * ma * ma);
        let scaled = a.scale(scale);
        prop_assert!((scaled.norm() - scale.abs() * na).abs() <= tol * ma * (1.0 + scale.abs()));
        let sum = a.add(&b).unwrap();
        let ds = sum.to_dense().unwrap();
        prop_assert!(frob_diff(&ds, &(&da + &db)) <= tol * (ma + mb));
    }
}

// ---------------------------------------------------------------------------------------------
// f32

proptest! {
    #![proptest_config(config(192))]

    /// f32 input works, with tolerances set by f32's unit roundoff u = 2^-24 ~ 6e-8:
    /// - the data is a random TT (f32 cores) densified in f64 then rounded to f32, so it is within
    ///   `u ||T||` of a tensor of TT ranks r, and TT-SVD with ranks >= r (quasi-optimal within
    ///   `sqrt(N-1)`) reports an error <= 2 u: we require 1e-6;
    /// - tt-core computes the SVDs in f64 and rounds only the returned cores to f32 (u relative
    ///   per entry); the cores are orthonormal except the last, so this adds about
    ///   `N * sqrt(r n) * u <= 5 * 5 * 6e-8 ~ 1.5e-6`: we require 1e-5 (observed ~1e-7), and
    ///   2e-5 when the TT is also densified in f32.
    #[test]
    fn f32_input_works(
        (shape, ranks) in shape_and_ranks(),
        eps in 1e-3f64..0.5,
        seed in any::<u64>(),
    ) {
        let tt32: TtTensor<f32> = TtTensor::<f64>::random(&shape, &ranks, 1.0, seed).unwrap().cast();
        let dense64 = tt32.cast::<f64>().to_dense().unwrap();
        let dense32: ArrayD<f32> = dense64.mapv(|v| v as f32);
        let exact64 = dense32.mapv(f64::from);
        let norm = frob(&exact64);
        let big = *ranks.iter().max().unwrap() + 1;
        let (back, report) = tt_svd(dense32.view(), &Truncation::rank(RankSpec::Uniform(big))).unwrap();
        let err = frob_diff(&exact64, &back.cast::<f64>().to_dense().unwrap()) / norm;
        prop_assert!(err <= 1e-5, "f32 recovery error {err:e}");
        let err32 = frob_diff(&exact64, &back.to_dense().unwrap().mapv(f64::from)) / norm;
        prop_assert!(err32 <= 2e-5, "f32 densified error {err32:e}");
        prop_assert!(report.rel_error <= 1e-6, "reported {:e}", report.rel_error);

        let (tol, rep) = tt_svd(dense32.view(), &Truncation::tolerance(eps)).unwrap();
        let measured = frob_diff(&exact64, &tol.cast::<f64>().to_dense().unwrap()) / norm;
        prop_assert!(measured <= eps + 1e-5, "measured {measured:e} > eps {eps:e}");
        assert_delta_rule(&shape, &rep, eps, None)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The Gram route (unfoldings with min(m, n) >= 96)

proptest! {
    #![proptest_config(config(48))]

    /// Larger unfoldings take tt-core's Gram eigen-decomposition route where it is resolved:
    /// the same properties hold (exact recovery at the true ranks, delta rule, guarantee).
    #[test]
    fn large_unfoldings(
        n0 in 96usize..=110,
        n1 in 2usize..=4,
        n2 in 55usize..=70,
        r1 in 1usize..=6,
        r2 in 1usize..=6,
        eps in prop_oneof![Just(0.0), 1e-6f64..0.5],
        noise in prop_oneof![Just(0.0), 1e-4f64..1e-3, 1e-3f64..0.3],
        seed in any::<u64>(),
    ) {
        let shape = [n0, n1, n2];
        let ranks = feasible(&shape, &[1, r1, r2, 1]);
        let tt = TtTensor::<f64>::random(&shape, &ranks, 1.0, seed).unwrap();
        let dense = tt.to_dense().unwrap();
        let (back, report) = tt_svd(dense.view(), &Truncation::rank(RankSpec::Explicit(ranks.clone()))).unwrap();
        prop_assert_eq!(back.ranks(), ranks.clone());
        prop_assert!(rel_err_of(&dense, &back) <= 1e-10);
        prop_assert!(report.rel_error <= 1e-10);

        let noisy = noisy_low_rank(&shape, &ranks, noise, seed);
        // By rank: with noise the discarded energy is resolved, so the first unfolding
        // (n0 x n1 n2, wide, min >= 96) takes the Gram route whenever the kept spectrum is
        // clearly resolved too; either way the error is the discarded energy.
        let (by_rank, rep) = tt_svd(noisy.view(), &Truncation::rank(RankSpec::Explicit(ranks.clone()))).unwrap();
        let measured = rel_err_of(&noisy, &by_rank);
        prop_assert!(
            (measured - rep.rel_error).abs() <= reported_error_rtol(&rep) * rep.rel_error + 1e-12,
            "measured {measured:e}, reported {:e} ({:?})", rep.rel_error, rep.methods
        );
        let s = &rep.singular_values[0];
        if noise >= 1e-3 && s[ranks[1] - 1] > 1e-3 * s[0] {
            prop_assert_eq!(rep.methods[0], SvdMethod::Gram);
        }

        let (tol, rep) = tt_svd(noisy.view(), &Truncation::tolerance(eps)).unwrap();
        let measured = rel_err_of(&noisy, &tol);
        prop_assert!(measured <= eps + 1e-12, "measured {measured:e} > eps {eps:e}");
        prop_assert!(
            (measured - rep.rel_error).abs() <= reported_error_rtol(&rep) * rep.rel_error + 1e-12,
            "measured {measured:e}, reported {:e} ({:?})", rep.rel_error, rep.methods
        );
        assert_delta_rule(&shape, &rep, eps, None)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input: errors, never panics

fn bad_tolerance() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        -1e3f64..-1e-300,
    ]
}

fn non_finite() -> impl Strategy<Value = f64> {
    prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]
}

fn truncations() -> Vec<Truncation> {
    vec![
        Truncation::rank(RankSpec::Same),
        Truncation::rank(RankSpec::Fraction(0.5)),
        Truncation::rank(RankSpec::Uniform(2)),
        Truncation::tolerance(0.1),
        Truncation::tolerance_capped(0.1, 3),
    ]
}

proptest! {
    #![proptest_config(config(96))]

    /// A zero dimension anywhere: every entry point returns `ZeroDimension`.
    #[test]
    fn zero_dimension_is_an_error(
        mut shape in prop::collection::vec(1usize..=4, 1..=5),
        at in any::<prop::sample::Index>(),
    ) {
        let mode = at.index(shape.len());
        shape[mode] = 0;
        let dense = ArrayD::<f64>::zeros(IxDyn(&shape));
        for t in truncations() {
            let is_zero_dim = matches!(tt_svd(dense.view(), &t), Err(Error::ZeroDimension { mode: m, .. }) if m == mode);
            prop_assert!(is_zero_dim);
        }
        prop_assert!(RankSpec::Same.resolve(&shape).is_err());
        prop_assert!(RankSpec::Uniform(2).resolve(&shape).is_err());
        let ranks = vec![1; shape.len() + 1];
        prop_assert!(TtTensor::<f64>::random(&shape, &ranks, 1.0, 0).is_err());
    }

    /// A rank of 0 in any form is rejected.
    #[test]
    fn zero_rank_is_an_error(
        (shape, ranks) in shape_and_ranks(),
        at in any::<prop::sample::Index>(),
    ) {
        let dense = ArrayD::<f64>::ones(IxDyn(&shape));
        let mut zero = ranks.clone();
        zero[1 + at.index(shape.len() - 1)] = 0;
        prop_assert!(tt_svd(dense.view(), &Truncation::rank(RankSpec::Uniform(0))).is_err());
        prop_assert!(tt_svd(dense.view(), &Truncation::rank(RankSpec::Explicit(zero.clone()))).is_err());
        prop_assert!(tt_svd(dense.view(), &Truncation::tolerance_capped(0.1, 0)).is_err());
        prop_assert!(TtTensor::<f64>::random(&shape, &zero, 1.0, 0).is_err());
        let tt = TtTensor::<f64>::random(&shape, &ranks, 1.0, 0).unwrap();
        prop_assert!(tt_round(&tt, &Truncation::rank(RankSpec::Uniform(0))).is_err());
        prop_assert!(tt_round(&tt, &Truncation::tolerance_capped(0.1, 0)).is_err());
        // Cores with a zero bond.
        let mut cores = tt.into_cores();
        let k = at.index(cores.len() - 1);
        let (rl, n, _) = cores[k].dim();
        cores[k] = ndarray::Array3::zeros((rl, n, 0));
        let (_, n1, rr1) = cores[k + 1].dim();
        cores[k + 1] = ndarray::Array3::zeros((0, n1, rr1));
        prop_assert!(TtTensor::new(cores).is_err());
    }

    /// A negative or non-finite tolerance is rejected, by `tt_svd` and `tt_round`.
    #[test]
    fn bad_tolerance_is_an_error(
        (shape, ranks) in shape_and_ranks(),
        eps in bad_tolerance(),
    ) {
        let tt = TtTensor::<f64>::random(&shape, &ranks, 1.0, 1).unwrap();
        let dense = tt.to_dense().unwrap();
        let is_invalid = |r: tt_core::Result<_>| matches!(r, Err(Error::InvalidTolerance(_)));
        prop_assert!(is_invalid(tt_svd(dense.view(), &Truncation::tolerance(eps)).map(|_| ())));
        prop_assert!(is_invalid(tt_svd(dense.view(), &Truncation::tolerance_capped(eps, 2)).map(|_| ())));
        prop_assert!(is_invalid(tt_round(&tt, &Truncation::tolerance(eps)).map(|_| ())));
        let dense32 = dense.mapv(|v| v as f32);
        prop_assert!(is_invalid(tt_svd(dense32.view(), &Truncation::tolerance(eps)).map(|_| ())));
    }

    /// NaN or infinity in the tensor (f64 or f32) is rejected with its position.
    #[test]
    fn non_finite_tensor_is_an_error(
        shape in prop::collection::vec(1usize..=5, 1..=4),
        at in any::<prop::sample::Index>(),
        bad in non_finite(),
    ) {
        let mut dense = ArrayD::<f64>::from_elem(IxDyn(&shape), 0.5);
        let index = at.index(dense.len());
        dense.as_slice_mut().unwrap()[index] = bad;
        let dense32 = dense.mapv(|v| v as f32);
        for t in truncations() {
            let r64 = matches!(tt_svd(dense.view(), &t), Err(Error::NonFinite { index: i, .. }) if i == index);
            let r32 = matches!(tt_svd(dense32.view(), &t), Err(Error::NonFinite { index: i, .. }) if i == index);
            prop_assert!(r64 && r32);
        }
    }

    /// NaN or infinity in a TT core makes `tt_round` fail (today with `NoConvergence` from the
    /// SVD; any typed error is accepted), never panic or return a TT.
    #[test]
    fn non_finite_core_is_an_error(
        (shape, ranks) in shape_and_ranks(),
        core_at in any::<prop::sample::Index>(),
        entry_at in any::<prop::sample::Index>(),
        bad in non_finite(),
    ) {
        let tt = TtTensor::<f64>::random(&shape, &ranks, 1.0, 5).unwrap();
        let mut cores = tt.into_cores();
        let k = core_at.index(cores.len());
        let i = entry_at.index(cores[k].len());
        cores[k].as_slice_mut().unwrap()[i] = bad;
        let tt = TtTensor::new(cores).unwrap();
        prop_assert!(tt_round(&tt, &Truncation::tolerance(0.1)).is_err());
        prop_assert!(tt_round(&tt, &Truncation::rank(RankSpec::Uniform(2))).is_err());
        prop_assert!(tt_round(&tt.cast::<f32>(), &Truncation::tolerance(0.0)).is_err());
    }

    /// Invalid rank specs: bad fractions, wrong lengths, non-1 boundaries.
    #[test]
    fn bad_rank_specs_are_errors(
        (shape, ranks) in shape_and_ranks(),
        fraction in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(0.0), -5.0f64..0.0],
        boundary in 2usize..=5,
        constant_rank in any::<bool>(),
        rounding in prop_oneof![Just(Rounding::Round), Just(Rounding::Floor), Just(Rounding::Ceil)],
    ) {
        let options = RankOptions { constant_rank, rounding };
        prop_assert!(matches!(
            RankSpec::Fraction(fraction).resolve_with(&shape, options),
            Err(Error::InvalidFraction(_))
        ));
        let mut short = ranks.clone();
        short.pop();
        prop_assert!(
            matches!(RankSpec::Explicit(short).resolve(&shape), Err(Error::RankLength { .. })),
            "short: expected RankLength"
        );
        let mut long = ranks.clone();
        long.push(1);
        prop_assert!(
            matches!(RankSpec::Explicit(long).resolve(&shape), Err(Error::RankLength { .. })),
            "long: expected RankLength"
        );
        let mut first = ranks.clone();
        first[0] = boundary;
        prop_assert!(
            matches!(RankSpec::Explicit(first).resolve(&shape), Err(Error::BoundaryRank { .. })),
            "first: expected BoundaryRank"
        );
        let mut last = ranks.clone();
        *last.last_mut().unwrap() = boundary;
        prop_assert!(
            matches!(RankSpec::Explicit(last).resolve(&shape), Err(Error::BoundaryRank { .. })),
            "last: expected BoundaryRank"
        );
        // Valid specs always resolve to N+1 ranks >= 1, with 1 at both ends.
        for spec in [RankSpec::Same, RankSpec::Fraction(0.01), RankSpec::Fraction(2.5), RankSpec::Uniform(3)] {
            let r = spec.resolve_with(&shape, options).unwrap();
            prop_assert_eq!(r.len(), shape.len() + 1);
            prop_assert!(r[0] == 1 && r[shape.len()] == 1 && r.iter().all(|&v| v >= 1));
        }
    }
}

/// Empty shapes are rejected everywhere (a 0-d array has shape `[]`).
#[test]
fn empty_shape_is_an_error() {
    let scalar = ArrayD::<f64>::from_elem(IxDyn(&[]), 1.0);
    for t in truncations() {
        assert!(matches!(tt_svd(scalar.view(), &t), Err(Error::EmptyShape)));
    }
    let scalar32 = ArrayD::<f32>::from_elem(IxDyn(&[]), 1.0);
    assert!(matches!(
        tt_svd(scalar32.view(), &Truncation::tolerance(0.1)),
        Err(Error::EmptyShape)
    ));
    assert!(matches!(
        RankSpec::Same.resolve(&[]),
        Err(Error::EmptyShape)
    ));
    assert!(matches!(
        TtTensor::<f64>::new(vec![]),
        Err(Error::EmptyShape)
    ));
    assert!(TtTensor::<f64>::random(&[], &[1], 1.0, 0).is_err());
    assert!(TtTensor::<f64>::from_dyn_cores(vec![]).is_err());
}

/// Degenerate but valid inputs: an all-zero tensor, order 1, size-1 modes.
#[test]
fn degenerate_inputs_work() {
    let zeros = ArrayD::<f64>::zeros(IxDyn(&[3, 4, 2]));
    for t in truncations() {
        let (tt, report) = tt_svd(zeros.view(), &t).unwrap();
        assert!(tt.to_dense().unwrap().iter().all(|&v| v == 0.0));
        assert_eq!(report.rel_error, 0.0);
    }
    let (tt, _) = tt_svd(zeros.view(), &Truncation::tolerance(0.0)).unwrap();
    assert_eq!(tt.ranks(), vec![1, 1, 1, 1]);
    let v = ArrayD::from_shape_vec(IxDyn(&[5]), vec![1.0, -2.0, 3.0, 0.0, 0.5]).unwrap();
    let (tt, report) = tt_svd(v.view(), &Truncation::rank(RankSpec::Same)).unwrap();
    assert_eq!(tt.ranks(), vec![1, 1]);
    assert_eq!(tt.to_dense().unwrap(), v);
    assert_eq!(report.rel_error, 0.0);
    let ones = ArrayD::<f64>::ones(IxDyn(&[1, 1, 1]));
    let (tt, _) = tt_svd(ones.view(), &Truncation::tolerance(0.0)).unwrap();
    assert_eq!(tt.to_dense().unwrap(), ones);
}
