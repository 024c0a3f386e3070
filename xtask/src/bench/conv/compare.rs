//! Our cases against their same-run anchors: the ratios, and the [`Summary`] (aggregates over
//! the cases and, only when `--anchors` measured the anchors, the target verdicts).

use serde::Serialize;

use super::case::{CaseResult, Derived};
use crate::bench::anchors::AnchorRun;
use crate::bench::anchors::request::ConvAnchor;
use crate::bench::anchors::targets::{self, ConvFigures, geomean};
use crate::bench::machine::Machine;

/// The anchor measured in this run for case `id`, if any.
pub fn anchor_of<'a>(anchors: Option<&'a AnchorRun>, id: &str) -> Option<&'a ConvAnchor> {
    anchors.and_then(|a| a.conv.get(id))
}

/// The ratios of one case against its anchor.
pub fn figures(name: &str, d: &Derived, a: &ConvAnchor) -> ConvFigures {
    ConvFigures {
        name: name.to_string(),
        fact_vs_tltorch: a.fact_ms / d.fact_ms,
        train_vs_tltorch: a.fact_train_ms / d.train_fact_ms,
        rec_vs_dense: a.dense_ms / d.rec_ms,
        compute_bound: d.floor_bound == "compute",
        pct_peak: d.fact_pct,
        floor_ratio: d.floor_ratio,
    }
}

/// Aggregates over the cases. The anchor-based fields are `None` and `lines` is empty unless
/// every figure they use was measured in this run.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// How many cases `Auto` resolved to the faster implementation, `k/n`.
    pub auto_ok: String,
    /// Geometric mean of our factorized speedups over TensorLy-Torch's factorized forward.
    pub factorized_vs_tltorch_geomean: Option<f64>,
    /// ... and the smallest.
    pub factorized_vs_tltorch_min: Option<f64>,
    /// Cases whose reconstructed forward is at least PyTorch dense's speed, `k/n`.
    pub reconstructed_vs_pytorch_dense_ok: Option<String>,
    /// Cases at the limit of target 2 (peak share or bandwidth floor), `k/n`.
    pub floor_ratio_ok: Option<String>,
    /// Geometric mean of our forward+backward speedups over TensorLy-Torch's.
    pub train_vs_tltorch_geomean: Option<f64>,
    /// ... and the smallest.
    pub train_vs_tltorch_min: Option<f64>,
    /// One verdict per target, from this run's figures only (or one line saying why none: the
    /// machine was loaded, [`targets::judgeable`]).
    pub lines: Vec<String>,
}

impl Summary {
    /// The summary of `results`; anchor figures only where `anchors` measured every case.
    pub fn new(results: &[CaseResult], m: &Machine, anchors: Option<&AnchorRun>) -> Self {
        let derived: Vec<Derived> = results.iter().map(|r| r.derived(m)).collect();
        let auto = derived.iter().filter(|d| d.auto_faster).count();
        let mut s = Summary {
            auto_ok: format!("{auto}/{}", results.len()),
            ..Summary::default()
        };
        let paired: Option<Vec<ConvFigures>> = results
            .iter()
            .zip(&derived)
            .map(|(r, d)| anchor_of(anchors, &r.id).map(|a| figures(&r.spec.name, d, a)))
            .collect();
        let Some(figs) = paired.filter(|f| !f.is_empty()) else {
            return s;
        };
        let fact: Vec<f64> = figs.iter().map(|f| f.fact_vs_tltorch).collect();
        let train: Vec<f64> = figs.iter().map(|f| f.train_vs_tltorch).collect();
        let low = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let count = |ok: usize| format!("{ok}/{}", figs.len());
        s.factorized_vs_tltorch_geomean = geomean(&fact);
        s.factorized_vs_tltorch_min = Some(low(&fact));
        s.train_vs_tltorch_geomean = geomean(&train);
        s.train_vs_tltorch_min = Some(low(&train));
        s.reconstructed_vs_pytorch_dense_ok = Some(count(
            figs.iter()
                .filter(|f| f.rec_vs_dense >= targets::REC_VS_DENSE)
                .count(),
        ));
        s.floor_ratio_ok = Some(count(
            figs.iter().filter(|f| targets::at_the_limit(f)).count(),
        ));
        let ours: Vec<Option<f64>> = results.iter().map(|r| r.external_load).collect();
        let theirs: Vec<Option<f64>> = results
            .iter()
            .map(|r| anchor_of(anchors, &r.id).and_then(|a| a.external_load))
            .collect();
        s.lines = match targets::judgeable(&ours, &theirs) {
            Ok(()) => targets::conv_verdicts(&figs)
                .into_iter()
                .map(|v| v.line)
                .collect(),
            Err(line) => vec![line],
        };
        s
    }
}
