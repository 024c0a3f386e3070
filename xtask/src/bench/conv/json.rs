//! The conv part's JSON (`target/bench/bench.json`, `conv-check.json`), written through serde:
//! one [`CaseRecord`] per case (its shape, our timings and derived figures, the chain's steps,
//! the same-run anchor when measured), the [`Summary`], the sweep and the machine.

use serde::Serialize;
use serde_json::Value;

use super::case::{CaseResult, impl_name};
use super::compare::Summary;
use super::spec::{padding_text, rank_text};
use super::steps::Step;
use crate::bench::anchors::request::ConvAnchor;
use crate::bench::machine::Machine;
use crate::bench::measure::Timing;

/// One step of the chain timed alone.
#[derive(Debug, Serialize)]
pub struct StepRecord {
    step: String,
    ms: f64,
    macs: u64,
    gflops: f64,
}

impl From<&Step> for StepRecord {
    fn from(s: &Step) -> Self {
        Self {
            step: s.name.clone(),
            ms: s.ms,
            macs: s.macs,
            gflops: s.gflops(),
        }
    }
}

/// The anchors of one case, measured in this run, and our speed against them (`x` = their
/// time / ours).
#[derive(Debug, Serialize)]
pub struct AnchorRecord {
    source: String,
    tltorch_ranks: Vec<usize>,
    tltorch_factorized_ms: f64,
    tltorch_reconstructed_ms: f64,
    pytorch_dense_ms: f64,
    tltorch_factorized_train_ms: f64,
    tltorch_reconstructed_train_ms: f64,
    pytorch_dense_train_ms: f64,
    speedup_factorized_vs_tltorch: f64,
    speed_reconstructed_vs_pytorch_dense: f64,
    speedup_reconstructed_vs_tltorch_reconstructed: f64,
    speedup_train_factorized_vs_tltorch: f64,
    speedup_train_reconstructed_vs_pytorch_dense: f64,
    /// Whether the case counts toward the forward+backward target (every case does).
    train_target_listed: bool,
    fact_vs_dense_rel_diff: f64,
    external_load: Option<f64>,
}

/// `--check`'s comparisons of the two implementations, and of the factorized one with the oracle.
#[derive(Debug, Serialize)]
pub struct CheckRecord {
    forward_rel_diff: f64,
    forward_vs_oracle_rel_diff: f64,
    grad_input_rel_diff: f64,
    grad_cores_rel_diff: f64,
}

/// Everything about one case.
#[derive(Debug, Serialize)]
pub struct CaseRecord {
    name: String,
    id: String,
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    spatial: Vec<usize>,
    kernel: Vec<usize>,
    stride: Vec<usize>,
    padding: String,
    dilation: Vec<usize>,
    rank_spec: String,
    ranks: Vec<usize>,
    output_shape: Vec<usize>,
    params_dense: usize,
    params_tt: usize,
    factorized_ms: f64,
    factorized_min_ms: f64,
    factorized_times_ms: Vec<f64>,
    reconstructed_ms: f64,
    reconstructed_min_ms: f64,
    reconstructed_times_ms: Vec<f64>,
    auto: &'static str,
    auto_ms: f64,
    auto_picked_faster: bool,
    speedup_factorized_vs_reconstructed: f64,
    factorized_macs: u64,
    factorized_bytes: u64,
    dense_macs: u64,
    dense_bytes: u64,
    factorized_gflops: f64,
    factorized_pct_peak: f64,
    dense_gflops: f64,
    dense_pct_peak: f64,
    floor_ms: f64,
    floor_bound: &'static str,
    floor_ratio: f64,
    fused_floor_ms: f64,
    reconstructed_floor_ms: f64,
    reconstructed_floor_ratio: f64,
    train_factorized_ms: f64,
    train_factorized_times_ms: Vec<f64>,
    train_reconstructed_ms: f64,
    train_reconstructed_times_ms: Vec<f64>,
    forward_extra_bytes_factorized: usize,
    forward_extra_bytes_reconstructed: usize,
    output_bytes: usize,
    external_load: Option<f64>,
    discarded_attempts_external_load: Vec<f64>,
    factorized_steps: Vec<StepRecord>,
    factorized_backward_steps: Vec<StepRecord>,
    anchor: Option<AnchorRecord>,
    check: Option<CheckRecord>,
}

fn ms(t: &Timing) -> Vec<f64> {
    t.times.iter().map(|s| s * 1e3).collect()
}

impl CaseRecord {
    /// The record of `r` on machine `m`, with its same-run anchor if measured.
    pub fn new(r: &CaseResult, m: &Machine, anchor: Option<(&ConvAnchor, &str)>) -> Self {
        let d = r.derived(m);
        let s = &r.spec;
        let anchor = anchor.map(|(a, source)| AnchorRecord {
            source: source.to_string(),
            tltorch_ranks: a.ranks.clone(),
            tltorch_factorized_ms: a.fact_ms,
            tltorch_reconstructed_ms: a.rec_ms,
            pytorch_dense_ms: a.dense_ms,
            tltorch_factorized_train_ms: a.fact_train_ms,
            tltorch_reconstructed_train_ms: a.rec_train_ms,
            pytorch_dense_train_ms: a.dense_train_ms,
            speedup_factorized_vs_tltorch: a.fact_ms / d.fact_ms,
            speed_reconstructed_vs_pytorch_dense: a.dense_ms / d.rec_ms,
            speedup_reconstructed_vs_tltorch_reconstructed: a.rec_ms / d.rec_ms,
            speedup_train_factorized_vs_tltorch: a.fact_train_ms / d.train_fact_ms,
            speedup_train_reconstructed_vs_pytorch_dense: a.dense_train_ms / d.train_rec_ms,
            train_target_listed: true,
            fact_vs_dense_rel_diff: a.fact_vs_dense_rel_diff,
            external_load: a.external_load,
        });
        Self {
            name: s.name.clone(),
            id: r.id.clone(),
            batch: s.batch,
            in_channels: s.in_channels,
            out_channels: s.out_channels,
            spatial: s.spatial.clone(),
            kernel: s.kernel.clone(),
            stride: s.stride.clone(),
            padding: padding_text(&s.padding),
            dilation: s.dilation.clone(),
            rank_spec: rank_text(&s.rank),
            ranks: r.ranks.clone(),
            output_shape: r.output_shape.clone(),
            params_dense: r.params_dense,
            params_tt: r.params_tt,
            factorized_ms: d.fact_ms,
            factorized_min_ms: r.fact.min() * 1e3,
            factorized_times_ms: ms(&r.fact),
            reconstructed_ms: d.rec_ms,
            reconstructed_min_ms: r.rec.min() * 1e3,
            reconstructed_times_ms: ms(&r.rec),
            auto: impl_name(r.auto),
            auto_ms: d.auto_ms,
            auto_picked_faster: d.auto_faster,
            speedup_factorized_vs_reconstructed: d.rec_ms / d.fact_ms,
            factorized_macs: r.fact_macs,
            factorized_bytes: r.fact_bytes,
            dense_macs: r.dense_macs,
            dense_bytes: r.dense_bytes,
            factorized_gflops: d.fact_gflops,
            factorized_pct_peak: d.fact_pct,
            dense_gflops: d.dense_gflops,
            dense_pct_peak: d.dense_pct,
            floor_ms: d.floor_ms,
            floor_bound: d.floor_bound,
            floor_ratio: d.floor_ratio,
            fused_floor_ms: d.fused_floor_ms,
            reconstructed_floor_ms: d.rec_floor_ms,
            reconstructed_floor_ratio: d.rec_ms / d.rec_floor_ms,
            train_factorized_ms: d.train_fact_ms,
            train_factorized_times_ms: ms(&r.train_fact),
            train_reconstructed_ms: d.train_rec_ms,
            train_reconstructed_times_ms: ms(&r.train_rec),
            forward_extra_bytes_factorized: r.mem_fact,
            forward_extra_bytes_reconstructed: r.mem_rec,
            output_bytes: 4 * r.output_shape.iter().product::<usize>(),
            external_load: r.external_load,
            discarded_attempts_external_load: r.redone.clone(),
            factorized_steps: r.steps.0.iter().map(StepRecord::from).collect(),
            factorized_backward_steps: r.steps.1.iter().map(StepRecord::from).collect(),
            anchor,
            check: r.check.map(|c| CheckRecord {
                forward_rel_diff: c.forward,
                forward_vs_oracle_rel_diff: c.forward_vs_oracle,
                grad_input_rel_diff: c.grad_input,
                grad_cores_rel_diff: c.grad_cores,
            }),
        }
    }
}

/// One point of the rank sweep.
#[derive(Debug, Serialize)]
pub struct SweepRecord {
    /// The uniform TT rank.
    pub rank: usize,
    /// Factorized forward, median ms.
    pub factorized_ms: f64,
    /// Reconstructed forward, median ms.
    pub reconstructed_ms: f64,
    /// The factorized forward's roofline floor, ms.
    pub floor_ms: f64,
    /// CPU share other processes took while the point ran.
    pub external_load: Option<f64>,
}

/// Where the anchors of this run came from.
#[derive(Debug, Serialize)]
pub struct AnchorsInfo {
    /// Versions and script, one line.
    pub source: String,
    /// The versions as the script reported them.
    pub versions: Value,
    /// Selected cases the anchors could not express, with the reason.
    pub skipped: Value,
}

/// The whole file.
#[derive(Debug, Serialize)]
pub struct Record {
    /// `"conv"`.
    pub part: &'static str,
    /// When it ran.
    pub unix_time: u64,
    /// The backend's name.
    pub backend: String,
    /// `--quick`.
    pub quick: bool,
    /// `--check`.
    pub check: bool,
    /// `--filter`.
    pub filter: Option<String>,
    /// `--case` specs.
    pub user_cases: Vec<String>,
    /// How each figure was measured.
    pub protocol: String,
    /// The machine's probes.
    pub machine: Value,
    /// Per case.
    pub cases: Vec<CaseRecord>,
    /// Aggregates, and the target verdicts when the anchors were measured.
    pub summary: Summary,
    /// The rank sweep.
    pub sweep: Vec<SweepRecord>,
    /// The sweep's SVG.
    pub plot: Option<String>,
    /// The anchors' source, when `--anchors` measured them (`null` otherwise).
    pub anchors: Option<AnchorsInfo>,
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    const CASE_KEYS: [&str; 52] = [
        "name",
        "id",
        "batch",
        "in_channels",
        "out_channels",
        "spatial",
        "kernel",
        "stride",
        "padding",
        "dilation",
        "rank_spec",
        "ranks",
        "output_shape",
        "params_dense",
        "params_tt",
        "factorized_ms",
        "factorized_min_ms",
        "factorized_times_ms",
        "reconstructed_ms",
        "reconstructed_min_ms",
        "reconstructed_times_ms",
        "auto",
        "auto_ms",
        "auto_picked_faster",
        "speedup_factorized_vs_reconstructed",
        "factorized_macs",
        "factorized_bytes",
        "dense_macs",
        "dense_bytes",
        "factorized_gflops",
        "factorized_pct_peak",
        "dense_gflops",
        "dense_pct_peak",
        "floor_ms",
        "floor_bound",
        "floor_ratio",
        "fused_floor_ms",
        "reconstructed_floor_ms",
        "reconstructed_floor_ratio",
        "train_factorized_ms",
        "train_factorized_times_ms",
        "train_reconstructed_ms",
        "train_reconstructed_times_ms",
        "forward_extra_bytes_factorized",
        "forward_extra_bytes_reconstructed",
        "output_bytes",
        "external_load",
        "discarded_attempts_external_load",
        "factorized_steps",
        "factorized_backward_steps",
        "anchor",
        "check",
    ];

    #[test]
    fn a_case_record_has_every_key_and_no_anchor_unless_measured() {
        let m = fixtures::machine();
        let r = fixtures::result("2d_c64_s56_r16", 2.0, 4.0);
        let v = serde_json::to_value(CaseRecord::new(&r, &m, None)).unwrap();
        let obj = v.as_object().unwrap();
        for k in CASE_KEYS {
            assert!(obj.contains_key(k), "missing key {k}");
        }
        assert_eq!(obj.len(), CASE_KEYS.len());
        assert!(v["anchor"].is_null() && v["check"].is_null());
        assert_eq!(v["factorized_ms"], 2.0);
        assert_eq!(v["factorized_pct_peak"], 50.0);
        assert_eq!(v["floor_bound"], "compute");
        assert_eq!(v["padding"], "1");
        assert_eq!(v["factorized_steps"][0]["step"], "contract 64->16");
        assert_eq!(v["factorized_steps"][0]["gflops"], 2.0);
    }

    #[test]
    fn the_anchor_record_holds_same_run_figures_and_ratios() {
        let m = fixtures::machine();
        let r = fixtures::result("2d_c64_s56_r16", 2.0, 4.0);
        let run = fixtures::anchors(&[("conv/2d_c64_s56_r16", 8.0, 2.0)]);
        let a = &run.conv["conv/2d_c64_s56_r16"];
        let v = serde_json::to_value(CaseRecord::new(&r, &m, Some((a, "this run")))).unwrap();
        let a = &v["anchor"];
        assert_eq!(a["source"], "this run");
        assert_eq!(a["tltorch_factorized_ms"], 8.0);
        assert_eq!(a["speedup_factorized_vs_tltorch"], 4.0);
        assert_eq!(a["speed_reconstructed_vs_pytorch_dense"], 0.5);
        assert_eq!(a["speedup_train_factorized_vs_tltorch"], 8.0);
        for k in [
            "pytorch_dense_train_ms",
            "tltorch_reconstructed_ms",
            "train_target_listed",
        ] {
            assert!(!a[k].is_null(), "{k}");
        }
    }
}
