//! `cargo xtask bench`: the benchmark suite, one module per part.
//!
//! A part is a [`Part`] in [`PARTS`]: it receives the [`BenchOptions`], runs the cases the filter
//! selects (case ids are `part/...`), prints a table, writes `target/bench/<part>.json` and
//! returns the problems `--check` should fail on. To add a part (e.g. `conv`), write its module
//! and add it to [`PARTS`].

mod conv;
mod machine;
mod plot;
mod ttsvd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::cli::{Args, UsageError, usage_exit};

const HELP: &str = "\
usage: cargo xtask bench [--filter TEXT] [--quick] [--check] [--list] [--case SPEC]...

Runs the benchmark parts, prints one table per part and writes target/bench/<part>.json
(the conv part: target/bench/bench.json and the plot conv_rank_sweep.svg).

  --filter TEXT  only the cases whose id contains TEXT (ids look like
                 `ttsvd/256x3x3x256/same/f32`; `--filter ttsvd` runs one part)
  --quick        fewer repeats (a smoke run; timings are noisier)
  --check        verify each case's result (correctness only, no speed target: CI runs
                 it on slow machines; the conv part runs its cases at a tiny size); exit 1
                 on a wrong result
  --list         list the case ids and exit
  --case SPEC    time this layer shape instead of the conv suite (format below);
                 implies `--filter conv/` unless a filter is given

Threads: rayon's global pool, RAYON_NUM_THREADS to set it.";

/// Options shared by every part.
#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// Substring a case id must contain.
    pub filter: Option<String>,
    /// Fewer repeats.
    pub quick: bool,
    /// Verify results (never speed).
    pub check: bool,
    /// Only list the case ids.
    pub list: bool,
    /// `--case` specs: layers the conv part times instead of its suite.
    pub cases: Vec<String>,
}

impl BenchOptions {
    /// Whether the case `id` (`part/...`) is selected.
    pub fn selects(&self, id: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| id.contains(f))
    }
}

/// What a part reports back.
#[derive(Debug, Default)]
pub struct PartOutcome {
    /// Cases run.
    pub cases: usize,
    /// Problems found by `--check` (wrong results; speed targets are reported, never checked).
    pub check_failures: Vec<String>,
}

/// A benchmark part.
#[derive(Debug)]
pub struct Part {
    /// Its name, the first component of its case ids.
    pub name: &'static str,
    /// One line on what it measures.
    pub about: &'static str,
    /// Runs the selected cases.
    pub run: fn(&BenchOptions) -> Result<PartOutcome, String>,
}

/// Every part, in run order.
pub const PARTS: &[Part] = &[
    Part {
        name: "ttsvd",
        about: "TT-SVD of conv kernels vs TensorLy 0.10 tensor_train",
        run: ttsvd::run,
    },
    Part {
        name: "conv",
        about: "TT conv forward and forward+backward (CPU) vs TensorLy-Torch / PyTorch; writes bench.json and an SVG",
        run: conv::run,
    },
];

fn parse(mut args: Args) -> Result<Option<BenchOptions>, UsageError> {
    if args.help() {
        return Ok(None);
    }
    let options = BenchOptions {
        quick: args.flag("--quick"),
        check: args.flag("--check"),
        list: args.flag("--list"),
        filter: args.value("--filter")?,
        cases: args.values("--case")?,
    };
    for case in &options.cases {
        conv::CaseSpec::parse(case).map_err(|e| UsageError(format!("--case `{case}`: {e}")))?;
    }
    let options = BenchOptions {
        filter: match (&options.filter, options.cases.is_empty()) {
            (None, false) => Some("conv/".into()),
            (f, _) => f.clone(),
        },
        ..options
    };
    args.finish()?;
    Ok(Some(options))
}

/// Entry point of the task.
pub fn main(args: Args) -> ExitCode {
    let options = match parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{HELP}\n\nparts:");
            for part in PARTS {
                println!("  {:<8} {}", part.name, part.about);
            }
            println!("\n{}", conv::CASE_FORMAT);
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_exit("bench", &e),
    };
    if !options.list {
        println!(
            "bench: {} rayon thread(s){}{}",
            rayon::current_num_threads(),
            if options.quick { ", quick" } else { "" },
            options
                .filter
                .as_deref()
                .map_or(String::new(), |f| format!(", filter `{f}`"))
        );
    }
    let mut cases = 0;
    let mut failures = Vec::new();
    for part in PARTS {
        match (part.run)(&options) {
            Ok(outcome) => {
                cases += outcome.cases;
                failures.extend(outcome.check_failures);
            }
            Err(e) => failures.push(format!("{}: {e}", part.name)),
        }
    }
    if options.list {
        return ExitCode::SUCCESS;
    }
    if cases == 0 {
        eprintln!("error: no benchmark case matches the filter");
        return ExitCode::FAILURE;
    }
    if options.check {
        for f in &failures {
            println!("CHECK FAILED: {f}");
        }
        println!("check: {} problem(s)", failures.len());
    } else {
        for f in &failures {
            eprintln!("error: {f}");
        }
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Wall-clock times of repeated runs.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Seconds of each timed run (warm-up runs excluded).
    pub times: Vec<f64>,
}

impl Timing {
    /// Runs `f` `warmup` times untimed, then `repeats` times timed (at least once).
    pub fn measure<R>(warmup: usize, repeats: usize, mut f: impl FnMut() -> R) -> (Self, R) {
        for _ in 0..warmup {
            std::hint::black_box(f());
        }
        let mut times = Vec::with_capacity(repeats.max(1));
        let mut last = None;
        for _ in 0..repeats.max(1) {
            let start = Instant::now();
            let r = std::hint::black_box(f());
            times.push(start.elapsed().as_secs_f64());
            last = Some(r);
        }
        (Self { times }, last.expect("at least one run"))
    }

    /// The median (mean of the two middle values for an even count).
    pub fn median(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        let n = t.len();
        if n % 2 == 1 {
            t[n / 2]
        } else {
            0.5 * (t[n / 2 - 1] + t[n / 2])
        }
    }

    /// The fastest run.
    pub fn min(&self) -> f64 {
        self.times.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// A text table with right-aligned columns.
#[derive(Debug)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain([self.headers[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |f: &mut std::fmt::Formatter<'_>, cells: &[String]| {
            let text: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect();
            writeln!(f, "{}", text.join("  ").trim_end())
        };
        line(f, &self.headers)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rule)?;
        for r in &self.rows {
            line(f, r)?;
        }
        Ok(())
    }
}

/// `target/bench/` of the workspace (or of `$CARGO_TARGET_DIR`).
pub fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("xtask lives in the workspace root")
                .join("target")
        });
    target.join("bench")
}

/// Writes `value` as pretty JSON to `target/bench/<name>.json`; returns the path.
pub fn write_json(name: &str, value: &serde_json::Value) -> Result<PathBuf, String> {
    let dir = out_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Seconds since the Unix epoch (for the JSON records).
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
