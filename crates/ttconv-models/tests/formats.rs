//! The same CNN reads identically from safetensors, zip `.pt` and legacy `.pt`, contiguous or
//! not; integer tensors pass through; MTCNN's legacy files read.

mod common;

use common::{data, read};
use ttconv_models::{DType, Format, detect_format};

#[test]
fn dense_cnn_is_identical_in_every_format() {
    let st = read("dense_cnn.safetensors");
    let layers: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("dense_cnn_layers.json")).unwrap())
            .unwrap();
    let order: Vec<&str> = layers["state_dict_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(st.tensors.len(), order.len());
    for file in [
        "dense_cnn.pt",
        "dense_cnn_legacy.pt",
        "dense_cnn_strided.pt",
        "dense_cnn_strided_legacy.pt",
    ] {
        let pt = read(file);
        // A state_dict keeps the module order.
        let names: Vec<&str> = pt.tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, order, "{file}");
        for (name, t) in &pt.tensors {
            let s = st
                .get(name)
                .unwrap_or_else(|| panic!("{file}: {name} missing"));
            assert_eq!(t.dtype(), s.dtype(), "{file}: {name}");
            assert_eq!(t.shape(), s.shape(), "{file}: {name}");
            assert!(t.bytes() == s.bytes(), "{file}: {name} differs");
        }
    }
    let counter = st.get("features.1.num_batches_tracked").unwrap();
    assert_eq!(counter.dtype(), DType::I64);
    assert_eq!(counter.shape(), &[] as &[usize]);
}

#[test]
fn formats_are_told_from_content() {
    let cases = [
        ("dense_cnn.safetensors", Format::Safetensors),
        ("dense_cnn.pt", Format::TorchZip),
        ("dense_cnn_legacy.pt", Format::TorchLegacy),
    ];
    for (file, format) in cases {
        let bytes = std::fs::read(data(file)).unwrap();
        assert_eq!(detect_format(&bytes).unwrap(), format, "{file}");
    }
}

#[test]
fn mtcnn_legacy_files_read() {
    let onet = read("mtcnn/onet.pt");
    let conv1 = onet.get("conv1.weight").expect("conv1.weight");
    assert_eq!(conv1.shape(), &[32, 3, 3, 3]);
    let conv4 = onet.get("conv4.weight").expect("conv4.weight");
    assert_eq!(conv4.shape(), &[128, 64, 2, 2]);
    for name in ["mtcnn/pnet.pt", "mtcnn/rnet.pt"] {
        let c = read(name);
        assert!(c.get("conv1.weight").is_some(), "{name}");
    }
}
