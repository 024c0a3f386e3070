//! `kind = "rank"`: TensorLy's `validate_tt_rank` answers (`rank_cases.json`), matched exactly.
//!
//! A case with `result` must resolve to exactly that vector; a case with `error` (TensorLy raised
//! `ValueError` on a wrong-length or non-1-boundary explicit vector) must be rejected with tt-core's
//! typed rank-vector error.

use serde_json::Value;
use tt_core::{Error as TtError, RankOptions, RankSpec, Rounding};

use super::{CaseFile, CaseOutcome, GoldenError, Kind, as_usize, short, usize_list};

/// A rank spec from its JSON form: `"same"`, a float fraction, an int (uniform rank) or a list
/// (explicit vector). The int/float distinction of the JSON text decides between `Uniform` and
/// `Fraction` (`1` vs `1.0`). `None` for anything else (a negative int, an unknown string).
pub fn rank_spec_from_json(v: &Value) -> Option<RankSpec> {
    match v {
        Value::String(s) if s == "same" => Some(RankSpec::Same),
        Value::Number(n) if n.is_u64() => as_usize(v).map(RankSpec::Uniform),
        Value::Number(n) if n.is_f64() => n.as_f64().map(RankSpec::Fraction),
        Value::Array(_) => usize_list(v).map(RankSpec::Explicit),
        _ => None,
    }
}

/// A rounding mode from its JSON form (`"round"`, `"floor"`, `"ceil"`).
pub fn rounding_from_json(v: &Value) -> Option<Rounding> {
    match v.as_str()? {
        "round" => Some(Rounding::Round),
        "floor" => Some(Rounding::Floor),
        "ceil" => Some(Rounding::Ceil),
        _ => None,
    }
}

/// Checks every entry of a rank-case collection; a malformed entry is a failed outcome.
pub fn check(file: &CaseFile) -> Result<Vec<CaseOutcome>, GoldenError> {
    let cases_value = file.meta("cases")?;
    let cases = cases_value
        .as_array()
        .ok_or_else(|| file.bad_value("cases", "a list of cases", cases_value))?;
    Ok(cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let name = format!("{}#{i}", file.file_name());
            check_case(file, i, case).unwrap_or_else(|e| {
                CaseOutcome::new(name, Kind::Rank, false, format!("malformed case: {e}"))
            })
        })
        .collect())
}

fn check_case(file: &CaseFile, i: usize, case: &Value) -> Result<CaseOutcome, GoldenError> {
    let field = |key: &str| {
        case.get(key).ok_or_else(|| GoldenError::MissingKey {
            path: file.path.clone(),
            key: format!("cases[{i}].{key}"),
        })
    };
    let bad = |key: &str, expected: &'static str, v: &Value| GoldenError::BadValue {
        path: file.path.clone(),
        key: format!("cases[{i}].{key}"),
        expected,
        value: short(v),
    };
    let shape_v = field("shape")?;
    let shape = usize_list(shape_v).ok_or_else(|| bad("shape", "a list of ints", shape_v))?;
    let rank_v = field("rank")?;
    let spec = rank_spec_from_json(rank_v).ok_or_else(|| {
        bad(
            "rank",
            "\"same\", a float, an int or a list of ints",
            rank_v,
        )
    })?;
    let constant_v = field("constant_rank")?;
    let constant_rank = constant_v
        .as_bool()
        .ok_or_else(|| bad("constant_rank", "a boolean", constant_v))?;
    let rounding_v = field("rounding")?;
    let rounding = rounding_from_json(rounding_v)
        .ok_or_else(|| bad("rounding", "\"round\", \"floor\" or \"ceil\"", rounding_v))?;
    let options = RankOptions {
        constant_rank,
        rounding,
    };
    let name = format!(
        "{}#{i} (shape {shape:?}, rank {}, constant_rank={constant_rank}, rounding={})",
        file.file_name(),
        short(rank_v),
        short(rounding_v)
    );
    let ours = spec.resolve_with(&shape, options);
    let (passed, details) = match (case.get("result"), case.get("error")) {
        (Some(result_v), None) => {
            let expected =
                usize_list(result_v).ok_or_else(|| bad("result", "a list of ints", result_v))?;
            match ours {
                Ok(r) if r == expected => (true, format!("{r:?}")),
                Ok(r) => (false, format!("ours {r:?}, TensorLy {expected:?}")),
                Err(e) => (false, format!("ours error `{e}`, TensorLy {expected:?}")),
            }
        }
        (None, Some(error_v)) => {
            let message = case.get("error_message").map_or(String::new(), short);
            match ours {
                Err(
                    e @ (TtError::RankLength { .. }
                    | TtError::BoundaryRank { .. }
                    | TtError::ZeroRank { .. }),
                ) => (true, format!("rejected: {e}")),
                Err(e) => (
                    false,
                    format!(
                        "rejected with an unexpected error `{e}` (TensorLy: {error_v} {message})"
                    ),
                ),
                Ok(r) => (
                    false,
                    format!(
                        "ours {r:?}, expected a rank-vector error (TensorLy: {error_v} {message})"
                    ),
                ),
            }
        }
        _ => {
            return Err(GoldenError::MissingKey {
                path: file.path.clone(),
                key: format!("cases[{i}].result or cases[{i}].error (exactly one)"),
            });
        }
    };
    Ok(CaseOutcome::new(name, Kind::Rank, passed, details))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn int_and_float_specs_differ() {
        let parse = |s: &str| rank_spec_from_json(&serde_json::from_str(s).unwrap());
        assert_eq!(parse("1"), Some(RankSpec::Uniform(1)));
        assert_eq!(parse("1.0"), Some(RankSpec::Fraction(1.0)));
        assert_eq!(parse("\"same\""), Some(RankSpec::Same));
        assert_eq!(parse("[1, 2, 1]"), Some(RankSpec::Explicit(vec![1, 2, 1])));
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("\"other\""), None);
        assert_eq!(rounding_from_json(&json!("floor")), Some(Rounding::Floor));
    }
}
