//! The API property suite (`api_properties`) once more, built in the release profile: no
//! overflow checks and no debug assertions, so arithmetic wraps where the test profile would
//! panic. CI runs only `cargo test --workspace`, so this test builds and runs that profile
//! itself (a nested `cargo test --release`, in the workspace's own target directory so that a
//! machine that ran `cargo xtask bench` reuses its release dependencies).

use std::path::Path;
use std::process::Command;

#[test]
fn api_properties_pass_in_the_release_profile() {
    if !cfg!(debug_assertions) {
        println!(
            "skipped: this build is the release profile already, where api_properties runs directly"
        );
        return;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "test",
            "--release",
            "-p",
            "ttconv-tests",
            "--test",
            "api_properties",
        ])
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "cargo test --release --test api_properties failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("test result: ok."),
        "no test result in:\n{stdout}"
    );
}
