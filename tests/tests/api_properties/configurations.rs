//! Any configuration and any input shape: the layer's constructors and shape queries answer or
//! return a documented error; where they answer and the sizes are small, every implementation's
//! forward agrees with the direct oracle; where they refuse, the forward refuses the same way
//! without allocating (the input is a stride-0 view of one element).

use ndarray::IxDyn;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use ttconv::{ConvGeometry, Error, Implementation, PerMode, TtConv, TtConvConfig};
use ttconv_cpu::CpuBackend;

use crate::common::{assert_close, oracle_output, output_terms, random_array};
use crate::layouts::{broadcast_ones, one_element};
use crate::wide;

/// Largest sizes this suite runs for real (the oracle is a direct loop).
const SMALL_ELEMENTS: u128 = 1 << 12;
const SMALL_STEP_ELEMENTS: usize = 1 << 16;
const SMALL_ORACLE_MACS: u128 = 1 << 22;

#[derive(Clone, Debug)]
struct Drawn {
    config: TtConvConfig,
    input: Vec<usize>,
}

fn drawn() -> impl Strategy<Value = Drawn> {
    prop_oneof![1 => Just(0usize), 12 => 1..=4usize]
        .prop_flat_map(|order| {
            (
                (wide::size(5), wide::size(5)),
                prop::collection::vec(wide::size(4), order),
                (
                    wide::list(wide::size(3), order),
                    wide::list(wide::size(3), order),
                    wide::padding(order),
                    any::<bool>(),
                ),
                (
                    wide::rank_spec(order),
                    wide::implementation(),
                    any::<bool>(),
                ),
                (
                    wide::size(3),
                    prop::collection::vec(wide::size(9), order),
                    0..12usize,
                ),
            )
        })
        .prop_map(
            |(
                (cin, cout),
                kernel,
                (stride, dilation, padding, uniform),
                (rank, imp, bias),
                (batch, spatial, shape_noise),
            )| {
                let order = kernel.len();
                let stride = if uniform {
                    PerMode::All(stride.first().copied().unwrap_or(1))
                } else {
                    PerMode::Each(stride)
                };
                let geometry = ConvGeometry {
                    stride,
                    padding,
                    dilation: PerMode::Each(dilation),
                };
                let config = TtConvConfig::new(cin, cout, kernel)
                    .geometry(geometry)
                    .rank(rank)
                    .implementation(imp)
                    .bias(bias);
                // Mostly the right rank and channel count, sometimes not.
                let mut input = vec![batch, cin];
                input.extend(spatial);
                match shape_noise {
                    0 => input[1] = cin.wrapping_add(1),
                    1 => input.truncate(order + 1),
                    2 => input.push(3),
                    _ => {}
                }
                Drawn { config, input }
            },
        )
}

/// `sum_k r_k n_k r_{k+1}`, without overflow.
fn tt_params(shape: &[usize], ranks: &[usize]) -> u128 {
    shape.iter().enumerate().fold(0u128, |acc, (k, &n)| {
        acc.saturating_add(elements(&[ranks[k], n, ranks[k + 1]]))
    })
}

fn elements(shape: &[usize]) -> u128 {
    shape
        .iter()
        .fold(1u128, |a, &n| a.saturating_mul(n as u128))
}

/// The errors a shape query may give.
fn shape_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Shape { .. } | Error::EmptyOutput { .. } | Error::TooLarge { .. }
    )
}

fn small(layer: &TtConv, input: &[usize], output: &[usize]) -> bool {
    let kernel: u128 = elements(&layer.config().tt_shape());
    let program_ok = layer.program(input).is_ok_and(|p| {
        p.steps()
            .iter()
            .all(|s| s.output_shape.iter().product::<usize>() <= SMALL_STEP_ELEMENTS)
    });
    let macs = elements(output).saturating_mul(kernel / layer.config().out_channels as u128);
    elements(input) <= SMALL_ELEMENTS
        && elements(output) <= SMALL_ELEMENTS
        && kernel <= SMALL_ELEMENTS
        && layer.num_params() <= 1 << 14
        && program_ok
        && macs <= SMALL_ORACLE_MACS
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, .. ProptestConfig::default() })]

    #[test]
    fn any_configuration_answers_or_refuses(d in drawn(), seed in any::<u64>()) {
        // Legal layers of millions of parameters are skipped (too slow to build here); those
        // over the documented limit must be refused.
        let params = d.config.resolved_ranks().map(|r| tt_params(&d.config.tt_shape(), &r));
        if params.as_ref().is_ok_and(|&p| p > 1 << 20 && p <= tt_core::MAX_TT_PARAMETERS as u128) {
            return Ok(());
        }
        let layer = match TtConv::new(d.config.clone()) {
            Ok(layer) => layer,
            Err(e) => {
                prop_assert!(
                    matches!(e, Error::Config { .. } | Error::Tt(_) | Error::TooLarge { .. }),
                    "TtConv::new: undocumented error {e:?}"
                );
                return Ok(());
            }
        };
        prop_assert!(layer.num_params() <= tt_core::MAX_TT_PARAMETERS + d.config.out_channels);
        let cpu = CpuBackend::new();
        let output = layer.output_shape(&d.input);
        let program = layer.program(&d.input);
        match (&output, &program) {
            (Ok(out), Ok(p)) => {
                prop_assert_eq!(out.as_slice(), p.output_shape());
                prop_assert_eq!(p.input_shape(), d.input.as_slice());
            }
            (Err(e), Err(f)) => {
                prop_assert!(shape_error(e), "output_shape: {e:?}");
                prop_assert_eq!(std::mem::discriminant(e), std::mem::discriminant(f));
            }
            (Ok(_), Err(f)) => prop_assert!(matches!(f, Error::TooLarge { .. }), "program: {f:?}"),
            (Err(e), Ok(_)) => prop_assert!(false, "output_shape refused ({e}) but program built"),
        }
        for imp in [Implementation::Factorized, Implementation::Reconstructed, Implementation::Auto] {
            match layer.flops(&d.input, imp) {
                Ok(_) => prop_assert!(output.is_ok()),
                Err(e) => prop_assert!(shape_error(&e), "flops({imp:?}): {e:?}"),
            }
        }
        match output {
            Err(e) => {
                // Refused before any allocation: the input is one element seen through stride 0.
                let one = one_element(d.input.len());
                if let Some(x) = broadcast_ones(&one, &d.input) {
                    for imp in [Implementation::Factorized, Implementation::Reconstructed, Implementation::Auto] {
                        let f = layer.forward_with(&cpu, x.view(), imp).unwrap_err();
                        prop_assert_eq!(std::mem::discriminant(&e), std::mem::discriminant(&f));
                        prop_assert!(!f.to_string().is_empty());
                    }
                }
            }
            Ok(out) if small(&layer, &d.input, &out) => {
                let mut rng = StdRng::seed_from_u64(seed);
                let x = random_array(&d.input, &mut rng);
                let expected = oracle_output(&layer, &x);
                let terms = output_terms(&layer, &x);
                for imp in [Implementation::Factorized, Implementation::Reconstructed, Implementation::Auto] {
                    let y = layer.forward_with(&cpu, x.view(), imp).map_err(|e| {
                        TestCaseError::fail(format!("{imp:?} refused a valid input: {e}"))
                    })?;
                    prop_assert_eq!(y.shape(), out.as_slice());
                    assert_close(&format!("{imp:?}"), &y, &expected, terms)?;
                }
                prop_assert_eq!(expected.raw_dim(), IxDyn(&out));
            }
            Ok(_) => {}
        }
    }
}
