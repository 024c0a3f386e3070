//! `cargo xtask <task>`: project tasks (the alias is in `.cargo/config.toml`).

mod alloc;
mod bench;
mod cli;
mod golden;
mod gpu_check;

use std::process::ExitCode;

const HELP: &str = "\
usage: cargo xtask <task> [options]

tasks:
  golden   run the golden reference cases (TensorLy / TensorLy-Torch) against ttconv
  bench    run the benchmark suite (tables on stdout, JSON under target/bench/)
  gpu-check  prepare gpu-check/: CUDA tests + GPU bench + PyTorch anchor for one device call

`cargo xtask <task> --help` describes a task's options.";

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let task = argv.next();
    let args = cli::Args::new(argv);
    match task.as_deref() {
        None | Some("-h" | "--help" | "help") => {
            println!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("golden") => golden::main(args),
        Some("bench") => bench::main(args),
        Some("gpu-check") => gpu_check::main(args),
        Some(other) => {
            eprintln!("error: unknown task `{other}`\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}
