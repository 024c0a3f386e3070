//! Optimiser steps with any hyperparameters and any gradients: either the update is taken and
//! every weight stays finite, or the step is refused with the layer and the optimiser unchanged.

use ndarray::{Array3, ShapeBuilder};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use ttconv::{Adam, Error, Gradients, Implementation, Optimizer, Sgd, TtConv};
use ttconv_cpu::CpuBackend;

use crate::common::{build, case_strategy, random_array};
use crate::wide;

fn weights_bits(layer: &TtConv) -> (u64, Vec<u32>) {
    let bits = layer
        .tt()
        .cores()
        .iter()
        .flat_map(|c| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        .chain(
            layer
                .bias()
                .into_iter()
                .flat_map(|b| b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()),
        )
        .collect();
    (layer.stamp(), bits)
}

#[derive(Clone, Copy, Debug)]
enum GradDamage {
    None,
    /// Every gradient times `2^e` (large enough, the update overflows f32).
    Scaled(i32),
    NonFinite(usize),
    /// One core gradient of the wrong shape.
    Shape(usize),
    /// No bias gradient (or one for a layer without bias).
    Bias,
    /// Column-major core gradients (a legal layout).
    ColumnMajor,
}

fn grad_damage() -> impl Strategy<Value = GradDamage> {
    prop_oneof![
        4 => Just(GradDamage::None),
        2 => (60..=200i32).prop_map(GradDamage::Scaled),
        1 => any::<usize>().prop_map(GradDamage::NonFinite),
        1 => any::<usize>().prop_map(GradDamage::Shape),
        1 => Just(GradDamage::Bias),
        2 => Just(GradDamage::ColumnMajor),
    ]
}

fn damaged(g: &Gradients, damage: GradDamage) -> Gradients {
    let mut g = g.clone();
    let n = g.cores.len();
    match damage {
        GradDamage::None => {}
        GradDamage::Scaled(e) => {
            // Scaled in f64 and rounded once, so that a large e gives infinities only where
            // the product really exceeds f32.
            let s = 2f64.powi(e);
            for c in &mut g.cores {
                c.mapv_inplace(|v| (f64::from(v) * s) as f32);
            }
        }
        GradDamage::NonFinite(at) => {
            let c = &mut g.cores[at % n];
            let len = c.len();
            if let Some(v) = c.iter_mut().nth(at % len) {
                *v = if at % 2 == 0 { f32::NAN } else { f32::INFINITY };
            }
        }
        GradDamage::Shape(at) => {
            let (a, b, c) = g.cores[at % n].dim();
            g.cores[at % n] = Array3::zeros((a, b + 1, c));
        }
        GradDamage::Bias => {
            g.bias = match g.bias {
                Some(_) => None,
                None => Some(ndarray::Array1::zeros(1)),
            }
        }
        GradDamage::ColumnMajor => {
            for c in &mut g.cores {
                let mut f = Array3::<f32>::zeros(c.raw_dim().f());
                f.assign(c);
                *c = f;
            }
        }
    }
    g
}

/// The optimiser as its `Debug` shows it (hyperparameters, step count, moments).
fn state<O: std::fmt::Debug>(o: &O) -> String {
    format!("{o:?}")
}

fn finite_gradients(g: &Gradients) -> bool {
    g.cores.iter().all(|c| c.iter().all(|v| v.is_finite()))
        && g.bias.iter().all(|b| b.iter().all(|v| v.is_finite()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, .. ProptestConfig::default() })]

    #[test]
    fn steps_are_all_or_nothing(
        case in case_strategy(),
        adam in any::<bool>(),
        lr in wide::wide_f32(0.0, 0.1),
        momentum in wide::wide_f32(0.0, 0.99),
        beta2 in wide::wide_f32(0.9, 0.9999),
        eps in wide::wide_f32(1e-9, 1e-3),
        damages in prop::collection::vec(grad_damage(), 1..4),
    ) {
        let (mut layer, x) = build(&case);
        let cpu = CpuBackend::new();
        let out = layer.output_shape(x.shape()).expect("a valid case");
        let mut rng = StdRng::seed_from_u64(case.seed ^ 7);
        let gy = random_array(&out, &mut rng);
        let hyper_ok = lr.is_finite() && lr >= 0.0 && (0.0..1.0).contains(&momentum)
            && (!adam || ((0.0..1.0).contains(&beta2) && eps.is_finite() && eps > 0.0));
        let mut sgd = Sgd::new(lr, momentum);
        let mut adamw = Adam::new(lr);
        adamw.beta1 = momentum;
        adamw.beta2 = beta2;
        adamw.eps = eps;
        for damage in damages {
            let (_, grads) = layer
                .forward_backward(&cpu, x.view(), gy.view(), Implementation::Factorized, false)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let grads = damaged(&grads, damage);
            let before = (weights_bits(&layer), if adam { state(&adamw) } else { state(&sgd) });
            let result = if adam { adamw.step(&mut layer, &grads) } else { sgd.step(&mut layer, &grads) };
            let after_state = if adam { state(&adamw) } else { state(&sgd) };
            match result {
                Ok(()) => {
                    prop_assert!(hyper_ok, "accepted lr {lr} momentum/beta1 {momentum} beta2 {beta2} eps {eps}");
                    prop_assert!(finite_gradients(&grads));
                    prop_assert!(weights_bits(&layer).1.iter().all(|&b| f32::from_bits(b).is_finite()));
                }
                Err(e) => {
                    prop_assert!(
                        matches!(e, Error::Config { .. } | Error::NonFinite { .. } | Error::Shape { .. } | Error::TooLarge { .. }),
                        "{e:?}"
                    );
                    // Refusing sensible hyperparameters with the layer's own finite gradients
                    // (in any layout) is a bug; a few steps of lr <= 0.1 stay far from overflow.
                    let good = hyper_ok
                        && lr <= 0.1
                        && matches!(damage, GradDamage::None | GradDamage::ColumnMajor)
                        && finite_gradients(&grads);
                    prop_assert!(!good, "refused a good step: {e}");
                    prop_assert!(before.0 == weights_bits(&layer), "a refused step changed the layer");
                    prop_assert_eq!(&before.1, &after_state, "a refused step changed the optimiser");
                }
            }
        }
    }
}

/// One optimiser for two layers (the PyTorch habit of one optimiser per model) is refused at
/// the second layer, which stays as it was.
#[test]
fn one_optimiser_is_tied_to_one_layer() {
    let cases = crate::common::merge_pattern_cases(3);
    let (a, x) = build(&cases[0].0);
    let (mut b, _) = build(&cases[0].0);
    let mut a = a;
    let cpu = CpuBackend::new();
    let out = a.output_shape(x.shape()).unwrap();
    let gy = ndarray::ArrayD::<f32>::ones(ndarray::IxDyn(&out));
    let (_, ga) = a
        .forward_backward(&cpu, x.view(), gy.view(), Implementation::Factorized, false)
        .unwrap();
    let mut adam = Adam::new(0.01);
    adam.step(&mut a, &ga).unwrap();
    let before = weights_bits(&b);
    assert!(matches!(adam.step(&mut b, &ga), Err(Error::State(_))));
    assert!(before == weights_bits(&b));
}
