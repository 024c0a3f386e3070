//! `compress` against TensorLy's own `tensor_train` ranks and errors, on MTCNN's real weights
//! (every reported error recomputed from the written cores), under a global ratio, and its skip
//! rules.

mod common;

use common::{data, naive_kernel, read, rel_err};
use ttconv::RankSpec;
use ttconv_models::{
    Checkpoint, DType, Limits, Outcome, Pattern, Policy, RankRule, ReportOptions, SkipReason,
    Target, Tensor, checkpoint_to_bytes, compress, find_tt_layers, parse_checkpoint,
};

fn run(ckpt: &Checkpoint, policy: &Policy) -> (Checkpoint, ttconv_models::Report) {
    compress(ckpt, policy, &ReportOptions::default(), &mut |_| {}).unwrap()
}

fn per_layer(rule: RankRule) -> Policy {
    Policy {
        target: Target::PerLayer(rule),
        require_smaller: false,
        ..Policy::default()
    }
}

#[test]
fn ranks_and_errors_equal_tensorlys_at_rank_half_and_8() {
    let ckpt = read("dense_cnn.safetensors");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("dense_cnn_layers.json")).unwrap())
            .unwrap();
    for (spec, key) in [
        (RankSpec::Fraction(0.5), "rank0.5"),
        (RankSpec::Uniform(8), "rank8"),
    ] {
        let (_, report) = run(&ckpt, &per_layer(RankRule::Rank(spec)));
        let mut checked = 0;
        for conv in reference["conv_layers"].as_array().unwrap() {
            let Some(r) = conv.get("tt_reference").and_then(|t| t.get(key)) else {
                continue;
            };
            let prefix = conv["prefix"].as_str().unwrap();
            let layer = report
                .layers
                .iter()
                .find(|l| l.name == prefix)
                .expect(prefix);
            let Outcome::Compressed {
                ranks, rel_error, ..
            } = &layer.outcome
            else {
                panic!("{prefix} not compressed: {:?}", layer.outcome);
            };
            let want: Vec<usize> = r["ranks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(ranks, &want, "{prefix} {key}");
            let e = r["rel_error"].as_f64().unwrap();
            assert!(
                (rel_error - e).abs() <= 1e-5,
                "{prefix} {key}: {rel_error} vs TensorLy {e}"
            );
            checked += 1;
        }
        assert_eq!(checked, 4, "{key}");
    }
}

#[test]
fn onet_at_tol_03_reports_the_errors_of_the_written_cores() {
    let ckpt = read("mtcnn/onet.pt");
    let (out, report) = run(
        &ckpt,
        &Policy {
            target: Target::PerLayer(RankRule::Tolerance(0.3)),
            ..Policy::default()
        },
    );
    // Through the file format, as a user gets it.
    let bytes = checkpoint_to_bytes(&out).unwrap();
    let back = parse_checkpoint(&bytes, &Limits::default()).unwrap();
    let layers = find_tt_layers(&back).unwrap();
    let mut compressed = 0;
    for l in &report.layers {
        let Outcome::Compressed {
            rel_error, ranks, ..
        } = &l.outcome
        else {
            assert!(
                back.get(&l.tensor).is_some(),
                "{} skipped but gone",
                l.tensor
            );
            continue;
        };
        compressed += 1;
        let tt = layers.iter().find(|t| t.prefix == l.name).expect(&l.name);
        assert_eq!(&tt.tt.ranks(), ranks);
        let dense = ckpt.get(&l.tensor).unwrap().to_f32(&l.tensor).unwrap();
        let recomputed = rel_err(&dense, &naive_kernel(&tt.tt));
        // Both are the same f64 quantity over the same f32 cores, summed in another order.
        assert!(
            (recomputed - rel_error).abs() <= 1e-9,
            "{}: reported {rel_error}, recomputed {recomputed}",
            l.name
        );
        assert!(
            *rel_error <= 0.3 + 1e-6,
            "{}: {rel_error} above the tolerance",
            l.name
        );
        assert_eq!(tt.meta.rel_error, Some(*rel_error));
    }
    assert!(compressed >= 3, "{}", report.to_table());
    // Every other tensor is copied bit for bit.
    for (name, t) in &ckpt.tensors {
        if report
            .layers
            .iter()
            .any(|l| &l.tensor == name && matches!(l.outcome, Outcome::Compressed { .. }))
        {
            assert!(back.get(name).is_none());
            continue;
        }
        assert!(back.get(name).unwrap().bytes() == t.bytes(), "{name}");
    }
}

#[test]
fn a_global_ratio_is_met() {
    let ckpt = read("dense_cnn.safetensors");
    for x in [2.0, 4.0] {
        let (_, report) = run(
            &ckpt,
            &Policy {
                target: Target::Ratio(x),
                ..Policy::default()
            },
        );
        let t = &report.totals;
        assert!(
            t.eligible_ratio() >= x,
            "ratio {x}: got {}",
            t.eligible_ratio()
        );
        // Not far above it either: the greedy spends the budget.
        assert!(
            t.eligible_ratio() <= 1.2 * x,
            "ratio {x}: got {}",
            t.eligible_ratio()
        );
    }
}

#[test]
fn skip_rules_and_overrides() {
    let ckpt = read("dense_cnn.safetensors");
    let policy = Policy {
        target: Target::PerLayer(RankRule::Rank(RankSpec::Fraction(0.5))),
        overrides: vec![
            (
                Pattern::new("temporal.*").unwrap(),
                RankRule::Rank(RankSpec::Uniform(4)),
            ),
            (Pattern::new("features.5").unwrap(), RankRule::Dense),
        ],
        exclude: vec![Pattern::new("features.3").unwrap()],
        ..Policy::default()
    };
    let (out, report) = run(&ckpt, &policy);
    let outcome = |name: &str| {
        &report
            .layers
            .iter()
            .find(|l| l.name == name)
            .unwrap()
            .outcome
    };
    assert_eq!(
        outcome("features.9"),
        &Outcome::Skipped {
            reason: SkipReason::Pointwise
        }
    );
    assert_eq!(
        outcome("features.8"),
        &Outcome::Skipped {
            reason: SkipReason::SingleInputChannel
        }
    );
    assert_eq!(
        outcome("features.3"),
        &Outcome::Skipped {
            reason: SkipReason::Excluded {
                pattern: "features.3".into()
            }
        }
    );
    assert_eq!(
        outcome("features.5"),
        &Outcome::Skipped {
            reason: SkipReason::KeptDense {
                pattern: "features.5".into()
            }
        }
    );
    match outcome("temporal.0") {
        Outcome::Compressed { ranks, .. } => assert_eq!(ranks, &vec![1, 4, 4, 1]),
        other => panic!("{other:?}"),
    }
    assert!(out.get("features.0.weight.factors.factor_0").is_some());
    assert!(out.get("features.5.weight").is_some());
    let min = Policy {
        min_params: 5000,
        ..Policy::default()
    };
    let (_, report) = run(&ckpt, &min);
    assert!(matches!(
        &report.layers[0].outcome,
        Outcome::Skipped {
            reason: SkipReason::TooSmall {
                params: 4608,
                min: 5000
            }
        }
    ));
}

#[test]
fn half_precision_kernels_keep_their_dtype_and_report_the_written_error() {
    let mut ckpt = read("dense_cnn.safetensors");
    for (dtype, name) in [
        (DType::F16, "features.3.weight"),
        (DType::BF16, "features.5.weight"),
    ] {
        let w = ckpt.get(name).unwrap().to_f32(name).unwrap();
        ckpt.insert(name, Tensor::from_f32_as(&w, dtype));
    }
    let (out, report) = run(&ckpt, &per_layer(RankRule::Rank(RankSpec::Fraction(0.5))));
    let back = parse_checkpoint(&checkpoint_to_bytes(&out).unwrap(), &Limits::default()).unwrap();
    let layers = find_tt_layers(&back).unwrap();
    for (dtype, prefix) in [(DType::F16, "features.3"), (DType::BF16, "features.5")] {
        let l = layers.iter().find(|l| l.prefix == prefix).unwrap();
        assert_eq!(l.dtype, dtype, "{prefix}");
        let r = report.layers.iter().find(|r| r.name == prefix).unwrap();
        let Outcome::Compressed { rel_error, .. } = r.outcome else {
            panic!("{prefix}")
        };
        let dense = ckpt.get(&r.tensor).unwrap().to_f32(&r.tensor).unwrap();
        let recomputed = rel_err(&dense, &naive_kernel(&l.tt));
        assert!(
            (recomputed - rel_error).abs() <= 1e-9,
            "{prefix}: {rel_error} vs {recomputed}"
        );
    }
}
