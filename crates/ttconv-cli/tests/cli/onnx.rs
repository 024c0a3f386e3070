//! `ttconv compress IN.onnx`, `ttconv export` and `ttconv import` end to end on the real models
//! of tests/golden/onnx.

use std::path::{Path, PathBuf};

use super::{s, text, ttconv};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden/onnx")
        .join(name)
}

const SILERO: &str = "silero-vad-6.2.3/silero_vad_16k_sequence.onnx";
const BASIC_PITCH: &str = "basic-pitch-0.4.0/nmp.onnx";

/// ONNX Runtime's library as `.ci/install-onnxruntime.sh` installs it, or `None` with a printed
/// reason (a failure when CI requires it).
fn library(test: &str) -> Option<String> {
    let found = std::env::var("TTCONV_ONNXRUNTIME")
        .ok()
        .filter(|p| !p.is_empty());
    if found.is_none() {
        assert!(
            std::env::var("TTCONV_REQUIRE_ONNXRUNTIME").as_deref() != Ok("1"),
            "{test}: TTCONV_REQUIRE_ONNXRUNTIME=1 without TTCONV_ONNXRUNTIME"
        );
        println!(
            "{test}: skipped: TTCONV_ONNXRUNTIME is not set (bash .ci/install-onnxruntime.sh prints the path)"
        );
    }
    found
}

#[test]
fn an_onnx_model_compresses_without_a_runtime_when_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bp-tt.onnx");
    let o = ttconv(&[
        "compress",
        s(&golden(BASIC_PITCH)),
        "-o",
        s(&out),
        "--no-verify",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    for needle in [
        "sharing its weight",
        "one input channel",
        "not checked (--no-verify)",
    ] {
        assert!(table.contains(needle), "no `{needle}` in\n{table}");
    }
    assert!(out.is_file());
    // Without --no-verify and without a runtime: a one-line error naming the way out.
    let o = ttconv(&["compress", s(&golden(BASIC_PITCH)), "-o", s(&out)]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--onnxruntime"),
        "{}",
        text(&o.stderr)
    );
    // Never over the input, never to a non-.onnx file.
    let copy = dir.path().join("in.onnx");
    std::fs::copy(golden(BASIC_PITCH), &copy).unwrap();
    let o = ttconv(&["compress", s(&copy), "-o", s(&copy), "--no-verify"]);
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(golden(BASIC_PITCH)).unwrap()
    );
    let o = ttconv(&[
        "compress",
        s(&copy),
        "-o",
        s(&dir.path().join("x.safetensors")),
        "--no-verify",
    ]);
    assert!(!o.status.success());
}

#[test]
fn the_check_and_its_bound() {
    let Some(lib) = library("the_check_and_its_bound") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sv-tt.onnx");
    let model = golden(SILERO);
    // Full rank: within 1e-4.
    let o = ttconv(&[
        "compress",
        s(&model),
        "-o",
        s(&out),
        "--tol",
        "0",
        "--keep-larger",
        "--onnxruntime",
        &lib,
        "--dim",
        "sequence_length=4",
        "--max-output-error",
        "1e-4",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("speech_probs"));
    // At ratio 2 the error is far above 1e-6: refused, and nothing written.
    let refused = dir.path().join("refused.onnx");
    let o = ttconv(&[
        "compress",
        s(&model),
        "-o",
        s(&refused),
        "--ratio",
        "2",
        "--onnxruntime",
        &lib,
        "--max-output-error",
        "1e-6",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("over the maximum"),
        "{}",
        text(&o.stderr)
    );
    assert!(!refused.exists());
}

/// A stacked sample set for silero-vad: `input [S, T, 576]`, `h`, `c [S, 1, 1, 128]`.
fn silero_samples(path: &Path, count: usize, seed: u32) {
    let t = 6;
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
    let mut input = Vec::with_capacity(count * t * 576 * 4);
    for i in 0..count * t * 576 {
        state = state.wrapping_mul(1664525).wrapping_add(1013904223);
        let noise = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
        let tone = (i as f32 * 0.07).sin() * 0.3;
        input.extend_from_slice(&(0.1 * noise + tone).to_le_bytes());
    }
    let zeros = vec![0u8; count * 128 * 4];
    let tensors = [
        ("input", vec![count, t, 576], input),
        ("h", vec![count, 1, 1, 128], zeros.clone()),
        ("c", vec![count, 1, 1, 128], zeros),
    ];
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, shape, data)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn calibration_reports_fits_and_held_out_errors() {
    let Some(lib) = library("calibration_reports_fits_and_held_out_errors") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib.safetensors");
    silero_samples(&calib, 6, 1);
    let out = dir.path().join("sv-fit.onnx");
    let report = dir.path().join("report.json");
    let o = ttconv(&[
        "compress",
        s(&golden(SILERO)),
        "-o",
        s(&out),
        "--ratio",
        "2",
        "--calibrate",
        s(&calib),
        "--onnxruntime",
        &lib,
        "--report",
        s(&report),
        "--sweeps",
        "2",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    for needle in [
        "calibration: 4 samples, 2 held out",
        "layer output error",
        "held-out outputs",
        "checked on the held-out samples (2)",
    ] {
        assert!(stdout.contains(needle), "no `{needle}` in\n{stdout}");
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["calibration"]["layers"].as_array().unwrap().len(), 4);
    assert!(json["calibration"]["holdout_fitted"][0]["mse"].is_number());
    // A sample file that does not match the model is a one-line error.
    let wrong = dir.path().join("wrong.safetensors");
    std::fs::write(&wrong, b"not safetensors").unwrap();
    let o = ttconv(&[
        "compress",
        s(&golden(SILERO)),
        "-o",
        s(&out),
        "--calibrate",
        s(&wrong),
        "--onnxruntime",
        &lib,
    ]);
    assert!(!o.status.success());
    assert_eq!(text(&o.stderr).lines().count(), 1, "{}", text(&o.stderr));
}

#[test]
fn export_and_import_round_trip_a_layer() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ttconv-models/tests/data/tltorch_model.safetensors");
    let onnx = dir.path().join("layer.onnx");
    let list = ttconv(&["inspect", s(&ckpt)]);
    let listing = text(&list.stdout);
    let prefix = listing
        .lines()
        .skip_while(|l| !l.starts_with("TT layers"))
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("a TT layer")
        .to_string();
    let o = ttconv(&["export", s(&ckpt), "-o", s(&onnx), "--layer", &prefix]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let back = dir.path().join("back.safetensors");
    let o = ttconv(&["import", s(&onnx), "-o", s(&back), "--prefix", &prefix]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let a = text(&ttconv(&["inspect", s(&ckpt)]).stdout);
    let b = text(&ttconv(&["inspect", s(&back)]).stdout);
    let ranks = |t: &str| {
        t.lines()
            .find(|l| l.trim_start().starts_with(&prefix))
            .and_then(|l| l.split("ranks").nth(1))
            .map(|r| r.split("params").next().unwrap().trim().to_string())
    };
    assert_eq!(ranks(&a), ranks(&b), "{a}\n{b}");
}
