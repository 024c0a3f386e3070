//! TensorLy-Torch's own file: every TT layer loads and its forward matches the output
//! TensorLy-Torch computed; our writer keeps its names.

mod common;

use common::{data, read};
use ndarray::ArrayD;
use ttconv::{Implementation, TtConv};
use ttconv_cpu::CpuBackend;
use ttconv_models::{Geometry, find_tt_layers};

fn tensor(ckpt: &ttconv_models::Checkpoint, name: &str) -> ArrayD<f32> {
    ckpt.get(name)
        .unwrap_or_else(|| panic!("{name}"))
        .to_f32(name)
        .unwrap()
}

#[test]
fn tltorch_layers_load_and_match_their_outputs() {
    let model = read("tltorch_model.safetensors");
    let io = read("tltorch_model_io.safetensors");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("tltorch_model_layers.json")).unwrap())
            .unwrap();
    let layers = find_tt_layers(&model).unwrap();
    let expected = meta["tt_layers"].as_array().unwrap();
    assert_eq!(layers.len(), expected.len());
    let cpu = CpuBackend::new();
    for m in expected {
        let prefix = m["prefix"].as_str().unwrap();
        let layer = layers.iter().find(|l| l.prefix == prefix).expect(prefix);
        let ints = |key: &str| -> Vec<usize> {
            m[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect()
        };
        assert_eq!(layer.tt.ranks(), ints("ranks"), "{prefix}");
        assert_eq!(
            layer.bias.is_some(),
            m["bias"].as_bool().unwrap(),
            "{prefix}"
        );
        let padding = ints("padding").into_iter().map(|p| [p, p]).collect();
        let geometry = Geometry {
            stride: ints("stride"),
            padding,
            dilation: ints("dilation"),
        };
        let conv: TtConv = layer.to_conv(Some(&geometry)).unwrap();
        let x = tensor(&io, &format!("{prefix}.x"));
        let y = tensor(&io, &format!("{prefix}.y"));
        for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
            let got = conv.forward_with(&cpu, x.view(), implementation).unwrap();
            assert_eq!(got.shape(), y.shape(), "{prefix}");
            let max_abs = m["max_abs_y"].as_f64().unwrap();
            let diff = got
                .iter()
                .zip(y.iter())
                .map(|(a, b)| f64::from((a - b).abs()))
                .fold(0.0, f64::max);
            // Both sides are f32 sums of at most in * prod(k) * r products (<= 16*27*12 here):
            // each differs from the exact value by a few hundred ulps of max|y| at most;
            // TensorLy-Torch's own factorized path is 2e-6 off the f64 answer on these cases.
            assert!(
                diff <= 1e-5 * max_abs.max(1.0),
                "{prefix} {implementation:?}: max diff {diff:e} (max |y| {max_abs})"
            );
        }
    }
    // The ordinary tensors are found as they are, the int64 counter included.
    assert_eq!(
        model.get("features.1.num_batches_tracked").unwrap().dtype(),
        ttconv_models::DType::I64
    );
}
