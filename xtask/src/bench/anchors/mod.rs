//! `cargo xtask bench --anchors`: the Python references measured in the same run, on exactly the
//! cases being timed, so that every ratio the bench prints compares two figures of one sitting.
//!
//! - [`venv`]: the pinned virtual environment, created once under `target/anchors-venv/`;
//! - [`request`]: the selected cases as the anchor script `xtask/anchors/anchor_bench.py` reads
//!   them, and its answers;
//! - [`targets`]: the performance targets, judged only from figures of this run.
//!
//! Without `--anchors` none of this runs and the bench prints no verdict.

pub mod request;
pub mod targets;
pub mod venv;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use super::BenchOptions;
use super::output::{target_dir, write_atomic};
use request::{ConvAnchor, ConvReply, Request, TtSvdAnchor, TtSvdReply};
use venv::Venv;

/// Why the anchors could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The interpreter that creates the environment cannot be started.
    #[error(
        "--anchors needs Python 3 to create its environment, but `{python}` cannot be run ({source}); install python3 with its venv module (Debian: apt-get install python3-venv) or pass --python PATH"
    )]
    NoPython {
        /// The interpreter asked for.
        python: String,
        /// Why it could not be started.
        source: std::io::Error,
    },
    /// `python -m venv` failed.
    #[error(
        "creating the virtual environment {dir} failed: {detail} (Debian: apt-get install python3-venv)"
    )]
    Venv {
        /// The environment's folder.
        dir: PathBuf,
        /// The end of its error output.
        detail: String,
    },
    /// pip could not install the pinned packages.
    #[error(
        "pip could not install the pinned anchors (xtask/anchors/requirements.txt) into {dir} (exit status {status:?}); is PyPI reachable? pip's messages are above"
    )]
    Pip {
        /// The environment's folder.
        dir: PathBuf,
        /// pip's exit status.
        status: Option<i32>,
    },
    /// The anchor script failed.
    #[error(
        "the anchor script ({part} part) failed with exit status {status:?}; its messages are above"
    )]
    Script {
        /// `conv` or `ttsvd`.
        part: &'static str,
        /// Its exit status.
        status: Option<i32>,
    },
    /// The anchor script's answer does not read as expected.
    #[error("the anchor script's answer {path}: {detail}")]
    Answer {
        /// The answer file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A file or process could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("{0}")]
    Write(String),
}

/// What one `--anchors` run measured, by case id.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnchorRun {
    /// Package versions and threads, as the script reports them (`"conv"`, `"ttsvd"`).
    pub versions: BTreeMap<String, serde_json::Value>,
    /// TensorLy-Torch / PyTorch figures per conv case id.
    pub conv: BTreeMap<String, ConvAnchor>,
    /// TensorLy `tensor_train` seconds per TT-SVD case id.
    pub ttsvd: BTreeMap<String, TtSvdAnchor>,
    /// Selected cases the anchors could not express, with the reason.
    pub skipped: BTreeMap<String, String>,
}

impl AnchorRun {
    /// One line naming the script and the versions it measured with (for tables and the JSON).
    pub fn source(&self) -> String {
        let v = |part: &str, key: &str| {
            self.versions
                .get(part)
                .and_then(|p| p.get(key))
                .map_or("?".into(), |s| match s {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
        };
        let mut parts = Vec::new();
        if self.versions.contains_key("conv") {
            parts.push(format!(
                "TensorLy-Torch {} + PyTorch {} ({} threads)",
                v("conv", "tltorch"),
                v("conv", "torch"),
                v("conv", "threads")
            ));
        }
        if self.versions.contains_key("ttsvd") {
            parts.push(format!(
                "TensorLy {} + numpy {}",
                v("ttsvd", "tensorly"),
                v("ttsvd", "numpy")
            ));
        }
        format!(
            "this run: xtask/anchors/anchor_bench.py, {}",
            parts.join(", ")
        )
    }
}

/// Where the environment lives: `target/anchors-venv/`.
pub fn venv_dir() -> PathBuf {
    target_dir().join("anchors-venv")
}

/// The anchor script, in the repository.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("anchors/anchor_bench.py")
}

/// Sets up the environment and measures the anchors of every case `options` select.
pub fn measure(options: &BenchOptions) -> Result<AnchorRun, AnchorError> {
    let request = Request::for_options(options).map_err(AnchorError::Write)?;
    let mut run = AnchorRun {
        skipped: request.skipped.clone(),
        ..AnchorRun::default()
    };
    for (id, why) in &request.skipped {
        eprintln!("[anchors] {id}: not measured: {why}");
    }
    if request.conv.cases.is_empty() && request.ttsvd.cases.is_empty() {
        return Ok(run);
    }
    let venv = Venv::ensure(options.python.as_deref().unwrap_or("python3"), &venv_dir())?;
    let dir = target_dir().join("bench").join("anchors");
    if !request.conv.cases.is_empty() {
        let reply: ConvReply = call(&venv, &dir, "conv", &request.conv)?;
        run.versions.insert("conv".into(), reply.versions());
        run.conv = reply.cases.into_iter().map(|c| (c.id.clone(), c)).collect();
    }
    if !request.ttsvd.cases.is_empty() {
        let reply: TtSvdReply = call(&venv, &dir, "ttsvd", &request.ttsvd)?;
        run.versions.insert("ttsvd".into(), reply.versions());
        run.ttsvd = reply.cases.into_iter().map(|c| (c.id.clone(), c)).collect();
    }
    Ok(run)
}

/// Runs the script on one part's request and reads its answer.
fn call<Q: Serialize, A: serde::de::DeserializeOwned>(
    venv: &Venv,
    dir: &Path,
    part: &'static str,
    request: &Q,
) -> Result<A, AnchorError> {
    let req_path = dir.join(format!("{part}-request.json"));
    let out_path = dir.join(format!("{part}-answer.json"));
    let text =
        serde_json::to_string_pretty(request).map_err(|e| AnchorError::Write(e.to_string()))?;
    write_atomic(&req_path, text.as_bytes()).map_err(AnchorError::Write)?;
    let _ = std::fs::remove_file(&out_path);
    eprintln!(
        "[anchors] timing the {part} anchors ({})",
        out_path.display()
    );
    let threads = rayon::current_num_threads().to_string();
    let status = Command::new(venv.python())
        .arg(script_path())
        .arg(part)
        .arg(&req_path)
        .arg(&out_path)
        // The BLAS / OpenMP pools of numpy and torch get the bench's thread count.
        .envs(["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"].map(|k| (k, &threads)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|source| AnchorError::Io {
            path: venv.python(),
            source,
        })?;
    if !status.success() {
        return Err(AnchorError::Script {
            part,
            status: status.code(),
        });
    }
    let text = std::fs::read_to_string(&out_path).map_err(|source| AnchorError::Io {
        path: out_path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| AnchorError::Answer {
        path: out_path,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_names_only_the_parts_measured() {
        let mut run = AnchorRun::default();
        run.versions.insert(
            "conv".into(),
            serde_json::json!({"torch": "2.15.0", "tltorch": "0.5.0", "threads": 2}),
        );
        let s = run.source();
        assert!(
            s.contains("TensorLy-Torch 0.5.0 + PyTorch 2.15.0 (2 threads)"),
            "{s}"
        );
        assert!(!s.contains("numpy"), "{s}");
        run.versions.insert(
            "ttsvd".into(),
            serde_json::json!({"tensorly": "0.10.0", "numpy": "2.4.6"}),
        );
        assert!(
            run.source().ends_with("TensorLy 0.10.0 + numpy 2.4.6"),
            "{}",
            run.source()
        );
    }
}
