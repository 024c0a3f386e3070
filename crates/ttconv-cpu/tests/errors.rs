//! Inconsistent operands give typed errors, never panics; odd memory layouts are accepted.

mod common;

use common::{REL, assert_close, random};
use ndarray::{Array1, ArrayD};
use ttconv::{AxisGeometry, Backend, Error};
use ttconv_cpu::{CpuBackend, CpuWeights};

fn w(be: &CpuBackend, shape: &[usize]) -> CpuWeights {
    be.upload_weights(random(shape, 1).view()).unwrap()
}

fn is_shape<T: std::fmt::Debug>(r: ttconv::Result<T>) -> bool {
    matches!(r, Err(Error::Shape { .. }))
}

#[test]
fn contraction_mismatches() {
    let be = CpuBackend::new();
    let x = random(&[2, 3, 4], 0);
    assert!(is_shape(be.contract_channels(&x, &w(&be, &[4, 5]), None)));
    assert!(is_shape(be.contract_channels(
        &x,
        &w(&be, &[3, 5, 1]),
        None
    )));
    assert!(is_shape(be.contract_channels(
        &x,
        &w(&be, &[3, 5]),
        Some(&w(&be, &[4]))
    )));
    assert!(is_shape(be.contract_channels(
        &random(&[3], 0),
        &w(&be, &[3, 5]),
        None
    )));
    assert!(is_shape(
        be.contract_channels_grad_input(&x, &w(&be, &[5, 4]))
    ));
    assert!(is_shape(
        be.contract_channels_grad_weight(&x, &random(&[2, 5, 3], 0))
    ));
    assert!(is_shape(
        be.contract_channels_grad_weight(&x, &random(&[1, 5, 4], 0))
    ));
    assert!(is_shape(be.bias_grad(&random(&[3], 0))));
}

#[test]
fn conv_along_mismatches() {
    let be = CpuBackend::new();
    let x = random(&[2, 3, 5, 6], 0);
    let core = w(&be, &[3, 2, 4]);
    let g = AxisGeometry::UNIT;
    assert!(is_shape(be.conv_along(&x, 2, &core, g)));
    assert!(is_shape(be.conv_along(&x, 0, &w(&be, &[4, 2, 4]), g)));
    assert!(is_shape(be.conv_along(&x, 0, &w(&be, &[3, 2]), g)));
    assert!(matches!(
        be.conv_along(&x, 0, &core, AxisGeometry { stride: 0, ..g }),
        Err(Error::Config {
            field: "stride",
            ..
        })
    ));
    assert!(matches!(
        be.conv_along(&x, 0, &core, AxisGeometry { dilation: 0, ..g }),
        Err(Error::Config {
            field: "dilation",
            ..
        })
    ));
    assert!(matches!(
        be.conv_along(&x, 0, &core, AxisGeometry { dilation: 5, ..g }),
        Err(Error::EmptyOutput { mode: 0, .. })
    ));
    let y = be.conv_along(&x, 1, &core, g).unwrap();
    assert_eq!(y.shape(), &[2, 4, 5, 5]);
    assert!(is_shape(be.conv_along_grad_input(&y, 1, &core, g, 7)));
    assert!(is_shape(be.conv_along_grad_input(
        &y,
        1,
        &w(&be, &[3, 2, 5]),
        g,
        6
    )));
    assert!(is_shape(be.conv_along_grad_input(&y, 2, &core, g, 6)));
    assert!(is_shape(be.conv_along_grad_weight(&x, &y, 0, 2, g)));
    assert!(is_shape(be.conv_along_grad_weight(
        &x,
        &random(&[1, 4, 5, 5], 0),
        1,
        2,
        g
    )));
    assert!(be.conv_along_grad_weight(&x, &y, 1, 2, g).is_ok());
}

#[test]
fn conv_dense_mismatches() {
    let be = CpuBackend::new();
    let x = random(&[2, 3, 5, 6], 0);
    let k = w(&be, &[4, 3, 2, 2]);
    let g = [AxisGeometry::UNIT; 2];
    assert!(is_shape(be.conv_dense(&x, &k, None, &g[..1])));
    assert!(is_shape(be.conv_dense(
        &x,
        &w(&be, &[4, 2, 2, 2]),
        None,
        &g
    )));
    assert!(is_shape(be.conv_dense(&x, &w(&be, &[4, 3, 2]), None, &g)));
    assert!(is_shape(be.conv_dense(&x, &k, Some(&w(&be, &[3])), &g)));
    assert!(matches!(
        be.conv_dense(&x, &w(&be, &[4, 3, 6, 2]), None, &g),
        Err(Error::EmptyOutput { mode: 0, .. })
    ));
    let y = be.conv_dense(&x, &k, None, &g).unwrap();
    assert_eq!(y.shape(), &[2, 4, 4, 5]);
    assert!(is_shape(be.conv_dense_grad_input(&y, &k, &g, &[5, 7])));
    assert!(is_shape(be.conv_dense_grad_input(&y, &k, &g, &[5])));
    assert!(is_shape(be.conv_dense_grad_input(&y, &k, &[], &[])));
    assert!(is_shape(be.conv_dense_grad_weight(&x, &y, &[2, 3], &g)));
    assert!(is_shape(be.conv_dense_grad_weight(&x, &y, &[2], &g)));
    assert!(is_shape(be.conv_dense_grad_weight(
        &x,
        &random(&[1, 4, 4, 5], 0),
        &[2, 2],
        &g
    )));
}

/// A tensor in Fortran order (not produced by `upload`) still computes correctly.
#[test]
fn non_standard_layout_input() {
    let be = CpuBackend::new();
    let x = random(&[4, 3, 2], 3);
    let xf: ArrayD<f32> = x.view().reversed_axes().to_owned(); // shape (2, 3, 4), F-order
    assert!(!xf.is_standard_layout());
    let xs = xf.as_standard_layout().into_owned();
    let wt = w(&be, &[3, 2]);
    let a = be.contract_channels(&xf, &wt, None).unwrap();
    let b = be.contract_channels(&xs, &wt, None).unwrap();
    assert_close("layout", &a, &b, REL);
    let core = w(&be, &[3, 2, 2]);
    let a = be.conv_along(&xf, 0, &core, AxisGeometry::UNIT).unwrap();
    let b = be.conv_along(&xs, 0, &core, AxisGeometry::UNIT).unwrap();
    assert_close("layout", &a, &b, REL);
    assert!(be.download(&xf).unwrap().is_standard_layout());
}

/// Zero-sized batch or channels give empty (or bias-only) results, not panics.
#[test]
fn empty_operands() {
    let be = CpuBackend::new();
    let g = [AxisGeometry::UNIT; 2];
    let y = be
        .conv_dense(&random(&[0, 3, 5, 6], 0), &w(&be, &[4, 3, 2, 2]), None, &g)
        .unwrap();
    assert_eq!(y.shape(), &[0, 4, 4, 5]);
    let bias = be
        .upload_weights(Array1::from(vec![1.0f32, 2.0]).view().into_dyn())
        .unwrap();
    let y = be
        .conv_dense(
            &random(&[1, 0, 5, 6], 0),
            &w(&be, &[2, 0, 2, 2]),
            Some(&bias),
            &g,
        )
        .unwrap();
    assert!(y.index_axis(ndarray::Axis(1), 1).iter().all(|&v| v == 2.0));
    let y = be
        .conv_along(
            &random(&[2, 3, 0, 6], 0),
            1,
            &w(&be, &[3, 2, 4]),
            AxisGeometry::UNIT,
        )
        .unwrap();
    assert_eq!(y.shape(), &[2, 4, 0, 5]);
    let gk = be
        .conv_dense_grad_weight(
            &random(&[0, 3, 5, 6], 0),
            &random(&[0, 4, 4, 5], 0),
            &[2, 2],
            &g,
        )
        .unwrap();
    assert!(gk.iter().all(|&v| v == 0.0));
}
