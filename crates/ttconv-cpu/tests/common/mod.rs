//! Shared helpers of the integration tests: random data, case strategies, comparisons.

#![allow(dead_code)]

use std::ops::RangeInclusive;

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ttconv::AxisGeometry;
use ttconv_cpu::{CpuBackend, CpuOptions, SimdLevel};

/// Every SIMD cap of the backend's kernels: the property tests run the AVX2 and plain-loop
/// paths too (what a processor without AVX-512 runs), whatever this machine has.
pub fn simd_cap() -> impl Strategy<Value = SimdLevel> {
    prop_oneof![
        Just(SimdLevel::Auto),
        Just(SimdLevel::Avx2),
        Just(SimdLevel::Portable)
    ]
}

/// A backend with the default options and the kernels capped at `simd`.
pub fn capped(simd: SimdLevel) -> CpuBackend {
    CpuBackend::with_options(CpuOptions {
        simd,
        ..CpuOptions::default()
    })
}

/// Uniform(-1, 1) data of `shape`, reproducible from `seed`.
pub fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0f32..1.0))
}

/// Asserts `|got - want| <= rel * max|want|` element-wise (same shapes): [`assert_close_scaled`]
/// with no term scale, for fixed cases whose outputs are many and cannot all cancel.
pub fn assert_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, rel: f32) {
    assert_close_scaled(what, got, want, 0.0, rel);
}

/// Asserts `|got - want| <= rel * max(terms, max|want|)` element-wise (same shapes).
///
/// `terms` is the size of the sums behind the entries: the largest root-sum-square
/// `sqrt(sum_i t_i^2)` of the products `t_i` summed into one entry (see [`squared`] for how the
/// tests get it). The rounding error of an f32 sum is proportional to that size, not to the
/// result: a single output entry whose terms happen to cancel (one bias gradient, say) can be
/// 100x smaller than its terms, and a tolerance relative to the result alone then fails on
/// correct code (it did, in CI).
///
/// Why `rel = 1e-5`: every entry is a sum of `n` products of numbers in (-1, 1), with `n` at most
/// a few thousand in these tests (`in * prod(k)` for a convolution, `batch * positions` for a
/// weight gradient), accumulated in f32 while the oracle accumulates in f64 and rounds once.
/// Each f32 addition errs by at most `2^-24` of the running sum, and the running sums of `n`
/// random-sign terms are about `sqrt(k)` times the terms' size after `k` of them, so the error of
/// plain left-to-right accumulation is about `2^-24 * sqrt(n / 6)` times the root-sum-square of
/// the terms (blocked and pairwise sums, as the GEMMs do, err less): below 2e-6 for `n <= 4000`.
/// `1e-5` leaves a margin of 5 while a wrong, missing or extra term (typically ~1e-2 of the
/// scale) fails.
pub fn assert_close_scaled(
    what: &str,
    got: &ArrayD<f32>,
    want: &ArrayD<f32>,
    terms: f32,
    rel: f32,
) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let tol = rel * max.max(terms);
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}: entry {i} got {g}, want {w} (tolerance {tol}, max |want| {max}, term scale {terms})"
        );
    }
}

/// `a` squared element-wise.
///
/// Every computation tested here is multilinear in its operands with unit coefficients (a
/// convolution, a contraction, their gradients, a bias sum), so running it on squared operands
/// gives, in each entry, the sum of the squared products `sum_i t_i^2` that the real computation
/// adds up: [`term_scale`] of that is the `terms` argument of [`assert_close_scaled`].
pub fn squared(a: &ArrayD<f32>) -> ArrayD<f32> {
    a.mapv(|v| v * v)
}

/// The largest `sqrt` of the entries of `sums_of_squares` (computed on [`squared`] operands).
pub fn term_scale(sums_of_squares: &ArrayD<f32>) -> f32 {
    sums_of_squares
        .iter()
        .fold(0f32, |m, v| m.max(v.abs().sqrt()))
}

/// The term scale of the oracle convolution `conv(x, kernel) + bias` (see [`squared`]).
pub fn conv_terms(
    x: &ArrayD<f32>,
    kernel: &ArrayD<f32>,
    bias: Option<&ndarray::Array1<f32>>,
    geometry: &[AxisGeometry],
) -> f32 {
    let b2 = bias.map(|b| b.mapv(|v| v * v));
    let sums = ttconv::oracle::conv_nd(
        squared(x).view(),
        squared(kernel).view(),
        b2.as_ref().map(|b| b.view()),
        geometry,
    )
    .expect("the oracle accepts what it accepted unsquared");
    term_scale(&sums)
}

/// The term scales of the oracle's input, kernel and bias gradients (see [`squared`]).
pub fn grad_terms(
    x: &ArrayD<f32>,
    kernel: &ArrayD<f32>,
    gy: &ArrayD<f32>,
    geometry: &[AxisGeometry],
) -> (f32, f32, f32) {
    let (gx, gk, gb) = ttconv::oracle::conv_nd_grads(
        squared(x).view(),
        squared(kernel).view(),
        squared(gy).view(),
        geometry,
    )
    .expect("the oracle accepts what it accepted unsquared");
    (term_scale(&gx), term_scale(&gk), term_scale(&gb.into_dyn()))
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

/// One axis with its size, kernel, stride, padding (each side) and dilation drawn from the given
/// ranges.
pub fn axis_in(
    size: RangeInclusive<usize>,
    kernel: RangeInclusive<usize>,
    stride: RangeInclusive<usize>,
    pad: RangeInclusive<usize>,
    dilation: RangeInclusive<usize>,
) -> impl Strategy<Value = AxisCase> {
    (size, kernel, stride, pad.clone(), pad, dilation).prop_map(
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

/// Size 1..=9, kernel 1..=5, stride 1..=3, padding 0..=3 before and after, dilation 1..=3.
pub fn axis_case() -> impl Strategy<Value = AxisCase> {
    axis_in(1..=9, 1..=5, 1..=3, 0..=3, 1..=3)
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

/// A layer with the given factors (`first (in, r_1)`, `cores[j] (r_{j+1}, k_j, r_{j+2})`,
/// `last (r_{d+1}, out)`), bias `(out,)` and per-axis geometry, for the tests that run a
/// backend's factorized forward on a layer's program.
pub fn layer_from_factors(
    first: &ArrayD<f32>,
    cores: &[ArrayD<f32>],
    last: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    geometry: &[AxisGeometry],
) -> ttconv::TtConv {
    use ndarray::{Axis, Ix1, Ix3};
    let kernel: Vec<usize> = cores.iter().map(|g| g.shape()[1]).collect();
    let config = ttconv::TtConvConfig::new(first.shape()[0], last.shape()[1], kernel)
        .stride(geometry.iter().map(|g| g.stride).collect::<Vec<_>>())
        .dilation(geometry.iter().map(|g| g.dilation).collect::<Vec<_>>())
        .padding(ttconv::Padding::Asymmetric(
            geometry
                .iter()
                .map(|g| (g.pad_before, g.pad_after))
                .collect(),
        ))
        .bias(bias.is_some());
    let mut tt = vec![first.clone().insert_axis(Axis(0))];
    tt.extend(cores.iter().cloned());
    tt.push(last.clone().insert_axis(Axis(2)));
    let tt = tt
        .into_iter()
        .map(|g| g.into_dimensionality::<Ix3>().expect("a core has 3 axes"))
        .collect();
    let bias = bias.map(|b| {
        b.clone()
            .into_dimensionality::<Ix1>()
            .expect("a bias vector")
    });
    let mut layer = ttconv::TtConv::new(config).expect("a valid configuration");
    layer
        .init_from_decomposition(
            ttconv::TtTensor::new(tt).expect("consistent cores"),
            bias.as_ref().map(|b| b.view()),
        )
        .expect("the cores fit the configuration");
    layer
}
