//! A progress line on stderr while a part runs.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// A progress line on stderr: rewritten in place on a terminal, one line per case otherwise.
#[derive(Debug)]
pub struct Progress {
    part: &'static str,
    tty: bool,
    total: usize,
    started: Instant,
}

impl Progress {
    /// Progress over `total` cases of `part`.
    pub fn new(part: &'static str, total: usize) -> Self {
        Self {
            part,
            tty: std::io::stderr().is_terminal(),
            total,
            started: Instant::now(),
        }
    }

    /// Case `index` (from 0) named `name` is doing `what`.
    pub fn step(&self, index: usize, name: &str, what: &str) {
        let line = format!(
            "[{} {}/{} {:>5.1}s] {name}: {what}",
            self.part,
            index + 1,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
        // `eprint!` rather than a raw stderr handle, so the test harness captures it.
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if what.starts_with("building") {
            eprintln!("{line}");
        }
    }

    /// Clears the line.
    pub fn done(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}
