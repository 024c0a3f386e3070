//! TT-SVD and `from_dense` at every magnitude: the ranks and the relative error do not depend on
//! the scale of the data, the reported error is the actual one, and f32 cores stay finite.

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ttconv::{ConvGeometry, Error, RankSpec, Truncation, TtConv};

/// Entries `±[0.5, 1)` (so that scaling by `2^e` is exact while no entry goes subnormal).
fn tensor(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        let v = 0.5 + 0.5 * rng.random::<f64>();
        if rng.random_bool(0.5) { v } else { -v }
    })
}

fn truncation() -> impl Strategy<Value = Truncation> {
    prop_oneof![
        (1..4usize).prop_map(|r| Truncation::rank(RankSpec::Uniform(r))),
        (0.05..0.6f64).prop_map(|f| Truncation::rank(RankSpec::Fraction(f))),
        (0.01..0.5f64).prop_map(Truncation::tolerance),
    ]
}

/// `||a - b|| / ||a||`, both first divided by `2^e` (exact) so that no square under- or overflows.
fn relative_error(a: &ArrayD<f64>, b: &ArrayD<f64>, e: i32) -> f64 {
    let s = 2f64.powi(-e);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        num += ((x - y) * s).powi(2);
        den += (x * s).powi(2);
    }
    (num / den).sqrt()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn tt_svd_does_not_depend_on_magnitude(
        shape in prop::collection::vec(1..5usize, 1..5),
        e in prop_oneof![-1000i32..=-900, -10i32..=10, 900i32..=1000],
        truncation in truncation(),
        seed in any::<u64>(),
    ) {
        let t = tensor(&shape, seed);
        let scaled = t.mapv(|v| v * 2f64.powi(e));
        let (tt1, r1) = tt_core::tt_svd(t.view(), &truncation).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (tt2, r2) = tt_core::tt_svd(scaled.view(), &truncation).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(tt1.ranks(), tt2.ranks());
        prop_assert!((r1.rel_error - r2.rel_error).abs() <= 1e-12 + 1e-9 * r1.rel_error);
        let dense = tt2.to_dense().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(dense.iter().all(|v| v.is_finite()));
        let actual = relative_error(&scaled, &dense, e);
        // The reported error comes from the discarded singular values: equal to the actual one
        // up to the f64 rounding of the reconstruction (~1e-15 relative per entry).
        prop_assert!((actual - r2.rel_error).abs() <= 1e-9, "actual {actual} reported {}", r2.rel_error);
    }

    /// An f32 kernel anywhere in f32's normal range, up to entries of `f32::MAX`: finite cores,
    /// an honest error report, a finite forward.
    #[test]
    fn from_dense_at_the_ends_of_f32(
        (cout, cin, k) in (1..4usize, 1..4usize, 1..4usize),
        e in prop_oneof![-100i32..=-90, -5i32..=5, 118i32..=127],
        truncation in truncation(),
        seed in any::<u64>(),
    ) {
        let kernel64 = tensor(&[cout, cin, k, k], seed).mapv(|v| v * 2f64.powi(e));
        let kernel = kernel64.mapv(|v| v as f32);
        let (layer, report) = TtConv::from_dense(kernel.view(), None, &ConvGeometry::default(), &truncation)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(layer.tt().cores().iter().all(|c| c.iter().all(|v| v.is_finite())));
        let full = layer.full_weights().mapv(f64::from);
        prop_assert!(full.iter().all(|v| v.is_finite()));
        let kernel_back = kernel.mapv(f64::from);
        let actual = relative_error(&kernel_back, &full, e);
        // The report is of the f64 decomposition; the f32 cores and the f32 reconstruction add
        // rounding of order 1e-6 relative (a few f32 ulps per entry and per core product).
        prop_assert!((actual - report.rel_error).abs() <= 1e-5, "actual {actual} reported {}", report.rel_error);
    }
}

/// Non-finite kernels and tensors are refused with the index of the first bad entry.
#[test]
fn non_finite_data_is_refused() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut kernel = ArrayD::<f32>::ones(IxDyn(&[2, 2, 3]));
        kernel[[1, 0, 2]] = bad;
        let err = TtConv::from_dense(
            kernel.view(),
            None,
            &ConvGeometry::default(),
            &Truncation::rank(RankSpec::Same),
        )
        .unwrap_err();
        // The index is the caller's (out, in, k) row-major one, not the permuted TT order's.
        assert!(matches!(err, Error::NonFinite { index: 8, .. }), "{err:?}");
        assert!(err.to_string().contains("kernel"), "{err}");
    }
}
