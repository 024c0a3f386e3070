//! A minimal command-line parser: `--name value`, `--name=value` and boolean `--flag`s, taken out
//! of the argument list one by one; whatever is left over is an error.

use std::fmt;
use std::process::ExitCode;

/// A usage error: printed with a hint to `--help`, exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The arguments of one task, not yet consumed.
#[derive(Debug)]
pub struct Args {
    rest: Vec<String>,
}

impl Args {
    /// Wraps the arguments that follow the task name.
    pub fn new(args: impl IntoIterator<Item = String>) -> Self {
        Self {
            rest: args.into_iter().collect(),
        }
    }

    /// Whether `-h` / `--help` was given (consumes it).
    pub fn help(&mut self) -> bool {
        self.flag("--help") | self.flag("-h")
    }

    /// Whether the boolean flag `name` was given (consumes every occurrence).
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != name);
        self.rest.len() != before
    }

    /// Every value of the option `name` (`--name v` or `--name=v`), in order (consumes them).
    pub fn values(&mut self, name: &str) -> Result<Vec<String>, UsageError> {
        let prefix = format!("{name}=");
        let mut out = Vec::new();
        let mut kept = Vec::with_capacity(self.rest.len());
        let mut it = std::mem::take(&mut self.rest).into_iter();
        while let Some(arg) = it.next() {
            if arg == name {
                match it.next() {
                    Some(v) if !v.starts_with("--") => out.push(v),
                    _ => return Err(UsageError(format!("{name} needs a value"))),
                }
            } else if let Some(v) = arg.strip_prefix(&prefix) {
                out.push(v.to_string());
            } else {
                kept.push(arg);
            }
        }
        self.rest = kept;
        Ok(out)
    }

    /// The value of the option `name`, if given; an error if given twice.
    pub fn value(&mut self, name: &str) -> Result<Option<String>, UsageError> {
        let mut v = self.values(name)?;
        match v.len() {
            0 | 1 => Ok(v.pop()),
            _ => Err(UsageError(format!("{name} given more than once"))),
        }
    }

    /// Fails on any argument not consumed.
    pub fn finish(self) -> Result<(), UsageError> {
        match self.rest.first() {
            None => Ok(()),
            Some(a) => Err(UsageError(format!("unexpected argument `{a}`"))),
        }
    }
}

/// Prints a usage error for `task` and returns exit status 2.
pub fn usage_exit(task: &str, e: &UsageError) -> ExitCode {
    eprintln!("error: {e}\nrun `cargo xtask {task} --help` for usage");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Args {
        Args::new(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_values_and_flags() {
        let mut a = args("--kind rank --quick --kind=tt_svd --dir x");
        assert!(a.flag("--quick"));
        assert_eq!(a.values("--kind").unwrap(), vec!["rank", "tt_svd"]);
        assert_eq!(a.value("--dir").unwrap().as_deref(), Some("x"));
        assert!(a.finish().is_ok());
    }

    #[test]
    fn rejects_bad_usage() {
        assert!(args("--dir").value("--dir").is_err());
        assert!(args("--dir a --dir b").value("--dir").is_err());
        assert!(args("--dir --quick").value("--dir").is_err());
        let mut a = args("--what");
        assert!(!a.flag("--quick"));
        assert!(a.finish().is_err());
    }
}
