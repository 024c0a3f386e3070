//! The primitives at the sizes of real layers, against the direct oracle: channels and ranks 9 to
//! 64 (so the 1-D convolution kernels run more than one 8-channel tile, `blockIdx.y > 0`),
//! kernel 9 with `r_in, r_out >= 60` (so the core is staged through shared memory in more than
//! one chunk, forward and transposed), strides, dilations, paddings, batch 2-3. The small random
//! suites (`equivalence.rs`) keep channels <= 6 and never reach those paths.
//!
//! Tolerance: every result is a sum of `L` products (`L` the summed length: `r_in * k` for the
//! forward, at most `r_out * k` for the input gradient, `batch * output positions` for weight
//! and bias gradients), computed in f32 in any order. The classic bound for such a sum is
//! `|fl(s) - s| <= gamma_L * sum |terms|` with `gamma_L ~ L u`, `u = 2^-24`; the oracle sums in
//! f64 and rounds once. So each element must satisfy
//! `|got - want| <= (L + 2) * f32::EPSILON * A` where `A` is the same computation on the
//! absolute values of the operands (`EPSILON = 2u`, a factor 2 of margin). A wrong index, tile
//! or chunk changes whole terms, which this bound does not hide.
//!
//! Each check also runs on the CPU backend (`cpu_*`), which keeps the harness verified where
//! there is no GPU; the CUDA tests skip there with `skipped: <reason>`.

mod common;

use common::*;
use ndarray::{ArrayD, Ix1};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ttconv::oracle::{conv_nd, conv_nd_grads};
use ttconv::{AxisGeometry, Backend};
use ttconv_cpu::CpuBackend;

/// Asserts `|got - want| <= (len + 2) * f32::EPSILON * abs_ref` element-wise (see the module
/// docs), with `abs_ref` the operation on the operands' absolute values.
fn assert_within_sum_bound(
    what: &str,
    got: &ArrayD<f32>,
    want: &ArrayD<f32>,
    abs_ref: &ArrayD<f32>,
    len: usize,
) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    let factor = (len as f32 + 2.0) * f32::EPSILON;
    for (i, ((g, w), a)) in got.iter().zip(want).zip(abs_ref).enumerate() {
        let bound = factor * a + f32::MIN_POSITIVE;
        assert!(
            (g - w).abs() <= bound,
            "{what}: element {i}: got {g}, want {w}, |diff| {} > bound {bound} (summed length \
             {len})",
            (g - w).abs()
        );
    }
}

fn abs(a: &ArrayD<f32>) -> ArrayD<f32> {
    a.mapv(f32::abs)
}

/// One 1-D convolution along `axis` of a `(batch, r_in, spatial..)` input.
#[derive(Clone, Debug)]
struct Along {
    batch: usize,
    r_in: usize,
    r_out: usize,
    spatial: Vec<usize>,
    axis: usize,
    k: usize,
    g: AxisGeometry,
    seed: u64,
}

fn geom(stride: usize, dilation: usize, pad_before: usize, pad_after: usize) -> AxisGeometry {
    AxisGeometry {
        stride,
        dilation,
        pad_before,
        pad_after,
    }
}

/// Cases that reach every tiled and chunked path, whatever the random ones draw: kernel 9 with
/// 60-64 channels on both sides (two shared-memory chunks forward and transposed), more than
/// eight output and input channels (several `blockIdx.y` tiles), strided and dilated axes, an
/// inner axis (`inner > 1`) and an outer one.
fn fixed_along_cases() -> Vec<Along> {
    vec![
        Along {
            batch: 2,
            r_in: 64,
            r_out: 60,
            spatial: vec![40],
            axis: 0,
            k: 9,
            g: geom(1, 1, 4, 4),
            seed: 1,
        },
        Along {
            batch: 3,
            r_in: 60,
            r_out: 64,
            spatial: vec![13, 11],
            axis: 0,
            k: 9,
            g: geom(2, 1, 3, 5),
            seed: 2,
        },
        Along {
            batch: 2,
            r_in: 61,
            r_out: 33,
            spatial: vec![7, 30],
            axis: 1,
            k: 9,
            g: geom(1, 2, 8, 8),
            seed: 3,
        },
        Along {
            batch: 2,
            r_in: 9,
            r_out: 17,
            spatial: vec![6, 20, 5],
            axis: 1,
            k: 3,
            g: geom(3, 2, 2, 1),
            seed: 4,
        },
    ]
}

fn random_along_case() -> impl Strategy<Value = Along> {
    (
        (2usize..=3, 9usize..=64, 9usize..=64),
        prop::collection::vec(6usize..=16, 1..=2),
        prop_oneof![Just(1usize), Just(3), Just(5), Just(9)],
        (1usize..=3, 1usize..=2, 0usize..=4, 0usize..=4),
        any::<u64>(),
    )
        .prop_flat_map(|(sizes, spatial, k, (s, d, pb, pa), seed)| {
            let n = spatial.len();
            (Just((sizes, spatial, k, geom(s, d, pb, pa), seed)), 0..n)
        })
        .prop_map(
            |(((batch, r_in, r_out), spatial, k, g, seed), axis)| Along {
                batch,
                r_in,
                r_out,
                spatial,
                axis,
                k,
                g,
                seed,
            },
        )
        .prop_filter("non-empty output", |c| {
            c.g.output_len(c.spatial[c.axis], c.k).is_some()
        })
}

fn check_along<B: Backend>(be: &B, c: &Along) {
    let x_shape = [vec![c.batch, c.r_in], c.spatial.clone()].concat();
    let x = random(&x_shape, c.seed);
    let core = random(&[c.r_in, c.k, c.r_out], c.seed ^ 1);
    let xd = be.upload(x.view()).unwrap();
    let cd = be.upload_weights(core.view()).unwrap();

    let y = be
        .download(&be.conv_along(&xd, c.axis, &cd, c.g).unwrap())
        .unwrap();
    let want = ref_along(&x, c.axis, &core, c.g);
    let a = ref_along(&abs(&x), c.axis, &abs(&core), c.g);
    assert_within_sum_bound("conv_along forward", &y, &want, &a, c.r_in * c.k);

    let gy = random(want.shape(), c.seed ^ 2);
    let gyd = be.upload(gy.view()).unwrap();
    let (gx, gcore) = ref_along_grads(&x, c.axis, &core, c.g, &gy);
    let (agx, agcore) = ref_along_grads(&abs(&x), c.axis, &abs(&core), c.g, &abs(&gy));
    let len = c.spatial[c.axis];
    let got = be
        .download(
            &be.conv_along_grad_input(&gyd, c.axis, &cd, c.g, len)
                .unwrap(),
        )
        .unwrap();
    assert_within_sum_bound("conv_along grad input", &got, &gx, &agx, c.r_out * c.k);
    let got = be
        .conv_along_grad_weight(&xd, &gyd, c.axis, c.k, c.g)
        .unwrap();
    let got = be.download(&got).unwrap();
    let positions = want.len() / c.r_out;
    assert_within_sum_bound("conv_along grad core", &got, &gcore, &agcore, positions);
}

fn conv_along_at_realistic_sizes<B: Backend>(be: &B) {
    for c in fixed_along_cases() {
        check_along(be, &c);
    }
    let mut runner = TestRunner::new(Config {
        cases: 6,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&random_along_case(), |c| {
            check_along(be, &c);
            Ok(())
        })
        .unwrap();
}

/// Channel contraction with bias, `cin -> cout` in 9..=64 (and 1x1 dense convolutions of the
/// same sizes through the GEMM-only path), forward and every gradient.
fn contraction_at_realistic_sizes<B: Backend>(be: &B) {
    for (batch, cin, cout, spatial, seed) in [
        (2, 64, 9, vec![12, 10], 11u64),
        (3, 9, 64, vec![50], 12),
        (2, 37, 50, vec![4, 5, 6], 13),
    ] {
        let x_shape = [vec![batch, cin], spatial.clone()].concat();
        let x = random(&x_shape, seed);
        let w = random(&[cin, cout], seed ^ 1);
        let b = random(&[cout], seed ^ 2);
        let (xd, wd) = (
            be.upload(x.view()).unwrap(),
            be.upload_weights(w.view()).unwrap(),
        );
        let bd = be.upload_weights(b.view()).unwrap();
        let y = be
            .download(&be.contract_channels(&xd, &wd, Some(&bd)).unwrap())
            .unwrap();
        let want = ref_contract(&x, &w, Some(&b));
        let a = ref_contract(&abs(&x), &abs(&w), Some(&abs(&b)));
        assert_within_sum_bound("contract forward", &y, &want, &a, cin + 1);

        let gy = random(want.shape(), seed ^ 3);
        let gyd = be.upload(gy.view()).unwrap();
        let (gx, gw, gb) = ref_contract_grads(&x, &w, &gy);
        let (agx, agw, agb) = ref_contract_grads(&abs(&x), &abs(&w), &abs(&gy));
        let positions = batch * spatial.iter().product::<usize>();
        let got = be
            .download(&be.contract_channels_grad_input(&gyd, &wd).unwrap())
            .unwrap();
        assert_within_sum_bound("contract grad input", &got, &gx, &agx, cout);
        let got = be.contract_channels_grad_weight(&xd, &gyd).unwrap();
        let got = be.download(&got).unwrap();
        assert_within_sum_bound("contract grad weight", &got, &gw, &agw, positions);
        let got = be.bias_grad(&gyd).unwrap();
        let got = be.download(&got).unwrap();
        assert_within_sum_bound("bias grad", &got, &gb, &agb, positions);

        // The same contraction as a 1x1 dense convolution (the GEMM-only path).
        let kernel = contraction_kernel(&w, spatial.len());
        let kd = be.upload_weights(kernel.view()).unwrap();
        let unit = vec![AxisGeometry::UNIT; spatial.len()];
        let y = be
            .download(&be.conv_dense(&xd, &kd, Some(&bd), &unit).unwrap())
            .unwrap();
        assert_within_sum_bound("pointwise dense forward", &y, &want, &a, cin + 1);
    }
}

/// Dense convolution (im2col + GEMM) with more than eight output channels, strided, dilated
/// and padded, batch 2, forward and gradients.
fn dense_at_realistic_sizes<B: Backend>(be: &B) {
    let geometry = [geom(2, 1, 1, 2), geom(1, 2, 2, 2)];
    let (batch, cin, cout, spatial, ksize) = (2, 12, 24, [11usize, 9usize], [3usize, 3usize]);
    let x = random(&[batch, cin, spatial[0], spatial[1]], 21);
    let kernel = random(&[cout, cin, ksize[0], ksize[1]], 22);
    let b = random(&[cout], 23).into_dimensionality::<Ix1>().unwrap();
    let xd = be.upload(x.view()).unwrap();
    let kd = be.upload_weights(kernel.view()).unwrap();
    let bd = be.upload_weights(b.view().into_dyn()).unwrap();
    let y = be
        .download(&be.conv_dense(&xd, &kd, Some(&bd), &geometry).unwrap())
        .unwrap();
    let want = conv_nd(x.view(), kernel.view(), Some(b.view()), &geometry).unwrap();
    let ab = b.mapv(f32::abs);
    let a = conv_nd(
        abs(&x).view(),
        abs(&kernel).view(),
        Some(ab.view()),
        &geometry,
    )
    .unwrap();
    assert_within_sum_bound("dense forward", &y, &want, &a, cin * 9 + 1);

    let gy = random(want.shape(), 24);
    let gyd = be.upload(gy.view()).unwrap();
    let (gx, gk, _) = conv_nd_grads(x.view(), kernel.view(), gy.view(), &geometry).unwrap();
    let (agx, agk, _) = conv_nd_grads(
        abs(&x).view(),
        abs(&kernel).view(),
        abs(&gy).view(),
        &geometry,
    )
    .unwrap();
    let got = be
        .download(
            &be.conv_dense_grad_input(&gyd, &kd, &geometry, &spatial)
                .unwrap(),
        )
        .unwrap();
    assert_within_sum_bound("dense grad input", &got, &gx, &agx, cout * 9);
    let got = be
        .conv_dense_grad_weight(&xd, &gyd, &ksize, &geometry)
        .unwrap();
    let got = be.download(&got).unwrap();
    let positions = want.len() / cout;
    assert_within_sum_bound("dense grad kernel", &got, &gk, &agk, positions);
}

#[test]
fn cuda_conv_along_at_realistic_sizes() {
    let Some(gpu) = backend() else { return };
    conv_along_at_realistic_sizes(&*gpu);
}

#[test]
fn cuda_contraction_at_realistic_sizes() {
    let Some(gpu) = backend() else { return };
    contraction_at_realistic_sizes(&*gpu);
}

#[test]
fn cuda_dense_at_realistic_sizes() {
    let Some(gpu) = backend() else { return };
    dense_at_realistic_sizes(&*gpu);
}

#[test]
fn cuda_realistic_sizes_with_sync_after_each_launch() {
    // The debugging mode computes the same results (it only waits after each launch).
    let Some(gpu) = backend() else { return };
    let synced = gpu.clone().with_sync_after_each_launch(true);
    assert!(synced.syncs_after_each_launch());
    check_along(&synced, &fixed_along_cases()[1]);
}

#[test]
fn cpu_conv_along_at_realistic_sizes() {
    conv_along_at_realistic_sizes(&CpuBackend::new());
}

#[test]
fn cpu_contraction_at_realistic_sizes() {
    contraction_at_realistic_sizes(&CpuBackend::new());
}

#[test]
fn cpu_dense_at_realistic_sizes() {
    dense_at_realistic_sizes(&CpuBackend::new());
}
