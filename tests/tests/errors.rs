//! Bad configurations and inputs give typed errors, never a panic.

use ndarray::{Array1, ArrayD, IxDyn};
use proptest::prelude::*;
use ttconv::{
    AxisGeometry, Error, Implementation, Padding, RankSpec, Truncation, TtConv, TtConvConfig,
    TtTensor,
};
use ttconv_cpu::CpuBackend;

fn layer_2d() -> TtConv {
    TtConv::new(
        TtConvConfig::new(3, 4, vec![3, 3])
            .rank(RankSpec::Uniform(2))
            .bias(true),
    )
    .unwrap()
}

#[test]
fn input_shape_errors() {
    let cpu = CpuBackend::new();
    let layer = layer_2d();
    let wrong_rank = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 5]));
    assert!(matches!(
        layer.forward(&cpu, wrong_rank.view()),
        Err(Error::Shape { .. })
    ));
    let wrong_channels = ArrayD::<f32>::zeros(IxDyn(&[1, 2, 5, 5]));
    assert!(matches!(
        layer.forward(&cpu, wrong_channels.view()),
        Err(Error::Shape { .. })
    ));
    let too_small = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 2, 5]));
    let err = layer.forward(&cpu, too_small.view()).unwrap_err();
    assert!(matches!(err, Error::EmptyOutput { mode: 0, .. }), "{err}");
    assert!(err.to_string().contains("kernel 3"));
    let empty_batch = ArrayD::<f32>::zeros(IxDyn(&[0, 3, 5, 5]));
    assert!(layer.forward(&cpu, empty_batch.view()).is_err());
}

#[test]
fn weight_errors() {
    let mut layer = layer_2d();
    let kernel = ArrayD::<f32>::zeros(IxDyn(&[4, 3, 3, 2]));
    assert!(matches!(
        layer.init_from_tensor(kernel.view(), None, &Truncation::rank(RankSpec::Same)),
        Err(Error::Shape { .. })
    ));
    let mut kernel = ArrayD::<f32>::zeros(IxDyn(&[4, 3, 3, 3]));
    kernel[[0, 0, 0, 0]] = f32::NAN;
    assert!(
        layer
            .init_from_tensor(kernel.view(), None, &Truncation::rank(RankSpec::Same))
            .is_err()
    );
    let wrong_tt = TtTensor::<f32>::random(&[3, 3, 4], &[1, 2, 2, 1], 1.0, 0).unwrap();
    assert!(matches!(
        layer.init_from_decomposition(wrong_tt, None),
        Err(Error::Shape { .. })
    ));
    let tt = TtTensor::<f32>::random(&[3, 3, 3, 4], &[1, 2, 2, 2, 1], 1.0, 0).unwrap();
    let bad_bias = Array1::<f32>::zeros(3);
    assert!(
        layer
            .init_from_decomposition(tt, Some(bad_bias.view()))
            .is_err()
    );
    assert!(layer.transduct(5, 3, AxisGeometry::UNIT).is_err());
    assert!(layer.transduct(0, 0, AxisGeometry::UNIT).is_err());
    assert!(
        layer
            .transduct(0, 3, AxisGeometry::symmetric(0, 0, 1))
            .is_err()
    );
    assert_eq!(
        layer.order(),
        2,
        "a failed transduct leaves the layer as it was"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Any configuration, valid or not, and any input shape: an answer or an error, no panic.
    #[test]
    fn random_configurations_never_panic(
        cin in 0..4usize,
        cout in 0..4usize,
        kernel in prop::collection::vec(0..4usize, 0..4),
        stride in prop::collection::vec(0..3usize, 0..4),
        dilation in prop::collection::vec(0..3usize, 0..4),
        padding in prop::collection::vec((0..3usize, 0..3usize), 0..4),
        same in any::<bool>(),
        rank in prop_oneof![
            prop::collection::vec(0..4usize, 0..7).prop_map(RankSpec::Explicit),
            (0..4usize).prop_map(RankSpec::Uniform),
            Just(RankSpec::Fraction(-1.0)),
            Just(RankSpec::Same),
        ],
        input in prop::collection::vec(0..6usize, 0..6),
        implementation in prop_oneof![
            Just(Implementation::Factorized),
            Just(Implementation::Reconstructed),
            Just(Implementation::Auto)
        ],
    ) {
        let config = TtConvConfig::new(cin, cout, kernel)
            .stride(stride)
            .dilation(dilation)
            .padding(if same { Padding::Same } else { Padding::Asymmetric(padding) })
            .rank(rank)
            .implementation(implementation);
        if let Ok(layer) = TtConv::new(config) {
            let x = ArrayD::<f32>::ones(IxDyn(&input));
            let cpu = CpuBackend::new();
            match layer.forward(&cpu, x.view()) {
                Ok(y) => {
                    let expected = layer.output_shape(&input).unwrap();
                    prop_assert_eq!(y.shape(), expected.as_slice());
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}

/// A training context is tied to the layer (and the state of its weights) whose forward made it:
/// another layer's backward refuses it instead of returning wrong-shaped or wrong gradients.
#[test]
fn training_context_of_another_layer_is_refused() {
    let cpu = CpuBackend::new();
    let config = |rank| {
        TtConvConfig::new(3, 5, vec![3])
            .padding(1)
            .rank(RankSpec::Uniform(rank))
    };
    let (a, b, b_same_ranks) = (
        TtConv::new(config(2)).unwrap(),
        TtConv::new(config(5)).unwrap(),
        TtConv::new(config(2)).unwrap(),
    );
    let x = ArrayD::<f32>::ones(IxDyn(&[1, 3, 7]));
    let pa = a.prepare(&cpu).unwrap();
    for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
        let (y, ctx) = pa.forward_train(x.clone(), implementation).unwrap();
        for other in [&b, &b_same_ranks] {
            let prepared = other.prepare(&cpu).unwrap();
            assert!(matches!(
                prepared.backward(&ctx, &y, true),
                Err(Error::State(_))
            ));
        }
        assert!(pa.backward(&ctx, &y, true).is_ok());
    }
    // The same layer after its weights changed: the old context is stale.
    let mut c = a.clone();
    let (y, ctx) = {
        let pc = c.prepare(&cpu).unwrap();
        pc.forward_train(x.clone(), Implementation::Factorized)
            .unwrap()
    };
    let cores = c.tt().cores().to_vec();
    c.set_cores(cores).unwrap();
    let pc = c.prepare(&cpu).unwrap();
    assert!(matches!(pc.backward(&ctx, &y, true), Err(Error::State(_))));
}

/// Sizes that overflow `usize` or `u64` give typed errors, not wrapped (wrong) answers.
#[test]
fn overflowing_geometry_and_costs_are_errors() {
    let cpu = CpuBackend::new();
    // Dilation usize::MAX, kernel 2, no padding: the dilated kernel fits in no input.
    let layer = TtConv::new(TtConvConfig::new(10, 2, vec![2]).dilation(usize::MAX)).unwrap();
    let x = ArrayD::<f32>::ones(IxDyn(&[1, 10, 4]));
    assert!(matches!(
        layer.forward(&cpu, x.view()),
        Err(Error::EmptyOutput { .. })
    ));
    // 'same' padding with a dilation whose total padding overflows.
    let same = TtConvConfig::new(2, 2, vec![3])
        .padding(Padding::Same)
        .dilation(1usize << 63);
    assert!(matches!(
        TtConv::new(same),
        Err(Error::Config {
            field: "padding",
            ..
        })
    ));
    // A batch so large that the modelled work does not fit in u64 (no data is allocated).
    let layer = TtConv::new(TtConvConfig::new(64, 64, vec![3, 3]).padding(1)).unwrap();
    let shape = [1usize << 40, 64, 1 << 12, 1 << 12];
    assert!(matches!(
        layer.flops(&shape, Implementation::Factorized),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        layer.flops(&shape, Implementation::Reconstructed),
        Err(Error::TooLarge { .. })
    ));
}

/// Sizes that cannot be allocated are refused with a typed error before anything is allocated,
/// never an aborted process.
#[test]
fn unallocatable_sizes_are_errors() {
    for rank in [
        RankSpec::Uniform(100_000),
        RankSpec::Uniform(usize::MAX),
        RankSpec::Fraction(1e300),
    ] {
        let config = TtConvConfig::new(2, 2, vec![3]).rank(rank.clone());
        let result = TtConv::new(config);
        assert!(result.is_err(), "{rank:?}: {result:?}");
    }
    // Padding 2^40 on a 4000-long axis: an output of 2^40 positions per channel.
    let cpu = CpuBackend::new();
    let layer = TtConv::new(TtConvConfig::new(1, 2, vec![1, 3]).padding(vec![0, 1 << 40])).unwrap();
    let x = ArrayD::<f32>::ones(IxDyn(&[1, 1, 5, 4000]));
    for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
        assert!(matches!(
            layer.forward_with(&cpu, x.view(), implementation),
            Err(Error::TooLarge { .. })
        ));
    }
    // Padding 2^40 with stride 2^41 on a 3-long axis (and a plain 64-long one): two output rows,
    // both reading only padding. Found by the API property suite: the direct dense kernel
    // stored the padding in its phase planes (2^41 planes, an abort); it steps aside now and
    // the answer is the oracle's, zeros.
    let wide = TtConv::new(
        TtConvConfig::new(1, 2, vec![3, 3])
            .padding(vec![1usize << 40, 1])
            .stride(vec![1usize << 41, 1]),
    )
    .unwrap();
    let x64 = ArrayD::<f32>::ones(IxDyn(&[1, 1, 3, 64]));
    for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
        let y = wide.forward_with(&cpu, x64.view(), implementation).unwrap();
        assert_eq!(y.shape(), &[1, 2, 2, 64]);
        assert!(y.iter().all(|&v| v == 0.0), "{implementation:?}");
    }
    // Stride 10^6 along a 5-long axis: one output row, and the dense path's scratch stays small.
    let layer = TtConv::new(
        TtConvConfig::new(1, 2, vec![3, 3])
            .stride(vec![1_000_000, 1])
            .padding(1),
    )
    .unwrap();
    for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
        let y = layer.forward_with(&cpu, x.view(), implementation).unwrap();
        assert_eq!(y.shape(), &[1, 2, 1, 4000]);
    }
}

/// The crate's rule for activations: a NaN in the input is not an error and reaches exactly the
/// outputs whose receptive field holds it (here one position of a 1-D layer, kernel 3, padding 1).
#[test]
fn non_finite_inputs_propagate_to_their_receptive_field() {
    let cpu = CpuBackend::new();
    let layer = TtConv::new(TtConvConfig::new(2, 3, vec![3]).padding(1)).unwrap();
    let mut x = ArrayD::<f32>::ones(IxDyn(&[1, 2, 9]));
    x[[0, 1, 4]] = f32::NAN;
    for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
        let y = layer.forward_with(&cpu, x.view(), implementation).unwrap();
        for p in 0..9 {
            let touched = (3..=5).contains(&p);
            for o in 0..3 {
                assert_eq!(
                    y[[0, o, p]].is_nan(),
                    touched,
                    "{implementation:?} o {o} p {p}"
                );
            }
        }
    }
}
