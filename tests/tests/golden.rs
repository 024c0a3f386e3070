//! Runs the golden runner on `tests/golden/` (or `$TTCONV_GOLDEN_DIR`) for the kinds implemented
//! and requires zero failures. Same check as `cargo xtask golden`.

use ttconv_tests::golden::{self, Kind, RunOptions};

/// The kinds this test covers: all of them.
const COVERED_KINDS: &[Kind] = &Kind::ALL;

#[test]
fn golden_cases_pass() {
    for kind in COVERED_KINDS {
        assert!(
            kind.is_implemented(),
            "{kind} is covered but has no checker"
        );
    }
    let report = golden::run(&RunOptions {
        dir: None,
        kinds: Some(COVERED_KINDS.to_vec()),
    })
    .expect("golden folder readable");
    print!("{report}");
    for kind in COVERED_KINDS {
        assert!(
            report.outcomes.iter().any(|o| o.kind == kind.name()),
            "no {kind} case was run in {}",
            report.dir.display()
        );
    }
    assert_eq!(report.failed(), 0, "{}", report.summary_line());
}
