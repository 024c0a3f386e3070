//! The training path with its inputs in any layout and upstream gradients of any shape: the
//! same bits as row-major copies, input gradients that agree with the oracle's, typed errors
//! for a gradient of the wrong shape.

use ndarray::IxDyn;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use ttconv::{Error, Gradients, oracle};
use ttconv_cpu::CpuBackend;

use crate::common::{assert_close, build, case_strategy, gradient_terms, random_array, term_scale};
use crate::layouts::{Laid, layout_strategy};
use crate::wide;

fn bits(g: &Gradients) -> Vec<u32> {
    g.input
        .iter()
        .flat_map(|a| a.iter())
        .chain(g.cores.iter().flat_map(|c| c.iter()))
        .chain(g.bias.iter().flat_map(|b| b.iter()))
        .map(|v| v.to_bits())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn gradients_in_any_layout(
        case in case_strategy(),
        (x_layout, gy_layout) in (layout_strategy(), layout_strategy()),
        imp in wide::implementation(),
        wrong in prop_oneof![6 => Just(None), 1 => (0..6usize).prop_map(Some)],
    ) {
        let (layer, x) = build(&case);
        let cpu = CpuBackend::new();
        let mut out = layer.output_shape(x.shape()).expect("a valid case");
        if let Some(axis) = wrong {
            let a = axis % out.len();
            out[a] += 1;
        }
        let mut rng = StdRng::seed_from_u64(case.seed ^ 11);
        let gy = random_array(&out, &mut rng);
        let (lx, lgy) = (Laid::new(&x, x_layout), Laid::new(&gy, gy_layout));
        let (x, gy) = (lx.logical(), lgy.logical());
        let result = layer.forward_backward(&cpu, lx.view(), lgy.view(), imp, true);
        if wrong.is_some() {
            let e = result.expect_err("a gradient of the wrong shape");
            prop_assert!(matches!(e, Error::Shape { .. }), "{e:?}");
            return Ok(());
        }
        let (y, grads) = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (y_plain, plain) = layer
            .forward_backward(&cpu, x.view(), gy.view(), imp, true)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(y.iter().zip(&y_plain).all(|(a, b)| a.to_bits() == b.to_bits()));
        prop_assert!(bits(&grads) == bits(&plain), "{x_layout:?}/{gy_layout:?} gradients differ");
        let (gx, _, gb) = oracle::conv_nd_grads(x.view(), layer.full_weights().view(), gy.view(), layer.geometry())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let terms = gradient_terms(&cpu, &layer, &x, &gy);
        let input = grads.input.as_ref().expect("asked for");
        prop_assert_eq!(input.raw_dim(), IxDyn(x.shape()));
        assert_close("input gradient", input, &gx, term_scale(terms.input.as_ref().expect("asked for")))?;
        if let (Some(b), Some(t)) = (&grads.bias, &terms.bias) {
            assert_close("bias gradient", &b.clone().into_dyn(), &gb.into_dyn(), term_scale(&t.clone().into_dyn()))?;
        }
    }
}
