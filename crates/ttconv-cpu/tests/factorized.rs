//! The factorized forward of a layer's program, run through the CPU backend both fused and as the
//! trait's default chain of primitives, equals the dense convolution (f64 oracle) with the kernel
//! reconstructed from the TT cores by hand.

mod common;

use common::{REL, assert_close, layer_from_factors, random, vec1};
use ndarray::{ArrayD, IxDyn};
use ttconv::{AxisGeometry, Backend, oracle};
use ttconv_cpu::{CpuBackend, CpuOptions};

/// `W[o, c, t_1..t_d] = sum G0[c, a_1] G_1[a_1, t_1, a_2] .. G_d[a_d, t_d, a_{d+1}] G_last[a_{d+1}, o]`.
fn reconstruct(first: &ArrayD<f32>, cores: &[ArrayD<f32>], last: &ArrayD<f32>) -> ArrayD<f32> {
    let (cin, cout) = (first.shape()[0], last.shape()[1]);
    let mut shape = vec![cout, cin];
    shape.extend(cores.iter().map(|g| g.shape()[1]));
    ArrayD::from_shape_fn(IxDyn(&shape), |i| {
        let (o, c) = (i[0], i[1]);
        let mut v: Vec<f64> = (0..first.shape()[1])
            .map(|a| f64::from(first[[c, a]]))
            .collect();
        for (j, g) in cores.iter().enumerate() {
            let t = i[j + 2];
            v = (0..g.shape()[2])
                .map(|b| {
                    (0..g.shape()[0])
                        .map(|a| v[a] * f64::from(g[[a, t, b]]))
                        .sum()
                })
                .collect();
        }
        (0..last.shape()[0])
            .map(|a| v[a] * f64::from(last[[a, o]]))
            .sum::<f64>() as f32
    })
}

fn check(
    spatial: &[usize],
    kernel: &[usize],
    ranks: &[usize],
    geometry: &[AxisGeometry],
    seed: u64,
) {
    let be = CpuBackend::new();
    let d = spatial.len();
    let (batch, cin, cout) = (2, 3, 4);
    let mut xs = vec![batch, cin];
    xs.extend(spatial);
    let x = random(&xs, seed);
    let first = random(&[cin, ranks[0]], seed + 1);
    let cores: Vec<ArrayD<f32>> = (0..d)
        .map(|j| random(&[ranks[j], kernel[j], ranks[j + 1]], seed + 2 + j as u64))
        .collect();
    let last = random(&[ranks[d], cout], seed + 10);
    let bias = vec1(&random(&[cout], seed + 11));
    let bias_d = bias.clone().into_dyn();
    let layer = layer_from_factors(&first, &cores, &last, Some(&bias_d), geometry);
    let program = layer.program(&xs).unwrap();
    let unfused = CpuBackend::with_options(CpuOptions {
        fused: false,
        ..CpuOptions::default()
    });
    let full = reconstruct(&first, &cores, &last);
    let want = oracle::conv_nd(x.view(), full.view(), Some(bias.view()), geometry).unwrap();
    for be in [be, unfused] {
        let prepared = layer.prepare(&be).unwrap();
        let weights = prepared.step_weights(&program).unwrap();
        let got = be
            .factorized_forward(&be.upload(x.view()).unwrap(), &program, &weights)
            .unwrap();
        // A chain of d + 2 f32 steps instead of one f64 sum: still ~1e-6 relative.
        assert_close("factorized_forward", &got, &want, 2.0 * REL);
    }
}
#[test]
fn two_d_with_stride_padding_dilation() {
    let g0 = AxisGeometry {
        stride: 2,
        dilation: 1,
        pad_before: 1,
        pad_after: 2,
    };
    let g1 = AxisGeometry {
        stride: 1,
        dilation: 2,
        pad_before: 2,
        pad_after: 0,
    };
    check(&[7, 6], &[3, 2], &[2, 3, 2], &[g0, g1], 100);
}

#[test]
fn three_d_unit_geometry() {
    check(
        &[4, 5, 3],
        &[2, 3, 1],
        &[3, 2, 4, 2],
        &[AxisGeometry::UNIT; 3],
        200,
    );
}
