//! The performance targets, judged only from figures measured in the same run: ours against the
//! anchors the same `--anchors` run timed, and against the FMA peak and bandwidth the same run
//! probed. Without `--anchors` the bench judges nothing.

/// Target 1: factorized forward vs TensorLy-Torch's, geometric mean at least this ...
pub const FACT_GEOMEAN: f64 = 3.0;
/// ... and no case under this.
pub const FACT_MIN: f64 = 2.0;
/// Target 2: a compute-bound factorized forward at least this % of the FMA peak ...
pub const PEAK_PCT: f64 = 60.0;
/// ... and a memory-bound one within this factor of its bandwidth floor.
pub const MEMORY_FLOOR_RATIO: f64 = 1.3;
/// Target 3: forward+backward vs TensorLy-Torch's, geometric mean at least this ...
pub const TRAIN_GEOMEAN: f64 = 3.0;
/// ... and no case under this.
pub const TRAIN_MIN: f64 = 2.0;
/// Target 4: reconstructed forward at least this times PyTorch's dense speed on every case.
pub const REC_VS_DENSE: f64 = 1.0;
/// Target 5: TT-SVD at least this many times faster than TensorLy on every case.
pub const TTSVD_MIN: f64 = 5.0;

/// Other processes may take at most this share of the CPUs, on either side, for a verdict: above
/// it the two sides ran on different machines in effect (a 2-thread OpenMP or rayon pool slows
/// down far more than in proportion when a core is taken).
pub const MAX_LOAD: f64 = crate::bench::measure::LOAD_THRESHOLD;

/// `Ok` when every measured load (ours and the anchors') is at most [`MAX_LOAD`]; else the line
/// that replaces the verdicts.
pub fn judgeable(ours: &[Option<f64>], anchors: &[Option<f64>]) -> Result<(), String> {
    let worst = |v: &[Option<f64>]| v.iter().flatten().copied().fold(0.0f64, f64::max);
    let (o, a) = (worst(ours), worst(anchors));
    if o <= MAX_LOAD && a <= MAX_LOAD {
        Ok(())
    } else {
        Err(format!(
            "targets not judged: other processes took up to {:.0}% of the CPUs while our cases ran and up to {:.0}% while the anchors ran (limit {:.0}%); rerun on an idle machine",
            100.0 * o,
            100.0 * a,
            100.0 * MAX_LOAD
        ))
    }
}

/// Same-run figures of one conv case.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvFigures {
    /// Case name.
    pub name: String,
    /// TensorLy-Torch factorized forward time / ours.
    pub fact_vs_tltorch: f64,
    /// TensorLy-Torch factorized forward+backward time / ours.
    pub train_vs_tltorch: f64,
    /// PyTorch dense forward time / our reconstructed forward's.
    pub rec_vs_dense: f64,
    /// Whether the roofline floor is set by compute (else by memory).
    pub compute_bound: bool,
    /// Our factorized forward's % of the FMA peak.
    pub pct_peak: f64,
    /// Our factorized forward's time / its roofline floor.
    pub floor_ratio: f64,
}

/// One target's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Whether it is met.
    pub met: bool,
    /// What was measured against what, ending in `met` or `MISSED`.
    pub line: String,
}

impl Verdict {
    fn new(met: bool, text: String) -> Self {
        let word = if met { "met" } else { "MISSED" };
        Self {
            met,
            line: format!("{text}: {word}"),
        }
    }
}

/// The geometric mean (`None` for no values).
pub fn geomean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Whether a case meets target 2.
pub fn at_the_limit(f: &ConvFigures) -> bool {
    if f.compute_bound {
        f.pct_peak >= PEAK_PCT
    } else {
        f.floor_ratio <= MEMORY_FLOOR_RATIO
    }
}

/// Targets 1 to 4 over the conv cases (none for no cases).
pub fn conv_verdicts(cases: &[ConvFigures]) -> Vec<Verdict> {
    if cases.is_empty() {
        return Vec::new();
    }
    let n = cases.len();
    let ratio = |what: &str, v: Vec<f64>, geo: f64, lo: f64| {
        let g = geomean(&v).unwrap_or(f64::NAN);
        let m = min(&v);
        Verdict::new(
            g >= geo && m >= lo,
            format!("{what}: geomean {g:.2}x (target >= {geo}x), min {m:.2}x (target >= {lo}x)"),
        )
    };
    let limit = cases.iter().filter(|f| at_the_limit(f)).count();
    let compute = cases.iter().filter(|f| f.compute_bound).count();
    let rec = cases
        .iter()
        .filter(|f| f.rec_vs_dense >= REC_VS_DENSE)
        .count();
    vec![
        ratio(
            "1. factorized forward vs TensorLy-Torch",
            cases.iter().map(|f| f.fact_vs_tltorch).collect(),
            FACT_GEOMEAN,
            FACT_MIN,
        ),
        Verdict::new(
            limit == n,
            format!(
                "2. factorized forward at the limit (>= {PEAK_PCT}% of the FMA peak when compute-bound, within {MEMORY_FLOOR_RATIO}x of the floor when memory-bound; {compute} compute-bound): {limit}/{n} cases"
            ),
        ),
        ratio(
            "3. forward+backward vs TensorLy-Torch",
            cases.iter().map(|f| f.train_vs_tltorch).collect(),
            TRAIN_GEOMEAN,
            TRAIN_MIN,
        ),
        Verdict::new(
            rec == n,
            format!(
                "4. reconstructed forward >= {REC_VS_DENSE}x PyTorch dense: {rec}/{n} cases (min {:.2}x)",
                min(&cases.iter().map(|f| f.rec_vs_dense).collect::<Vec<_>>())
            ),
        ),
    ]
}

/// Target 5 over the TT-SVD speedups (TensorLy seconds / ours); `None` for no cases.
pub fn ttsvd_verdict(speedups: &[f64]) -> Option<Verdict> {
    let g = geomean(speedups)?;
    let ok = speedups.iter().filter(|&&s| s >= TTSVD_MIN).count();
    Some(Verdict::new(
        ok == speedups.len(),
        format!(
            "5. TT-SVD vs TensorLy tensor_train: {ok}/{} cases >= {TTSVD_MIN}x (geomean {g:.2}x, min {:.2}x)",
            speedups.len(),
            min(speedups)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(fact: f64, train: f64, rec: f64, compute: bool, pct: f64, floor: f64) -> ConvFigures {
        ConvFigures {
            name: "c".into(),
            fact_vs_tltorch: fact,
            train_vs_tltorch: train,
            rec_vs_dense: rec,
            compute_bound: compute,
            pct_peak: pct,
            floor_ratio: floor,
        }
    }

    #[test]
    fn verdicts_follow_the_figures() {
        let good = [
            case(4.0, 3.5, 1.1, true, 65.0, 1.6),
            case(2.5, 3.0, 1.0, false, 20.0, 1.2),
        ];
        let v = conv_verdicts(&good);
        assert_eq!(v.len(), 4);
        assert!(
            v.iter().all(|v| v.met && v.line.ends_with(": met")),
            "{v:#?}"
        );
        assert!(v[0].line.contains("geomean 3.16x"), "{}", v[0].line);
        // One case under each threshold misses each target.
        let bad = [
            case(4.0, 3.5, 1.1, true, 65.0, 1.6),
            case(1.9, 1.5, 0.9, false, 20.0, 1.4),
        ];
        let v = conv_verdicts(&bad);
        assert!(
            v.iter().all(|v| !v.met && v.line.ends_with(": MISSED")),
            "{v:#?}"
        );
        assert!(v[1].line.contains("1/2 cases"), "{}", v[1].line);
        assert!(conv_verdicts(&[]).is_empty());
    }

    #[test]
    fn the_limit_depends_on_the_bound() {
        assert!(at_the_limit(&case(1.0, 1.0, 1.0, true, 60.0, 9.0)));
        assert!(!at_the_limit(&case(1.0, 1.0, 1.0, true, 59.9, 1.0)));
        assert!(at_the_limit(&case(1.0, 1.0, 1.0, false, 1.0, 1.3)));
        assert!(!at_the_limit(&case(1.0, 1.0, 1.0, false, 99.0, 1.31)));
    }

    #[test]
    fn a_loaded_machine_gives_no_verdict() {
        assert!(judgeable(&[Some(0.05), None], &[Some(0.1)]).is_ok());
        let e = judgeable(&[Some(0.05)], &[Some(0.88)]).unwrap_err();
        assert!(e.contains("not judged") && e.contains("88%"), "{e}");
        assert!(judgeable(&[Some(0.5)], &[]).is_err());
    }

    #[test]
    fn ttsvd_needs_every_case_at_five() {
        assert!(ttsvd_verdict(&[]).is_none());
        assert!(ttsvd_verdict(&[5.0, 8.0]).unwrap().met);
        let v = ttsvd_verdict(&[4.9, 8.0]).unwrap();
        assert!(!v.met && v.line.contains("1/2 cases"), "{}", v.line);
        assert!((geomean(&[2.0, 8.0]).unwrap() - 4.0).abs() < 1e-12);
    }
}
