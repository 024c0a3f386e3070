//! `cargo xtask gpu-check`: prepares one self-contained folder that a machine with an NVIDIA GPU
//! (and no Rust toolchain) runs in one call: the ttconv-cuda test binaries, the `gpu_bench`
//! example, the PyTorch anchor scripts, the tensorly / tensorly-torch wheels, NVRTC 13.0 and
//! `run.sh` (from `crates/ttconv-cuda/scripts/gpu_check_run.sh`).
//!
//! The binaries are built in release with `debug = false` (debug info stripped) in their own
//! target folder (`target/gpu-check-build`, so the workspace's release build is not thrown away),
//! then packed with the folder's other parts; downloads are cached under
//! `target/gpu-check-cache`. The folder is rebuilt from scratch each time and holds no time
//! stamp, so the same tree and toolchain give the same files.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use crate::cli::{Args, UsageError, usage_exit};

const HELP: &str = "\
usage: cargo xtask gpu-check [--out DIR] [--no-nvrtc]

Prepares DIR (default gpu-check/ at the repository root, git-ignored) for ONE call on a
machine with an NVIDIA GPU and python3 + PyTorch but no Rust (the device tool's machines):

  binaries.tar.xz  ttconv-cuda's release test binaries (tests/) and gpu_bench (bin/)
  scripts/         torch_gpu_anchor.py, report.py, cuda_libs.py
  suite.json       the bench's default suite (`cargo xtask bench --list`), read by gpu_bench
                   and the anchor: one list of cases for the CPU bench and the GPU check
  wheels/          tensorly 0.10 and tensorly-torch 0.5 (pure Python, pip-installed there)
  nvrtc-13.0.88.tar.xz  libnvrtc.so.13 of CUDA 13.0 (the driver 580 cannot load PTX of a
                   newer NVRTC); --no-nvrtc leaves it out and uses the machine's own
  run.sh           makes a folder of links to the chosen CUDA libraries (first on the
                   loader path), runs the smoke test first, then the CUDA tests (one test
                   thread), gpu_bench, the TensorLy-Torch / cuDNN anchor and prints the final
                   table last, in under 6 minutes (--dry-run: the library folder and the plan)
  README.txt, BUILD_INFO.txt, SHA256SUMS

Needs cargo, python3 with pip and network access to PyPI (first run; cached after),
tar and xz. Prints the folder's size (must be under 60 MiB) and the device call to make.

  --out DIR    the folder to (re)create; a folder that is not a gpu-check folder is refused
  --no-nvrtc   do not carry NVRTC 13.0 (smaller folder)";

/// The most the folder may weigh (the device tool carries at most 64 MiB with the tree).
const MAX_BYTES: u64 = 60 << 20;
/// NVRTC wheel carried by default: CUDA 13.0, the driver 580's version.
const NVRTC_SPEC: &str = "nvidia-cuda-nvrtc==13.0.88";
const NVRTC_ARCHIVE: &str = "nvrtc-13.0.88.tar.xz";
/// The pure-Python wheels of the anchor.
const WHEEL_SPECS: &[&str] = &["tensorly==0.10.*", "tensorly-torch==0.5.*"];
/// Test binaries left out: `kernel_emulation` runs the kernels on the CPU with a C++ compiler
/// and reads its harness from the source tree, which the device does not have.
const SKIPPED_TESTS: &[&str] = &["kernel_emulation"];
/// First line of README.txt: marks a folder this task may delete and rebuild.
const MARKER: &str = "ttconv GPU check folder (made by `cargo xtask gpu-check`)";
/// README.txt of the folder, with `{MARKER}`, `{rel}` (the folder relative to the repository),
/// `{DEVICE_TIMEOUT_S}`, `{nvrtc_setup}` and `{nvrtc}` filled in by [`readme`].
const README_TEMPLATE: &str = include_str!("../../crates/ttconv-cuda/scripts/gpu_check_README.txt");
/// Scripts copied from `crates/ttconv-cuda/scripts`.
const SCRIPTS: &[&str] = &["torch_gpu_anchor.py", "report.py", "cuda_libs.py"];
/// The seconds the device call is given (run.sh's own deadline is 330 s, plus setup and the
/// report): leaves a 15-minute lease time for a rerun.
const DEVICE_TIMEOUT_S: u32 = 420;

#[derive(Debug)]
struct Options {
    out: Option<PathBuf>,
    nvrtc: bool,
}

fn parse(mut args: Args) -> Result<Option<Options>, UsageError> {
    if args.help() {
        return Ok(None);
    }
    let out = args.value("--out")?.map(PathBuf::from);
    let nvrtc = !args.flag("--no-nvrtc");
    args.finish()?;
    Ok(Some(Options { out, nvrtc }))
}

pub fn main(args: Args) -> ExitCode {
    let options = match parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_exit("gpu-check", &e),
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: gpu-check: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T, E = String> = std::result::Result<T, E>;

/// The workspace root (the parent of this crate's folder).
fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = xtask.parent().unwrap_or(xtask);
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

fn run(o: &Options) -> Result<()> {
    let root = workspace_root();
    let out = match &o.out {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => std::env::current_dir()
            .map_err(|e| format!("current folder: {e}"))?
            .join(p),
        None => root.join("gpu-check"),
    };
    let cache = root.join("target/gpu-check-cache");
    let stage = root.join("target/gpu-check-stage");
    fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;

    println!(
        "gpu-check: building the ttconv-cuda test binaries and gpu_bench (release, no debug info)"
    );
    let built = build(&root)?;

    println!("gpu-check: preparing {}", out.display());
    reset_folder(&out)?;
    reset_dir(&stage)?;
    for dir in ["tests", "bin"] {
        fs::create_dir_all(stage.join(dir)).map_err(|e| format!("{dir}: {e}"))?;
    }
    for (name, exe) in &built.tests {
        copy(exe, &stage.join("tests").join(name))?;
    }
    copy(&built.bench, &stage.join("bin/gpu_bench"))?;
    tar_xz(&stage, &["bin", "tests"], &out.join("binaries.tar.xz"))?;

    let scripts_src = root.join("crates/ttconv-cuda/scripts");
    fs::create_dir_all(out.join("scripts")).map_err(|e| format!("scripts: {e}"))?;
    for s in SCRIPTS {
        copy(&scripts_src.join(s), &out.join("scripts").join(s))?;
    }
    copy(&scripts_src.join("gpu_check_run.sh"), &out.join("run.sh"))?;
    fs::write(out.join("suite.json"), crate::bench::default_suite_json()?)
        .map_err(|e| format!("suite.json: {e}"))?;

    let wheels = fetch_wheels(&cache)?;
    fs::create_dir_all(out.join("wheels")).map_err(|e| format!("wheels: {e}"))?;
    for w in &wheels {
        copy(w, &out.join("wheels").join(file_name(w)))?;
    }
    if o.nvrtc {
        let archive = fetch_nvrtc(&cache)?;
        copy(&archive, &out.join(NVRTC_ARCHIVE))?;
    }

    fs::write(
        out.join("BUILD_INFO.txt"),
        build_info(&root, &built, &wheels, o),
    )
    .map_err(|e| format!("BUILD_INFO.txt: {e}"))?;
    fs::write(out.join("README.txt"), readme(&root, &out, o))
        .map_err(|e| format!("README.txt: {e}"))?;
    write_checksums(&out)?;
    let _ = fs::remove_dir_all(&stage);

    let size = folder_size(&out)?;
    println!("\ngpu-check: {} holds:", out.display());
    for (path, bytes) in list_files(&out)? {
        println!("  {:>10.2} MiB  {}", bytes as f64 / 1048576.0, path);
    }
    println!(
        "gpu-check: folder size {:.1} MiB ({size} bytes; limit {} MiB)",
        size as f64 / 1048576.0,
        MAX_BYTES >> 20
    );
    if size > MAX_BYTES {
        return Err(format!(
            "the folder is {:.1} MiB, over the {} MiB limit (try --no-nvrtc)",
            size as f64 / 1048576.0,
            MAX_BYTES >> 20
        ));
    }
    println!("\n{}", device_call(&root, &out));
    Ok(())
}

/// The device-tool call that runs the folder.
fn device_call(root: &Path, out: &Path) -> String {
    match out.strip_prefix(root) {
        Ok(rel) => {
            let rel = rel.display();
            format!(
                "Device call (one call; the machine needs no Rust):\n  \
                 run  command: bash {rel}/run.sh\n       \
                 carry: [\"{rel}\"]\n       \
                 timeout_s: {DEVICE_TIMEOUT_S}\n\
                 Results come back under $OUT (run.log, gpu_bench.json, torch_anchor.json, \
                 report.md); the table is the end of the output.\n\
                 Locally: `bash {rel}/run.sh --dry-run` shows the plan without a GPU."
            )
        }
        Err(_) => format!(
            "Note: {} is outside the repository {}: the device tool only carries paths inside \
             it. Use --out with a folder in the repository (git-ignored), then call\n  run  \
             command: bash <folder>/run.sh  carry: [\"<folder>\"]  timeout_s: {DEVICE_TIMEOUT_S}",
            out.display(),
            root.display()
        ),
    }
}

// ------------------------------------------------------------------------------------------------
// Build
// ------------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Built {
    /// `(name, executable)` of each test binary (the library's unit tests are `ttconv_cuda`).
    tests: Vec<(String, PathBuf)>,
    bench: PathBuf,
    rustc: String,
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `cargo test -p ttconv-cuda --release --no-run` (which also builds the examples), read from
/// its JSON messages.
fn build(root: &Path) -> Result<Built> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root)
        .args([
            "test",
            "-p",
            "ttconv-cuda",
            "--release",
            "--no-run",
            "--message-format=json-render-diagnostics",
            "--target-dir",
        ])
        .arg(root.join("target/gpu-check-build"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for profile in ["RELEASE", "BENCH"] {
        cmd.env(format!("CARGO_PROFILE_{profile}_DEBUG"), "false")
            .env(format!("CARGO_PROFILE_{profile}_STRIP"), "debuginfo");
    }
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cargo()))?;
    if !output.status.success() {
        return Err(format!("the build failed ({})", output.status));
    }
    let mut tests = Vec::new();
    let mut bench = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let name = msg["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kinds: Vec<&str> = msg["target"]["kind"]
            .as_array()
            .map(|k| k.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let is_test = msg["profile"]["test"].as_bool().unwrap_or(false);
        if kinds.contains(&"example") && name == "gpu_bench" {
            bench = Some(PathBuf::from(exe));
        } else if is_test && !SKIPPED_TESTS.contains(&name.as_str()) {
            tests.push((name, PathBuf::from(exe)));
        }
    }
    tests.sort();
    tests.dedup_by(|a, b| a.0 == b.0);
    let bench = bench.ok_or("the build produced no gpu_bench example")?;
    if tests.is_empty() {
        return Err("the build produced no test binary".into());
    }
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "rustc (unknown version)".into());
    Ok(Built {
        tests,
        bench,
        rustc,
    })
}

// ------------------------------------------------------------------------------------------------
// Downloads (cached)
// ------------------------------------------------------------------------------------------------

/// `pip download` of pure-Python or manylinux x86-64 wheels for the device's CPython 3.12.
fn pip_download(dest: &Path, specs: &[&str]) -> Result<()> {
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux2014_x86_64",
            "--platform",
            "manylinux_2_12_x86_64",
            "--platform",
            "manylinux2010_x86_64",
            "-d",
        ])
        .arg(dest)
        .args(specs)
        .status()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "pip download {} failed ({status}); PyPI must be reachable the first time",
            specs.join(" ")
        ))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The wheels of [`WHEEL_SPECS`], downloaded once into `cache/wheels`.
fn fetch_wheels(cache: &Path) -> Result<Vec<PathBuf>> {
    let dir = cache.join("wheels");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let find = || -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = ["tensorly-0.10.", "tensorly_torch-0.5."]
            .iter()
            .filter_map(|prefix| {
                fs::read_dir(&dir)
                    .ok()?
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| {
                        let n = file_name(p);
                        n.starts_with(prefix) && n.ends_with(".whl")
                    })
            })
            .collect();
        found.sort();
        found
    };
    if find().len() < WHEEL_SPECS.len() {
        println!("gpu-check: downloading {}", WHEEL_SPECS.join(" "));
        pip_download(&dir, WHEEL_SPECS)?;
    }
    let found = find();
    if found.len() < WHEEL_SPECS.len() {
        return Err(format!(
            "wheels missing in {} after the download",
            dir.display()
        ));
    }
    Ok(found)
}

/// `libnvrtc.so.13` and `libnvrtc-builtins.so.13.0` of [`NVRTC_SPEC`], repacked as a small
/// tar.xz (the wheel is 90 MB, the two libraries 32 MB once compressed) in `cache`.
fn fetch_nvrtc(cache: &Path) -> Result<PathBuf> {
    let archive = cache.join(NVRTC_ARCHIVE);
    if archive.is_file() {
        return Ok(archive);
    }
    let wheel_dir = cache.join("nvrtc-wheel");
    let lib_dir = cache.join("nvrtc-lib");
    reset_dir(&wheel_dir)?;
    reset_dir(&lib_dir)?;
    println!("gpu-check: downloading {NVRTC_SPEC} (about 90 MB, once)");
    pip_download(&wheel_dir, &[NVRTC_SPEC])?;
    let wheel = fs::read_dir(&wheel_dir)
        .map_err(|e| format!("{}: {e}", wheel_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| file_name(p).ends_with(".whl"))
        .ok_or("the NVRTC wheel was not downloaded")?;
    let extract = r#"
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
want = {"libnvrtc.so.13", "libnvrtc-builtins.so.13.0"}
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        base = os.path.basename(info.filename)
        if base in want and "/lib/" in info.filename:
            with z.open(info) as src, open(os.path.join(dest, base), "wb") as dst:
                dst.write(src.read())
            want.discard(base)
if want:
    sys.exit("missing from the wheel: " + ", ".join(sorted(want)))
"#;
    run_ok(
        Command::new("python3")
            .args(["-c", extract])
            .arg(&wheel)
            .arg(&lib_dir),
        "extracting NVRTC from its wheel",
    )?;
    println!("gpu-check: compressing NVRTC (xz, about a minute, once)");
    let partial = cache.join(format!("{NVRTC_ARCHIVE}.partial"));
    tar_xz(
        &lib_dir,
        &["libnvrtc.so.13", "libnvrtc-builtins.so.13.0"],
        &partial,
    )?;
    fs::rename(&partial, &archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let _ = fs::remove_dir_all(&wheel_dir);
    let _ = fs::remove_dir_all(&lib_dir);
    Ok(archive)
}

// ------------------------------------------------------------------------------------------------
// Files
// ------------------------------------------------------------------------------------------------

fn run_ok(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// A reproducible `tar.xz` of `entries` (relative to `dir`): sorted, no owners, time 0.
fn tar_xz(dir: &Path, entries: &[&str], dest: &Path) -> Result<()> {
    run_ok(
        Command::new("tar")
            .env("XZ_OPT", "-6 -T0")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-cJf",
            ])
            .arg(dest)
            .arg("-C")
            .arg(dir)
            .args(entries),
        &format!("tar -cJf {} (needs GNU tar and xz)", dest.display()),
    )
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
}

fn reset_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))
}

/// Empties `out` for a fresh folder, refusing to delete a non-empty folder that is not ours.
fn reset_folder(out: &Path) -> Result<()> {
    if out.exists() {
        let empty = fs::read_dir(out)
            .map_err(|e| format!("{}: {e}", out.display()))?
            .next()
            .is_none();
        let ours = fs::read_to_string(out.join("README.txt"))
            .map(|s| s.starts_with(MARKER))
            .unwrap_or(false);
        if !empty && !ours {
            return Err(format!(
                "{} exists and is not a gpu-check folder (no README.txt of ours): refusing to \
                 delete it; choose another --out",
                out.display()
            ));
        }
    }
    reset_dir(out)
}

/// Every file under `dir`, relative, sorted, with its size.
fn list_files(dir: &Path) -> Result<Vec<(String, u64)>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Result<()> {
        for e in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let p = e.path();
            let meta = fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if meta.is_dir() {
                walk(base, &p, out)?;
            } else {
                let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
                out.push((rel, meta.len()));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    Ok(files)
}

fn folder_size(dir: &Path) -> Result<u64> {
    Ok(list_files(dir)?.iter().map(|(_, b)| b).sum())
}

/// `SHA256SUMS` of every other file (checked by run.sh with `sha256sum -c`).
fn write_checksums(out: &Path) -> Result<()> {
    let files: Vec<String> = list_files(out)?.into_iter().map(|(p, _)| p).collect();
    let output = Command::new("sha256sum")
        .current_dir(out)
        .args(&files)
        .output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    if !output.status.success() {
        return Err(format!("sha256sum failed ({})", output.status));
    }
    fs::write(out.join("SHA256SUMS"), &output.stdout).map_err(|e| format!("SHA256SUMS: {e}"))
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn build_info(root: &Path, built: &Built, wheels: &[PathBuf], o: &Options) -> String {
    let commit = git(root, &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(root, &["status", "--porcelain", "--untracked-files=no"])
        .map(|s| if s.is_empty() { "clean" } else { "modified" })
        .unwrap_or("unknown");
    let mut s = String::new();
    let _ = writeln!(s, "source: commit {commit} (tracked files {dirty})");
    let _ = writeln!(
        s,
        "built with: {} (release, debug info stripped), target x86_64 Linux (glibc >= 2.34)",
        built.rustc
    );
    let names: Vec<&str> = built.tests.iter().map(|(n, _)| n.as_str()).collect();
    let _ = writeln!(
        s,
        "binaries: tests/{{{}}}, bin/gpu_bench (left out: {})",
        names.join(","),
        SKIPPED_TESTS.join(",")
    );
    let wheel_names: Vec<String> = wheels.iter().map(|w| file_name(w)).collect();
    let _ = writeln!(s, "wheels: {}", wheel_names.join(", "));
    let _ = writeln!(
        s,
        "nvrtc: {}",
        if o.nvrtc {
            format!("{NVRTC_ARCHIVE} ({NVRTC_SPEC}: libnvrtc.so.13, libnvrtc-builtins.so.13.0)")
        } else {
            "not carried (--no-nvrtc): the machine's own must be CUDA 13.0".into()
        }
    );
    s
}

fn readme(root: &Path, out: &Path, o: &Options) -> String {
    let rel = out
        .strip_prefix(root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| out.display().to_string());
    let nvrtc = if o.nvrtc {
        format!(
            "  {NVRTC_ARCHIVE}   libnvrtc.so.13 + libnvrtc-builtins.so.13.0 of {NVRTC_SPEC}\n\
             \x20                       (repacked from the PyPI wheel: the driver 580 is CUDA 13.0\n\
             \x20                       and cannot load PTX of a newer NVRTC)\n"
        )
    } else {
        String::new()
    };
    README_TEMPLATE
        .replace("{MARKER}", MARKER)
        .replace("{rel}", &rel)
        .replace("{DEVICE_TIMEOUT_S}", &DEVICE_TIMEOUT_S.to_string())
        .replace(
            "{nvrtc_setup}",
            if o.nvrtc {
                " and the carried NVRTC"
            } else {
                ""
            },
        )
        .replace("{nvrtc}", &nvrtc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Args {
        Args::new(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_options() {
        let o = parse(args("--out x --no-nvrtc")).unwrap().unwrap();
        assert_eq!(o.out, Some(PathBuf::from("x")));
        assert!(!o.nvrtc);
        let o = parse(args("")).unwrap().unwrap();
        assert!(o.out.is_none() && o.nvrtc);
        assert!(parse(args("--help")).unwrap().is_none());
        assert!(parse(args("--bogus")).is_err());
    }

    #[test]
    fn refuses_to_delete_a_foreign_folder() {
        let dir = std::env::temp_dir().join(format!("gpu-check-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("precious.txt"), "keep").unwrap();
        assert!(reset_folder(&dir).is_err());
        assert!(dir.join("precious.txt").exists());
        fs::write(dir.join("README.txt"), format!("{MARKER}\n")).unwrap();
        reset_folder(&dir).unwrap();
        assert!(!dir.join("precious.txt").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    fn have(tool: &str) -> bool {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn cuda_libs_link_folder_logic_holds() {
        if !have("python3") {
            println!("skipped: no python3");
            return;
        }
        let script = workspace_root().join("crates/ttconv-cuda/scripts/cuda_libs.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg("--self-test")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `run.sh --dry-run` on a folder with stand-in binaries: it makes the library folder and
    /// shows it, then the plan with the smoke test first.
    #[test]
    fn dry_run_shows_the_library_folder_and_the_smoke_test_first() {
        if !(have("python3") && have("tar") && have("xz")) {
            println!("skipped: the dry run needs python3, tar and xz");
            return;
        }
        let dir = std::env::temp_dir().join(format!("gpu-check-dry-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let stage = dir.join("stage");
        let folder = dir.join("folder");
        for d in [
            stage.join("tests"),
            stage.join("bin"),
            folder.join("scripts"),
        ] {
            fs::create_dir_all(d).unwrap();
        }
        for name in [
            "tests/equivalence",
            "tests/smoke",
            "tests/availability",
            "bin/gpu_bench",
        ] {
            fs::write(stage.join(name), "#!/bin/sh\nexit 0\n").unwrap();
        }
        tar_xz(&stage, &["bin", "tests"], &folder.join("binaries.tar.xz")).unwrap();
        let scripts = workspace_root().join("crates/ttconv-cuda/scripts");
        copy(&scripts.join("gpu_check_run.sh"), &folder.join("run.sh")).unwrap();
        copy(
            &scripts.join("cuda_libs.py"),
            &folder.join("scripts/cuda_libs.py"),
        )
        .unwrap();
        let out = Command::new("bash")
            .arg(folder.join("run.sh"))
            .arg("--dry-run")
            .env("OUT", dir.join("out"))
            .env("TTC_WORK", dir.join("work"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lib_dir = dir.join("work/lib");
        assert!(lib_dir.is_dir(), "no library folder made:\n{text}");
        let shown = text
            .find(&format!("library folder {}", lib_dir.display()))
            .unwrap_or_else(|| panic!("library folder not shown:\n{text}"));
        let plan = text.find("plan (").expect("no plan");
        assert!(
            shown < plan,
            "the library folder comes after the plan:\n{text}"
        );
        let first_step = text[plan..].lines().nth(1).unwrap_or_default();
        assert!(
            first_step.trim_start().starts_with("smoke") && first_step.contains("tests/smoke"),
            "the plan does not start with the smoke test: {first_step}\n{text}"
        );
        assert!(
            text.contains("no cuBLAS") || text.contains("cuBLAS: CUDA"),
            "cuBLAS not reported before the tests:\n{text}"
        );
        let tests = text[plan..]
            .lines()
            .filter(|l| l.trim_start().starts_with("tests "))
            .collect::<Vec<_>>();
        assert_eq!(tests.len(), 2, "{text}");
        assert!(
            tests.iter().all(|l| l.contains("--test-threads=1")),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn readme_fills_every_placeholder() {
        for nvrtc in [true, false] {
            let o = Options { out: None, nvrtc };
            let r = readme(Path::new("/repo"), Path::new("/repo/gpu-check"), &o);
            assert!(r.starts_with(MARKER), "{r}");
            assert!(!r.contains('{') && !r.contains('}'), "{r}");
            assert!(r.contains("bash gpu-check/run.sh"), "{r}");
            assert_eq!(r.contains(NVRTC_ARCHIVE), nvrtc, "{r}");
        }
    }

    #[test]
    fn device_call_names_the_folder_relative_to_the_root() {
        let call = device_call(Path::new("/repo"), Path::new("/repo/gpu-check"));
        assert!(call.contains("bash gpu-check/run.sh"), "{call}");
        assert!(call.contains("[\"gpu-check\"]"), "{call}");
        assert!(device_call(Path::new("/repo"), Path::new("/elsewhere")).contains("outside"));
    }
}
