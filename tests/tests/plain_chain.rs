//! The layer's own factorized chain as a backend without a fused forward runs it (the CUDA
//! backend does): the program's steps one primitive at a time, merged ends included, then the
//! training forward and backward. The CPU backend with `fused: false` keeps the trait's default
//! factorized forward; it is compared with the direct oracle and with the fused CPU backend.

mod common;

use common::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use ttconv::Implementation;
use ttconv_cpu::{CpuBackend, CpuOptions};

#[test]
fn merged_chain_through_primitives_matches_the_oracle_and_the_cpu_backend() {
    let plain = CpuBackend::with_options(CpuOptions {
        fused: false,
        ..CpuOptions::default()
    });
    let cpu = CpuBackend::new();
    for (i, (case, (head, tail))) in merge_pattern_cases(200).into_iter().enumerate() {
        let (layer, x) = build(&case);
        let program = layer.program(x.shape()).unwrap();
        assert_eq!(
            (program.merges_head(), program.merges_tail()),
            (head, tail),
            "case {i}"
        );
        let expect = oracle_output(&layer, &x);
        let scale = max_abs(&expect).max(output_terms(&layer, &x));

        let y = layer
            .forward_with(&plain, x.view(), Implementation::Factorized)
            .unwrap();
        assert!(
            max_diff(&y, &expect) <= REL_TOL * scale,
            "case {i}: forward"
        );

        let mut rng = StdRng::seed_from_u64(case.seed);
        let gy = random_array(expect.shape(), &mut rng);
        let ours = layer
            .forward_backward(
                &plain,
                x.view(),
                gy.view(),
                Implementation::Factorized,
                true,
            )
            .map(|(_, grads)| grads)
            .unwrap();
        let theirs = layer
            .forward_backward(
                &cpu,
                x.view(),
                gy.view(),
                Implementation::Reconstructed,
                true,
            )
            .map(|(_, grads)| grads)
            .unwrap();
        let terms = gradient_terms(&cpu, &layer, &x, &gy);
        compare_gradients(&ours, &theirs, &terms).unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}
