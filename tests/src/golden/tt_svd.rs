//! `kind = "tt_svd"`: TensorLy's `tensor_train(t, rank_spec)`, checked with the tolerances of
//! the golden README:
//! - `resolved_rank` (the spec resolved for the shape) and `returned_rank` (the ranks of the cores
//!   returned) match exactly;
//! - `rel_error` within [`REL_ERROR_RTOL`] relative, or [`REL_ERROR_ATOL`] absolute for the exact
//!   low-rank cases whose error is round-off (~1e-15): both the error tt-core reports (from the
//!   discarded singular values) and the one measured by densifying our TT;
//! - our reconstruction within [`RECONSTRUCTION_RTOL`] `* ||t||` of TensorLy's, but only where every
//!   `sv_gaps` entry is null or above [`MIN_SV_GAP`]: with a smaller gap the kept subspace is
//!   numerically ill-defined and only `rel_error` is compared.
//!
//! Cores are not compared: they are unique only up to singular-vector signs and rotations.

use ndarray::ArrayD;
use tt_core::{Truncation, tt_svd};

use super::rank::rank_spec_from_json;
use super::{CaseFile, CaseOutcome, GoldenError, Kind};

/// Relative tolerance on `rel_error`.
pub const REL_ERROR_RTOL: f64 = 1e-10;
/// Absolute tolerance on `rel_error` (exact low-rank cases).
pub const REL_ERROR_ATOL: f64 = 1e-13;
/// Tolerance on `||ours - reconstruction||_F / ||t||_F`.
pub const RECONSTRUCTION_RTOL: f64 = 1e-10;
/// Smallest relative singular-value gap at which reconstructions are compared.
pub const MIN_SV_GAP: f64 = 1e-3;

fn frob(a: &ArrayD<f64>) -> f64 {
    a.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn frob_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Whether `ours` matches TensorLy's `rel_error` within the README tolerance.
pub fn rel_error_matches(ours: f64, reference: f64) -> bool {
    (ours - reference).abs() <= (REL_ERROR_RTOL * reference.abs()).max(REL_ERROR_ATOL)
}

/// Checks one `tt_svd` case file.
pub fn check(file: &CaseFile) -> Result<Vec<CaseOutcome>, GoldenError> {
    let shape = file.meta_usize_list("shape")?;
    let t = file.f64_tensor("t")?;
    let reference = file.f64_tensor("reconstruction")?;
    for (name, a) in [("t", t), ("reconstruction", reference)] {
        if a.shape() != shape.as_slice() {
            return Err(GoldenError::BadTensor {
                path: file.path.clone(),
                name: name.into(),
                message: format!("shape {:?}, metadata `shape` says {shape:?}", a.shape()),
            });
        }
    }
    let spec_v = file.meta("rank_spec")?;
    let spec = rank_spec_from_json(spec_v).ok_or_else(|| {
        file.bad_value(
            "rank_spec",
            "\"same\", a float, an int or a list of ints",
            spec_v,
        )
    })?;
    let resolved_ref = file.meta_usize_list("resolved_rank")?;
    let returned_ref = file.meta_usize_list("returned_rank")?;
    let rel_error_ref = file.meta_f64("rel_error")?;
    let sv_gaps = file.meta_opt_f64_list("sv_gaps")?;

    let outcome = |passed: bool, details: String| {
        Ok(vec![CaseOutcome::new(
            file.file_name(),
            Kind::TtSvd,
            passed,
            details,
        )])
    };
    let mut problems: Vec<String> = Vec::new();
    let mut facts: Vec<String> = vec![format!("spec {spec_v}")];

    match spec.resolve(&shape) {
        Ok(r) if r == resolved_ref => facts.push(format!("resolved {r:?}")),
        Ok(r) => problems.push(format!(
            "resolved_rank ours {r:?}, TensorLy {resolved_ref:?}"
        )),
        Err(e) => problems.push(format!("resolving the spec failed: {e}")),
    }
    let (tt, report) = match tt_svd(t.view(), &Truncation::rank(spec)) {
        Ok(x) => x,
        Err(e) => {
            problems.push(format!("tt_svd failed: {e}"));
            return outcome(false, problems.join("; "));
        }
    };
    let ranks = tt.ranks();
    if ranks == returned_ref {
        facts.push(format!("returned {ranks:?}"));
    } else {
        problems.push(format!(
            "returned_rank ours {ranks:?}, TensorLy {returned_ref:?}"
        ));
    }
    if report.ranks != ranks {
        problems.push(format!(
            "report ranks {:?} differ from the TT's {ranks:?}",
            report.ranks
        ));
    }

    let norm = frob(t);
    let scale = if norm > 0.0 { norm } else { 1.0 };
    let dense = match tt.to_dense() {
        Ok(d) => d,
        Err(e) => {
            problems.push(format!("to_dense failed: {e}"));
            return outcome(false, problems.join("; "));
        }
    };
    let measured = frob_diff(&dense, t) / scale;
    let reported = report.rel_error;
    let err_text = format!(
        "rel_error ours {reported:.15e} (measured {measured:.15e}), TensorLy {rel_error_ref:.15e}"
    );
    if rel_error_matches(reported, rel_error_ref) && rel_error_matches(measured, rel_error_ref) {
        facts.push(format!(
            "{err_text}, diff {:.1e}",
            (reported - rel_error_ref)
                .abs()
                .max((measured - rel_error_ref).abs())
        ));
    } else {
        problems.push(format!(
            "{err_text}: diff {:.3e} / {:.3e} > max({REL_ERROR_RTOL:e} rel, {REL_ERROR_ATOL:e} abs)",
            (reported - rel_error_ref).abs(),
            (measured - rel_error_ref).abs()
        ));
    }

    let smallest_gap = sv_gaps
        .iter()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min);
    if smallest_gap > MIN_SV_GAP {
        let diff = frob_diff(&dense, reference) / scale;
        if diff <= RECONSTRUCTION_RTOL {
            facts.push(format!("reconstruction diff {diff:.1e} * ||t||"));
        } else {
            problems.push(format!(
                "reconstruction differs by {diff:.3e} * ||t|| > {RECONSTRUCTION_RTOL:e}"
            ));
        }
    } else {
        facts.push(format!(
            "reconstruction not compared (sv gap {smallest_gap:.1e} <= {MIN_SV_GAP:e})"
        ));
    }

    if problems.is_empty() {
        outcome(true, facts.join("; "))
    } else {
        outcome(false, problems.join("; "))
    }
}
