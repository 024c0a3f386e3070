//! The reliability suites once more, built in the release profile: no overflow checks and no
//! debug assertions, so arithmetic wraps where the test profile would panic. They are the API
//! property suite (`api_properties`), the error regressions (`errors`) and the unit tests of
//! `tt-core` and `ttconv` (optimisers, geometry, TT-SVD magnitudes). CI runs only
//! `cargo test --workspace`, so this test builds and runs that profile itself (nested
//! `cargo test --release`, in the workspace's own target directory so that a machine that ran
//! `cargo xtask bench` reuses its release dependencies).

use std::path::Path;
use std::process::Command;

/// The nested runs: package and target selections of `cargo test --release`.
const RUNS: &[&[&str]] = &[
    &[
        "-p",
        "ttconv-tests",
        "--test",
        "api_properties",
        "--test",
        "errors",
    ],
    &["-p", "tt-core", "-p", "ttconv", "--lib"],
];

#[test]
fn reliability_suites_pass_in_the_release_profile() {
    if !cfg!(debug_assertions) {
        println!(
            "skipped: this build is the release profile already, where these suites run directly"
        );
        return;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for run in RUNS {
        let output = Command::new(&cargo)
            .current_dir(workspace)
            .args(["test", "--release"])
            .args(*run)
            .output()
            .expect("cargo runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        println!("cargo test --release {}\n{stdout}", run.join(" "));
        assert!(
            output.status.success(),
            "cargo test --release {} failed ({}):\n{stdout}\n{stderr}",
            run.join(" "),
            output.status
        );
        assert!(
            stdout.contains("test result: ok.") && !stdout.contains("test result: FAILED"),
            "no passing test result in:\n{stdout}"
        );
    }
}
