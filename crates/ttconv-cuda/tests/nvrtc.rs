//! Compiles every kernel source with NVRTC, to a CUBIN for `sm_90` (what a device of compute
//! capability 9.0 runs, with no driver JIT) and to PTX for `compute_90` (the fallback for devices
//! newer than the NVRTC): no GPU or driver needed, only `libnvrtc`.
//!
//! With the PyPI wheel (see `.ci/install-nvrtc.sh`):
//! `LD_LIBRARY_PATH="$(bash .ci/install-nvrtc.sh):$LD_LIBRARY_PATH" cargo test -p ttconv-cuda --test nvrtc`.
//! When `libnvrtc` is not on the loader path, the test looks for `libnvrtc.so.13` in
//! `$TTCONV_NVRTC_DIR`, then in the wheel installed under the workspace's `.venv`, then in
//! `/usr/local/cuda/lib64`, and re-runs itself in a child process with that folder on
//! `LD_LIBRARY_PATH` (the loader path cannot change inside a running process). Without any, it
//! prints `skipped: <reason>` and passes, unless `TTCONV_REQUIRE_NVRTC=1`, then it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use ttconv_cuda::{
    CompileTarget, compile_all_to_cubin, compile_all_to_ptx, kernel_sources, loaded_cuda_libraries,
    nvrtc_available, nvrtc_supported_archs,
};

/// Set in the child process this test starts, so that it does not start another.
const REEXEC_ENV: &str = "TTCONV_NVRTC_TEST_CHILD";

fn nvrtc_required() -> bool {
    std::env::var("TTCONV_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

/// Folders that may hold `libnvrtc.so.13`, most specific first.
fn nvrtc_dir_candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("TTCONV_NVRTC_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    if let Ok(entries) = std::fs::read_dir(root.join(".venv/lib")) {
        for e in entries.flatten() {
            dirs.push(e.path().join("site-packages/nvidia/cu13/lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs
}

/// Re-runs `test` in a child process with `dir` on `LD_LIBRARY_PATH`; true when it passed.
fn rerun_with_library_dir(test: &str, dir: &Path) -> bool {
    let path = match std::env::var_os("LD_LIBRARY_PATH") {
        Some(old) if !old.is_empty() => {
            let mut p = dir.as_os_str().to_owned();
            p.push(":");
            p.push(old);
            p
        }
        _ => dir.as_os_str().to_owned(),
    };
    println!(
        "libnvrtc found in {}; re-running {test} with it",
        dir.display()
    );
    let status = Command::new(std::env::current_exe().expect("test binary path"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("LD_LIBRARY_PATH", path)
        .env(REEXEC_ENV, "1")
        .status()
        .expect("re-run the test binary");
    status.success()
}

/// Whether NVRTC loads in this process; if not, either re-runs `test` where it does (and
/// asserts that run passed) or prints why it skips. `false` means: return now.
fn nvrtc_or_skip(test: &str) -> bool {
    if nvrtc_available() {
        return true;
    }
    let is_child = std::env::var_os(REEXEC_ENV).is_some();
    let found = nvrtc_dir_candidates()
        .into_iter()
        .find(|d| d.join("libnvrtc.so.13").is_file());
    if let (false, Some(dir)) = (is_child, found) {
        assert!(
            rerun_with_library_dir(test, &dir),
            "{test} failed with {}",
            dir.display()
        );
        return false;
    }
    let reason = "libnvrtc cannot be loaded (run .ci/install-nvrtc.sh, or put a folder with \
                  libnvrtc.so.13 on LD_LIBRARY_PATH or in TTCONV_NVRTC_DIR)";
    assert!(!nvrtc_required(), "TTCONV_REQUIRE_NVRTC=1 but {reason}");
    println!("skipped: {reason}");
    false
}

/// The `extern "C" __global__` kernel names of a source.
fn kernel_names(src: &str) -> Vec<&str> {
    src.lines()
        .filter(|l| l.contains("__global__ void "))
        .map(|line| {
            line.split("__global__ void ")
                .nth(1)
                .and_then(|rest| rest.split('(').next())
                .expect("kernel name")
        })
        .collect()
}

#[test]
fn every_kernel_compiles_to_a_cubin_for_sm_90() {
    if !nvrtc_or_skip("every_kernel_compiles_to_a_cubin_for_sm_90") {
        return;
    }
    let archs = nvrtc_supported_archs();
    assert!(archs.contains(&90), "NVRTC does not list sm_90: {archs:?}");
    assert_eq!(
        CompileTarget::for_device(90, &archs).unwrap(),
        CompileTarget::Cubin(90),
        "a 9.0 device gets a CUBIN from this NVRTC"
    );
    let cubins = match compile_all_to_cubin("sm_90") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let sources = kernel_sources();
    assert_eq!(cubins.len(), sources.len());
    for ((name, elf), (src_name, src)) in cubins.iter().zip(&sources) {
        assert_eq!(name, src_name);
        // A 64-bit ELF (class 2) of NVIDIA CUDA (machine 190 = EM_CUDA, little-endian u16 at 18).
        assert!(
            elf.starts_with(b"\x7fELF\x02"),
            "module {name}: not a 64-bit ELF"
        );
        assert_eq!(
            u16::from_le_bytes([elf[18], elf[19]]),
            190,
            "module {name}: not EM_CUDA"
        );
        for kernel in kernel_names(src) {
            // Every kernel is a symbol of the CUBIN (its name is in the string table).
            let needle = format!("{kernel}\0");
            assert!(
                elf.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "module {name}: kernel {kernel} missing from the CUBIN"
            );
        }
        println!("compiled {name}: {} bytes of CUBIN for sm_90", elf.len());
    }
    // The process now has the NVRTC it compiled with mapped; say which file that was.
    let libs = loaded_cuda_libraries();
    println!("loaded: {libs:?}");
    assert!(
        libs.iter().any(|p| p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libnvrtc"))),
        "no libnvrtc in /proc/self/maps after compiling: {libs:?}"
    );
}

#[test]
fn every_kernel_compiles_to_ptx_for_compute_90() {
    if !nvrtc_or_skip("every_kernel_compiles_to_ptx_for_compute_90") {
        return;
    }
    let archs = nvrtc_supported_archs();
    println!("NVRTC supported architectures: {archs:?}");
    let ptx = match compile_all_to_ptx("compute_90") {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let sources = kernel_sources();
    assert_eq!(ptx.len(), sources.len());
    for ((name, text), (src_name, src)) in ptx.iter().zip(&sources) {
        assert_eq!(name, src_name);
        assert!(
            text.contains(".target sm_90"),
            "module {name}: PTX not for sm_90"
        );
        // Every `extern "C" __global__` kernel of the source is an entry of the PTX.
        for kernel in kernel_names(src) {
            assert!(
                text.contains(&format!(".entry {kernel}(")),
                "module {name}: kernel {kernel} missing from the PTX"
            );
        }
        println!("compiled {name}: {} bytes of PTX", text.len());
    }
}

#[test]
fn compile_errors_carry_the_nvrtc_log() {
    if !nvrtc_or_skip("compile_errors_carry_the_nvrtc_log") {
        return;
    }
    // An unknown architecture is rejected by NVRTC; the error names the module and the option.
    match compile_all_to_ptx("compute_1") {
        Err(ttconv_cuda::Error::Compile { kernel, log }) => {
            assert_eq!(kernel, "elementwise");
            assert!(log.contains("compute_1"), "log: {log}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
    match compile_all_to_cubin("sm_1") {
        Err(ttconv_cuda::Error::Compile { kernel, log }) => {
            assert_eq!(kernel, "elementwise");
            assert!(log.contains("sm_1"), "log: {log}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}
