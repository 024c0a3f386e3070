//! `cargo xtask bench`: the benchmark suite, one module per part.
//!
//! A part is a [`Part`] in [`PARTS`]: it receives the [`BenchOptions`] (and, with `--anchors`,
//! the anchors measured in this run), runs the cases the filter selects (case ids are
//! `part/...`), prints a table, writes `target/bench/<part>.json` and returns the problems
//! `--check` should fail on. To add a part, write its module and add it to [`PARTS`].
//!
//! Shared pieces: [`measure`] (timing protocol), [`machine`] (FMA peak, bandwidth, load probes),
//! [`table`], [`plot`], [`output`] (atomic files under `target/bench/`), [`progress`] and
//! [`anchors`] (`--anchors`: the Python references measured in the same run).

pub mod anchors;
pub mod conv;
pub mod machine;
pub mod measure;
pub mod output;
pub mod plot;
pub mod progress;
pub mod table;
pub mod ttsvd;

use std::process::ExitCode;

use crate::cli::{Args, UsageError, usage_exit};
use anchors::AnchorRun;
pub use conv::suite::default_suite_json;
pub use table::Table;

const HELP: &str = "\
usage: cargo xtask bench [--filter TEXT] [--quick] [--check] [--list] [--case SPEC]...
                         [--anchors [--python PATH]] [--cpu-dense ALGORITHM] [--unfused]
                         [--simd LEVEL]

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
  --anchors      also time the Python references on exactly the selected cases, in this
                 run: TensorLy-Torch's TT conv and PyTorch's dense conv (conv part),
                 TensorLy's tensor_train (ttsvd part); prints their times, our ratios and
                 the performance targets judged from them. The first use creates a virtual
                 environment target/anchors-venv/ from PyPI (pinned: xtask/anchors/
                 requirements.txt; torch is a download of a few GB), re-used afterwards.
                 Without --anchors the bench prints what it measured and no verdict.
  --python PATH  the interpreter that creates that environment (default python3)
  --cpu-dense ALGORITHM
                 the CPU backend's dense forward: auto (default), rows (last-axis im2col)
                 or im2col (full im2col), for A/B timing
  --unfused      the CPU backend runs the factorized program's steps one primitive at a
                 time instead of its fused forward, for A/B timing
  --simd LEVEL   cap the CPU backend's own kernels (fused chain, direct dense): auto
                 (default), avx2 (what a processor without AVX-512 runs) or portable; the
                 % of peak columns then use that level's measured FMA peak

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
    /// Measure the Python anchors in the same run.
    pub anchors: bool,
    /// The interpreter that creates the anchors' environment (`None`: `python3`).
    pub python: Option<String>,
    /// The CPU backend's options (`--cpu-dense`, `--unfused`).
    pub cpu: ttconv_cpu::CpuOptions,
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
    /// Problems found by `--check` (wrong results; speed is never checked).
    pub check_failures: Vec<String>,
}

/// A benchmark part.
#[derive(Debug)]
pub struct Part {
    /// Its name, the first component of its case ids.
    pub name: &'static str,
    /// One line on what it measures.
    pub about: &'static str,
    /// Runs the selected cases, with the anchors of this run when `--anchors` measured them.
    pub run: fn(&BenchOptions, Option<&AnchorRun>) -> Result<PartOutcome, String>,
}

/// Every part, in run order.
pub const PARTS: &[Part] = &[
    Part {
        name: "ttsvd",
        about: "TT-SVD of conv kernels (with --anchors: vs TensorLy tensor_train, same run)",
        run: ttsvd::run,
    },
    Part {
        name: "conv",
        about: "TT conv forward and forward+backward (CPU); with --anchors vs TensorLy-Torch / PyTorch, same run; writes bench.json and an SVG",
        run: conv::run,
    },
];

/// The options of `cargo xtask bench`, `None` for `--help`.
pub fn parse(mut args: Args) -> Result<Option<BenchOptions>, UsageError> {
    if args.help() {
        return Ok(None);
    }
    let options = BenchOptions {
        quick: args.flag("--quick"),
        check: args.flag("--check"),
        list: args.flag("--list"),
        filter: args.value("--filter")?,
        cases: args.values("--case")?,
        anchors: args.flag("--anchors"),
        python: args.value("--python")?,
        cpu: cpu_options(&mut args)?,
    };
    if options.anchors && options.check {
        return Err(UsageError(
            "--anchors times the references; --check only verifies results (no timing): use one"
                .into(),
        ));
    }
    if options.python.is_some() && !options.anchors {
        return Err(UsageError("--python only applies with --anchors".into()));
    }
    for case in &options.cases {
        conv::spec::CaseSpec::parse(case)
            .map_err(|e| UsageError(format!("--case `{case}`: {e}")))?;
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

/// The CPU backend's options from `--cpu-dense ALGORITHM`, `--unfused` and `--simd LEVEL`.
fn cpu_options(args: &mut Args) -> Result<ttconv_cpu::CpuOptions, UsageError> {
    use ttconv_cpu::{CpuOptions, DenseAlgorithm, SimdLevel};
    let dense = match args.value("--cpu-dense")?.as_deref() {
        None | Some("auto") => DenseAlgorithm::Auto,
        Some("rows") => DenseAlgorithm::Rows,
        Some("im2col") => DenseAlgorithm::Im2col,
        Some(other) => {
            return Err(UsageError(format!(
                "--cpu-dense takes auto, rows or im2col, got `{other}`"
            )));
        }
    };
    let simd = match args.value("--simd")?.as_deref() {
        None | Some("auto") => SimdLevel::Auto,
        Some("avx2") => SimdLevel::Avx2,
        Some("portable") => SimdLevel::Portable,
        Some(other) => {
            return Err(UsageError(format!(
                "--simd takes auto, avx2 or portable, got `{other}`"
            )));
        }
    };
    Ok(CpuOptions {
        dense,
        fused: !args.flag("--unfused"),
        simd,
    })
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
    if !options.list && options.cpu != ttconv_cpu::CpuOptions::default() {
        println!("bench: CPU backend with {:?} (A/B run)", options.cpu);
    }
    if !options.list {
        println!(
            "bench: {} rayon thread(s){}{}{}",
            rayon::current_num_threads(),
            if options.quick { ", quick" } else { "" },
            if options.anchors {
                ", anchors measured in this run"
            } else {
                ""
            },
            options
                .filter
                .as_deref()
                .map_or(String::new(), |f| format!(", filter `{f}`"))
        );
    }
    let anchors = if options.anchors && !options.list {
        match anchors::measure(&options) {
            Ok(run) => Some(run),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let mut cases = 0;
    let mut failures = Vec::new();
    for part in PARTS {
        match (part.run)(&options, anchors.as_ref()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Option<BenchOptions>, UsageError> {
        parse(Args::new(s.split_whitespace().map(String::from)))
    }

    #[test]
    fn parses_every_option() {
        let o = parse_str("--quick --filter conv/2d --anchors --python /usr/bin/python3")
            .unwrap()
            .unwrap();
        assert!(o.quick && o.anchors && !o.check && !o.list);
        assert_eq!(o.filter.as_deref(), Some("conv/2d"));
        assert_eq!(o.python.as_deref(), Some("/usr/bin/python3"));
        let o = parse_str("--case c=8,s=16,k=3 --case c=4,s=8,k=3")
            .unwrap()
            .unwrap();
        assert_eq!(o.cases.len(), 2);
        assert_eq!(
            o.filter.as_deref(),
            Some("conv/"),
            "--case implies the conv part"
        );
        let o = parse_str("").unwrap().unwrap();
        assert!(!o.anchors && o.python.is_none() && o.filter.is_none());
        assert_eq!(o.cpu, ttconv_cpu::CpuOptions::default());
        let o = parse_str("--cpu-dense rows --unfused").unwrap().unwrap();
        assert_eq!(o.cpu.dense, ttconv_cpu::DenseAlgorithm::Rows);
        assert!(!o.cpu.fused);
        let o = parse_str("--simd avx2").unwrap().unwrap();
        assert_eq!(o.cpu.simd, ttconv_cpu::SimdLevel::Avx2);
        assert!(parse_str("--simd sse").is_err());
        let o = parse_str("--cpu-dense im2col").unwrap().unwrap();
        assert_eq!(o.cpu.dense, ttconv_cpu::DenseAlgorithm::Im2col);
        assert!(o.cpu.fused);
        assert!(parse_str("--help").unwrap().is_none());
    }

    #[test]
    fn rejects_contradictions_and_bad_cases() {
        for bad in [
            "--anchors --check",
            "--python python3",
            "--case c=8",
            "--filter",
            "--anchor",
            "--cpu-dense winograd",
        ] {
            assert!(parse_str(bad).is_err(), "`{bad}` should be rejected");
        }
        let e = parse_str("--case c=8,s=4").unwrap_err();
        assert!(
            e.0.contains("--case `c=8,s=4`") && e.0.contains("`k=` is required"),
            "{e}"
        );
    }
}
