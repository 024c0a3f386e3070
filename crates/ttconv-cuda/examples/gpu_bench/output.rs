//! What `gpu_bench` prints (the table) and writes (the JSON report, through serde_json).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::check::TOL_REFERENCE_LEN;
use crate::{CaseResult, Device, Options, Stats};

pub(crate) fn fmt_ms(s: Option<Stats>) -> String {
    s.map_or("-".into(), |s| format!("{:.3}", s.median_ms))
}

pub(crate) fn fmt_rel(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1e}"))
}

pub(crate) fn print_table(results: &[CaseResult], o: &Options) {
    println!(
        "\n{:<28} {:>5} {:>22} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "case",
        "batch",
        "TT ranks",
        "fact ms",
        "rec ms",
        "fact TF",
        "rec TF",
        "fact f+b",
        "rec f+b",
        "fact tf32",
        "rec tf32",
        "fwd rel",
        "bwd rel",
        "bwd tol"
    );
    for r in results {
        let ranks = r
            .ranks
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let tflops = |flops: u64, s: Option<Stats>| {
            s.map_or("-".into(), |s| {
                format!("{:.2}", flops as f64 / (s.median_ms * 1e-3) / 1e12)
            })
        };
        println!(
            "{:<28} {:>5} {:>22} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
            r.case.name,
            r.batch,
            ranks,
            fmt_ms(r.timing("fact_fwd")),
            fmt_ms(r.timing("rec_fwd")),
            tflops(r.flops_fact, r.timing("fact_fwd")),
            tflops(r.flops_rec, r.timing("rec_fwd")),
            fmt_ms(r.timing("fact_fwd_bwd")),
            fmt_ms(r.timing("rec_fwd_bwd")),
            fmt_ms(r.timing("fact_fwd_tf32")),
            fmt_ms(r.timing("rec_fwd_tf32")),
            fmt_rel(r.check.map(|c| c.max_fwd())),
            fmt_rel(r.check.map(|c| c.max_bwd())),
            fmt_rel(r.check.map(|c| c.bwd_tol)),
        );
        if let Some(e) = &r.error {
            println!("    error: {e}");
        }
    }
    println!(
        "ms: median wall time between synchronize() calls; TF: TFLOP/s of the cost model's \
         multiply-adds (x2); f+b: forward_train + backward (input and core gradients, downloaded); \
         rel: max |cuda - cpu| / max |cpu| at batch {} (bwd: worst of the input and core \
         gradients); tolerance {:.0e} forward, and for the backward {:.0e} x \
         max(1, sqrt(summed length / {TOL_REFERENCE_LEN})) (the bwd tol column).",
        o.check_batch, o.tol, o.tol
    );
}

#[derive(Serialize)]
struct JsonDevice {
    name: String,
    arch: String,
    backend: String,
}

#[derive(Serialize)]
struct JsonParams<'a> {
    #[serde(flatten)]
    options: &'a Options,
    tf32_columns: bool,
    tol_reference_len: f64,
    dtype: &'static str,
    timer: &'static str,
}

#[derive(Serialize)]
struct JsonStats {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    repeats: usize,
}

#[derive(Serialize)]
struct JsonCheck {
    batch: usize,
    fact_fwd_rel_diff: f64,
    rec_fwd_rel_diff: f64,
    fact_bwd_rel_diff: f64,
    rec_bwd_rel_diff: f64,
    max_fwd_rel_diff: f64,
    max_bwd_rel_diff: f64,
    fwd_tol: f64,
    bwd_summed_len: usize,
    bwd_tol: f64,
    passed: bool,
}

#[derive(Serialize)]
struct JsonCase<'a> {
    name: &'a str,
    batch: usize,
    cin: usize,
    cout: usize,
    spatial: &'a [usize],
    kernel: &'a [usize],
    stride: &'a [usize],
    padding: &'a [usize],
    dilation: &'a [usize],
    rank: String,
    input_shape: &'a [usize],
    output_shape: &'a [usize],
    tt_ranks: &'a [usize],
    flops_factorized: u64,
    flops_reconstructed: u64,
    timings: BTreeMap<&'a str, JsonStats>,
    check: Option<JsonCheck>,
    error: Option<&'a str>,
    wall_s: f64,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    tool: &'static str,
    schema: u32,
    complete: bool,
    device: JsonDevice,
    params: JsonParams<'a>,
    cases: Vec<JsonCase<'a>>,
    total_wall_s: f64,
}

/// The JSON report (serde_json writes non-finite numbers as `null`); `complete` is false while
/// cases remain (it is rewritten after each case, so a run cut short still leaves the cases
/// done).
pub(crate) fn to_json<D: Device>(
    results: &[CaseResult],
    o: &Options,
    cuda: &D,
    total_s: f64,
    complete: bool,
) -> String {
    let (name, arch) = cuda.describe();
    let cases = results
        .iter()
        .map(|r| {
            let c = &r.case;
            JsonCase {
                name: &c.name,
                batch: r.batch,
                cin: c.cin,
                cout: c.cout,
                spatial: &c.spatial,
                kernel: &c.kernel,
                stride: &c.stride,
                padding: &c.padding,
                dilation: &c.dilation,
                rank: c.rank_spec(),
                input_shape: &r.input_shape,
                output_shape: &r.output_shape,
                tt_ranks: &r.ranks,
                flops_factorized: r.flops_fact,
                flops_reconstructed: r.flops_rec,
                timings: r
                    .timings
                    .iter()
                    .map(|(n, st)| {
                        let stats = JsonStats {
                            median_ms: st.median_ms,
                            min_ms: st.min_ms,
                            max_ms: st.max_ms,
                            repeats: st.repeats,
                        };
                        (*n, stats)
                    })
                    .collect(),
                check: r.check.map(|ch| JsonCheck {
                    batch: o.check_batch,
                    fact_fwd_rel_diff: ch.fact_fwd,
                    rec_fwd_rel_diff: ch.rec_fwd,
                    fact_bwd_rel_diff: ch.fact_bwd,
                    rec_bwd_rel_diff: ch.rec_bwd,
                    max_fwd_rel_diff: ch.max_fwd(),
                    max_bwd_rel_diff: ch.max_bwd(),
                    fwd_tol: o.tol,
                    bwd_summed_len: ch.bwd_len,
                    bwd_tol: ch.bwd_tol,
                    passed: ch.passed(o.tol),
                }),
                error: r.error.as_deref(),
                wall_s: r.wall_s,
            }
        })
        .collect();
    let report = JsonReport {
        tool: "ttconv-cuda gpu_bench",
        schema: 2,
        complete,
        device: JsonDevice {
            name,
            arch,
            backend: cuda.name(),
        },
        params: JsonParams {
            options: o,
            tf32_columns: o.tf32 && cuda.tf32().is_some(),
            tol_reference_len: TOL_REFERENCE_LEN,
            dtype: "float32",
            timer: "wall clock between synchronize() calls, median",
        },
        cases,
        total_wall_s: total_s,
    };
    let mut text = serde_json::to_string_pretty(&report).expect("the report serializes");
    text.push('\n');
    text
}
