//! Inputs in every memory layout, at every magnitude, with non-finite entries.

use ndarray::{ArrayD, Dimension, IxDyn};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ttconv::{Implementation, TtConv};
use ttconv_cpu::CpuBackend;

use crate::common::{assert_close, build, case_strategy, oracle_output, output_terms};
use crate::layouts::{Laid, layout_strategy};
use crate::wide;

fn forward(layer: &TtConv, x: ndarray::ArrayViewD<'_, f32>, imp: Implementation) -> ArrayD<f32> {
    layer
        .forward_with(&CpuBackend::new(), x, imp)
        .expect("a valid case")
}

fn same_bits(a: &ArrayD<f32>, b: &ArrayD<f32>) -> bool {
    a.shape() == b.shape() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Whether output `y_index` `(batch, out, p_1..p_d)` reads input `x_index` `(batch, in, i_1..i_d)`.
fn reads(layer: &TtConv, y_index: &[usize], x_index: &[usize]) -> bool {
    y_index[0] == x_index[0]
        && layer
            .geometry()
            .iter()
            .zip(&layer.config().kernel_size)
            .enumerate()
            .all(|(j, (g, &k))| {
                (0..k).any(|t| {
                    (y_index[j + 2] * g.stride + t * g.dilation) as i128 - g.pad_before as i128
                        == x_index[j + 2] as i128
                })
            })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Any layout of the same values gives the same bits as a row-major copy, and those agree
    /// with the direct oracle.
    #[test]
    fn every_layout_gives_the_same_bits(
        case in case_strategy(),
        layout in layout_strategy(),
        imp in wide::implementation(),
    ) {
        let (layer, x) = build(&case);
        let laid = Laid::new(&x, layout);
        let x = laid.logical();
        let plain = forward(&layer, x.view(), imp);
        let y = forward(&layer, laid.view(), imp);
        prop_assert!(same_bits(&y, &plain), "{layout:?} differs from row-major");
        assert_close(&format!("{imp:?}"), &y, &oracle_output(&layer, &x), output_terms(&layer, &x))?;
    }

    /// Magnitude never changes the answer: the layer is linear, so without a bias scaling the
    /// input by `2^e` scales every output by exactly `2^e` (each product and sum scales exactly
    /// while no value leaves the normal range: inputs ~1 and `|e| <= 60` keep them inside).
    #[test]
    fn power_of_two_scaling_is_exact(
        case in case_strategy(),
        e in -60i32..=60,
        imp in wide::implementation(),
    ) {
        let case = ttconv_tests_case_without_bias(case);
        let (layer, x) = build(&case);
        let scale = 2f32.powi(e);
        let y = forward(&layer, x.view(), imp);
        let y_scaled = forward(&layer, x.mapv(|v| v * scale).view(), imp);
        prop_assert!(same_bits(&y_scaled, &y.mapv(|v| v * scale)), "scale 2^{e}");
    }

    /// A NaN or infinity in the input is not an error: it reaches exactly the outputs whose
    /// receptive field holds it (they are not finite) and leaves every other output's bits as
    /// they were (the crate's rule: activations propagate).
    #[test]
    fn non_finite_inputs_reach_exactly_their_receptive_field(
        case in case_strategy(),
        which in 0..3usize,
        at in any::<u64>(),
        imp in wide::implementation(),
    ) {
        let (layer, x) = build(&case);
        let mut poisoned = x.clone();
        let flat = (at % x.len() as u64) as usize;
        let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][which];
        let x_index: Vec<usize> = {
            let mut rest = flat;
            let mut index = vec![0; x.ndim()];
            for a in (0..x.ndim()).rev() {
                index[a] = rest % x.shape()[a];
                rest /= x.shape()[a];
            }
            index
        };
        poisoned[IxDyn(&x_index)] = bad;
        let clean = forward(&layer, x.view(), imp);
        let y = forward(&layer, poisoned.view(), imp);
        for (y_index, c) in clean.indexed_iter() {
            let v = y[&y_index];
            let y_index = y_index.slice().to_vec();
            if reads(&layer, &y_index, &x_index) {
                prop_assert!(!v.is_finite(), "{y_index:?} reads {x_index:?} but is {v}");
            } else {
                prop_assert_eq!(v.to_bits(), c.to_bits(), "{:?} does not read {:?}", y_index, x_index);
            }
        }
    }

    /// Inputs at the extremes of f32's normal range, and subnormal ones, give finite outputs
    /// that agree with the oracle (which accumulates in f64).
    #[test]
    fn extreme_magnitudes_agree_with_the_oracle(
        case in case_strategy(),
        e in prop_oneof![-126i32..=-100, 100i32..=120],
        subnormal_share in 0.0..0.5f64,
        imp in wide::implementation(),
    ) {
        let (layer, x) = build(&case);
        let mut rng = StdRng::seed_from_u64(case.seed ^ 0x5eed);
        let scale = 2f32.powi(e);
        let x = x.mapv(|v| {
            if e < 0 && rng.random_bool(subnormal_share) { v * f32::MIN_POSITIVE / 64.0 } else { v * scale }
        });
        let y = forward(&layer, x.view(), imp);
        let expected = oracle_output(&layer, &x);
        prop_assert!(y.iter().all(|v| v.is_finite()));
        // Subnormal products lose bits (their spacing is 2^-149 whatever their size), so the
        // tolerance adds 2^-149 per summed term on top of the usual relative one.
        let terms = output_terms(&layer, &x);
        let summed = (layer.full_weights().len() / layer.config().out_channels) as f32;
        let diff = y.iter().zip(&expected).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let scale_of = crate::common::max_abs(&expected).max(terms);
        prop_assert!(
            diff <= crate::common::REL_TOL * scale_of + summed * f32::from_bits(1) * 4.0,
            "diff {diff} scale {scale_of}"
        );
    }
}

fn ttconv_tests_case_without_bias(mut case: crate::common::Case) -> crate::common::Case {
    case.bias = false;
    case
}
