//! `conv_dense` and its gradients against the f64 oracle (`oracle::conv_nd`,
//! `oracle::conv_nd_grads`) on random shapes and geometries.

mod common;

use common::{
    Case, REL, assert_close, assert_close_scaled, capped, case, conv_terms, grad_terms,
    out_spatial, random, simd_cap, vec1,
};
use ndarray::ArrayD;
use proptest::prelude::*;
use ttconv::{AxisGeometry, Backend, oracle};
use ttconv_cpu::CpuBackend;

/// Oracle cost; `usize::MAX` (rejected) when the output would be empty.
fn work(c: &Case) -> usize {
    match out_spatial(c, |_| true) {
        Some(out) => {
            c.batch
                * c.cout
                * c.cin
                * c.kernel_sizes().iter().product::<usize>()
                * out.iter().product::<usize>()
        }
        None => usize::MAX,
    }
}

fn kernel_of(c: &Case) -> ArrayD<f32> {
    let mut shape = vec![c.cout, c.cin];
    shape.extend(c.kernel_sizes());
    random(&shape, c.seed ^ 1)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn forward_matches_oracle(c in case(work, 1_000_000), simd in simd_cap()) {
        let be = capped(simd);
        let x = random(&c.in_shape(), c.seed);
        let kernel = kernel_of(&c);
        let bias = vec1(&random(&[c.cout], c.seed ^ 2));
        let geometry: Vec<AxisGeometry> = c.geometry();
        let want = oracle::conv_nd(x.view(), kernel.view(), c.bias.then(|| bias.view()), &geometry).unwrap();
        let bw = be.upload_weights(bias.view().into_dyn()).unwrap();
        let got = be
            .conv_dense(
                &be.upload(x.view()).unwrap(),
                &be.upload_weights(kernel.view()).unwrap(),
                c.bias.then_some(&bw),
                &geometry,
            )
            .unwrap();
        let terms = conv_terms(&x, &kernel, c.bias.then_some(&bias), &geometry);
        assert_close_scaled("conv_dense", &got, &want, terms, REL);
    }

    #[test]
    fn grads_match_oracle(c in case(work, 1_000_000)) {
        let be = CpuBackend::new();
        let x = random(&c.in_shape(), c.seed);
        let kernel = kernel_of(&c);
        let geometry = c.geometry();
        let mut y_shape = vec![c.batch, c.cout];
        y_shape.extend(out_spatial(&c, |_| true).unwrap());
        let gy = random(&y_shape, c.seed ^ 3);
        let (gx, gk, gb) = oracle::conv_nd_grads(x.view(), kernel.view(), gy.view(), &geometry).unwrap();
        let (tx, tk, tb) = grad_terms(&x, &kernel, &gy, &geometry);
        let kw = be.upload_weights(kernel.view()).unwrap();
        let got_gx = be.conv_dense_grad_input(&gy, &kw, &geometry, &c.in_spatial()).unwrap();
        assert_close_scaled("conv_dense_grad_input", &got_gx, &gx, tx, REL);
        let got_gk = be.conv_dense_grad_weight(&x, &gy, &c.kernel_sizes(), &geometry).unwrap();
        assert_close_scaled("conv_dense_grad_weight", &got_gk, &gk, tk, REL);
        let got_gb = be.bias_grad(&gy).unwrap();
        assert_close_scaled("bias_grad", &got_gb.into_dyn(), &gb.into_dyn(), tb, REL);
    }
}

/// Larger images: at least 384 output positions per item, unit strides before the last axis
/// (any stride on it), 2-D and 3-D. Which dense forward runs depends on the CPU: with AVX-512
/// the direct kernel (`direct.rs`) where its grid wastes little, else the last-axis im2col
/// (`row_im2col.rs`, 2-D) or the full im2col with blocks of whole GEMM tiles.
fn large_case() -> impl Strategy<Value = Case> {
    let axis = |size, max_stride| common::axis_in(size, 1..=3, 1..=max_stride, 0..=2, 1..=2);
    prop_oneof![
        (axis(20..=28, 1), axis(24..=40, 3)).prop_map(|(a, b)| vec![a, b]),
        (axis(4..=6, 1), axis(12..=16, 1), axis(12..=16, 2)).prop_map(|(a, b, c)| vec![a, b, c]),
    ]
    .prop_flat_map(|axes| {
        (
            Just(axes),
            1usize..=2,
            1usize..=4,
            1usize..=5,
            any::<u64>(),
            any::<bool>(),
        )
    })
    .prop_map(|(axes, batch, cin, cout, seed, bias)| Case {
        batch,
        cin,
        cout,
        axes,
        seed,
        bias,
    })
    .prop_filter("at least 384 output positions", |c| {
        out_spatial(c, |_| true).is_some_and(|o| o.iter().product::<usize>() >= 384)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn large_forward_matches_oracle(c in large_case(), simd in simd_cap()) {
        let be = capped(simd);
        let x = random(&c.in_shape(), c.seed);
        let kernel = kernel_of(&c);
        let bias = vec1(&random(&[c.cout], c.seed ^ 2));
        let geometry = c.geometry();
        let want = oracle::conv_nd(x.view(), kernel.view(), c.bias.then(|| bias.view()), &geometry).unwrap();
        let bw = be.upload_weights(bias.view().into_dyn()).unwrap();
        let got = be
            .conv_dense(&x, &be.upload_weights(kernel.view()).unwrap(), c.bias.then_some(&bw), &geometry)
            .unwrap();
        let terms = conv_terms(&x, &kernel, c.bias.then_some(&bias), &geometry);
        assert_close_scaled("conv_dense (large)", &got, &want, terms, REL);
    }
}

/// The pointwise fast path (all kernel sizes 1, stride 1, no padding; dilation irrelevant).
#[test]
fn pointwise_kernel_takes_the_contraction_path() {
    let be = CpuBackend::new();
    let x = random(&[2, 5, 4, 3], 11);
    let kernel = random(&[6, 5, 1, 1], 12);
    let g = AxisGeometry {
        dilation: 3,
        ..AxisGeometry::UNIT
    };
    let geometry = [g, AxisGeometry::UNIT];
    let kw = be.upload_weights(kernel.view()).unwrap();
    let want = oracle::conv_nd(x.view(), kernel.view(), None, &geometry).unwrap();
    assert_close(
        "pointwise",
        &be.conv_dense(&x, &kw, None, &geometry).unwrap(),
        &want,
        REL,
    );
    let gy = random(want.shape(), 13);
    let (gx, gk, _) = oracle::conv_nd_grads(x.view(), kernel.view(), gy.view(), &geometry).unwrap();
    let got_gx = be
        .conv_dense_grad_input(&gy, &kw, &geometry, &[4, 3])
        .unwrap();
    assert_close("pointwise grad_input", &got_gx, &gx, REL);
    let got_gk = be
        .conv_dense_grad_weight(&x, &gy, &[1, 1], &geometry)
        .unwrap();
    assert_close("pointwise grad_weight", &got_gk, &gk, REL);
}
