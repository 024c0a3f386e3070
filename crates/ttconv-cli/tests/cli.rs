//! The `ttconv` command end to end: the README's commands on the shipped CNN, inspect,
//! decompress, and the one-line errors with a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The ONNX half: `compress IN.onnx`, `export`, `import`.
#[path = "cli/onnx.rs"]
mod onnx;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ttconv-models/tests/data")
        .join(name)
}

fn ttconv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ttconv"))
        .args(args)
        .output()
        .expect("runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn compress_inspect_decompress() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cnn-tt.safetensors");
    let report = dir.path().join("report.json");
    let input = data("dense_cnn.pt");
    let o = ttconv(&[
        "compress",
        s(&input),
        "-o",
        s(&out),
        "--tol",
        "0.3",
        "--report",
        s(&report),
        "--input-size",
        "32x32",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    for needle in [
        "features.0",
        "32x16x3x3",
        "skipped: 1x1 kernel",
        "eligible kernels:",
        "whole file:",
        "MACs dense -> TT",
    ] {
        assert!(table.contains(needle), "no `{needle}` in\n{table}");
    }
    // stderr is not a terminal here: plain progress lines, no bar.
    assert!(text(&o.stderr).contains("[1/"), "{}", text(&o.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["layers"].as_array().unwrap().len(), 6);
    assert!(json["totals"]["eligible_ratio"].as_f64().unwrap() > 1.0);

    let o = ttconv(&["inspect", s(&out)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let listing = text(&o.stdout);
    assert!(
        listing.contains("TT layers:") && listing.contains("features.0.weight.factors.factor_0"),
        "{listing}"
    );

    let dense = dir.path().join("dense.safetensors");
    let o = ttconv(&["decompress", s(&out), "-o", s(&dense)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = ttconv(&["inspect", s(&dense)]);
    assert!(text(&o.stdout).contains("no TT layers"));
}

#[test]
fn ratio_and_layer_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors");
    let o = ttconv(&[
        "compress",
        s(&data("dense_cnn.safetensors")),
        "-o",
        s(&out),
        "--ratio",
        "2",
        "--layer",
        "temporal.*=4",
        "--exclude",
        "features.0",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    assert!(
        table.contains("[1,4,4,1]") && table.contains("excluded by `features.0`"),
        "{table}"
    );
}

#[test]
fn bad_input_gives_one_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors");
    let garbage = dir.path().join("garbage.pt");
    std::fs::write(&garbage, b"not a checkpoint at all").unwrap();
    let truncated = dir.path().join("truncated.pt");
    let b = std::fs::read(data("dense_cnn_legacy.pt")).unwrap();
    std::fs::write(&truncated, &b[..b.len() / 2]).unwrap();
    let input = data("dense_cnn.safetensors");
    let cases: Vec<Vec<&str>> = vec![
        vec!["compress", "/nonexistent/x.pt", "-o", s(&out)],
        vec!["compress", s(&garbage), "-o", s(&out)],
        vec!["compress", s(&truncated), "-o", s(&out)],
        vec!["compress", s(&input), "-o", s(&out), "--rank", "zero"],
        vec!["compress", s(&input), "-o", s(&out), "--ratio", "0.5"],
        vec!["inspect", s(&garbage)],
    ];
    for args in cases {
        let o = ttconv(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = text(&o.stderr);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert_eq!(
            err.trim_end()
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1,
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // Nothing was written, not even a temporary file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn the_input_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("in.safetensors");
    std::fs::copy(data("dense_cnn.safetensors"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let o = ttconv(&["compress", s(&copy), "-o", s(&copy)]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("overwrite"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
