//! The anchors' Python virtual environment: created once under `target/anchors-venv/` from the
//! pinned `xtask/anchors/requirements.txt`, re-used while the requirement set it was built from
//! (kept in the environment as [`STAMP`]) is the same.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::AnchorError;
use crate::bench::output::write_atomic;

/// The pinned requirements, as in the repository.
pub const REQUIREMENTS: &str = include_str!("../../../anchors/requirements.txt");

/// The copy of the requirements an environment was built from, inside it.
pub const STAMP: &str = "ttconv-requirements.txt";

/// A virtual environment with the pinned anchors installed.
#[derive(Debug, Clone)]
pub struct Venv {
    /// Its folder.
    pub dir: PathBuf,
}

impl Venv {
    /// Its interpreter.
    pub fn python(&self) -> PathBuf {
        self.dir.join("bin").join("python")
    }

    /// Whether `dir` holds an environment built from exactly `requirements`.
    pub fn is_current(dir: &Path, requirements: &str) -> bool {
        dir.join("bin").join("python").is_file()
            && std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == requirements)
    }

    /// The environment in `dir`, created with `python` (`python3 -m venv`) and filled with pip
    /// unless it is current. pip's output goes to stderr (torch is a large download).
    pub fn ensure(python: &str, dir: &Path) -> Result<Self, AnchorError> {
        let venv = Self {
            dir: dir.to_path_buf(),
        };
        if Self::is_current(dir, REQUIREMENTS) {
            eprintln!("[anchors] re-using {}", dir.display());
            return Ok(venv);
        }
        if dir.exists() {
            eprintln!(
                "[anchors] {} is stale or incomplete: rebuilding it",
                dir.display()
            );
            std::fs::remove_dir_all(dir).map_err(|source| AnchorError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        eprintln!(
            "[anchors] creating {} with `{python} -m venv` (once; torch is a download of a few GB)",
            dir.display()
        );
        let out = Command::new(python)
            .args(["-m", "venv"])
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| AnchorError::NoPython {
                python: python.to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(AnchorError::Venv {
                dir: dir.to_path_buf(),
                detail: tail(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        let reqs = dir.join("requirements.txt");
        write_atomic(&reqs, REQUIREMENTS.as_bytes()).map_err(AnchorError::Write)?;
        let status = Command::new(venv.python())
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(["--timeout", "60", "--retries", "2", "-r"])
            .arg(&reqs)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .map_err(|source| AnchorError::Io {
                path: venv.python(),
                source,
            })?;
        if !status.success() {
            return Err(AnchorError::Pip {
                dir: dir.to_path_buf(),
                status: status.code(),
            });
        }
        write_atomic(&dir.join(STAMP), REQUIREMENTS.as_bytes()).map_err(AnchorError::Write)?;
        Ok(venv)
    }
}

/// The last lines of a tool's error output.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(4)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requirements_pin_every_anchor() {
        let pins: Vec<&str> = REQUIREMENTS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        for name in ["numpy", "torch", "tensorly", "tensorly-torch"] {
            assert!(
                pins.iter().any(|p| p
                    .split_once("==")
                    .is_some_and(|(n, v)| n == name && !v.is_empty())),
                "{name} is not pinned in {pins:?}"
            );
        }
        assert!(pins.iter().all(|p| p.contains("==")), "{pins:?}");
    }

    #[test]
    fn a_stale_or_missing_environment_is_not_current() {
        let dir = std::env::temp_dir().join(format!("xtask-venv-{}", std::process::id()));
        assert!(!Venv::is_current(&dir, "a==1\n"));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin").join("python"), "").unwrap();
        assert!(!Venv::is_current(&dir, "a==1\n"));
        std::fs::write(dir.join(STAMP), "a==1\n").unwrap();
        assert!(Venv::is_current(&dir, "a==1\n"));
        assert!(!Venv::is_current(&dir, "a==2\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_interpreter_is_a_typed_error() {
        let dir = std::env::temp_dir().join(format!("xtask-venv-none-{}", std::process::id()));
        let e = Venv::ensure("/nonexistent/python3-for-ttconv", &dir).unwrap_err();
        assert!(matches!(e, AnchorError::NoPython { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("/nonexistent/python3-for-ttconv") && text.contains("--python"),
            "{text}"
        );
    }
}
