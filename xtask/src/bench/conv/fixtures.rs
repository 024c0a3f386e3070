//! Made-up measurements for the report's tests: fixed times, no timing.

use ttconv::Implementation;

use super::case::CaseResult;
use super::spec::CaseSpec;
use super::steps::Step;
use crate::bench::anchors::AnchorRun;
use crate::bench::anchors::request::ConvAnchor;
use crate::bench::machine::Machine;
use crate::bench::measure::Timing;

/// A machine of 100 GFLOP/s and 10 GB/s.
pub fn machine() -> Machine {
    Machine {
        threads: 2,
        peak_gflops: 100.0,
        peak_method: "avx2+fma".into(),
        fma: vec![("avx2+fma".into(), 100.0, 50.0)],
        bandwidth_gbs: 10.0,
        copy_gbs: 12.0,
        cache_gbs: 40.0,
        bandwidth_bytes: 1 << 28,
        gemm: (2048, 80.0),
        cpu: "test cpu".into(),
    }
}

fn timing(ms: f64) -> Timing {
    Timing {
        times: vec![ms * 1e-3, ms * 1.1e-3, ms * 0.9e-3],
    }
}

/// A case of the suite measured at `fact_ms` (factorized) and `rec_ms` (reconstructed); the
/// forward+backward takes three times as long.
pub fn result(name: &str, fact_ms: f64, rec_ms: f64) -> CaseResult {
    let spec = super::suite::default_suite()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| CaseSpec::parse(&format!("c=8,s=16,k=3,name={name}")).unwrap());
    CaseResult {
        id: format!("conv/{name}"),
        ranks: vec![1, 16, 16, 16, 1],
        output_shape: vec![8, 64, 56, 56],
        params_dense: 36864,
        params_tt: 3600,
        fact: timing(fact_ms),
        rec: timing(rec_ms),
        auto: Implementation::Factorized,
        train_fact: timing(3.0 * fact_ms),
        train_rec: timing(3.0 * rec_ms),
        // 1 ms at the peak; 0.5 ms at the bandwidth.
        fact_macs: 50_000_000,
        fact_bytes: 5_000_000,
        dense_macs: 500_000_000,
        dense_bytes: 10_000_000,
        fused_bytes: 1_000_000,
        mem_fact: 1 << 20,
        mem_rec: 2 << 20,
        check: None,
        external_load: Some(0.01),
        steps: (
            vec![Step {
                name: "contract 64->16".into(),
                ms: fact_ms / 2.0,
                macs: 1_000_000,
            }],
            vec![Step {
                name: "grad core last".into(),
                ms: fact_ms,
                macs: 1_000_000,
            }],
        ),
        redone: Vec::new(),
        spec,
    }
}

/// Anchors for `cases` (`(id, TensorLy-Torch factorized ms, PyTorch dense ms)`), the other
/// figures twice those.
pub fn anchors(cases: &[(&str, f64, f64)]) -> AnchorRun {
    let mut run = AnchorRun::default();
    run.versions.insert(
        "conv".into(),
        serde_json::json!({"torch": "2.15.0", "tltorch": "0.5.0", "threads": 2}),
    );
    for &(id, fact, dense) in cases {
        run.conv.insert(
            id.to_string(),
            ConvAnchor {
                id: id.to_string(),
                ranks: vec![1, 16, 16, 16, 1],
                fact_ms: fact,
                rec_ms: 2.0 * dense,
                dense_ms: dense,
                fact_train_ms: 2.0 * fact * 3.0,
                rec_train_ms: 2.0 * dense * 3.0,
                dense_train_ms: 2.0 * dense * 3.0,
                fact_vs_dense_rel_diff: 1e-7,
                external_load: Some(0.0),
            },
        );
    }
    run
}
