//! Weights in: `set_cores`, `set_bias`, `init_from_decomposition` and `transduct` either take
//! the new weights whole (and the forward then agrees with the oracle) or refuse them and leave
//! the layer exactly as it was.

use ndarray::{Array1, Array3, ShapeBuilder};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ttconv::{AxisGeometry, Error, Implementation, TtConv, TtTensor};
use ttconv_cpu::CpuBackend;

use crate::common::{
    assert_close, build, case_strategy, oracle_output, output_terms, random_array,
};
use crate::wide;

/// Everything observable about a layer's weights, bit for bit: its stamp, the cores' bits, the
/// bias's bits, its kernel size.
type Snapshot = (u64, Vec<Vec<u32>>, Option<Vec<u32>>, Vec<usize>);

fn snapshot(layer: &TtConv) -> Snapshot {
    (
        layer.stamp(),
        layer
            .tt()
            .cores()
            .iter()
            .map(|c| c.iter().map(|v| v.to_bits()).collect())
            .collect(),
        layer
            .bias()
            .map(|b| b.iter().map(|v| v.to_bits()).collect()),
        layer.config().kernel_size.clone(),
    )
}

/// A copy of `a` stored column-major.
fn fortran(a: &Array3<f32>) -> Array3<f32> {
    let mut f = Array3::<f32>::zeros(a.raw_dim().f());
    f.assign(a);
    f
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    None,
    /// One core's leading rank one larger.
    Rank(usize),
    /// One core's mode size one larger.
    Mode(usize),
    /// A core dropped.
    Missing,
    /// A value replaced by NaN or an infinity.
    NonFinite(usize, usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => Just(Damage::None),
        1 => any::<usize>().prop_map(Damage::Rank),
        1 => any::<usize>().prop_map(Damage::Mode),
        1 => Just(Damage::Missing),
        2 => (any::<usize>(), 0..3usize).prop_map(|(at, v)| Damage::NonFinite(at, v)),
    ]
}

fn damaged_cores(cores: &[Array3<f32>], damage: Damage, rng: &mut StdRng) -> Vec<Array3<f32>> {
    let mut cores = cores.to_vec();
    let k = |at: usize| at % cores.len();
    match damage {
        Damage::None => {}
        Damage::Rank(at) | Damage::Mode(at) => {
            let i = k(at);
            let (r0, n, r1) = cores[i].dim();
            let dim = if matches!(damage, Damage::Rank(_)) {
                (r0 + 1, n, r1)
            } else {
                (r0, n + 1, r1)
            };
            cores[i] = Array3::from_shape_simple_fn(dim, || rng.random::<f32>() - 0.5);
        }
        Damage::Missing => {
            cores.pop();
        }
        Damage::NonFinite(at, v) => {
            let i = k(at);
            let len = cores[i].len();
            let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][v];
            if let Some(e) = cores[i].iter_mut().nth(at % len) {
                *e = bad;
            }
        }
    }
    cores
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn set_cores_is_all_or_nothing(
        case in case_strategy(),
        damage in damage(),
        column_major in any::<bool>(),
        through_decomposition in any::<bool>(),
    ) {
        let (mut layer, x) = build(&case);
        let mut rng = StdRng::seed_from_u64(case.seed ^ 1);
        let fresh: Vec<Array3<f32>> = layer
            .tt()
            .cores()
            .iter()
            .map(|c| Array3::from_shape_simple_fn(c.dim(), || rng.random::<f32>() - 0.5))
            .collect();
        let mut given = damaged_cores(&fresh, damage, &mut rng);
        if column_major {
            given = given.iter().map(fortran).collect();
        }
        let before = snapshot(&layer);
        let result = if through_decomposition {
            TtTensor::new(given.clone())
                .map_err(Error::from)
                .and_then(|tt| layer.init_from_decomposition(tt, layer.bias().cloned().as_ref().map(|b| b.view())))
        } else {
            layer.set_cores(given.clone())
        };
        match result {
            Ok(()) => {
                prop_assert!(matches!(damage, Damage::None), "{damage:?} accepted");
                for (have, want) in layer.tt().cores().iter().zip(&given) {
                    prop_assert_eq!(have, want);
                }
                prop_assert_ne!(layer.stamp(), before.0);
                let y = layer.forward_with(&CpuBackend::new(), x.view(), Implementation::Factorized)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                assert_close("after set_cores", &y, &oracle_output(&layer, &x), output_terms(&layer, &x))?;
            }
            Err(e) => {
                prop_assert!(!matches!(damage, Damage::None), "refused good cores: {e}");
                prop_assert!(
                    matches!(e, Error::Shape { .. } | Error::NonFinite { .. } | Error::Tt(_)),
                    "undocumented error {e:?}"
                );
                prop_assert!(snapshot(&layer) == before, "a refused call changed the layer");
            }
        }
    }

    #[test]
    fn set_bias_is_all_or_nothing(
        case in case_strategy(),
        len_change in prop_oneof![4 => Just(0i64), 1 => -1i64..=1],
        // Finite values up to 1e15, so that the oracle's term sizes (squares) stay finite.
        bad in prop::option::of((
            any::<usize>(),
            prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY), -1e15f32..1e15],
        )),
    ) {
        let (mut layer, x) = build(&case);
        let n = (layer.config().out_channels as i64 + len_change).max(0) as usize;
        let mut bias = Array1::from_shape_fn(n, |i| i as f32 * 0.25 - 1.0);
        if let (Some((at, v)), true) = (bad, n > 0) {
            bias[at % n] = v;
        }
        let valid = layer.bias().is_some()
            && n == layer.config().out_channels
            && bias.iter().all(|v| v.is_finite());
        let before = snapshot(&layer);
        match layer.set_bias(bias.clone()) {
            Ok(()) => {
                prop_assert!(valid);
                prop_assert_eq!(layer.bias(), Some(&bias));
                let y = layer.forward(&CpuBackend::new(), x.view()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                assert_close("after set_bias", &y, &oracle_output(&layer, &x), output_terms(&layer, &x))?;
            }
            Err(e) => {
                prop_assert!(!valid, "refused a good bias: {e}");
                prop_assert!(matches!(e, Error::Shape { .. } | Error::NonFinite { .. }), "{e:?}");
                prop_assert!(snapshot(&layer) == before);
            }
        }
    }

    /// `transduct` with any mode, kernel size and geometry: a refusal leaves the layer as it
    /// was; an answer is a layer one order higher whose forward agrees with the oracle.
    #[test]
    fn transduct_answers_or_leaves_the_layer(
        case in case_strategy(),
        mode in wide::size(4),
        kernel in wide::size(3),
        (stride, pad, dilation) in (wide::size(2), wide::size(2), wide::size(2)),
        extent in 1..5usize,
    ) {
        let (mut layer, x) = build(&case);
        let before = snapshot(&layer);
        let geometry = AxisGeometry::symmetric(stride, pad, dilation);
        match layer.transduct(mode, kernel, geometry) {
            Err(e) => {
                prop_assert!(matches!(e, Error::Config { .. } | Error::TooLarge { .. } | Error::Tt(_)), "{e:?}");
                prop_assert!(snapshot(&layer) == before);
            }
            Ok(()) => {
                prop_assert_eq!(layer.order(), case.kernel.len() + 1);
                let mut shape = x.shape().to_vec();
                shape.insert(mode + 2, extent);
                let small = layer
                    .output_shape(&shape)
                    .is_ok_and(|out| out.iter().product::<usize>() <= 1 << 12);
                if small && layer.full_weights().len() <= 1 << 14 {
                    let mut rng = StdRng::seed_from_u64(case.seed);
                    let x3 = random_array(&shape, &mut rng);
                    let y = layer.forward(&CpuBackend::new(), x3.view()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    assert_close("transducted", &y, &oracle_output(&layer, &x3), output_terms(&layer, &x3))?;
                }
            }
        }
    }
}
