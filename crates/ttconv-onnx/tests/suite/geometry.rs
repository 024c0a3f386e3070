//! Every Conv geometry ONNX has (1-D, 2-D, 3-D; explicit asymmetric pads, SAME_UPPER,
//! SAME_LOWER, VALID; strides; dilations; with and without bias) survives the rewrite: at full
//! rank the TT chain reproduces the original Conv.
//!
//! Two references: the layer crate's direct oracle evaluating both graphs node by node (always
//! runs), and ONNX Runtime running both models (when its library is installed).

use crate::common::{ConvCase, eval_convs, full_rank, rel_error, runtime};
use proptest::prelude::*;
use ttconv_models::ReportOptions;
use ttconv_onnx::conv::AutoPad;
use ttconv_onnx::{Value, compress, model_to_bytes};

/// Full rank (tolerance 0), kept even when not smaller: the chain must be exact up to rounding.
fn case() -> impl Strategy<Value = ConvCase> {
    (1usize..=3)
        .prop_flat_map(|d| {
            (
                Just(d),
                proptest::collection::vec(
                    (
                        1usize..=4,
                        1usize..=3,
                        1usize..=2,
                        0usize..=2,
                        0usize..=2,
                        0usize..=5,
                    ),
                    d,
                ),
                (
                    1usize..=2,
                    2usize..=4,
                    1usize..=4,
                    0usize..4,
                    any::<bool>(),
                    any::<u64>(),
                ),
            )
        })
        .prop_map(|(d, axes, (batch, cin, cout, mode, bias, seed))| {
            let mut kernel: Vec<usize> = axes.iter().map(|a| a.0).collect();
            // At least one axis above 1: a 1x1 kernel is not factorized.
            kernel[0] = kernel[0].max(2);
            let dilations: Vec<usize> = axes.iter().map(|a| a.2).collect();
            // Small inputs for 3-D, at least one output position on every axis.
            let extra = if d == 3 { 2 } else { 5 };
            let input = (0..d)
                .map(|j| (kernel[j] - 1) * dilations[j] + 1 + axes[j].5 % (extra + 1))
                .collect();
            ConvCase {
                batch,
                cin,
                cout,
                input,
                strides: axes.iter().map(|a| a.1).collect(),
                dilations,
                pads: axes.iter().map(|a| [a.3, a.4]).collect(),
                auto_pad: [
                    AutoPad::NotSet,
                    AutoPad::SameUpper,
                    AutoPad::SameLower,
                    AutoPad::Valid,
                ][mode],
                kernel,
                bias,
                seed: seed % 1_000_000,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The chain evaluated on the oracle equals the original Conv on the oracle. Tolerance: the
    /// full-rank TT-SVD reproduces the kernel to ~1e-7 relative (f32 cores from an f64 SVD), and
    /// each of the d + 2 steps rounds its f64 sums to f32 once (~6e-8 relative each): 1e-5
    /// leaves a wide margin for conditioning of the small random kernels, none for a wrong tap.
    #[test]
    fn the_chain_reproduces_the_conv_on_the_oracle(c in case()) {
        let original = c.model();
        let (compressed, report) = compress(&original, &full_rank(), &ReportOptions::default(), &mut |_| {}).unwrap();
        prop_assert_eq!(report.totals.compressed, 1);
        let d = c.kernel.len();
        prop_assert_eq!(compressed.graph.as_ref().unwrap().node.len(), d + 2);
        let x = c.x();
        let want = eval_convs(&original, &x);
        let got = eval_convs(&compressed, &x);
        let e = rel_error(&want, &got);
        prop_assert!(e < 1e-5, "relative error {e:.3e} for {c:?}");
    }
}

/// The same cases in ONNX Runtime: both models run, the outputs agree, and the runtime agrees
/// with the oracle on the original (so the oracle's reading of the geometry is ONNX's). Same
/// tolerance as above: the runtime's own f32 sums add ~1e-6 at these sizes.
#[test]
fn the_chain_reproduces_the_conv_in_onnx_runtime() {
    let Some(rt) = runtime("the_chain_reproduces_the_conv_in_onnx_runtime") else {
        return;
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    // ONNX Runtime refuses SAME_* with a dilation above 1 (a valid ONNX Conv): those cases run
    // with dilation 1 here (the oracle test above covers them).
    let runnable = case().prop_map(|mut c| {
        if matches!(c.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
            c.dilations.iter_mut().for_each(|d| *d = 1);
        }
        c
    });
    let refused = std::cell::Cell::new(0usize);
    runner
        .run(&runnable, |c| {
            let original = c.model();
            let (compressed, _) = compress(
                &original,
                &full_rank(),
                &ReportOptions::default(),
                &mut |_| {},
            )
            .unwrap();
            let x = c.x();
            let feed = vec![("x".to_string(), Value::F32(x.clone()))];
            let want = match rt.run(&model_to_bytes(&original), &feed) {
                Ok(w) => crate::common::output(&w, "y"),
                Err(e) => {
                    refused.set(refused.get() + 1);
                    println!("refused: {c:?}: {e}");
                    return Ok(());
                }
            };
            let got =
                crate::common::output(&rt.run(&model_to_bytes(&compressed), &feed).unwrap(), "y");
            let oracle = eval_convs(&original, &x);
            let (e, e_oracle) = (rel_error(&want, &got), rel_error(&oracle, &want));
            prop_assert!(e < 1e-5, "runtime: relative error {e:.3e} for {c:?}");
            prop_assert!(
                e_oracle < 1e-5,
                "runtime vs oracle {e_oracle:.3e} for {c:?}"
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(refused.get(), 0, "ONNX Runtime refused originals");
}
