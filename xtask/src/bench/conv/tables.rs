//! The conv part's tables on stdout: the forward figures, the chain's steps, forward+backward,
//! the same-run anchors (only with `--anchors`) and `--check`'s comparison.

#[cfg(test)]
use super::case::Check;
use super::case::{CHECK_FORWARD_TOL, CHECK_GRAD_TOL, CaseResult, impl_name};
use super::compare::{Summary, anchor_of};
use super::spec::{crossed, dashed};
use super::steps::Step;
use crate::bench::Table;
use crate::bench::anchors::AnchorRun;
use crate::bench::machine::Machine;

fn mb(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

/// Our forward figures: times, GFLOP/s, % of the FMA peak, the roofline floor.
pub fn forward(results: &[CaseResult], m: &Machine) -> Table {
    let mut t = Table::new(&[
        "case",
        "TT ranks",
        "fact ms",
        "rec ms",
        "auto",
        "fact GF/s",
        "%peak",
        "floor ms",
        "x floor",
        "bound",
        "rec GF/s",
        "%peak",
        "rec/fact",
        "fwd MiB f/r",
        "ext load",
    ]);
    for r in results {
        let d = r.derived(m);
        t.row(vec![
            r.spec.name.clone(),
            dashed(&r.ranks),
            format!("{:.3}", d.fact_ms),
            format!("{:.3}", d.rec_ms),
            format!(
                "{} ({})",
                &impl_name(r.auto)[..4],
                if d.auto_faster { "faster" } else { "slower" }
            ),
            format!("{:.1}", d.fact_gflops),
            format!("{:.0}", d.fact_pct),
            format!("{:.3}", d.floor_ms),
            format!("{:.2}", d.floor_ratio),
            d.floor_bound.into(),
            format!("{:.1}", d.dense_gflops),
            format!("{:.0}", d.dense_pct),
            format!("{:.2}", d.rec_ms / d.fact_ms),
            format!("{}/{}", mb(r.mem_fact), mb(r.mem_rec)),
            r.external_load.map_or("-".into(), |l| format!("{l:.2}")),
        ]);
    }
    t
}

/// Each primitive of the chain timed alone, against the whole.
pub fn steps(results: &[CaseResult], m: &Machine) -> Table {
    let mut t = Table::new(&["case", "forward steps", "sum", "backward steps", "sum"]);
    for r in results {
        let d = r.derived(m);
        let fmt = |v: &[Step]| {
            v.iter()
                .map(|s| format!("{} {:.2} ({:.0})", s.name, s.ms, s.gflops()))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let total = |v: &[Step]| v.iter().map(|s| s.ms).sum::<f64>();
        t.row(vec![
            r.spec.name.clone(),
            fmt(&r.steps.0),
            format!("{:.2}/{:.2}", total(&r.steps.0), d.fact_ms),
            fmt(&r.steps.1),
            format!(
                "{:.2}/{:.2}",
                total(&r.steps.1),
                d.train_fact_ms - d.fact_ms
            ),
        ]);
    }
    t
}

/// Our forward+backward times.
pub fn train(results: &[CaseResult], m: &Machine) -> Table {
    let mut t = Table::new(&["case", "f+b fact ms", "f+b rec ms", "rec/fact"]);
    for r in results {
        let d = r.derived(m);
        t.row(vec![
            r.spec.name.clone(),
            format!("{:.3}", d.train_fact_ms),
            format!("{:.3}", d.train_rec_ms),
            format!("{:.2}", d.train_rec_ms / d.train_fact_ms),
        ]);
    }
    t
}

/// The anchors measured in this run and our ratios to them (`x` = their time / ours); cases
/// without an anchor are left out.
pub fn anchors_table(results: &[CaseResult], m: &Machine, run: &AnchorRun) -> Table {
    let mut t = Table::new(&[
        "case",
        "tltorch fact",
        "fact x",
        "PyTorch dense",
        "rec x",
        "tltorch rec",
        "tltorch f+b",
        "f+b x",
        "PyTorch f+b",
        "rec f+b x",
        "ext load",
    ]);
    for r in results {
        let Some(a) = anchor_of(Some(run), &r.id) else {
            continue;
        };
        let d = r.derived(m);
        t.row(vec![
            r.spec.name.clone(),
            format!("{:.3}", a.fact_ms),
            format!("{:.2}", a.fact_ms / d.fact_ms),
            format!("{:.3}", a.dense_ms),
            format!("{:.2}", a.dense_ms / d.rec_ms),
            format!("{:.3}", a.rec_ms),
            format!("{:.3}", a.fact_train_ms),
            format!("{:.2}", a.fact_train_ms / d.train_fact_ms),
            format!("{:.3}", a.dense_train_ms),
            format!("{:.2}", a.dense_train_ms / d.train_rec_ms),
            a.external_load.map_or("-".into(), |l| format!("{l:.2}")),
        ]);
    }
    t
}

/// `--check`'s table: the tiny shapes, the implementations' differences and the oracle's.
pub fn check(results: &[CaseResult]) -> Table {
    let mut t = Table::new(&[
        "case (tiny)",
        "shape",
        "fwd rel diff",
        "fwd vs oracle",
        "grad x",
        "grad cores",
    ]);
    for r in results {
        let c = r.check.unwrap_or_default();
        t.row(vec![
            r.spec.name.clone(),
            crossed(&r.spec.input_shape()),
            format!("{:.1e}", c.forward),
            format!("{:.1e}", c.forward_vs_oracle),
            format!("{:.1e}", c.grad_input),
            format!("{:.1e}", c.grad_cores),
        ]);
    }
    t
}

/// The tables of a timed run: ours always; the anchors and the verdicts only when this run
/// measured them.
pub fn render(
    results: &[CaseResult],
    m: &Machine,
    anchors: Option<&AnchorRun>,
    s: &Summary,
) -> String {
    let mut out = format!(
        "\nTT conv forward, CPU backend (median ms; GF/s = useful 2*macs of the cost model; floor = max(flops/peak, bytes/bandwidth), peak and bandwidth measured in this run)\n{}",
        forward(results, m)
    );
    out += &format!(
        "\nFactorized chain, each backend primitive timed alone on its real input: ms (GFLOP/s); sum vs the whole\n{}",
        steps(results, m)
    );
    out += &format!(
        "\nForward+backward (loss = y.sum(), gradients of the cores and the input), median ms\n{}",
        train(results, m)
    );
    let Some(run) = anchors else {
        out += "\n(no anchors: `--anchors` measures TensorLy-Torch and PyTorch in the same run)\n";
        return out;
    };
    let t = anchors_table(results, m, run);
    out += &format!(
        "\nAnchors measured in this run ({}), median ms; x = their time / ours\n{}",
        run.source(),
        if t.is_empty() {
            "(no case of this run has an anchor)\n".to_string()
        } else {
            t.to_string()
        }
    );
    if !s.lines.is_empty() {
        out += "\nTargets, from this run's figures only:\n";
        for l in &s.lines {
            out += &format!("  {l}\n");
        }
    }
    out
}

/// Prints `--check`'s table.
pub fn print_check(results: &[CaseResult]) {
    println!(
        "\n--check: factorized vs reconstructed, and factorized vs the direct oracle, at a tiny size (max abs diff / max abs; forward tolerance {CHECK_FORWARD_TOL:.0e}, gradients {CHECK_GRAD_TOL:.0e}); the timings above are single runs, no target"
    );
    print!("{}", check(results));
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    /// Words only a verdict uses.
    const VERDICT_WORDS: [&str; 5] = ["met", "MISSED", "Targets", "target", "tltorch"];

    fn has_verdict(text: &str) -> bool {
        text.split(|c: char| !c.is_alphanumeric())
            .any(|w| VERDICT_WORDS.contains(&w))
    }

    #[test]
    fn without_anchors_no_verdict_and_no_foreign_figure() {
        let m = fixtures::machine();
        let results = vec![
            fixtures::result("2d_c64_s56_r16", 2.0, 4.0),
            fixtures::result("2d_c512_s7_r64", 1.0, 0.5),
        ];
        let s = Summary::new(&results, &m, None);
        assert!(s.lines.is_empty() && s.factorized_vs_tltorch_geomean.is_none());
        let text = render(&results, &m, None, &s);
        assert!(!has_verdict(&text), "{text}");
        assert!(
            !text.contains("PyTorch dense") && !text.contains("Anchors"),
            "{text}"
        );
        // What was measured is there: times, % of the peak, x the floor.
        assert!(
            text.contains("2d_c64_s56_r16") && text.contains("2.000") && text.contains("4.000")
        );
        // 50 M macs in 2 ms = 50 GFLOP/s = 50% of the 100 GFLOP/s peak; floor 1 ms, 2x it.
        let fwd = forward(&results, &m).to_string();
        let row = fwd.lines().nth(2).unwrap();
        for cell in ["50.0", "1.000", "2.00", "compute", "fact (faster)"] {
            assert!(row.contains(cell), "`{cell}` missing in `{row}`");
        }
        assert!(fwd.lines().nth(3).unwrap().contains("fact (slower)"));
    }

    #[test]
    fn with_anchors_the_ratios_and_verdicts_come_from_them() {
        let m = fixtures::machine();
        let results = vec![
            fixtures::result("2d_c64_s56_r16", 2.0, 4.0),
            fixtures::result("2d_c512_s7_r64", 1.0, 0.5),
        ];
        let run = fixtures::anchors(&[
            ("conv/2d_c64_s56_r16", 8.0, 4.0),
            ("conv/2d_c512_s7_r64", 3.0, 0.4),
        ]);
        let s = Summary::new(&results, &m, Some(&run));
        assert_eq!(s.lines.len(), 4);
        let g = s.factorized_vs_tltorch_geomean.unwrap();
        assert!((g - (4.0f64 * 3.0).sqrt()).abs() < 1e-9, "{g}");
        assert_eq!(s.reconstructed_vs_pytorch_dense_ok.as_deref(), Some("1/2"));
        let text = render(&results, &m, Some(&run), &s);
        assert!(
            text.contains("Targets, from this run's figures only"),
            "{text}"
        );
        assert!(
            text.contains("TensorLy-Torch 0.5.0 + PyTorch 2.15.0"),
            "{text}"
        );
        assert!(
            s.lines[0].ends_with(": met") && s.lines[0].contains("geomean 3.46x"),
            "{:?}",
            s.lines
        );
        assert!(s.lines[3].ends_with(": MISSED"), "{:?}", s.lines);
        let t = anchors_table(&results, &m, &run).to_string();
        let row = t.lines().nth(2).unwrap();
        assert!(row.contains("8.000") && row.contains("4.00"), "{row}");
    }

    #[test]
    fn a_case_without_its_anchor_gives_no_verdict() {
        let m = fixtures::machine();
        let results = vec![
            fixtures::result("2d_c64_s56_r16", 2.0, 4.0),
            fixtures::result("mine", 1.0, 0.5),
        ];
        let run = fixtures::anchors(&[("conv/2d_c64_s56_r16", 8.0, 4.0)]);
        let s = Summary::new(&results, &m, Some(&run));
        assert!(s.lines.is_empty() && s.floor_ratio_ok.is_none());
        let text = render(&results, &m, Some(&run), &s);
        assert!(!text.contains("Targets"), "{text}");
        let t = anchors_table(&results, &m, &run).to_string();
        assert_eq!(t.lines().count(), 3, "{t}");
    }

    #[test]
    fn a_loaded_machine_gives_ratios_but_no_verdict() {
        let m = fixtures::machine();
        let results = vec![fixtures::result("2d_c64_s56_r16", 2.0, 4.0)];
        let mut run = fixtures::anchors(&[("conv/2d_c64_s56_r16", 8.0, 4.0)]);
        let anchor = run.conv.get_mut("conv/2d_c64_s56_r16").unwrap();
        anchor.external_load = Some(0.5);
        let s = Summary::new(&results, &m, Some(&run));
        assert_eq!(s.factorized_vs_tltorch_geomean, Some(4.0));
        assert_eq!(s.lines.len(), 1);
        assert!(
            s.lines[0].starts_with("targets not judged"),
            "{:?}",
            s.lines
        );
        let text = render(&results, &m, Some(&run), &s);
        assert!(
            !text.contains(": met") && !text.contains("MISSED"),
            "{text}"
        );
    }

    #[test]
    fn the_check_table_lists_the_differences() {
        let mut r = fixtures::result("2d_c64_s56_r16", 2.0, 4.0);
        r.check = Some(Check {
            forward: 1e-6,
            forward_vs_oracle: 4e-7,
            grad_input: 2e-5,
            grad_cores: 3e-4,
        });
        let t = check(&[r]).to_string();
        for v in ["1.0e-6", "4.0e-7", "2.0e-5", "3.0e-4"] {
            assert!(t.contains(v), "{v} missing in {t}");
        }
    }
}
