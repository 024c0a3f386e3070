//! Values drawn from wide ranges: mostly small, sometimes 0, 1, powers of two up to 2^63,
//! `usize::MAX` or any `usize`; floats including NaN, infinities, zero, subnormals and the
//! extremes of f32 and f64.

use proptest::prelude::*;
use ttconv::{Implementation, Padding, RankSpec};

/// Sizes: mostly `1..=hi`, sometimes 0, sometimes huge.
pub fn size(hi: usize) -> impl Strategy<Value = usize> + Clone {
    prop_oneof![
        24 => 1..=hi.max(1),
        1 => Just(0),
        1 => (16..64u32).prop_map(|e| 1usize << e),
        1 => prop_oneof![Just(usize::MAX), Just(usize::MAX / 2 + 1), any::<usize>()],
    ]
}

/// `n` values of `each`, sometimes one more or one fewer (a list of the wrong length).
pub fn list<S: Strategy + Clone>(each: S, n: usize) -> impl Strategy<Value = Vec<S::Value>>
where
    S::Value: std::fmt::Debug,
{
    prop_oneof![
        12 => prop::collection::vec(each.clone(), n),
        1 => prop::collection::vec(each, n.saturating_sub(1)..=n + 1),
    ]
}

/// Any f64 a careless caller might pass as a fraction or a tolerance.
pub fn wide_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..1.5f64,
        1 => prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.0),
            Just(-0.0),
            Just(-1.0),
            Just(1e-300),
            Just(1e300),
            Just(f64::MIN_POSITIVE / 4.0),
            Just(f64::MAX),
        ],
        1 => any::<f64>(),
    ]
}

/// Any f32 hyperparameter: sensible ranges mostly, the extremes sometimes.
pub fn wide_f32(lo: f32, hi: f32) -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => lo..hi,
        1 => prop_oneof![
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(0.0),
            Just(-0.0),
            Just(-1.0),
            Just(1.0),
            Just(f32::MAX),
            Just(f32::MIN_POSITIVE / 4.0),
            Just(5.0),
        ],
        1 => any::<f32>(),
    ]
}

/// A rank spec for a layer of spatial order `order` (`order + 3` ranks, 1 at both ends, when
/// well formed).
pub fn rank_spec(order: usize) -> impl Strategy<Value = RankSpec> {
    let explicit = list(size(6), order + 1).prop_map(|inner| {
        let mut r = vec![1];
        r.extend(inner);
        r.push(1);
        RankSpec::Explicit(r)
    });
    prop_oneof![
        3 => explicit,
        1 => prop::collection::vec(size(6), 0..7).prop_map(RankSpec::Explicit),
        2 => size(6).prop_map(RankSpec::Uniform),
        2 => wide_f64().prop_map(RankSpec::Fraction),
        1 => Just(RankSpec::Same),
    ]
}

pub fn padding(order: usize) -> impl Strategy<Value = Padding> {
    prop_oneof![
        size(3).prop_map(Padding::All),
        list(size(3), order).prop_map(Padding::Each),
        list((size(3), size(3)), order).prop_map(Padding::Asymmetric),
        Just(Padding::Same),
    ]
}

pub fn implementation() -> impl Strategy<Value = Implementation> {
    prop_oneof![
        Just(Implementation::Factorized),
        Just(Implementation::Reconstructed),
        Just(Implementation::Auto),
    ]
}
