//! The two real models of `tests/golden/onnx` (basic-pitch, silero-vad): read and written back
//! without loss, compressed, and (with ONNX Runtime) run against the original.

use std::collections::HashMap;

use crate::common::{full_rank, golden_dir, runtime};
use ttconv_models::{Outcome, Policy, ReportOptions, SkipReason};
use ttconv_onnx::{
    compress, model_to_bytes, parameter_count, parse_model, random_inputs, read_model, verify,
};

const BASIC_PITCH: &str = "basic-pitch-0.4.0/nmp.onnx";
const SILERO: &str = "silero-vad-6.2.3/silero_vad_16k_sequence.onnx";

#[test]
fn both_models_round_trip_through_the_reader() {
    for name in [BASIC_PITCH, SILERO] {
        let bytes = std::fs::read(golden_dir().join(name)).unwrap();
        let m = parse_model(&bytes).unwrap();
        let again = model_to_bytes(&m);
        assert_eq!(parse_model(&again).unwrap(), m, "{name}");
        // The bytes differ a little in length, not in content: proto2 writers also store fields
        // at their default value (an empty `domain`, an attribute's `i: 0`), which read the same
        // when absent, and pack repeated numbers differently (a one-element packed list costs a
        // byte more). Dropped content (a field missing from the schema) would show as a gap far
        // larger than a few bytes per node.
        let nodes = m.graph.as_ref().unwrap().node.len();
        let gap = again.len().abs_diff(bytes.len());
        assert!(
            gap <= 4 * nodes,
            "{name}: {gap} bytes apart for {nodes} nodes"
        );
    }
}

/// Compresses `name` under `policy`, and with a runtime, runs both on seeded random inputs and
/// returns the largest output relative error.
fn compress_and_run(
    name: &str,
    policy: &Policy,
    test: &str,
) -> (ttconv_models::Report, Option<f64>, usize, usize) {
    let m = read_model(golden_dir().join(name)).unwrap();
    let (out, report) = compress(&m, policy, &ReportOptions::default(), &mut |_| {}).unwrap();
    let (before, after) = (parameter_count(&m), parameter_count(&out));
    let Some(rt) = runtime(test) else {
        return (report, None, before, after);
    };
    let dims = HashMap::from([("sequence_length".to_string(), 8)]);
    let inputs = random_inputs(&m, &dims, 1).unwrap();
    let v = verify(
        &rt,
        &model_to_bytes(&m),
        &model_to_bytes(&out),
        &[inputs],
        1,
    )
    .unwrap();
    println!("{name}: {:?}", v.outputs);
    (report, Some(v.max_rel_error()), before, after)
}

/// Full rank: every output within 1e-4 of the original (the bound; measured 5e-7 on
/// basic-pitch and 6e-6 on silero-vad, whose LSTM state outputs amplify the f32 rounding of
/// the chain).
#[test]
fn basic_pitch_at_full_rank_reproduces_its_outputs() {
    let (report, err, _, _) = compress_and_run(
        BASIC_PITCH,
        &full_rank(),
        "basic_pitch_at_full_rank_reproduces_its_outputs",
    );
    // The six trained convolutions with more than one input channel... four of them; the CQT
    // filter banks and the 32x1x7x7 have one input channel.
    assert_eq!(report.totals.compressed, 5, "{}", report.to_table());
    let single: usize = report
        .layers
        .iter()
        .filter(|l| {
            matches!(
                &l.outcome,
                Outcome::Skipped {
                    reason: SkipReason::SingleInputChannel
                }
            )
        })
        .count();
    assert_eq!(single, 4, "3 shared CQT banks and the 32x1x7x7");
    if let Some(e) = err {
        assert!(e < 1e-4, "max output relative error {e:.3e}");
    }
}

#[test]
fn silero_vad_at_full_rank_reproduces_its_outputs() {
    let (report, err, _, _) = compress_and_run(
        SILERO,
        &full_rank(),
        "silero_vad_at_full_rank_reproduces_its_outputs",
    );
    assert_eq!(
        report.totals.compressed,
        4,
        "the four encoder Convs: {}",
        report.to_table()
    );
    if let Some(e) = err {
        assert!(e < 1e-4, "max output relative error {e:.3e}");
    }
}

/// With the default policy (rank 0.5, kept dense unless smaller), no model grows: a shared
/// weight is decomposed once, and a layer whose TT form would be larger stays dense.
#[test]
fn the_default_policy_never_grows_a_model() {
    for name in [BASIC_PITCH, SILERO] {
        let (report, err, before, after) = compress_and_run(
            name,
            &Policy::default(),
            "the_default_policy_never_grows_a_model",
        );
        assert!(after <= before, "{name}: {before} -> {after} parameters");
        assert!(report.totals.eligible_params_after <= report.totals.eligible_params_before);
        if let Some(e) = err {
            assert!(e.is_finite(), "{name}: {e}");
        }
    }
}
