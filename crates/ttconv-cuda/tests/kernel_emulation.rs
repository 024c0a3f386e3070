//! Runs the backend's CUDA kernels on the CPU: the sources of [`ttconv_cuda::kernel_sources`],
//! compiled as C++20 against a small stand-in for the CUDA execution model
//! (`tests/emulation/shim.h`: blocks in turn, a block's threads as OS threads meeting at a
//! barrier), checked on random problems against direct loops (`tests/emulation/harness.cpp`).
//!
//! This checks the kernels' index arithmetic, tiling and chunking without a GPU. It needs a C++20
//! compiler (`$CXX`, else `c++`); without one it prints `skipped: <reason>` and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel sources with the CUDA-only shared memory declarations rewritten for the shim.
fn emulation_sources() -> String {
    let mut out = String::new();
    for (name, src) in ttconv_cuda::kernel_sources() {
        let mut s = src.to_string();
        for (from, to) in [
            (
                "extern __shared__ float w_tile[];",
                "float* w_tile = g_dyn_smem;",
            ),
            (
                "__shared__ float partial[1024];",
                "static float partial[1024];",
            ),
        ] {
            s = s.replace(from, to);
        }
        assert!(
            !s.contains("__shared__"),
            "module {name}: a shared memory declaration the emulation does not know"
        );
        out.push_str(&format!("// ---- module {name}\n{s}\n"));
    }
    out
}

fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".to_string())
}

fn compile(
    cxx: &str,
    src: &Path,
    out: &Path,
    include: &[&Path],
) -> std::io::Result<std::process::Output> {
    let mut cmd = Command::new(cxx);
    cmd.args([
        "-std=c++20",
        "-O1",
        "-pthread",
        "-Wno-unknown-pragmas",
        "-o",
    ])
    .arg(out)
    .arg(src);
    for dir in include {
        cmd.arg("-I").arg(dir);
    }
    cmd.output()
}

#[test]
fn kernels_match_direct_loops_on_the_cpu() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/emulation");
    let dir = std::env::temp_dir().join(format!("ttconv-cuda-emulation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cxx = compiler();

    // Probe: a C++20 compiler with <barrier> (the shim needs it)?
    let probe = dir.join("probe.cpp");
    std::fs::write(
        &probe,
        "#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n",
    )
    .unwrap();
    match compile(&cxx, &probe, &dir.join("probe"), &[]) {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "skipped: `{cxx}` cannot build C++20 with <barrier>: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            );
            return;
        }
        Err(e) => {
            println!("skipped: no C++ compiler `{cxx}` ({e})");
            return;
        }
    }

    std::fs::write(dir.join("kernels_emu.inc"), emulation_sources()).unwrap();
    let exe = dir.join("harness");
    let out = compile(&cxx, &here.join("harness.cpp"), &exe, &[&here, &dir]).unwrap();
    assert!(
        out.status.success(),
        "the kernel emulation does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).arg("40").output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.status.success(), "kernel emulation failed:\n{stdout}");
}
