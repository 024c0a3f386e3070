//! Write -> read round trips: TT layers and their metadata come back equal, every other tensor
//! bit-identical; one `TtConv` saves and loads with its geometry.

mod common;

use ndarray::{Array1, Array3, ArrayD, IxDyn};
use proptest::prelude::*;
use ttconv::{TtConv, TtConvConfig};
use ttconv_models::{
    Checkpoint, DType, Geometry, LayerMeta, Limits, Tensor, TtLayer, checkpoint_to_bytes,
    find_tt_layers, insert_tt_layer, load_layer, parse_checkpoint, save_layer, tt_from_cores,
};

fn layer_strategy() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, bool, u64)> {
    // (TT shape (in, k.., out), inner ranks, bias, seed)
    (1usize..4).prop_flat_map(|d| {
        (
            prop::collection::vec(1usize..6, d + 2),
            prop::collection::vec(1usize..5, d + 1),
            any::<bool>(),
            any::<u64>(),
        )
    })
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn make_layer(i: usize, shape: &[usize], inner: &[usize], bias: bool, seed: u64) -> TtLayer {
    let mut ranks = vec![1];
    ranks.extend_from_slice(inner);
    ranks.push(1);
    let cores: Vec<Array3<f32>> = (0..shape.len())
        .map(|k| {
            let dim = (ranks[k], shape[k], ranks[k + 1]);
            Array3::from_shape_vec(dim, values(dim.0 * dim.1 * dim.2, seed + k as u64)).unwrap()
        })
        .collect();
    let out = *shape.last().unwrap();
    let d = shape.len() - 2;
    let mut meta = LayerMeta {
        rel_error: Some(0.125 * i as f64),
        ..LayerMeta::default()
    };
    if i.is_multiple_of(2) {
        meta.set_geometry(Some(&Geometry {
            stride: vec![1 + i % 3; d],
            padding: vec![[i % 2, 1]; d],
            dilation: vec![1; d],
        }));
    }
    TtLayer {
        prefix: format!("block{i}.conv"),
        tt: tt_from_cores(cores).unwrap(),
        bias: bias.then(|| Array1::from(values(out, seed ^ 7))),
        meta,
        dtype: DType::F32,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn layers_metadata_and_other_tensors_survive(
        layers in prop::collection::vec(layer_strategy(), 1..4),
        others in prop::collection::vec((prop::sample::select(vec![DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::U8, DType::Bool]), prop::collection::vec(0usize..4, 0..3), any::<u64>()), 0..5),
    ) {
        let mut ckpt = Checkpoint::default();
        for (i, (dtype, shape, seed)) in others.iter().enumerate() {
            let n: usize = shape.iter().product::<usize>() * dtype.size();
            let bytes: Vec<u8> = values(n, *seed).iter().map(|v| (v * 100.0) as i8 as u8).collect();
            let bytes = if *dtype == DType::Bool { bytes.iter().map(|b| b & 1).collect() } else { bytes };
            ckpt.insert(format!("other{i}.weight"), Tensor::from_bytes(*dtype, shape.clone(), bytes).unwrap());
        }
        ckpt.metadata.insert("producer".into(), "test".into());
        let made: Vec<TtLayer> = layers
            .iter()
            .enumerate()
            .map(|(i, (shape, inner, bias, seed))| make_layer(i, shape, inner, *bias, *seed))
            .collect();
        for l in &made {
            insert_tt_layer(&mut ckpt, l).unwrap();
        }
        let back = parse_checkpoint(&checkpoint_to_bytes(&ckpt).unwrap(), &Limits::default()).unwrap();
        prop_assert_eq!(back.metadata.get("producer").map(String::as_str), Some("test"));
        let found = find_tt_layers(&back).unwrap();
        prop_assert_eq!(found.len(), made.len());
        for l in &made {
            let f = found.iter().find(|f| f.prefix == l.prefix).unwrap();
            prop_assert_eq!(f.tt.cores(), l.tt.cores());
            prop_assert_eq!(&f.bias, &l.bias);
            prop_assert_eq!(f.meta.rel_error, l.meta.rel_error);
            prop_assert_eq!(f.meta.geometry(), l.meta.geometry());
            prop_assert_eq!(&f.meta.ranks, &l.tt.ranks());
            prop_assert_eq!(f.meta.kernel_shape.clone(), Some(l.kernel_shape()));
        }
        for (name, t) in &ckpt.tensors {
            let b = back.get(name).unwrap();
            prop_assert_eq!(b.dtype(), t.dtype());
            prop_assert_eq!(b.shape(), t.shape());
            prop_assert!(b.bytes() == t.bytes(), "{} differs", name);
        }
    }
}

#[test]
fn one_ttconv_saves_and_loads_with_its_geometry() {
    let kernel = ArrayD::from_shape_vec(IxDyn(&[6, 4, 3, 2]), values(144, 3)).unwrap();
    let bias = Array1::from(values(6, 9));
    let config = TtConvConfig::new(4, 6, vec![3, 2])
        .stride(vec![2, 1])
        .padding(ttconv::Padding::Asymmetric(vec![(1, 0), (0, 1)]))
        .dilation(vec![1, 2])
        .bias(true);
    let mut layer = TtConv::new(config).unwrap();
    layer
        .init_from_tensor(
            kernel.view(),
            Some(bias.view()),
            &ttconv::Truncation::rank(ttconv::RankSpec::Uniform(3)),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.safetensors");
    save_layer(&layer, "conv", &path).unwrap();
    let back = load_layer(&path, Some("conv")).unwrap();
    assert_eq!(back.tt().cores(), layer.tt().cores());
    assert_eq!(back.bias(), layer.bias());
    assert_eq!(back.geometry(), layer.geometry());
    assert_eq!(load_layer(&path, None).unwrap().ranks(), layer.ranks());
    assert!(load_layer(&path, Some("nope")).is_err());
    // Only the output remains in the folder: no temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
