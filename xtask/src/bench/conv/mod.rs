//! The conv part: the TT convolution's forward and forward+backward on the CPU backend.
//!
//! - [`spec`]: a layer shape ([`spec::CaseSpec`]) and the `--case` format;
//! - [`suite`]: the default cases, the rank sweep and what a run selects;
//! - [`case`]: measuring one case; [`steps`]: the chain's primitives timed one by one;
//!   [`backend`]: the backend the cases run on; [`sweep`]: the rank sweep and its plot;
//! - [`compare`], [`tables`], [`json`]: the report (ratios to the same-run anchors, the
//!   stdout tables, `target/bench/bench.json`).
//!
//! The machine is shared: the CPU time other processes take while a case runs is measured
//! ([`LoadMeter`](crate::bench::machine::LoadMeter)) and reported; in a full run a case loaded
//! above [`LOAD_THRESHOLD`] is redone after waiting for an idle machine (bounded retries and
//! wait).
//!
//! Without `--anchors` the part reports what it measured: our two implementations against each
//! other, % of the FMA peak and the roofline floor probed in the same run; no target verdict.
//! With `--anchors` it adds the TensorLy-Torch / PyTorch figures timed in this run on the same
//! cases, the ratios, and the targets judged from them.
//!
//! `--check` runs every case once at a tiny size (batch 1, channels / 8, spatial / 4) and fails if
//! the factorized output differs from the reconstructed one or from the direct oracle
//! (`ttconv::oracle::conv_nd`) by more than [`case::CHECK_FORWARD_TOL`] (max abs difference over
//! max abs), or the two implementations' gradients by more than [`case::CHECK_GRAD_TOL`]. It has
//! no timing target: it runs in CI on a slow machine. It writes `target/bench/conv-check.json`,
//! never `bench.json`.

pub mod backend;
pub mod case;
pub mod compare;
#[cfg(test)]
mod fixtures;
pub mod json;
pub mod spec;
pub mod steps;
pub mod suite;
pub mod sweep;
pub mod tables;

use case::{CHECK_FORWARD_TOL, CHECK_GRAD_TOL, CaseResult, run_case};
use compare::{Summary, anchor_of};
use json::{AnchorsInfo, CaseRecord, Record};
use suite::Selection;

use super::anchors::AnchorRun;
use super::machine::Machine;
use super::measure::{LOAD_THRESHOLD, RETRIES, Reps, WAIT_BUDGET_S, wait_idle};
use super::output::{unix_time, write_json};
use super::progress::Progress;
use super::{BenchOptions, PartOutcome};

pub use spec::CASE_FORMAT;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Runs `run_case` and, in a full run, redoes it while another process loaded the machine
/// (keeping the attempt with the lowest load), within the run's wait budget `waited`.
fn measure_case(
    backend: &ttconv_cpu::CpuBackend,
    options: &BenchOptions,
    (i, id, spec): (usize, &str, &spec::CaseSpec),
    reps: Reps,
    waited: &mut f64,
    progress: &Progress,
) -> Result<CaseResult, String> {
    let step = |what: &str| progress.step(i, &spec.name, what);
    let mut r = run_case(backend, id, spec, i as u64, reps, options.check, &step)
        .map_err(|e| format!("{id}: {e}"))?;
    while !options.check
        && !options.quick
        && r.external_load.is_some_and(|l| l > LOAD_THRESHOLD)
        && r.redone.len() < RETRIES
        && *waited < WAIT_BUDGET_S
    {
        step("waiting for an idle machine (another process is using the CPUs)");
        *waited += wait_idle(WAIT_BUDGET_S - *waited);
        let mut again = run_case(backend, id, spec, i as u64, reps, false, &step)
            .map_err(|e| format!("{id}: {e}"))?;
        let (old, new) = (
            r.external_load.unwrap_or(1.0),
            again.external_load.unwrap_or(1.0),
        );
        again.redone = std::mem::take(&mut r.redone);
        if new < old {
            again.redone.push(old);
            r = again;
        } else {
            r.redone = again.redone;
            r.redone.push(new);
        }
    }
    Ok(r)
}

/// `--check`'s failures for one case.
fn check_failures(id: &str, r: &CaseResult) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = r.check {
        let (gi, gc) = (c.grad_input, c.grad_cores);
        for (what, f) in [
            ("reconstructed", c.forward),
            ("the direct oracle", c.forward_vs_oracle),
        ] {
            if f.is_nan() || f > CHECK_FORWARD_TOL {
                out.push(format!(
                    "{id} (tiny): factorized forward vs {what} differ by {f:.2e} of max |y| (tolerance {CHECK_FORWARD_TOL:.0e})"
                ));
            }
        }
        if gi.is_nan() || gc.is_nan() || gi > CHECK_GRAD_TOL || gc > CHECK_GRAD_TOL {
            out.push(format!(
                "{id} (tiny): factorized vs reconstructed gradients differ by {gi:.2e} (input), {gc:.2e} (cores) (tolerance {CHECK_GRAD_TOL:.0e})"
            ));
        }
    }
    out
}

/// Runs the selected conv cases; `anchors` holds this run's anchors when `--anchors` measured
/// them.
pub fn run(options: &BenchOptions, anchors: Option<&AnchorRun>) -> Result<PartOutcome, String> {
    let mut outcome = PartOutcome::default();
    let selection = Selection::new(options)?;
    if options.list {
        for id in selection.ids() {
            println!("{id}");
        }
        return Ok(outcome);
    }
    if selection.is_empty() {
        return Ok(outcome);
    }

    let backend = backend::cpu_backend(options.cpu);
    let machine = if options.check {
        Machine::measure_tiny()
    } else {
        if !options.quick {
            eprintln!("[conv] waiting (at most 30 s) for an idle machine...");
            wait_idle(30.0);
        }
        eprintln!("[conv] measuring the machine (FMA peak, memory bandwidth, GEMM)...");
        let m = Machine::measure(options.quick).capped(options.cpu.simd);
        println!("\n{}", m.summary());
        m
    };

    let reps = Reps::for_options(options);
    let progress = Progress::new("conv", selection.cases.len());
    let mut waited = 0.0;
    let mut results = Vec::new();
    for (i, (id, spec)) in selection.cases.iter().enumerate() {
        let spec = if options.check {
            spec.tiny()
        } else {
            spec.clone()
        };
        let r = measure_case(
            &backend,
            options,
            (i, id, &spec),
            reps,
            &mut waited,
            &progress,
        )?;
        outcome.check_failures.extend(check_failures(id, &r));
        results.push(r);
        outcome.cases += 1;
    }
    progress.done();

    let summary = Summary::new(&results, &machine, anchors);
    if !results.is_empty() {
        if options.check {
            tables::print_check(&results);
        } else {
            print!("{}", tables::render(&results, &machine, anchors, &summary));
        }
    }
    let worst_load = results
        .iter()
        .filter_map(|r| r.external_load)
        .fold(0.0f64, f64::max);
    if !options.check && worst_load > 0.05 {
        println!(
            "\nWARNING: other processes took up to {:.0}% of the CPUs while cases ran (`ext load`); timings are slowed by that much or more",
            100.0 * worst_load
        );
    }

    let (sweep, plot) = if selection.sweep.is_empty() {
        (Vec::new(), None)
    } else {
        outcome.cases += 1;
        let (records, path) = sweep::run(&backend, options, &machine, &selection.sweep)?;
        (records, Some(path))
    };

    let source = anchors.map(AnchorRun::source);
    let record = Record {
        part: "conv",
        unix_time: unix_time(),
        backend: ttconv::Backend::name(&backend).to_string(),
        quick: options.quick,
        check: options.check,
        filter: options.filter.clone(),
        user_cases: options.cases.clone(),
        protocol: format!(
            "median of timed runs after {} warm-up(s), {}..{} runs within {} s per measurement; weights prepared and input uploaded once; dense kernel cached before timing; train = forward_train + backward (input gradient on), grad_y = ones",
            reps.warmup, reps.min, reps.max, reps.budget
        ),
        machine: machine.json(),
        cases: results
            .iter()
            .map(|r| {
                let a = anchor_of(anchors, &r.id).zip(source.as_deref());
                CaseRecord::new(r, &machine, a)
            })
            .collect(),
        summary,
        sweep,
        plot,
        anchors: anchors.map(|a| AnchorsInfo {
            source: a.source(),
            versions: serde_json::to_value(&a.versions).unwrap_or_default(),
            skipped: serde_json::to_value(&a.skipped).unwrap_or_default(),
        }),
    };
    let path = write_json(if options.check { "conv-check" } else { "bench" }, &record)?;
    println!("written {}", path.display());
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's `--check` mode on the whole default suite: every case once at a tiny size,
    /// factorized == reconstructed (forward and gradients). Keeps the bench from rotting.
    #[test]
    fn check_mode_passes() {
        let options = BenchOptions {
            check: true,
            filter: Some("conv/".into()),
            ..BenchOptions::default()
        };
        let outcome = run(&options, None).unwrap();
        assert_eq!(outcome.cases, suite::default_suite().len());
        assert!(
            outcome.check_failures.is_empty(),
            "{:#?}",
            outcome.check_failures
        );
    }
}
