//! CUDA backend vs the direct oracle (`ttconv::oracle`), every primitive, forward and backward,
//! orders 1-3, random channels, sizes, strides, asymmetric paddings and dilations.
//!
//! Every CUDA test starts with [`common::backend`], which prints `skipped: <reason>` and returns
//! when the machine has no usable CUDA; the random cases then never run. The backend-generic
//! checks also run on the CPU backend (`cpu_*` tests), which keeps the suite itself (references,
//! shapes, tolerances) verified on machines without a GPU.

mod common;

use common::*;
use ndarray::{ArrayD, Ix1, IxDyn};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ttconv::oracle::{conv_nd, conv_nd_grads};
use ttconv::output_spatial;
use ttconv::{AxisGeometry, Backend, Padding, TtConv, TtConvConfig, TtTensor};
use ttconv_cpu::CpuBackend;
use ttconv_cuda::CudaBackend;

/// Relative tolerance (to the largest reference magnitude, at least 1) of every comparison.
const TOL: f32 = 1e-4;

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        max_shrink_iters: 64,
        ..Config::default()
    })
}

fn geometry() -> impl Strategy<Value = AxisGeometry> {
    (1usize..=3, 1usize..=2, 0usize..=2, 0usize..=2).prop_map(|(stride, dilation, pb, pa)| {
        AxisGeometry {
            stride,
            dilation,
            pad_before: pb,
            pad_after: pa,
        }
    })
}

/// One random convolution problem of order 1 to 3.
#[derive(Clone, Debug)]
struct Case {
    batch: usize,
    cin: usize,
    cout: usize,
    spatial: Vec<usize>,
    ksize: Vec<usize>,
    geometry: Vec<AxisGeometry>,
    bias: bool,
    seed: u64,
}

impl Case {
    fn x_shape(&self) -> Vec<usize> {
        [vec![self.batch, self.cin], self.spatial.clone()].concat()
    }
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=3)
        .prop_flat_map(|d| {
            (
                1usize..=3,
                1usize..=6,
                1usize..=6,
                prop::collection::vec(1usize..=7, d),
                prop::collection::vec(1usize..=3, d),
                prop::collection::vec(geometry(), d),
                any::<bool>(),
                any::<u64>(),
            )
        })
        .prop_map(
            |(batch, cin, cout, spatial, ksize, geometry, bias, seed)| Case {
                batch,
                cin,
                cout,
                spatial,
                ksize,
                geometry,
                bias,
                seed,
            },
        )
        .prop_filter("non-empty output", |c| {
            output_spatial(&c.spatial, &c.ksize, &c.geometry).is_ok()
        })
}

/// Defines `#[test] fn cuda_<name>` (skipping without CUDA) and `#[test] fn cpu_<name>` that
/// run the backend-generic check `<name>` on each backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod cuda {
            $(
                #[test]
                fn $name() {
                    let Some(cuda) = super::backend() else { return };
                    super::$name(&*cuda);
                }
            )*
        }
        mod cpu {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::CpuBackend::new());
                }
            )*
        }
    };
}

on_both_backends!(
    contract_channels_forward_and_backward_match_oracle,
    conv_along_forward_and_backward_match_oracle,
    conv_dense_forward_and_backward_match_oracle,
    factorized_forward_matches_dense_oracle_of_reconstructed_kernel,
    order_four_dense_and_pointwise_paths_match_oracle,
);

fn contract_channels_forward_and_backward_match_oracle<B: Backend>(cuda: &B) {
    runner(24)
        .run(&case(), |c| {
            let x = random(&c.x_shape(), c.seed);
            let w = random(&[c.cin, c.cout], c.seed ^ 1);
            let b = random(&[c.cout], c.seed ^ 2);
            let xd = cuda.upload(x.view()).unwrap();
            let wd = cuda.upload_weights(w.view()).unwrap();
            let bd = cuda.upload_weights(b.view()).unwrap();

            let y = cuda
                .contract_channels(&xd, &wd, c.bias.then_some(&bd))
                .unwrap();
            let want = ref_contract(&x, &w, c.bias.then_some(&b));
            assert_close("contract forward", &cuda.download(&y).unwrap(), &want, TOL);

            let gy = random(want.shape(), c.seed ^ 3);
            let gyd = cuda.upload(gy.view()).unwrap();
            let (gx, gw, gb) = ref_contract_grads(&x, &w, &gy);
            let got_gx = cuda.contract_channels_grad_input(&gyd, &wd).unwrap();
            assert_close(
                "contract grad input",
                &cuda.download(&got_gx).unwrap(),
                &gx,
                TOL,
            );
            let got_gw = cuda.contract_channels_grad_weight(&xd, &gyd).unwrap();
            assert_close(
                "contract grad weight",
                &cuda.download(&got_gw).unwrap(),
                &gw,
                TOL,
            );
            let got_gb = cuda.bias_grad(&gyd).unwrap();
            assert_close("bias grad", &cuda.download(&got_gb).unwrap(), &gb, TOL);
            Ok(())
        })
        .unwrap();
}

fn conv_along_forward_and_backward_match_oracle<B: Backend>(cuda: &B) {
    let strategy = case().prop_flat_map(|c| {
        let d = c.spatial.len();
        (Just(c), 0..d)
    });
    runner(32)
        .run(&strategy, |(c, axis)| {
            let g = c.geometry[axis];
            let k = c.ksize[axis];
            prop_assume!(g.output_len(c.spatial[axis], k).is_some());
            let x = random(&c.x_shape(), c.seed);
            let core = random(&[c.cin, k, c.cout], c.seed ^ 5);
            let xd = cuda.upload(x.view()).unwrap();
            let cd = cuda.upload_weights(core.view()).unwrap();

            let y = cuda.conv_along(&xd, axis, &cd, g).unwrap();
            let want = ref_along(&x, axis, &core, g);
            assert_close(
                "conv_along forward",
                &cuda.download(&y).unwrap(),
                &want,
                TOL,
            );

            let gy = random(want.shape(), c.seed ^ 6);
            let gyd = cuda.upload(gy.view()).unwrap();
            let (gx, gcore) = ref_along_grads(&x, axis, &core, g, &gy);
            let got_gx = cuda
                .conv_along_grad_input(&gyd, axis, &cd, g, c.spatial[axis])
                .unwrap();
            assert_close(
                "conv_along grad input",
                &cuda.download(&got_gx).unwrap(),
                &gx,
                TOL,
            );
            let got_gc = cuda.conv_along_grad_weight(&xd, &gyd, axis, k, g).unwrap();
            assert_close(
                "conv_along grad core",
                &cuda.download(&got_gc).unwrap(),
                &gcore,
                TOL,
            );
            Ok(())
        })
        .unwrap();
}

fn conv_dense_forward_and_backward_match_oracle<B: Backend>(cuda: &B) {
    runner(32)
        .run(&case(), |c| {
            let x = random(&c.x_shape(), c.seed);
            let kshape = [vec![c.cout, c.cin], c.ksize.clone()].concat();
            let kernel = random(&kshape, c.seed ^ 7);
            let b = random(&[c.cout], c.seed ^ 8)
                .into_dimensionality::<Ix1>()
                .unwrap();
            let xd = cuda.upload(x.view()).unwrap();
            let kd = cuda.upload_weights(kernel.view()).unwrap();
            let bd = cuda.upload_weights(b.view().into_dyn()).unwrap();

            let y = cuda
                .conv_dense(&xd, &kd, c.bias.then_some(&bd), &c.geometry)
                .unwrap();
            let want = conv_nd(
                x.view(),
                kernel.view(),
                c.bias.then_some(b.view()),
                &c.geometry,
            )
            .unwrap();
            assert_close(
                "conv_dense forward",
                &cuda.download(&y).unwrap(),
                &want,
                TOL,
            );

            let gy = random(want.shape(), c.seed ^ 9);
            let gyd = cuda.upload(gy.view()).unwrap();
            let (gx, gk, gb) =
                conv_nd_grads(x.view(), kernel.view(), gy.view(), &c.geometry).unwrap();
            let got_gx = cuda
                .conv_dense_grad_input(&gyd, &kd, &c.geometry, &c.spatial)
                .unwrap();
            assert_close(
                "conv_dense grad input",
                &cuda.download(&got_gx).unwrap(),
                &gx,
                TOL,
            );
            let got_gk = cuda
                .conv_dense_grad_weight(&xd, &gyd, &c.ksize, &c.geometry)
                .unwrap();
            assert_close(
                "conv_dense grad kernel",
                &cuda.download(&got_gk).unwrap(),
                &gk,
                TOL,
            );
            let got_gb = cuda.bias_grad(&gyd).unwrap();
            assert_close(
                "conv_dense grad bias",
                &cuda.download(&got_gb).unwrap(),
                &gb.into_dyn(),
                TOL,
            );
            Ok(())
        })
        .unwrap();
}

/// A layer with the given cores (`first (in, r_1)`, spatial `(r_j, k_j, r_{j+1})`,
/// `last (r_{d+1}, out)`) and bias, and the case's geometry.
fn layer_from_cores(
    first: &ArrayD<f32>,
    spatial: &[ArrayD<f32>],
    last: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    c: &Case,
) -> TtConv {
    let config = TtConvConfig::new(c.cin, c.cout, c.ksize.clone())
        .stride(c.geometry.iter().map(|g| g.stride).collect::<Vec<_>>())
        .dilation(c.geometry.iter().map(|g| g.dilation).collect::<Vec<_>>())
        .padding(Padding::Asymmetric(
            c.geometry
                .iter()
                .map(|g| (g.pad_before, g.pad_after))
                .collect(),
        ))
        .bias(bias.is_some());
    let mut cores = vec![first.clone().insert_axis(ndarray::Axis(0))];
    cores.extend(spatial.iter().cloned());
    cores.push(last.clone().insert_axis(ndarray::Axis(2)));
    let cores = cores
        .into_iter()
        .map(|core| core.into_dimensionality::<ndarray::Ix3>().unwrap())
        .collect();
    let mut layer = TtConv::new(config).unwrap();
    let bias = bias.map(|b| b.clone().into_dimensionality::<Ix1>().unwrap());
    layer
        .init_from_decomposition(
            TtTensor::new(cores).unwrap(),
            bias.as_ref().map(|b| b.view()),
        )
        .unwrap();
    layer
}

fn factorized_forward_matches_dense_oracle_of_reconstructed_kernel<B: Backend>(cuda: &B) {
    let strategy = case().prop_flat_map(|c| {
        let d = c.spatial.len();
        (Just(c), prop::collection::vec(1usize..=5, d + 1))
    });
    runner(24)
        .run(&strategy, |(c, ranks)| {
            let d = c.spatial.len();
            let first = random(&[c.cin, ranks[0]], c.seed ^ 11);
            let spatial: Vec<ArrayD<f32>> = (0..d)
                .map(|j| {
                    random(
                        &[ranks[j], c.ksize[j], ranks[j + 1]],
                        c.seed ^ (20 + j as u64),
                    )
                })
                .collect();
            let last = random(&[ranks[d], c.cout], c.seed ^ 12);
            let b = random(&[c.cout], c.seed ^ 13);
            let layer = layer_from_cores(&first, &spatial, &last, c.bias.then_some(&b), &c);
            let prepared = layer.prepare(cuda).unwrap();
            let x = random(&c.x_shape(), c.seed);
            let xd = cuda.upload(x.view()).unwrap();
            let program = layer.program(&c.x_shape()).unwrap();
            let weights = prepared.step_weights(&program).unwrap();
            let y = cuda.factorized_forward(&xd, &program, &weights).unwrap();

            let full = reconstruct(&first, &spatial, &last);
            let b1 = b.clone().into_dimensionality::<Ix1>().unwrap();
            let want = conv_nd(
                x.view(),
                full.view(),
                c.bias.then_some(b1.view()),
                &c.geometry,
            )
            .unwrap();
            assert_close(
                "factorized forward",
                &cuda.download(&y).unwrap(),
                &want,
                TOL,
            );

            // The same layer through the reconstructed path on the device.
            let kd = cuda.upload_weights(full.view()).unwrap();
            let y_dense = cuda
                .conv_dense(&xd, &kd, weights.bias, &c.geometry)
                .unwrap();
            assert_close(
                "reconstructed forward",
                &cuda.download(&y_dense).unwrap(),
                &want,
                TOL,
            );

            // The training forward keeps every stage and gives the same output.
            let (y_train, inputs) = cuda
                .factorized_forward_train(cuda.upload(x.view()).unwrap(), &program, &weights)
                .unwrap();
            prop_assert_eq!(inputs.len(), program.steps().len());
            assert_close(
                "training forward",
                &cuda.download(&y_train).unwrap(),
                &want,
                TOL,
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn small_workspace_chunks_the_batch_with_the_same_results() {
    let Some(cuda) = backend() else { return };
    // One element of workspace forces one batch element per chunk everywhere.
    let cuda: &CudaBackend = &cuda;
    let tiny = cuda.clone().with_workspace_limit(1);
    let g = AxisGeometry {
        stride: 2,
        dilation: 2,
        pad_before: 2,
        pad_after: 1,
    };
    let geometry = [g, AxisGeometry::UNIT];
    let x = random(&[5, 3, 9, 6], 1);
    let kernel = random(&[4, 3, 3, 2], 2);
    let xd = cuda.upload(x.view()).unwrap();
    let kd = cuda.upload_weights(kernel.view()).unwrap();
    let y = conv_nd(x.view(), kernel.view(), None, &geometry).unwrap();
    let gy = random(y.shape(), 3);
    let gyd = cuda.upload(gy.view()).unwrap();
    let (gx, gk, _) = conv_nd_grads(x.view(), kernel.view(), gy.view(), &geometry).unwrap();
    for (name, be) in [("default", cuda), ("tiny", &tiny)] {
        let got = be
            .download(&be.conv_dense(&xd, &kd, None, &geometry).unwrap())
            .unwrap();
        assert_close(&format!("{name} forward"), &got, &y, TOL);
        let got = be
            .download(
                &be.conv_dense_grad_input(&gyd, &kd, &geometry, &[9, 6])
                    .unwrap(),
            )
            .unwrap();
        assert_close(&format!("{name} grad input"), &got, &gx, TOL);
        let got = be
            .conv_dense_grad_weight(&xd, &gyd, &[3, 2], &geometry)
            .unwrap();
        assert_close(
            &format!("{name} grad kernel"),
            &be.download(&got).unwrap(),
            &gk,
            TOL,
        );

        let core = random(&[3, 3, 4], 4);
        let ya = ref_along(&x, 0, &core, g);
        let gya = random(ya.shape(), 5);
        let gyad = be.upload(gya.view()).unwrap();
        let (_, gcore) = ref_along_grads(&x, 0, &core, g, &gya);
        let got = be.conv_along_grad_weight(&xd, &gyad, 0, 3, g).unwrap();
        assert_close(
            &format!("{name} grad core"),
            &be.download(&got).unwrap(),
            &gcore,
            TOL,
        );

        let w = random(&[3, 4], 6);
        let yc = ref_contract(&x, &w, None);
        let gyc = random(yc.shape(), 7);
        let gycd = be.upload(gyc.view()).unwrap();
        let (_, gw, _) = ref_contract_grads(&x, &w, &gyc);
        let got = be.contract_channels_grad_weight(&xd, &gycd).unwrap();
        assert_close(
            &format!("{name} grad weight"),
            &be.download(&got).unwrap(),
            &gw,
            TOL,
        );
    }
}

fn order_four_dense_and_pointwise_paths_match_oracle<B: Backend>(cuda: &B) {
    let geometry = [
        AxisGeometry::UNIT,
        AxisGeometry {
            stride: 2,
            dilation: 1,
            pad_before: 1,
            pad_after: 0,
        },
        AxisGeometry::UNIT,
        AxisGeometry {
            stride: 1,
            dilation: 2,
            pad_before: 0,
            pad_after: 2,
        },
    ];
    let x = random(&[2, 2, 3, 4, 2, 5], 1);
    let kernel = random(&[3, 2, 2, 3, 1, 2], 2);
    let xd = cuda.upload(x.view()).unwrap();
    let kd = cuda.upload_weights(kernel.view()).unwrap();
    let want = conv_nd(x.view(), kernel.view(), None, &geometry).unwrap();
    let got = cuda
        .download(&cuda.conv_dense(&xd, &kd, None, &geometry).unwrap())
        .unwrap();
    assert_close("order 4 forward", &got, &want, TOL);

    // A 1x1x1 kernel with stride 1 and no padding takes the GEMM-only path.
    let unit = [AxisGeometry::UNIT; 3];
    let x = random(&[3, 4, 3, 2, 5], 3);
    let kernel = random(&[5, 4, 1, 1, 1], 4);
    let xd = cuda.upload(x.view()).unwrap();
    let kd = cuda.upload_weights(kernel.view()).unwrap();
    let want = conv_nd(x.view(), kernel.view(), None, &unit).unwrap();
    let got = cuda
        .download(&cuda.conv_dense(&xd, &kd, None, &unit).unwrap())
        .unwrap();
    assert_close("pointwise forward", &got, &want, TOL);
    let gy = random(want.shape(), 5);
    let gyd = cuda.upload(gy.view()).unwrap();
    let (gx, gk, _) = conv_nd_grads(x.view(), kernel.view(), gy.view(), &unit).unwrap();
    let got = cuda
        .download(
            &cuda
                .conv_dense_grad_input(&gyd, &kd, &unit, &[3, 2, 5])
                .unwrap(),
        )
        .unwrap();
    assert_close("pointwise grad input", &got, &gx, TOL);
    let got = cuda
        .conv_dense_grad_weight(&xd, &gyd, &[1, 1, 1], &unit)
        .unwrap();
    assert_close(
        "pointwise grad kernel",
        &cuda.download(&got).unwrap(),
        &gk,
        TOL,
    );
}

#[test]
fn upload_download_round_trip_any_layout() {
    let Some(cuda) = backend() else { return };
    let x = random(&[2, 3, 4, 5], 9);
    let t = cuda.upload(x.view()).unwrap();
    assert_eq!(cuda.shape(&t), vec![2, 3, 4, 5]);
    assert_eq!(cuda.download(&t).unwrap(), x);
    // A transposed (non-contiguous) view uploads in logical row-major order.
    let xt = x.view().permuted_axes(IxDyn(&[0, 1, 3, 2]));
    let t = cuda.upload(xt.clone()).unwrap();
    assert_eq!(cuda.download(&t).unwrap(), xt.to_owned());
    assert_eq!(cuda.name(), "cuda:0");
}

#[test]
fn shape_mismatches_are_errors_not_panics() {
    let Some(cuda) = backend() else { return };
    let x = cuda.upload(random(&[1, 3, 5], 1).view()).unwrap();
    let w = cuda.upload_weights(random(&[4, 2], 2).view()).unwrap();
    assert!(cuda.contract_channels(&x, &w, None).is_err());
    let core = cuda.upload_weights(random(&[2, 3, 2], 3).view()).unwrap();
    assert!(cuda.conv_along(&x, 0, &core, AxisGeometry::UNIT).is_err());
    let core = cuda.upload_weights(random(&[3, 9, 2], 3).view()).unwrap();
    assert!(matches!(
        cuda.conv_along(&x, 0, &core, AxisGeometry::UNIT),
        Err(ttconv::Error::EmptyOutput { .. })
    ));
}
