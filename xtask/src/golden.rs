//! `cargo xtask golden`: the golden runner of `ttconv-tests` on a folder.

use std::path::PathBuf;
use std::process::ExitCode;

use ttconv_tests::golden::{self, Kind, RunOptions};

use crate::cli::{Args, UsageError, usage_exit};

const HELP: &str = "\
usage: cargo xtask golden [--dir DIR] [--kind K[,K..]]... [--verbose]

Runs every golden case of DIR and prints one line per failing case, then `N passed, M failed`.
Exits with status 1 on any failure (a failing case, a malformed file, a file of unknown kind, a
selected kind not implemented yet), 2 on a usage error.

  --dir DIR    the golden folder (default: $TTCONV_GOLDEN_DIR, else tests/golden/)
  --kind K     only cases of these kinds (repeatable or comma-separated):
               rank, tt_svd, conv, transduct
  --verbose    also print every passing case with its numbers";

fn parse(mut args: Args) -> Result<Option<(RunOptions, bool)>, UsageError> {
    if args.help() {
        return Ok(None);
    }
    let verbose = args.flag("--verbose") | args.flag("-v");
    let dir = args.value("--dir")?.map(PathBuf::from);
    let mut kinds = Vec::new();
    for list in args.values("--kind")? {
        for k in list.split(',').filter(|k| !k.is_empty()) {
            kinds.push(k.parse::<Kind>().map_err(UsageError)?);
        }
    }
    args.finish()?;
    let kinds = (!kinds.is_empty()).then_some(kinds);
    Ok(Some((RunOptions { dir, kinds }, verbose)))
}

/// Entry point of the task.
pub fn main(args: Args) -> ExitCode {
    let (options, verbose) = match parse(args) {
        Ok(Some(x)) => x,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_exit("golden", &e),
    };
    let report = match golden::run(&options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if verbose {
        for o in report.outcomes.iter().filter(|o| o.passed) {
            println!("ok   [{}] {}: {}", o.kind, o.name, o.details);
        }
    }
    print!("{report}");
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
