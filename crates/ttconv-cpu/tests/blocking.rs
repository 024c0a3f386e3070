//! Shapes big enough to be cut into several rayon tasks, im2col blocks and reduction groups:
//! still equal to the oracle, and the weight gradients bit-identical whatever the thread count.

mod common;

use common::{REL, assert_close, random};
use ndarray::{ArrayD, IxDyn};
use ttconv::{AxisGeometry, Backend, oracle};
use ttconv_cpu::CpuBackend;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// Runs `f` on a 1-thread and a 3-thread pool and returns both results.
fn on_pools<T: Send>(f: impl Fn() -> T + Sync) -> (T, T) {
    (pool(1).install(&f), pool(3).install(&f))
}

#[test]
fn conv_along_blocks() {
    let be = CpuBackend::new();
    let x = random(&[1, 8, 40, 40], 1);
    for (axis, g) in [
        (
            0,
            AxisGeometry {
                stride: 1,
                dilation: 1,
                pad_before: 1,
                pad_after: 1,
            },
        ),
        (
            1,
            AxisGeometry {
                stride: 1,
                dilation: 2,
                pad_before: 2,
                pad_after: 0,
            },
        ),
        (
            0,
            AxisGeometry {
                stride: 2,
                dilation: 1,
                pad_before: 0,
                pad_after: 3,
            },
        ),
        (
            1,
            AxisGeometry {
                stride: 3,
                dilation: 1,
                pad_before: 1,
                pad_after: 1,
            },
        ),
    ] {
        let core = random(&[8, 3, 6], 2 + axis as u64);
        let mut ks = vec![6, 8, 1, 1];
        ks[axis + 2] = 3;
        let kernel = ArrayD::from_shape_fn(IxDyn(&ks), |i| core[[i[1], i[axis + 2], i[0]]]);
        let mut geometry = [AxisGeometry::UNIT; 2];
        geometry[axis] = g;
        let want = oracle::conv_nd(x.view(), kernel.view(), None, &geometry).unwrap();
        let cw = be.upload_weights(core.view()).unwrap();
        let (y1, y3) = on_pools(|| be.conv_along(&x, axis, &cw, g).unwrap());
        assert_close("conv_along 1 thread", &y1, &want, REL);
        assert_close("conv_along 3 threads", &y3, &want, REL);
        let gy = random(want.shape(), 9);
        let (gx, gk, _) =
            oracle::conv_nd_grads(x.view(), kernel.view(), gy.view(), &geometry).unwrap();
        let got_gx = be.conv_along_grad_input(&gy, axis, &cw, g, 40).unwrap();
        assert_close("conv_along_grad_input", &got_gx, &gx, REL);
        let (gc1, gc3) = on_pools(|| be.conv_along_grad_weight(&x, &gy, axis, 3, g).unwrap());
        assert_eq!(gc1, gc3, "core gradient depends on the thread count");
        let want_gc = ArrayD::from_shape_fn(IxDyn(&[8, 3, 6]), |i| {
            let mut idx = [i[2], i[0], 0, 0];
            idx[axis + 2] = i[1];
            gk[&idx[..]]
        });
        assert_close("conv_along_grad_weight", &gc1.into_dyn(), &want_gc, REL);
    }
}

#[test]
fn conv_dense_blocks() {
    let be = CpuBackend::new();
    let x = random(&[2, 64, 20, 20], 3);
    let kernel = random(&[8, 64, 3, 3], 4);
    let g = AxisGeometry {
        stride: 1,
        dilation: 1,
        pad_before: 1,
        pad_after: 1,
    };
    let geometry = [g, AxisGeometry { stride: 2, ..g }];
    let want = oracle::conv_nd(x.view(), kernel.view(), None, &geometry).unwrap();
    let kw = be.upload_weights(kernel.view()).unwrap();
    let (y1, y3) = on_pools(|| be.conv_dense(&x, &kw, None, &geometry).unwrap());
    assert_close("conv_dense 1 thread", &y1, &want, REL);
    assert_close("conv_dense 3 threads", &y3, &want, REL);
    let gy = random(want.shape(), 5);
    let (gx, gk, gb) =
        oracle::conv_nd_grads(x.view(), kernel.view(), gy.view(), &geometry).unwrap();
    let (gx1, gx3) = on_pools(|| {
        be.conv_dense_grad_input(&gy, &kw, &geometry, &[20, 20])
            .unwrap()
    });
    assert_close("conv_dense_grad_input 1 thread", &gx1, &gx, REL);
    assert_close("conv_dense_grad_input 3 threads", &gx3, &gx, REL);
    let (gk1, gk3) = on_pools(|| {
        be.conv_dense_grad_weight(&x, &gy, &[3, 3], &geometry)
            .unwrap()
    });
    assert_eq!(gk1, gk3, "kernel gradient depends on the thread count");
    assert_close("conv_dense_grad_weight", &gk1, &gk, REL);
    let (gb1, gb3) = on_pools(|| be.bias_grad(&gy).unwrap());
    assert_eq!(gb1, gb3);
    assert_close("bias_grad", &gb1.into_dyn(), &gb.into_dyn(), REL);
}

#[test]
fn contraction_blocks() {
    let be = CpuBackend::new();
    let x = random(&[1, 64, 32, 32], 6);
    let w = random(&[64, 16], 7);
    let kernel = ArrayD::from_shape_fn(IxDyn(&[16, 64, 1, 1]), |i| w[[i[1], i[0]]]);
    let geometry = [AxisGeometry::UNIT; 2];
    let want = oracle::conv_nd(x.view(), kernel.view(), None, &geometry).unwrap();
    let ww = be.upload_weights(w.view()).unwrap();
    let (y1, y3) = on_pools(|| be.contract_channels(&x, &ww, None).unwrap());
    assert_close("contract 1 thread", &y1, &want, REL);
    assert_close("contract 3 threads", &y3, &want, REL);
    let gy = random(want.shape(), 8);
    let (gx, gk, _) = oracle::conv_nd_grads(x.view(), kernel.view(), gy.view(), &geometry).unwrap();
    assert_close(
        "contract grad_input",
        &be.contract_channels_grad_input(&gy, &ww).unwrap(),
        &gx,
        REL,
    );
    let (gw1, gw3) = on_pools(|| be.contract_channels_grad_weight(&x, &gy).unwrap());
    assert_eq!(gw1, gw3, "weight gradient depends on the thread count");
    let want_gw = ArrayD::from_shape_fn(IxDyn(&[64, 16]), |i| gk[[i[1], i[0], 0, 0]]);
    assert_close("contract grad_weight", &gw1.into_dyn(), &want_gw, REL);
}

/// 512 channels x 9 taps: im2col blocks of 32 positions, so every task and reduction group
/// walks several blocks.
#[test]
fn conv_dense_wide_1d() {
    let be = CpuBackend::new();
    let x = random(&[1, 512, 600], 10);
    let kernel = random(&[2, 512, 9], 11);
    let geometry = [AxisGeometry {
        stride: 1,
        dilation: 1,
        pad_before: 2,
        pad_after: 2,
    }];
    let want = oracle::conv_nd(x.view(), kernel.view(), None, &geometry).unwrap();
    let kw = be.upload_weights(kernel.view()).unwrap();
    assert_close(
        "conv_dense",
        &be.conv_dense(&x, &kw, None, &geometry).unwrap(),
        &want,
        REL,
    );
    let gy = random(want.shape(), 12);
    let (gx, gk, _) = oracle::conv_nd_grads(x.view(), kernel.view(), gy.view(), &geometry).unwrap();
    let got_gx = be
        .conv_dense_grad_input(&gy, &kw, &geometry, &[600])
        .unwrap();
    assert_close("conv_dense_grad_input", &got_gx, &gx, REL);
    let (gk1, gk3) = on_pools(|| be.conv_dense_grad_weight(&x, &gy, &[9], &geometry).unwrap());
    assert_eq!(gk1, gk3, "kernel gradient depends on the thread count");
    assert_close("conv_dense_grad_weight", &gk1, &gk, REL);
}
