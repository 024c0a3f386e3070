//! The golden runner: checks ttconv against reference cases made by TensorLy / TensorLy-Torch.
//!
//! A golden folder (default `tests/golden/` of this package, or `$TTCONV_GOLDEN_DIR`, or an
//! explicit folder) holds `*.safetensors` files with one case each and `*.json` case collections
//! (`rank_cases.json`); every file names its `kind`. The format is in `tests/golden/README.md`.
//!
//! Each kind has a checker in the registry ([`checker`]): a function from a loaded [`CaseFile`] to
//! one [`CaseOutcome`] per case in it. To add a kind, write its module (like [`tt_svd`]) and return
//! its checker from [`checker`]. A kind without a checker yet reports every file of that kind as a
//! failure ("unsupported kind"), unless a kind filter excludes it; a file of a kind this runner
//! does not know, and a malformed file, always fail.
//!
//! ```no_run
//! use ttconv_tests::golden::{self, Kind, RunOptions};
//! let report = golden::run(&RunOptions { dir: None, kinds: Some(vec![Kind::Rank, Kind::TtSvd]) })?;
//! print!("{report}"); // failing cases, then `N passed, M failed`
//! assert_eq!(report.failed(), 0);
//! # Ok::<(), golden::GoldenError>(())
//! ```

pub mod conv;
mod file;
pub mod rank;
pub mod transduct;
pub mod tt_svd;

use std::fmt;
use std::path::{Path, PathBuf};

pub use file::{CaseFile, Tensor, as_usize, short, usize_list};

/// Environment variable that overrides the default golden folder.
pub const GOLDEN_DIR_ENV: &str = "TTCONV_GOLDEN_DIR";

/// The manifest a golden folder may hold: it lists the case files and their kinds.
pub const MANIFEST: &str = "manifest.json";

/// Everything that makes a golden file or folder unusable.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The folder could not be listed.
    #[error("{}: cannot list the folder: {source}", dir.display())]
    ReadDir {
        /// The folder.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The folder holds no case file.
    #[error("{}: no golden case files (*.safetensors, *.json)", dir.display())]
    Empty {
        /// The folder.
        dir: PathBuf,
    },
    /// Neither `.safetensors` nor `.json`.
    #[error("{}: not a .safetensors or .json file", path.display())]
    UnknownFileType {
        /// The file.
        path: PathBuf,
    },
    /// Not a valid safetensors file.
    #[error("{}: not a valid safetensors file: {message}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors crate said.
        message: String,
    },
    /// A file or metadata value that is not valid JSON.
    #[error("{}: {what} is not valid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What was being parsed.
        what: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A required metadata key is missing.
    #[error("{}: no metadata key `{key}`", path.display())]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata value of the wrong JSON type or out of range.
    #[error("{}: `{key}` should be {expected}, got {value}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key (or a path into a JSON document).
        key: String,
        /// What was expected.
        expected: &'static str,
        /// The value found, shortened.
        value: String,
    },
    /// A required tensor is missing.
    #[error("{}: no tensor `{name}`", path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A tensor of an unexpected dtype.
    #[error("{}: tensor `{name}` is {dtype}, expected {expected}", path.display())]
    BadDtype {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Its dtype.
        dtype: String,
        /// The dtype expected.
        expected: &'static str,
    },
    /// A tensor whose data does not match its shape, or whose shape is not what the case says.
    #[error("{}: tensor `{name}`: {message}", path.display())]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A `kind` this runner does not know.
    #[error("{}: unknown kind `{kind}` (known: {})", path.display(), Kind::known_list())]
    UnknownKind {
        /// The file.
        path: PathBuf,
        /// The kind found.
        kind: String,
    },
}

/// The kinds of golden case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `validate_tt_rank` answers (`rank_cases.json`).
    Rank,
    /// `tensor_train` decompositions.
    TtSvd,
    /// TT convolutions: forward and gradients.
    Conv,
    /// Transduction of a 2-D TT conv into a 3-D one.
    Transduct,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 4] = [Kind::Rank, Kind::TtSvd, Kind::Conv, Kind::Transduct];

    /// The `kind` metadata text.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rank => "rank",
            Kind::TtSvd => "tt_svd",
            Kind::Conv => "conv",
            Kind::Transduct => "transduct",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the runner has a checker for this kind.
    pub fn is_implemented(self) -> bool {
        checker(self).is_some()
    }

    fn known_list() -> String {
        Self::ALL.map(Kind::name).join(", ")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::parse(s).ok_or_else(|| format!("unknown kind `{s}` (known: {})", Kind::known_list()))
    }
}

/// Checks every case of one loaded file. `Err` means the file is malformed for its kind.
pub type Checker = fn(&CaseFile) -> Result<Vec<CaseOutcome>, GoldenError>;

/// The registry: the checker of each kind, `None` where not yet implemented.
pub fn checker(kind: Kind) -> Option<Checker> {
    match kind {
        Kind::Rank => Some(rank::check),
        Kind::TtSvd => Some(tt_svd::check),
        Kind::Conv => Some(conv::check),
        Kind::Transduct => Some(transduct::check),
    }
}

/// The result of one case.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseOutcome {
    /// The case: a file name, or `file#index` inside a collection.
    pub name: String,
    /// Its kind as written in the file (`?` when unreadable).
    pub kind: String,
    /// Whether it passed.
    pub passed: bool,
    /// The numbers compared (for a failure: what differed and by how much).
    pub details: String,
}

impl CaseOutcome {
    /// A passed or failed outcome.
    pub fn new(
        name: impl Into<String>,
        kind: Kind,
        passed: bool,
        details: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            kind: kind.name().to_string(),
            passed,
            details: details.into(),
        }
    }

    fn failure(
        name: impl Into<String>,
        kind: impl Into<String>,
        details: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            passed: false,
            details: details.into(),
        }
    }
}

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The golden folder; `None` = [`default_dir`].
    pub dir: Option<PathBuf>,
    /// Only these kinds (`None` = all). Files of other known kinds are skipped, not failed.
    pub kinds: Option<Vec<Kind>>,
}

impl RunOptions {
    fn selects(&self, kind: Kind) -> bool {
        self.kinds.as_ref().is_none_or(|ks| ks.contains(&kind))
    }
}

/// The default golden folder: `$TTCONV_GOLDEN_DIR` if set and non-empty, else this package's
/// `golden/` folder (`tests/golden/` of the workspace).
pub fn default_dir() -> PathBuf {
    match std::env::var_os(GOLDEN_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("golden"),
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The folder that was run.
    pub dir: PathBuf,
    /// One per case (and one per malformed file, unknown kind or manifest problem).
    pub outcomes: Vec<CaseOutcome>,
    /// Files skipped by the kind filter, with their kind.
    pub skipped: Vec<(String, Kind)>,
}

impl Report {
    /// Cases passed.
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed).count()
    }

    /// Cases failed (malformed files and unknown kinds included).
    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }

    /// The failed outcomes.
    pub fn failures(&self) -> impl Iterator<Item = &CaseOutcome> {
        self.outcomes.iter().filter(|o| !o.passed)
    }

    /// Passed and failed counts per kind, in [`Kind::ALL`] order then others.
    pub fn per_kind(&self) -> Vec<(String, usize, usize)> {
        let mut kinds: Vec<String> = Kind::ALL.iter().map(|k| k.name().to_string()).collect();
        for o in &self.outcomes {
            if !kinds.contains(&o.kind) {
                kinds.push(o.kind.clone());
            }
        }
        kinds
            .into_iter()
            .filter_map(|k| {
                let of_kind = self.outcomes.iter().filter(|o| o.kind == k);
                let (p, f) = of_kind.fold(
                    (0, 0),
                    |(p, f), o| if o.passed { (p + 1, f) } else { (p, f + 1) },
                );
                (p + f > 0).then_some((k, p, f))
            })
            .collect()
    }

    /// The final line, `N passed, M failed`.
    pub fn summary_line(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}

impl fmt::Display for Report {
    /// One line per failing case (name, kind, numbers), a per-kind count, the skipped files, and
    /// the final line `N passed, M failed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in self.failures() {
            writeln!(f, "FAIL [{}] {}: {}", o.kind, o.name, o.details)?;
        }
        let counts: Vec<String> = self
            .per_kind()
            .iter()
            .map(|(k, p, fl)| format!("{k}: {p} passed, {fl} failed"))
            .collect();
        writeln!(
            f,
            "golden folder {} ({})",
            self.dir.display(),
            counts.join("; ")
        )?;
        if !self.skipped.is_empty() {
            let mut kinds: Vec<Kind> = self.skipped.iter().map(|(_, k)| *k).collect();
            kinds.sort();
            kinds.dedup();
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            writeln!(
                f,
                "{} file(s) skipped by the kind filter ({})",
                self.skipped.len(),
                names.join(", ")
            )?;
        }
        writeln!(f, "{}", self.summary_line())
    }
}

/// The case files of `dir`: every `*.safetensors` and `*.json` except the manifest, sorted.
pub fn case_files(dir: &Path) -> Result<Vec<PathBuf>, GoldenError> {
    let entries = std::fs::read_dir(dir).map_err(|source| GoldenError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| GoldenError::ReadDir {
                dir: dir.to_path_buf(),
                source,
            })?
            .path();
        let ext = path.extension().and_then(|e| e.to_str());
        let is_manifest = path.file_name().is_some_and(|n| n == MANIFEST);
        if matches!(ext, Some("safetensors" | "json")) && !is_manifest && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Runs every case of the folder that the options select.
///
/// `Err` only when the folder cannot be listed or holds no case file; a malformed file, a file of
/// an unknown kind, a kind without a checker (when selected) and a manifest inconsistency are
/// failed outcomes, so one bad file does not hide the others.
pub fn run(options: &RunOptions) -> Result<Report, GoldenError> {
    let dir = options.dir.clone().unwrap_or_else(default_dir);
    let files = case_files(&dir)?;
    if files.is_empty() {
        return Err(GoldenError::Empty { dir });
    }
    let mut report = Report {
        dir: dir.clone(),
        outcomes: Vec::new(),
        skipped: Vec::new(),
    };
    // (file name, declared kind) of every file that loaded, for the manifest cross-check.
    let mut declared: Vec<(String, String)> = Vec::new();
    for path in &files {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let case = match CaseFile::load(path) {
            Ok(case) => {
                declared.push((name.clone(), case.kind.clone()));
                case
            }
            Err(e) => {
                report.outcomes.push(CaseOutcome::failure(
                    name,
                    "?",
                    format!("malformed file: {e}"),
                ));
                continue;
            }
        };
        let Some(kind) = Kind::parse(&case.kind) else {
            let e = GoldenError::UnknownKind {
                path: path.clone(),
                kind: case.kind.clone(),
            };
            report
                .outcomes
                .push(CaseOutcome::failure(name, case.kind.clone(), e.to_string()));
            continue;
        };
        if !options.selects(kind) {
            report.skipped.push((name, kind));
            continue;
        }
        match checker(kind) {
            None => report.outcomes.push(CaseOutcome::failure(
                name,
                kind.name(),
                format!("unsupported kind `{kind}` (not yet implemented)"),
            )),
            Some(check) => {
                match check(&case) {
                    Ok(outcomes) if outcomes.is_empty() => report.outcomes.push(
                        CaseOutcome::failure(name, kind.name(), "malformed file: no case in it"),
                    ),
                    Ok(outcomes) => report.outcomes.extend(outcomes),
                    Err(e) => report.outcomes.push(CaseOutcome::failure(
                        name,
                        kind.name(),
                        format!("malformed file: {e}"),
                    )),
                }
            }
        }
    }
    report
        .outcomes
        .extend(check_manifest(&dir, &files, &declared, options));
    Ok(report)
}

/// Cross-checks `manifest.json` (when present) with the folder: every listed file of a selected
/// kind exists and declares the listed kind, and the `rank_cases` file exists. Only problems
/// produce outcomes.
fn check_manifest(
    dir: &Path,
    files: &[PathBuf],
    declared: &[(String, String)],
    options: &RunOptions,
) -> Vec<CaseOutcome> {
    let path = dir.join(MANIFEST);
    if !path.is_file() {
        return Vec::new();
    }
    let fail = |details: String| vec![CaseOutcome::failure(MANIFEST, "manifest", details)];
    let manifest: serde_json::Value = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => return fail(format!("malformed file: {e}")),
    };
    let Some(listed) = manifest.get("files").and_then(|f| f.as_array()) else {
        return fail("malformed file: no `files` list".into());
    };
    let mut out = Vec::new();
    for entry in listed {
        let (Some(file), Some(kind)) = (
            entry.get("file").and_then(|v| v.as_str()),
            entry.get("kind").and_then(|v| v.as_str()),
        ) else {
            out.extend(fail(format!("malformed entry {}", short(entry))));
            continue;
        };
        if Kind::parse(kind).is_some_and(|k| !options.selects(k)) {
            continue;
        }
        if !files
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == file))
        {
            out.extend(fail(format!(
                "lists `{file}` ({kind}), which is not in the folder"
            )));
        } else if let Some((_, found)) = declared.iter().find(|(n, k)| n == file && k != kind) {
            out.extend(fail(format!(
                "lists `{file}` as `{kind}`, the file says `{found}`"
            )));
        }
    }
    if options.selects(Kind::Rank)
        && let Some(rank_file) = manifest.get("rank_cases").and_then(|v| v.as_str())
        && !dir.join(rank_file).is_file()
    {
        out.extend(fail(format!(
            "lists rank cases `{rank_file}`, which is not in the folder"
        )));
    }
    out
}
