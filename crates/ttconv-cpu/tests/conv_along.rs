//! `conv_along` and its gradients against the f64 oracle: a 1-D convolution along axis `j` is the
//! N-D convolution whose kernel has size 1 on every other axis,
//! `kernel[o, c, 0, .., t, .., 0] = core[c, t, o]`, with unit geometry on the other axes.

mod common;

use common::{Case, REL, assert_close_scaled, case, conv_terms, grad_terms, out_spatial, random};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use ttconv::{AxisGeometry, Backend, oracle};
use ttconv_cpu::CpuBackend;

/// The convolved axis of a case (drawn through its seed).
fn axis_of(c: &Case) -> usize {
    (c.seed % c.axes.len() as u64) as usize
}

/// Oracle cost; `usize::MAX` (rejected) when the output would be empty.
fn work(c: &Case) -> usize {
    let axis = axis_of(c);
    match out_spatial(c, |j| j == axis) {
        Some(out) => c.batch * c.cout * c.cin * c.axes[axis].kernel * out.iter().product::<usize>(),
        None => usize::MAX,
    }
}

/// The oracle's view of one case: input, core, equivalent dense kernel, its geometry.
struct Setup {
    axis: usize,
    x: ArrayD<f32>,
    core: ArrayD<f32>,
    kernel: ArrayD<f32>,
    geometry: Vec<AxisGeometry>,
}

fn setup(c: &Case) -> Setup {
    let d = c.axes.len();
    let axis = axis_of(c);
    let k = c.axes[axis].kernel;
    let x = random(&c.in_shape(), c.seed);
    let core = random(&[c.cin, k, c.cout], c.seed ^ 1);
    let mut kshape = vec![c.cout, c.cin];
    kshape.extend((0..d).map(|j| if j == axis { k } else { 1 }));
    let kernel = ArrayD::from_shape_fn(IxDyn(&kshape), |i| core[[i[1], i[axis + 2], i[0]]]);
    let geometry = (0..d)
        .map(|j| {
            if j == axis {
                c.axes[j].geometry
            } else {
                AxisGeometry::UNIT
            }
        })
        .collect();
    Setup {
        axis,
        x,
        core,
        kernel,
        geometry,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn forward_matches_oracle(c in case(work, 1_000_000)) {
        let be = CpuBackend::new();
        let s = setup(&c);
        let want = oracle::conv_nd(s.x.view(), s.kernel.view(), None, &s.geometry).unwrap();
        let got = be
            .conv_along(
                &be.upload(s.x.view()).unwrap(),
                s.axis,
                &be.upload_weights(s.core.view()).unwrap(),
                s.geometry[s.axis],
            )
            .unwrap();
        let terms = conv_terms(&s.x, &s.kernel, None, &s.geometry);
        assert_close_scaled("conv_along", &got, &want, terms, REL);
    }

    #[test]
    fn grads_match_oracle(c in case(work, 1_000_000)) {
        let be = CpuBackend::new();
        let s = setup(&c);
        let g = s.geometry[s.axis];
        let k = c.axes[s.axis].kernel;
        let out = out_spatial(&c, |j| j == s.axis).unwrap();
        let mut y_shape = vec![c.batch, c.cout];
        y_shape.extend(&out);
        let gy = random(&y_shape, c.seed ^ 3);
        let (gx, gk, _) = oracle::conv_nd_grads(s.x.view(), s.kernel.view(), gy.view(), &s.geometry).unwrap();
        let (tx, tk, _) = grad_terms(&s.x, &s.kernel, &gy, &s.geometry);
        let core = be.upload_weights(s.core.view()).unwrap();
        let got_gx = be
            .conv_along_grad_input(&gy, s.axis, &core, g, c.axes[s.axis].size)
            .unwrap();
        assert_close_scaled("conv_along_grad_input", &got_gx, &gx, tx, REL);
        let got_gc = be.conv_along_grad_weight(&s.x, &gy, s.axis, k, g).unwrap();
        let d = c.axes.len();
        let want_gc = ArrayD::from_shape_fn(IxDyn(&[c.cin, k, c.cout]), |i| {
            let mut idx = vec![i[2], i[0]];
            idx.extend((0..d).map(|j| if j == s.axis { i[1] } else { 0 }));
            gk[&idx[..]]
        });
        assert_close_scaled("conv_along_grad_weight", &got_gc.into_dyn(), &want_gc, tk, REL);
    }
}
