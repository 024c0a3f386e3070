//! Factorized == reconstructed == direct convolution, over random layers of orders 1 to 4.
//!
//! Tolerance: the oracle accumulates in f64 from the same f32 weights (`full_weights`, itself the
//! f64 reconstruction rounded once). The factorized chain runs `d + 2` f32 contractions, each
//! summing at most 8 channels x 5 taps x 6 ranks = 240 products, so its relative rounding error is
//! below `(d + 2) * 240 * 2^-24 ~ 9e-5` in the worst case and ~1e-6 typically; the dense path sums
//! `in * prod(k)` products once. We allow `1e-4 * scale` elementwise, where `scale` is the larger
//! of the oracle's largest output magnitude and the largest root-sum-square of the products summed
//! into one output (`common::squared_layer`): the rounding error follows the terms, and the result
//! alone is no scale when they cancel (one output entry can be 100x smaller than its terms).

use ndarray::{Array1, IxDyn};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ttconv::{
    AxisGeometry, ConvGeometry, Implementation, Init, Padding, RankSpec, Truncation, TtConv,
    TtConvConfig, oracle,
};
use ttconv_cpu::CpuBackend;

mod common;

use common::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, .. ProptestConfig::default() })]

    #[test]
    fn factorized_equals_reconstructed_equals_oracle(case in case_strategy()) {
        let (layer, x) = build(&case);
        let cpu = CpuBackend::new();
        let expect = oracle_output(&layer, &x);
        let scale = max_abs(&expect).max(output_terms(&layer, &x));
        let fact = layer.forward_with(&cpu, x.view(), Implementation::Factorized).unwrap();
        let dense = layer.forward_with(&cpu, x.view(), Implementation::Reconstructed).unwrap();
        prop_assert_eq!(fact.shape(), expect.shape());
        let (ef, ed, efd) = (max_diff(&fact, &expect), max_diff(&dense, &expect), max_diff(&fact, &dense));
        record_worst("factorized vs oracle", ef / scale);
        record_worst("reconstructed vs oracle", ed / scale);
        prop_assert!(ef <= REL_TOL * scale, "factorized vs oracle: {} (scale {})", ef, scale);
        prop_assert!(ed <= REL_TOL * scale, "reconstructed vs oracle: {} (scale {})", ed, scale);
        prop_assert!(efd <= REL_TOL * scale, "factorized vs reconstructed: {} (scale {})", efd, scale);
        let auto = layer.forward_with(&cpu, x.view(), Implementation::Auto).unwrap();
        prop_assert!(max_diff(&auto, &expect) <= REL_TOL * scale);
    }

    #[test]
    fn transducted_layer_repeats_the_kernel_and_both_paths_agree(
        case in case_strategy().prop_filter("2-D layers", |c| c.kernel.len() == 2),
        k_new in 1..=3usize,
        mode in 0..=2usize,
        pad in 0..=1usize,
        stride in 1..=2usize,
        dil in 1..=2usize,
    ) {
        let (mut layer, _) = build(&case);
        let before = layer.full_weights().clone();
        layer
            .transduct(mode, k_new, AxisGeometry::symmetric(stride, pad, dil))
            .unwrap();
        let after = layer.full_weights().clone();
        prop_assert_eq!(after.ndim(), 5);
        for t in 0..k_new {
            let slice = after.index_axis(ndarray::Axis(mode + 2), t);
            prop_assert!(slice.iter().zip(before.iter()).all(|(a, b)| (a - b).abs() <= 1e-6 * (1.0 + b.abs())));
        }
        let mut rng = StdRng::seed_from_u64(case.seed ^ 0x5eed);
        let span = dil * (k_new - 1) + 1;
        let mut shape = vec![case.batch, case.cin];
        let mut spatial = case.spatial.clone();
        spatial.insert(mode, span + 2);
        shape.extend(spatial);
        let video = random_array(&shape, &mut rng);
        let cpu = CpuBackend::new();
        let expect = oracle_output(&layer, &video);
        let scale = max_abs(&expect).max(output_terms(&layer, &video));
        let fact = layer.forward_with(&cpu, video.view(), Implementation::Factorized).unwrap();
        let dense = layer.forward_with(&cpu, video.view(), Implementation::Reconstructed).unwrap();
        prop_assert!(max_diff(&fact, &expect) <= REL_TOL * scale);
        prop_assert!(max_diff(&dense, &expect) <= REL_TOL * scale);
    }
}

/// On a video whose frames all equal one image, the transducted layer's output at interior time
/// steps is `k_new` times the 2-D layer's output on that image (bias excluded from the scaling).
#[test]
fn constant_video_gives_k_new_times_the_image_output() {
    let cpu = CpuBackend::new();
    let case = Case {
        batch: 2,
        cin: 3,
        cout: 4,
        kernel: vec![3, 3],
        stride: vec![1, 2],
        padding: vec![(1, 1), (0, 2)],
        dilation: vec![1, 1],
        ranks: vec![1, 3, 2, 4, 1],
        spatial: vec![7, 8],
        bias: false,
        seed: 42,
    };
    let (mut layer, image) = build(&case);
    let y2 = layer.forward(&cpu, image.view()).unwrap();
    let (k_new, frames) = (3, 6);
    layer
        .transduct(0, k_new, AxisGeometry::symmetric(1, 1, 1))
        .unwrap();
    let video = image
        .clone()
        .insert_axis(ndarray::Axis(2))
        .broadcast(IxDyn(&[2, 3, frames, 7, 8]))
        .unwrap()
        .to_owned();
    for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
        let y3 = layer
            .forward_with(&cpu, video.view(), implementation)
            .unwrap();
        assert_eq!(y3.shape()[2], frames);
        let scale = max_abs(&y2) * k_new as f32;
        for t in 1..frames - 1 {
            let frame = y3.index_axis(ndarray::Axis(2), t).to_owned();
            let expect = y2.mapv(|v| v * k_new as f32);
            let diff = max_diff(&frame, &expect);
            assert!(diff <= REL_TOL * scale, "t={t}: {diff}");
        }
    }
}

/// `init_from_tensor` at full rank reproduces the dense layer's output.
#[test]
fn full_rank_decomposition_reproduces_the_dense_layer() {
    let cpu = CpuBackend::new();
    let mut rng = StdRng::seed_from_u64(3);
    let kernel = random_array(&[5, 4, 3, 2], &mut rng);
    let bias = Array1::from_shape_simple_fn(5, || rng.random::<f32>());
    let (layer, report) = TtConv::from_dense(
        kernel.view(),
        Some(bias.view()),
        &ConvGeometry::new()
            .stride([1, 2])
            .padding(Padding::Asymmetric(vec![(1, 0), (2, 1)])),
        &Truncation::rank(RankSpec::Uniform(1000)),
    )
    .unwrap();
    assert!(report.rel_error < 1e-6, "{}", report.rel_error);
    let x = random_array(&[2, 4, 9, 6], &mut rng);
    let expect =
        oracle::conv_nd(x.view(), kernel.view(), Some(bias.view()), layer.geometry()).unwrap();
    let scale = max_abs(&expect);
    for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
        let y = layer.forward_with(&cpu, x.view(), implementation).unwrap();
        assert!(max_diff(&y, &expect) <= REL_TOL * scale);
    }
}

/// Random cores give reconstructions with standard deviation ~0.02 (64 -> 64 channels, 3x3).
#[test]
fn random_init_has_the_target_standard_deviation() {
    let config = TtConvConfig::new(64, 64, vec![3, 3]).rank(RankSpec::Uniform(16));
    let mut layer = TtConv::new(config).unwrap();
    let mut stds = vec![];
    for seed in 0..10 {
        layer.init_from_random(Init::Direct, seed).unwrap();
        let w = layer.full_weights();
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = w
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        stds.push(var.sqrt());
    }
    let avg = stds.iter().sum::<f64>() / stds.len() as f64;
    assert!((avg - 0.02).abs() <= 0.15 * 0.02, "average std {avg}");
    layer
        .init_from_random(Init::DecomposeFullWeight, 1)
        .unwrap();
    let w = layer.full_weights();
    let std = (w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
    // Rank 16 keeps part of the N(0, 0.02) kernel's energy: below 0.02, well above zero.
    assert!(std > 0.005 && std < 0.02, "{std}");
}
