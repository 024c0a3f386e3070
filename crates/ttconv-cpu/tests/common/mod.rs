//! Shared helpers of the integration tests: random data, case strategies, comparisons.

#![allow(dead_code)]

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ttconv::AxisGeometry;

/// Uniform(-1, 1) data of `shape`, reproducible from `seed`.
pub fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0f32..1.0))
}

/// Asserts `|got - want| <= rel * max|want|` element-wise (same shapes).
///
/// Why `rel = 1e-5`: every entry is a sum of `n` products of numbers in (-1, 1), with `n` at most
/// a few thousand in these tests (`in * prod(k)` for a convolution, `batch * positions` for a
/// weight gradient), accumulated in f32 while the oracle accumulates in f64 and rounds once.
/// Each f32 addition errs by at most `2^-24` of the running sum, whose size is about
/// `sqrt(k) / 3` after `k` random-sign terms, so the accumulated error is about
/// `2^-24 * n / 4` while the largest entry is about `sqrt(n)`: a relative error near
/// `sqrt(n) * 1.5e-8`, i.e. below 1e-6 for `n <= 4000`. `1e-5` leaves a 10x margin for
/// unlucky orderings while a wrong, missing or extra term (typically ~1e-2 of the max) fails.
pub fn assert_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, rel: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let tol = rel * max;
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}: entry {i} got {g}, want {w} (tolerance {tol}, max |want| {max})"
        );
    }
}

/// Relative tolerance of every comparison against the f64 oracle (see [`assert_close`]).
pub const REL: f32 = 1e-5;

/// One spatial axis of a random convolution case.
#[derive(Clone, Debug)]
pub struct AxisCase {
    pub size: usize,
    pub kernel: usize,
    pub geometry: AxisGeometry,
}

impl AxisCase {
    pub fn output_len(&self) -> Option<usize> {
        self.geometry.output_len(self.size, self.kernel)
    }
}

/// Size 1..=9, kernel 1..=5, stride 1..=3, padding 0..=3 before and after, dilation 1..=3.
pub fn axis_case() -> impl Strategy<Value = AxisCase> {
    (
        1usize..=9,
        1usize..=5,
        1usize..=3,
        0usize..=3,
        0usize..=3,
        1usize..=3,
    )
        .prop_map(
            |(size, kernel, stride, pad_before, pad_after, dilation)| AxisCase {
                size,
                kernel,
                geometry: AxisGeometry {
                    stride,
                    dilation,
                    pad_before,
                    pad_after,
                },
            },
        )
}

/// A whole convolution case: batch 1..=3, channels 1..=8 in and out, 1..=4 spatial axes.
#[derive(Clone, Debug)]
pub struct Case {
    pub batch: usize,
    pub cin: usize,
    pub cout: usize,
    pub axes: Vec<AxisCase>,
    pub seed: u64,
    pub bias: bool,
}

impl Case {
    pub fn in_shape(&self) -> Vec<usize> {
        let mut v = vec![self.batch, self.cin];
        v.extend(self.axes.iter().map(|a| a.size));
        v
    }
    pub fn in_spatial(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.size).collect()
    }
    pub fn kernel_sizes(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.kernel).collect()
    }
    pub fn geometry(&self) -> Vec<AxisGeometry> {
        self.axes.iter().map(|a| a.geometry).collect()
    }
    pub fn positions(&self) -> usize {
        self.axes.iter().map(|a| a.size).product()
    }
}

/// Random cases; `work` bounds the cost of the f64 oracle and `valid` keeps only the draws the
/// test can use (e.g. non-empty output).
pub fn case(
    work: impl Fn(&Case) -> usize + Clone + 'static,
    max_work: usize,
) -> impl Strategy<Value = Case> {
    (
        1usize..=3,
        1usize..=8,
        1usize..=8,
        prop::collection::vec(axis_case(), 1..=4),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(batch, cin, cout, axes, seed, bias)| Case {
            batch,
            cin,
            cout,
            axes,
            seed,
            bias,
        })
        .prop_filter("oracle too slow for this draw", move |c| {
            work(c) <= max_work
        })
}

/// The output spatial shape of `case` when only the axes in `convolved` are convolved (the
/// others keep their size), or `None` if empty along one of them.
pub fn out_spatial(case: &Case, convolved: impl Fn(usize) -> bool) -> Option<Vec<usize>> {
    case.axes
        .iter()
        .enumerate()
        .map(|(j, a)| {
            if convolved(j) {
                a.output_len()
            } else {
                Some(a.size)
            }
        })
        .collect()
}

/// `x` as an owned 1-D array (for biases).
pub fn vec1(x: &ArrayD<f32>) -> ndarray::Array1<f32> {
    x.iter().copied().collect()
}
