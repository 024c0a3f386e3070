//! `TtConv` -> ONNX -> `TtConv`: the exported chain computes the layer's forward in ONNX
//! Runtime, and import gives the same layer back.

use crate::common::{random, rel_error, runtime};
use proptest::prelude::*;
use ttconv::{Padding, RankSpec, TtConv, TtConvConfig};
use ttconv_cpu::CpuBackend;
use ttconv_models::{Policy, RankRule, ReportOptions, Target};
use ttconv_onnx::{Value, compress, export_layer, import_layer, model_to_bytes, parse_model};

#[derive(Clone, Debug)]
struct Layer {
    cin: usize,
    cout: usize,
    kernel: Vec<usize>,
    stride: Vec<usize>,
    dilation: Vec<usize>,
    pads: Vec<(usize, usize)>,
    bias: bool,
    rank: usize,
    seed: u64,
}

impl Layer {
    fn build(&self) -> TtConv {
        let config = TtConvConfig::new(self.cin, self.cout, self.kernel.clone())
            .stride(self.stride.clone())
            .dilation(self.dilation.clone())
            .padding(Padding::Asymmetric(self.pads.clone()))
            .bias(self.bias)
            .rank(RankSpec::Uniform(self.rank));
        let mut layer = TtConv::new(config).unwrap();
        layer
            .init_from_random(ttconv::Init::Direct, self.seed)
            .unwrap();
        layer
    }

    fn input(&self) -> ndarray::ArrayD<f32> {
        let mut s = vec![2, self.cin];
        s.extend(
            self.kernel
                .iter()
                .zip(&self.dilation)
                .map(|(k, d)| (k - 1) * d + 4),
        );
        random(&s, self.seed + 7)
    }
}

fn layer() -> impl Strategy<Value = Layer> {
    (1usize..=3).prop_flat_map(|d| {
        (
            proptest::collection::vec(
                (1usize..=3, 1usize..=2, 1usize..=2, 0usize..=2, 0usize..=1),
                d,
            ),
            (
                1usize..=4,
                1usize..=4,
                any::<bool>(),
                1usize..=3,
                any::<u64>(),
            ),
        )
            .prop_map(|(axes, (cin, cout, bias, rank, seed))| Layer {
                cin,
                cout,
                kernel: axes.iter().map(|a| a.0).collect(),
                stride: axes.iter().map(|a| a.1).collect(),
                dilation: axes.iter().map(|a| a.2).collect(),
                pads: axes.iter().map(|a| (a.3, a.4)).collect(),
                bias,
                rank,
                seed: seed % 100_000,
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Export then import gives the same cores, bias and geometry, through the file's bytes.
    #[test]
    fn export_then_import_is_the_same_layer(l in layer()) {
        let original = l.build();
        let model = parse_model(&model_to_bytes(&export_layer(&original).unwrap())).unwrap();
        let back = import_layer(&model).unwrap();
        prop_assert_eq!(back.tt(), original.tt());
        prop_assert_eq!(back.bias(), original.bias());
        prop_assert_eq!(back.geometry(), original.geometry());
    }
}

/// The exported model in ONNX Runtime equals the layer's forward on the CPU backend. Tolerance:
/// both sum the same chain in f32 (ours in f64 per step), ~1e-7 relative per step.
#[test]
fn the_exported_model_computes_the_layers_forward() {
    let Some(rt) = runtime("the_exported_model_computes_the_layers_forward") else {
        return;
    };
    let cpu = CpuBackend::new();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    });
    runner
        .run(&layer(), |l| {
            let layer = l.build();
            let x = l.input();
            let want = layer.forward(&cpu, x.view()).unwrap();
            let bytes = model_to_bytes(&export_layer(&layer).unwrap());
            let got = crate::common::output(
                &rt.run(&bytes, &[("x".to_string(), Value::F32(x))]).unwrap(),
                "y",
            );
            let e = rel_error(&want, &got);
            prop_assert!(e < 1e-5, "relative error {e:.3e} for {l:?}");
            Ok(())
        })
        .unwrap();
}

/// A Conv compressed inside a larger model reads back as a layer with the same output.
#[test]
fn a_compressed_one_conv_model_imports_as_its_layer() {
    let c = crate::common::ConvCase {
        batch: 1,
        cin: 3,
        cout: 5,
        kernel: vec![3, 3],
        input: vec![7, 6],
        strides: vec![2, 1],
        dilations: vec![1, 2],
        pads: vec![[1, 0], [2, 2]],
        auto_pad: ttconv_onnx::conv::AutoPad::NotSet,
        bias: true,
        seed: 9,
    };
    let policy = Policy {
        target: Target::PerLayer(RankRule::Tolerance(0.0)),
        require_smaller: false,
        ..Policy::default()
    };
    let (compressed, _) =
        compress(&c.model(), &policy, &ReportOptions::default(), &mut |_| {}).unwrap();
    let layer = import_layer(&compressed).unwrap();
    let x = c.x();
    let y = layer.forward(&CpuBackend::new(), x.view()).unwrap();
    let want = crate::common::eval_convs(&c.model(), &x);
    let e = rel_error(&want, &y);
    assert!(e < 1e-5, "{e:.3e}");
}

#[test]
fn graphs_that_are_not_a_chain_are_refused() {
    let c = crate::common::ConvCase {
        batch: 1,
        cin: 3,
        cout: 5,
        kernel: vec![3, 3],
        input: vec![6, 6],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![[1, 1], [1, 1]],
        auto_pad: ttconv_onnx::conv::AutoPad::NotSet,
        bias: false,
        seed: 2,
    };
    // One dense Conv is not a chain.
    assert!(import_layer(&c.model()).is_err());
    // A chain whose axis node carries a stride on the other axis.
    let layer = Layer {
        cin: 2,
        cout: 3,
        kernel: vec![3, 3],
        stride: vec![1, 1],
        dilation: vec![1, 1],
        pads: vec![(1, 1), (1, 1)],
        bias: true,
        rank: 2,
        seed: 1,
    }
    .build();
    let mut m = export_layer(&layer).unwrap();
    let node = &mut m.graph.as_mut().unwrap().node[1];
    let strides = node
        .attribute
        .iter_mut()
        .find(|a| a.name == "strides")
        .unwrap();
    strides.ints = vec![1, 2];
    let err = import_layer(&m).unwrap_err().to_string();
    assert!(err.contains("axis 1"), "{err}");
}
