//! CUDA backend vs CPU backend vs the direct oracle: every primitive, forward and backward, run
//! through the `Backend` trait on both backends with the same inputs (orders 1-3, random
//! channels, sizes, strides, asymmetric paddings and dilations).
//!
//! Skips with `skipped: <reason>` where there is no usable CUDA.

mod common;

use common::*;
use ndarray::{ArrayD, Ix1};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ttconv::oracle::{conv_nd, conv_nd_grads};
use ttconv::output_spatial;
use ttconv::{AxisGeometry, Backend};
use ttconv_cpu::CpuBackend;

/// Largest relative difference accepted (to the largest reference magnitude, at least 1).
const TOL: f32 = 1e-4;

/// One random problem: a dense convolution of order 1-3 plus a spatial axis for the 1-D one.
#[derive(Clone, Debug)]
struct Problem {
    batch: usize,
    cin: usize,
    cout: usize,
    spatial: Vec<usize>,
    ksize: Vec<usize>,
    geometry: Vec<AxisGeometry>,
    axis: usize,
    seed: u64,
}

fn problem() -> impl Strategy<Value = Problem> {
    let geometry =
        (1usize..=3, 1usize..=2, 0usize..=2, 0usize..=2).prop_map(|(s, d, pb, pa)| AxisGeometry {
            stride: s,
            dilation: d,
            pad_before: pb,
            pad_after: pa,
        });
    (1usize..=3)
        .prop_flat_map(move |d| {
            (
                (1usize..=3, 1usize..=6, 1usize..=6),
                prop::collection::vec(1usize..=7, d),
                prop::collection::vec(1usize..=3, d),
                prop::collection::vec(geometry.clone(), d),
                0..d,
                any::<u64>(),
            )
        })
        .prop_map(
            |((batch, cin, cout), spatial, ksize, geometry, axis, seed)| Problem {
                batch,
                cin,
                cout,
                spatial,
                ksize,
                geometry,
                axis,
                seed,
            },
        )
        .prop_filter("non-empty output", |p| {
            output_spatial(&p.spatial, &p.ksize, &p.geometry).is_ok()
        })
}

/// Runs every primitive of `be` on the problem's inputs and returns the named host results.
fn primitives<B: Backend>(be: &B, p: &Problem) -> Vec<(&'static str, ArrayD<f32>)> {
    let x_shape = [vec![p.batch, p.cin], p.spatial.clone()].concat();
    let x = random(&x_shape, p.seed);
    let w = random(&[p.cin, p.cout], p.seed ^ 1);
    let bias = random(&[p.cout], p.seed ^ 2);
    let core = random(&[p.cin, p.ksize[p.axis], p.cout], p.seed ^ 3);
    let kernel = random(&[vec![p.cout, p.cin], p.ksize.clone()].concat(), p.seed ^ 4);
    let g = p.geometry[p.axis];
    let k = p.ksize[p.axis];

    let xd = be.upload(x.view()).unwrap();
    let wd = be.upload_weights(w.view()).unwrap();
    let bd = be.upload_weights(bias.view()).unwrap();
    let cd = be.upload_weights(core.view()).unwrap();
    let kd = be.upload_weights(kernel.view()).unwrap();
    let mut out = Vec::new();

    let y = be.contract_channels(&xd, &wd, Some(&bd)).unwrap();
    let gy = be.upload(random(&be.shape(&y), p.seed ^ 5).view()).unwrap();
    out.push(("contract", be.download(&y).unwrap()));
    let gx = be.contract_channels_grad_input(&gy, &wd).unwrap();
    out.push(("contract grad input", be.download(&gx).unwrap()));
    let gw = be.contract_channels_grad_weight(&xd, &gy).unwrap();
    out.push(("contract grad weight", be.download(&gw).unwrap()));
    let gb = be.bias_grad(&gy).unwrap();
    out.push(("bias grad", be.download(&gb).unwrap()));

    if g.output_len(p.spatial[p.axis], k).is_some() {
        let y = be.conv_along(&xd, p.axis, &cd, g).unwrap();
        let gy = be.upload(random(&be.shape(&y), p.seed ^ 6).view()).unwrap();
        out.push(("conv_along", be.download(&y).unwrap()));
        let gx = be
            .conv_along_grad_input(&gy, p.axis, &cd, g, p.spatial[p.axis])
            .unwrap();
        out.push(("conv_along grad input", be.download(&gx).unwrap()));
        let gc = be.conv_along_grad_weight(&xd, &gy, p.axis, k, g).unwrap();
        out.push(("conv_along grad core", be.download(&gc).unwrap()));
    }

    let y = be.conv_dense(&xd, &kd, Some(&bd), &p.geometry).unwrap();
    let gy = be.upload(random(&be.shape(&y), p.seed ^ 7).view()).unwrap();
    out.push(("conv_dense", be.download(&y).unwrap()));
    let gx = be
        .conv_dense_grad_input(&gy, &kd, &p.geometry, &p.spatial)
        .unwrap();
    out.push(("conv_dense grad input", be.download(&gx).unwrap()));
    let gk = be
        .conv_dense_grad_weight(&xd, &gy, &p.ksize, &p.geometry)
        .unwrap();
    out.push(("conv_dense grad kernel", be.download(&gk).unwrap()));
    out
}

/// The oracle's values of the dense-convolution entries of [`primitives`].
fn oracle_dense(p: &Problem) -> Vec<(&'static str, ArrayD<f32>)> {
    let x = random(&[vec![p.batch, p.cin], p.spatial.clone()].concat(), p.seed);
    let bias = random(&[p.cout], p.seed ^ 2)
        .into_dimensionality::<Ix1>()
        .unwrap();
    let kernel = random(&[vec![p.cout, p.cin], p.ksize.clone()].concat(), p.seed ^ 4);
    let y = conv_nd(x.view(), kernel.view(), Some(bias.view()), &p.geometry).unwrap();
    let gy = random(y.shape(), p.seed ^ 7);
    let (gx, gk, _) = conv_nd_grads(x.view(), kernel.view(), gy.view(), &p.geometry).unwrap();
    vec![
        ("conv_dense", y),
        ("conv_dense grad input", gx),
        ("conv_dense grad kernel", gk),
    ]
}

#[test]
fn cuda_matches_cpu_and_oracle_on_every_primitive() {
    let Some(cuda) = backend() else { return };
    let cpu = CpuBackend::new();
    let mut runner = TestRunner::new(Config {
        cases: 32,
        max_shrink_iters: 64,
        ..Config::default()
    });
    runner
        .run(&problem(), |p| {
            let on_cuda = primitives(&*cuda, &p);
            let on_cpu = primitives(&cpu, &p);
            prop_assert_eq!(on_cuda.len(), on_cpu.len());
            for ((name, a), (_, b)) in on_cuda.iter().zip(&on_cpu) {
                assert_close(&format!("{name}: cuda vs cpu"), a, b, TOL);
            }
            for (name, want) in oracle_dense(&p) {
                let (_, got) = on_cuda.iter().find(|(n, _)| *n == name).unwrap();
                assert_close(&format!("{name}: cuda vs oracle"), got, &want, TOL);
            }
            Ok(())
        })
        .unwrap();
}

/// The same suite with the CPU backend alone against the oracle: keeps the harness above
/// ([`primitives`], [`oracle_dense`]) verified on machines without a GPU.
#[test]
fn suite_self_check_cpu_matches_oracle() {
    let cpu = CpuBackend::new();
    let mut runner = TestRunner::new(Config {
        cases: 16,
        max_shrink_iters: 64,
        ..Config::default()
    });
    runner
        .run(&problem(), |p| {
            let on_cpu = primitives(&cpu, &p);
            for (name, want) in oracle_dense(&p) {
                let (_, got) = on_cpu.iter().find(|(n, _)| *n == name).unwrap();
                assert_close(&format!("{name}: cpu vs oracle"), got, &want, TOL);
            }
            Ok(())
        })
        .unwrap();
}
