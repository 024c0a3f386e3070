//! Rank rule and pattern parsing, and which tensors count as kernels.

use ttconv::RankSpec;
use ttconv_models::{Pattern, Policy, RankRule, Target, is_kernel_candidate, layer_name};

#[test]
fn rank_rules_parse_like_tensorly_specs() {
    let cases = [
        ("same", RankRule::Rank(RankSpec::Same)),
        ("0.5", RankRule::Rank(RankSpec::Fraction(0.5))),
        ("1.0", RankRule::Rank(RankSpec::Fraction(1.0))),
        ("8", RankRule::Rank(RankSpec::Uniform(8))),
        (
            "1,8,8,1",
            RankRule::Rank(RankSpec::Explicit(vec![1, 8, 8, 1])),
        ),
        (
            "[1, 4, 4, 1]",
            RankRule::Rank(RankSpec::Explicit(vec![1, 4, 4, 1])),
        ),
        ("tol:0.1", RankRule::Tolerance(0.1)),
        ("tol=0", RankRule::Tolerance(0.0)),
        ("dense", RankRule::Dense),
    ];
    for (text, rule) in cases {
        assert_eq!(RankRule::parse(text).unwrap(), rule, "{text}");
    }
    for bad in ["", "zero", "0", "-0.5", "nan", "1,x,1", "tol:-1", "tol:inf"] {
        let e = RankRule::parse(bad).unwrap_err();
        assert!(e.to_string().contains("invalid policy"), "{bad}: {e}");
    }
}

#[test]
fn patterns_match_layer_or_tensor_names() {
    let p = Pattern::new("features.*").unwrap();
    assert!(p.matches("features.0", "features.0.weight"));
    assert!(!p.matches("head.conv", "head.conv.weight"));
    assert!(
        Pattern::new("*.conv.weight")
            .unwrap()
            .matches("head.conv", "head.conv.weight")
    );
    assert!(Pattern::new("[").is_err());
}

#[test]
fn kernels_are_weights_of_3_to_6_axes() {
    assert!(is_kernel_candidate("features.0.weight", &[8, 4, 3, 3]));
    assert!(is_kernel_candidate("conv.weight", &[8, 4, 3]));
    assert!(!is_kernel_candidate("fc.weight", &[8, 4]));
    assert!(!is_kernel_candidate("features.0.bias", &[8, 4, 3, 3]));
    assert!(!is_kernel_candidate("x.weight", &[1, 1, 1, 1, 1, 1, 1]));
    assert!(!is_kernel_candidate(
        "l.weight.factors.factor_0",
        &[1, 4, 3]
    ));
    assert_eq!(layer_name("features.0.weight"), "features.0");
}

#[test]
fn policies_are_validated() {
    for x in [0.5, f64::NAN, f64::INFINITY] {
        let p = Policy {
            target: Target::Ratio(x),
            ..Policy::default()
        };
        assert!(p.validate().is_err(), "{x}");
    }
    let p = Policy {
        max_rank: Some(0),
        ..Policy::default()
    };
    assert!(p.validate().is_err());
    assert!(Policy::default().validate().is_ok());
}
