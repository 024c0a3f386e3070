//! `contract_channels` and its gradients against the f64 oracle: a channel contraction is a
//! convolution whose kernel sizes are all 1, `kernel[o, c, 1, .., 1] = w[c, o]`.

mod common;

use common::{
    Case, REL, assert_close, assert_close_scaled, case, conv_terms, grad_terms, random, vec1,
};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use ttconv::{AxisGeometry, Backend, oracle};
use ttconv_cpu::CpuBackend;

fn work(c: &Case) -> usize {
    c.batch * c.cin * c.cout * c.positions()
}

/// The oracle kernel `(out, in, 1, .., 1)` of the contraction `w (in, out)`.
fn pointwise_kernel(w: &ArrayD<f32>, d: usize) -> ArrayD<f32> {
    let (cin, cout) = (w.shape()[0], w.shape()[1]);
    let mut shape = vec![cout, cin];
    shape.extend(std::iter::repeat_n(1, d));
    ArrayD::from_shape_fn(IxDyn(&shape), |i| w[[i[1], i[0]]])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn forward_matches_oracle(c in case(work, 400_000)) {
        let be = CpuBackend::new();
        let d = c.axes.len();
        let x = random(&c.in_shape(), c.seed);
        let w = random(&[c.cin, c.cout], c.seed ^ 1);
        let bias = vec1(&random(&[c.cout], c.seed ^ 2));
        let kernel = pointwise_kernel(&w, d);
        let unit = vec![AxisGeometry::UNIT; d];
        let want = oracle::conv_nd(x.view(), kernel.view(), c.bias.then(|| bias.view()), &unit).unwrap();
        let bw = be.upload_weights(bias.view().into_dyn()).unwrap();
        let got = be
            .contract_channels(
                &be.upload(x.view()).unwrap(),
                &be.upload_weights(w.view()).unwrap(),
                c.bias.then_some(&bw),
            )
            .unwrap();
        let terms = conv_terms(&x, &kernel, c.bias.then_some(&bias), &unit);
        assert_close_scaled("contract_channels", &got, &want, terms, REL);
    }

    #[test]
    fn grads_match_oracle(c in case(work, 400_000)) {
        let be = CpuBackend::new();
        let d = c.axes.len();
        let x = random(&c.in_shape(), c.seed);
        let w = random(&[c.cin, c.cout], c.seed ^ 1);
        let kernel = pointwise_kernel(&w, d);
        let mut y_shape = c.in_shape();
        y_shape[1] = c.cout;
        let gy = random(&y_shape, c.seed ^ 3);
        let unit = vec![AxisGeometry::UNIT; d];
        let (gx, gk, gb) = oracle::conv_nd_grads(x.view(), kernel.view(), gy.view(), &unit).unwrap();
        let (tx, tk, tb) = grad_terms(&x, &kernel, &gy, &unit);
        let wb = be.upload_weights(w.view()).unwrap();
        let got_gx = be.contract_channels_grad_input(&gy, &wb).unwrap();
        assert_close_scaled("contract_channels_grad_input", &got_gx, &gx, tx, REL);
        let got_gw = be.contract_channels_grad_weight(&x, &gy).unwrap();
        let want_gw = ArrayD::from_shape_fn(IxDyn(&[c.cin, c.cout]), |i| {
            let mut k = vec![i[1], i[0]];
            k.extend(std::iter::repeat_n(0, d));
            gk[&k[..]]
        });
        assert_close_scaled("contract_channels_grad_weight", &got_gw.into_dyn(), &want_gw, tk, REL);
        let got_gb = be.bias_grad(&gy).unwrap();
        assert_close_scaled("bias_grad", &got_gb.into_dyn(), &gb.into_dyn(), tb, REL);
    }
}

/// No spatial axis at all: a plain batched matrix product.
#[test]
fn zero_spatial_axes() {
    let be = CpuBackend::new();
    let x = random(&[3, 4], 7);
    let w = random(&[4, 5], 8);
    let got = be
        .contract_channels(&x, &be.upload_weights(w.view()).unwrap(), None)
        .unwrap();
    let want = x
        .view()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap()
        .dot(&w.view().into_dimensionality::<ndarray::Ix2>().unwrap());
    assert_close("matmul", &got, &want.into_dyn(), REL);
}
