//! The CPU backend's fused `factorized_forward` (tiles carried through the layer program's
//! steps, cores merged where the program merges them) against the plain unfused chain of
//! primitives, over random shapes, ranks,
//! strides, paddings, dilations and orders 1-4, and on a few larger layers that take every path
//! (slabs with halos at batch 1, packed and shifted convolutions, wide GEMM tiles).

mod common;

use common::{
    Case, REL, assert_close_scaled, capped, case, layer_from_factors, out_spatial, random,
    simd_cap, squared, term_scale,
};
use ndarray::ArrayD;
use proptest::prelude::*;
use ttconv::{AxisGeometry, Backend, FactorizedWeights};
use ttconv_cpu::{CpuBackend, SimdLevel};

/// The default chain of `Backend::factorized_forward`, primitive by primitive.
fn unfused(
    be: &CpuBackend,
    x: &ArrayD<f32>,
    w: &FactorizedWeights<CpuBackend>,
    geometry: &[AxisGeometry],
) -> ArrayD<f32> {
    let mut z = be.contract_channels(x, &w.first, None).unwrap();
    for (axis, (core, g)) in w.spatial.iter().zip(geometry).enumerate() {
        z = be.conv_along(&z, axis, core, *g).unwrap();
    }
    be.contract_channels(&z, &w.last, w.bias.as_ref()).unwrap()
}

/// Runs both on random data and compares.
fn check(
    batch: usize,
    cin: usize,
    cout: usize,
    spatial: &[usize],
    kernel: &[usize],
    ranks: &[usize],
    geometry: &[AxisGeometry],
    bias: bool,
    seed: u64,
) {
    check_at(
        SimdLevel::Auto,
        batch,
        cin,
        cout,
        spatial,
        kernel,
        ranks,
        geometry,
        bias,
        seed,
    );
}

/// [`check`] with the fused chain's kernels capped at `simd`.
fn check_at(
    simd: SimdLevel,
    batch: usize,
    cin: usize,
    cout: usize,
    spatial: &[usize],
    kernel: &[usize],
    ranks: &[usize],
    geometry: &[AxisGeometry],
    bias: bool,
    seed: u64,
) {
    let be = capped(simd);
    let d = spatial.len();
    let mut xs = vec![batch, cin];
    xs.extend(spatial);
    let x = random(&xs, seed);
    let first = random(&[cin, ranks[0]], seed + 1);
    let cores: Vec<ArrayD<f32>> = (0..d)
        .map(|j| random(&[ranks[j], kernel[j], ranks[j + 1]], seed + 2 + j as u64))
        .collect();
    let last = random(&[ranks[d], cout], seed + 10);
    let bias = bias.then(|| random(&[cout], seed + 11));
    let upload = |f: &dyn Fn(&ArrayD<f32>) -> ArrayD<f32>| {
        let up = |a: &ArrayD<f32>| be.upload_weights(f(a).view()).unwrap();
        FactorizedWeights::<CpuBackend> {
            first: up(&first),
            spatial: cores.iter().map(up).collect(),
            last: up(&last),
            bias: bias.as_ref().map(up),
        }
    };
    let weights = upload(&|a| a.clone());
    let xt = be.upload(x.view()).unwrap();
    let want = unfused(&be, &xt, &weights, geometry);
    let terms = term_scale(&unfused(&be, &squared(&xt), &upload(&squared), geometry));
    let layer = layer_from_factors(&first, &cores, &last, bias.as_ref(), geometry);
    let prepared = layer.prepare(&be).unwrap();
    let program = layer.program(&xs).unwrap();
    let step_weights = prepared.step_weights(&program).unwrap();
    // Twice: the second call runs on warm workspaces and cached merged cores.
    for _ in 0..2 {
        let got = be.factorized_forward(&xt, &program, &step_weights).unwrap();
        // Both sides are f32 chains summing in different orders (and, where cores are merged,
        // associating differently): a few 1e-6 relative to the size of the terms.
        assert_close_scaled("fused factorized_forward", &got, &want, terms, 4.0 * REL);
    }
}

/// Multiply-adds of the unfused chain; `usize::MAX` (rejected) when the output is empty.
fn work(c: &Case) -> usize {
    match out_spatial(c, |_| true) {
        Some(_) => c.batch * c.positions() * (c.cin + c.cout) * 64,
        None => usize::MAX,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fused_equals_unfused_chain(
        c in case(work, 4_000_000),
        ranks in prop::collection::vec(1usize..=24, 5),
        simd in simd_cap(),
    ) {
        let d = c.axes.len();
        check_at(
            simd,
            c.batch,
            c.cin,
            c.cout,
            &c.in_spatial(),
            &c.kernel_sizes(),
            &ranks[..=d],
            &c.geometry(),
            c.bias,
            c.seed,
        );
    }
}

fn same(k: usize, stride: usize, dilation: usize) -> AxisGeometry {
    let pad = dilation * (k - 1) / 2;
    AxisGeometry {
        stride,
        dilation,
        pad_before: pad,
        pad_after: pad,
    }
}

#[test]
fn two_d_batch_one_in_slabs() {
    // Batch 1: the rows are cut into slabs with halos; ranks above the channel count merge the
    // input contraction into the first core.
    let g = same(3, 1, 1);
    check(1, 12, 10, &[40, 37], &[3, 3], &[9, 7, 5], &[g, g], true, 1);
    check(1, 4, 10, &[40, 37], &[3, 3], &[20, 3, 30], &[g, g], true, 2);
}

#[test]
fn two_d_strided_and_dilated() {
    let g0 = same(3, 2, 1);
    let g1 = same(3, 2, 2);
    check(
        2,
        16,
        24,
        &[33, 30],
        &[3, 3],
        &[8, 8, 8],
        &[g0, g1],
        true,
        3,
    );
    check(
        1,
        16,
        24,
        &[33, 30],
        &[3, 5],
        &[8, 2, 8],
        &[g1, g0],
        false,
        4,
    );
}

#[test]
fn one_d_long_lines() {
    let g = same(9, 1, 1);
    check(2, 20, 12, &[700], &[9], &[16, 16], &[g], true, 5);
    check(1, 20, 12, &[700], &[9], &[40, 3], &[g], false, 6);
}

#[test]
fn three_d_small_batch() {
    let g = same(3, 1, 1);
    check(
        1,
        8,
        8,
        &[6, 12, 11],
        &[3, 3, 3],
        &[10, 9, 11, 10],
        &[g, g, g],
        true,
        7,
    );
}
