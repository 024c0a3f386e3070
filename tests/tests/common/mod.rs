//! Shared pieces of the workspace suites: random layer configurations and comparisons.
#![allow(dead_code)]

use ndarray::{Array1, ArrayD, IxDyn};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ttconv::{
    Gradients, Implementation, Padding, RankSpec, TtConv, TtConvConfig, TtTensor, oracle,
};
use ttconv_cpu::CpuBackend;

/// Elementwise tolerance relative to the size of the computation (see equivalence.rs and
/// [`squared_layer`]).
pub const REL_TOL: f32 = 1e-4;

#[derive(Clone, Debug)]
pub struct Case {
    pub batch: usize,
    pub cin: usize,
    pub cout: usize,
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub padding: Vec<(usize, usize)>,
    pub dilation: Vec<usize>,
    pub ranks: Vec<usize>,
    pub spatial: Vec<usize>,
    pub bias: bool,
    pub seed: u64,
}

pub fn mode_strategy(
    order: usize,
) -> impl Strategy<Value = (usize, usize, (usize, usize), usize, usize)> {
    // Higher orders get smaller kernels so the direct oracle stays fast.
    let (kmax, dmax): (usize, usize) = if order >= 3 { (3, 2) } else { (5, 3) };
    (
        1..=kmax,
        1..=3usize,
        (0..=3usize, 0..=3usize),
        1..=dmax,
        0..=3usize,
    )
}

pub fn case_strategy() -> impl Strategy<Value = Case> {
    (1..=4usize)
        .prop_flat_map(|order| {
            (
                1..=3usize,
                1..=8usize,
                1..=8usize,
                prop::collection::vec(mode_strategy(order), order),
                prop::collection::vec(1..=6usize, order + 1),
                any::<bool>(),
                any::<u64>(),
            )
        })
        .prop_map(|(batch, cin, cout, modes, inner, bias, seed)| {
            let order = modes.len();
            let mut kernel = vec![];
            let mut stride = vec![];
            let mut padding = vec![];
            let mut dilation = vec![];
            let mut spatial = vec![];
            for (k, s, (pb, pa), dil, extra) in modes {
                let span = dil * (k - 1) + 1;
                let min = span.saturating_sub(pb + pa).max(1);
                let extra = if order >= 3 { extra.min(2) } else { extra * 2 };
                kernel.push(k);
                stride.push(s);
                padding.push((pb, pa));
                dilation.push(dil);
                spatial.push(min + extra);
            }
            let mut ranks = vec![1];
            ranks.extend(inner);
            ranks.push(1);
            Case {
                batch,
                cin,
                cout,
                kernel,
                stride,
                padding,
                dilation,
                ranks,
                spatial,
                bias,
                seed,
            }
        })
}

pub fn random_array(shape: &[usize], rng: &mut StdRng) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random::<f32>() * 2.0 - 1.0)
}

pub fn build(case: &Case) -> (TtConv, ArrayD<f32>) {
    let config = TtConvConfig::new(case.cin, case.cout, case.kernel.clone())
        .stride(case.stride.clone())
        .padding(Padding::Asymmetric(case.padding.clone()))
        .dilation(case.dilation.clone())
        .rank(RankSpec::Explicit(case.ranks.clone()))
        .bias(case.bias);
    let mut layer = TtConv::new(config).expect("valid configuration");
    let mut rng = StdRng::seed_from_u64(case.seed);
    let mut tt_shape = vec![case.cin];
    tt_shape.extend(&case.kernel);
    tt_shape.push(case.cout);
    // Cores ~ U(-1, 1) scaled so the kernel entries are O(1).
    let cores = tt_shape
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let scale = 1.0 / (case.ranks[k] as f32).sqrt();
            random_array(&[case.ranks[k], n, case.ranks[k + 1]], &mut rng)
                .mapv(|v| v * scale)
                .into_dimensionality()
                .expect("3-D")
        })
        .collect();
    let tt = TtTensor::new(cores).expect("consistent cores");
    let bias = case
        .bias
        .then(|| Array1::from_shape_simple_fn(case.cout, || rng.random::<f32>() - 0.5));
    layer
        .init_from_decomposition(tt, bias.as_ref().map(|b| b.view()))
        .expect("shapes match");
    let mut xshape = vec![case.batch, case.cin];
    xshape.extend(&case.spatial);
    (layer, random_array(&xshape, &mut rng))
}

pub fn max_abs(a: &ArrayD<f32>) -> f32 {
    a.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

pub fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

pub fn oracle_output(layer: &TtConv, x: &ArrayD<f32>) -> ArrayD<f32> {
    oracle::conv_nd(
        x.view(),
        layer.full_weights().view(),
        layer.bias().map(|b| b.view()),
        layer.geometry(),
    )
    .expect("oracle runs")
}

/// The largest `max|diff| / max|reference|` seen so far in this test binary, per label; printed
/// when it grows (`cargo test -- --nocapture` shows the worst errors of a run).
pub fn record_worst(label: &str, ratio: f32) {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    static WORST: Mutex<BTreeMap<String, f32>> = Mutex::new(BTreeMap::new());
    let mut worst = WORST.lock().unwrap_or_else(|e| e.into_inner());
    let entry = worst.entry(label.to_string()).or_insert(0.0);
    if ratio > *entry {
        *entry = ratio;
        println!("worst so far: {label} {ratio:.3e}");
    }
}

/// `a` squared element-wise.
pub fn squared(a: &ArrayD<f32>) -> ArrayD<f32> {
    a.mapv(|v| v * v)
}

/// The largest `sqrt` of the entries of `sums_of_squares`.
pub fn term_scale(sums_of_squares: &ArrayD<f32>) -> f32 {
    sums_of_squares
        .iter()
        .fold(0f32, |m, v| m.max(v.abs().sqrt()))
}

/// `layer` with every core and bias entry squared.
///
/// The layer's forward and backward are multilinear, with unit coefficients, in the input, the
/// cores, the bias and the output gradient: each output entry is a sum of products `t_i` of one
/// entry of each. Run on squared operands, the same computation gives in each entry
/// `sum_i t_i^2`, whose square root (the terms' root-sum-square) is the size the f32 rounding error
/// of that entry is proportional to. The suites compare against `REL_TOL` times the larger of
/// that size and the largest reference entry: the result alone is no scale when its terms cancel
/// (a single output or gradient entry can be 100x smaller than its terms).
pub fn squared_layer(layer: &TtConv) -> TtConv {
    let mut sq = TtConv::new(layer.config().clone()).expect("the layer's own configuration");
    sq.set_cores(
        layer
            .tt()
            .cores()
            .iter()
            .map(|c| c.mapv(|v| v * v))
            .collect(),
    )
    .expect("same shapes and ranks");
    if let Some(b) = layer.bias() {
        sq.set_bias(b.mapv(|v| v * v)).expect("same length");
    }
    sq
}

/// The terms' size of `layer`'s output on `x` (see [`squared_layer`]).
pub fn output_terms(layer: &TtConv, x: &ArrayD<f32>) -> f32 {
    term_scale(&oracle_output(&squared_layer(layer), &squared(x)))
}

/// One layer per merge pattern of [`ttconv::FactorizedProgram`] (head and tail merged, head only, tail
/// only, both in 3-D, neither), with the plan it must get: batch 2, bias on, strided, padded and
/// dilated, 7 positions per axis; seeds `seed0 + i`.
pub fn merge_pattern_cases(seed0: u64) -> Vec<(Case, (bool, bool))> {
    let shapes = [
        (2, 3, vec![1, 8, 2, 8, 1], vec![3, 3], (true, true)),
        (2, 3, vec![1, 8, 8, 1], vec![3], (true, false)),
        (8, 3, vec![1, 2, 8, 1], vec![3], (false, true)),
        (2, 2, vec![1, 6, 2, 3, 6, 1], vec![2, 3, 2], (true, true)),
        (6, 5, vec![1, 2, 3, 2, 1], vec![3, 2], (false, false)),
    ];
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, (cin, cout, ranks, kernel, plan))| {
            let d = kernel.len();
            let case = Case {
                batch: 2,
                cin,
                cout,
                stride: (0..d).map(|j| 1 + j % 2).collect(),
                padding: (0..d).map(|j| (1, j % 2)).collect(),
                dilation: (0..d).map(|j| 1 + (j + 1) % 2).collect(),
                spatial: vec![7; d],
                kernel,
                ranks,
                bias: true,
                seed: seed0 + i as u64,
            };
            (case, plan)
        })
        .collect()
}

/// `max|a - b| <= REL_TOL * max(max|b|, terms)`, where `terms` is the root-sum-square size of
/// the products summed into the entries ([`squared_layer`]).
pub fn assert_close(
    name: &str,
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    terms: f32,
) -> Result<(), TestCaseError> {
    let scale = max_abs(b).max(terms);
    let diff = max_diff(a, b);
    record_worst(name, diff / scale);
    prop_assert!(
        diff <= REL_TOL * scale,
        "{}: {} (scale {}, max |reference| {}, terms {})",
        name,
        diff,
        scale,
        max_abs(b),
        terms
    );
    Ok(())
}

/// The terms' sizes of every gradient of `layer` at `(x, gy)`: the same backward on squared
/// operands (see [`squared_layer`]).
pub fn gradient_terms(
    cpu: &CpuBackend,
    layer: &TtConv,
    x: &ArrayD<f32>,
    gy: &ArrayD<f32>,
) -> Gradients {
    squared_layer(layer)
        .forward_backward(
            cpu,
            squared(x).view(),
            squared(gy).view(),
            Implementation::Reconstructed,
            true,
        )
        .map(|(_, grads)| grads)
        .expect("the squared layer accepts what the layer accepted")
}

pub fn compare_gradients(
    a: &Gradients,
    b: &Gradients,
    terms: &Gradients,
) -> Result<(), TestCaseError> {
    if let (Some(x), Some(y), Some(t)) = (&a.input, &b.input, &terms.input) {
        assert_close("input", x, y, term_scale(t))?;
    }
    for (k, ((x, y), t)) in a.cores.iter().zip(&b.cores).zip(&terms.cores).enumerate() {
        assert_close(
            &format!("core {k}"),
            &x.clone().into_dyn(),
            &y.clone().into_dyn(),
            term_scale(&t.clone().into_dyn()),
        )?;
    }
    if let (Some(x), Some(y), Some(t)) = (&a.bias, &b.bias, &terms.bias) {
        assert_close(
            "bias",
            &x.clone().into_dyn(),
            &y.clone().into_dyn(),
            term_scale(&t.clone().into_dyn()),
        )?;
    }
    Ok(())
}
