//! TT rank specifications, resolved exactly like TensorLy's `validate_tt_rank`.
//!
//! A rank vector for an order-`N` tensor has `N + 1` entries with `r_0 = r_N = 1`.

use crate::error::{Error, Result};

/// How a rank vector is chosen for a tensor shape.
#[derive(Clone, Debug, PartialEq)]
pub enum RankSpec {
    /// Keep the parameter count of the dense tensor (TensorLy's `'same'`, i.e. fraction 1.0).
    Same,
    /// Keep this fraction of the dense parameter count (may exceed 1).
    Fraction(f64),
    /// `[1, r, .., r, 1]`.
    Uniform(usize),
    /// An explicit rank vector of `N + 1` entries, `1` at both ends.
    Explicit(Vec<usize>),
}

/// How a fractional rank is rounded to an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rounding {
    /// Round half to even (NumPy's `round`).
    #[default]
    Round,
    /// Round down.
    Floor,
    /// Round up.
    Ceil,
}

impl Rounding {
    fn apply(self, v: f64) -> f64 {
        match self {
            Rounding::Round => v.round_ties_even(),
            Rounding::Floor => v.floor(),
            Rounding::Ceil => v.ceil(),
        }
    }
}

/// Options of the fraction-based resolution (TensorLy's `constant_rank` and `rounding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RankOptions {
    /// One rank for every bond (`true`) or ranks proportional to the neighbouring mode sizes
    /// (`false`, the default).
    pub constant_rank: bool,
    /// Rounding of the fractional solution.
    pub rounding: Rounding,
}

fn check_shape(shape: &[usize]) -> Result<()> {
    if shape.is_empty() {
        return Err(Error::EmptyShape);
    }
    if let Some(mode) = shape.iter().position(|&n| n == 0) {
        return Err(Error::ZeroDimension {
            mode,
            shape: shape.to_vec(),
        });
    }
    Ok(())
}

/// Checks an explicit rank vector against an order: length `order + 1`, boundary ranks 1, no
/// zero rank.
pub fn check_rank_vector(order: usize, ranks: &[usize]) -> Result<()> {
    if ranks.len() != order + 1 {
        return Err(Error::RankLength {
            expected: order + 1,
            got: ranks.len(),
            order,
        });
    }
    if ranks[0] != 1 {
        return Err(Error::BoundaryRank {
            core: 0,
            rank: ranks[0],
        });
    }
    if ranks[order] != 1 {
        return Err(Error::BoundaryRank {
            core: order - 1,
            rank: ranks[order],
        });
    }
    if let Some(position) = ranks.iter().position(|&r| r == 0) {
        return Err(Error::ZeroRank {
            position,
            ranks: ranks.to_vec(),
        });
    }
    Ok(())
}

impl RankSpec {
    /// Resolves the spec for `shape` with the default options (proportional ranks, round half to
    /// even), as TensorLy's `validate_tt_rank(shape, rank)`.
    pub fn resolve(&self, shape: &[usize]) -> Result<Vec<usize>> {
        self.resolve_with(shape, RankOptions::default())
    }

    /// Resolves the spec for `shape`, mirroring `validate_tt_rank(shape, rank, constant_rank,
    /// rounding)`, with two deliberate departures: a resolved rank is never 0 (TensorLy's constant
    /// branch can return zeros, and an int rank 0 passes through there), and an order-2 shape with
    /// `constant_rank` solves `r * (n_0 + n_1) = fraction * n_0 * n_1` (TensorLy divides by zero).
    ///
    /// Fractions: with `p = fraction * prod(shape)` dense parameters to keep,
    /// - proportional: `avg_i = (n_i + n_{i+1}) / 2`, solve `a x^2 + b x - p = 0` with
    ///   `a = sum_{i=1}^{N-2} avg_{i-1} n_i avg_i` (order 2: `avg_0^2 n_0`),
    ///   `b = n_0 avg_0 + n_{N-1} avg_{N-2}`, and `r_{i+1} = max(round(avg_i x), 1)`;
    /// - constant: solve `a r^2 + b r - p = 0` with `a = sum_{i=1}^{N-2} n_i`, `b = n_0 + n_{N-1}`.
    pub fn resolve_with(&self, shape: &[usize], options: RankOptions) -> Result<Vec<usize>> {
        check_shape(shape)?;
        let order = shape.len();
        match self {
            RankSpec::Same => fraction_ranks(shape, 1.0, options),
            RankSpec::Fraction(f) => {
                if !f.is_finite() || *f <= 0.0 {
                    return Err(Error::InvalidFraction(*f));
                }
                fraction_ranks(shape, *f, options)
            }
            RankSpec::Uniform(r) => {
                if *r == 0 {
                    return Err(Error::ZeroRank {
                        position: 1.min(order),
                        ranks: vec![0],
                    });
                }
                let mut ranks = vec![*r; order + 1];
                ranks[0] = 1;
                ranks[order] = 1;
                Ok(ranks)
            }
            RankSpec::Explicit(ranks) => {
                check_rank_vector(order, ranks)?;
                Ok(ranks.clone())
            }
        }
    }
}

fn fraction_ranks(shape: &[usize], fraction: f64, options: RankOptions) -> Result<Vec<usize>> {
    let order = shape.len();
    if order == 1 {
        return Ok(vec![1, 1]);
    }
    let n: Vec<f64> = shape.iter().map(|&v| v as f64).collect();
    let dense: f64 = shape.iter().map(|&v| v as f64).product();
    let c = -(dense * fraction);
    let inner = if options.constant_rank {
        let (a, b) = if order == 2 {
            (0.0, n[0] + n[1])
        } else {
            (n[1..order - 1].iter().sum::<f64>(), n[0] + n[order - 1])
        };
        let solution = if a == 0.0 {
            -c / b
        } else {
            (-b + (b * b - 4.0 * a * c).sqrt()) / (2.0 * a)
        };
        let r = options.rounding.apply(solution).max(1.0) as usize;
        vec![r; order - 1]
    } else {
        let avg: Vec<f64> = (0..order - 1).map(|i| (n[i] + n[i + 1]) / 2.0).collect();
        let a = if avg.len() > 1 {
            // Python's sum() starts from int 0 and adds in order; keep the same order.
            (1..order - 1).fold(0.0, |acc, i| acc + avg[i - 1] * n[i] * avg[i])
        } else {
            avg[0] * avg[0] * n[0]
        };
        let b = n[0] * avg[0] + n[order - 1] * avg[order - 2];
        let delta = (b * b - 4.0 * a * c).sqrt();
        let x = (-b + delta) / (2.0 * a);
        avg.iter()
            .map(|d| (options.rounding.apply(d * x) as i64).max(1) as usize)
            .collect()
    };
    let mut ranks = Vec::with_capacity(order + 1);
    ranks.push(1);
    ranks.extend(inner);
    ranks.push(1);
    Ok(ranks)
}

/// Caps a rank vector the way TT-SVD realises it (TensorLy's `tensor_train`):
/// `r_{k+1} = min(r_k * n_k, prod(n_{k+1..}), requested_{k+1})`, left to right.
pub fn cap_ranks(shape: &[usize], requested: &[usize]) -> Vec<usize> {
    let order = shape.len();
    let mut ranks = vec![1usize; order + 1];
    for k in 0..order.saturating_sub(1) {
        let rows = ranks[k].saturating_mul(shape[k]);
        let cols = shape[k + 1..]
            .iter()
            .fold(1usize, |acc, &v| acc.saturating_mul(v));
        ranks[k + 1] = rows.min(cols).min(requested[k + 1]);
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_from_the_readme() {
        assert_eq!(
            RankSpec::Fraction(0.1).resolve(&[64, 3, 3, 64]).unwrap(),
            vec![1, 26, 2, 26, 1]
        );
        assert_eq!(
            RankSpec::Same.resolve(&[256, 3, 3, 256]).unwrap(),
            vec![1, 921, 21, 921, 1]
        );
        assert_eq!(
            RankSpec::Same.resolve(&[64, 3, 3, 64]).unwrap(),
            vec![1, 169, 15, 169, 1]
        );
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(RankSpec::Uniform(0).resolve(&[3, 3]).is_err());
        assert!(RankSpec::Fraction(f64::NAN).resolve(&[3, 3]).is_err());
        assert!(RankSpec::Fraction(-1.0).resolve(&[3, 3]).is_err());
        assert!(RankSpec::Explicit(vec![1, 2, 2]).resolve(&[3, 3]).is_err());
        assert!(RankSpec::Explicit(vec![2, 2, 1]).resolve(&[3, 3]).is_err());
        assert!(RankSpec::Explicit(vec![1, 0, 1]).resolve(&[3, 3]).is_err());
        assert!(RankSpec::Same.resolve(&[]).is_err());
        assert!(RankSpec::Same.resolve(&[3, 0]).is_err());
    }

    #[test]
    fn constant_rank_never_zero() {
        let opts = RankOptions {
            constant_rank: true,
            rounding: Rounding::Round,
        };
        assert_eq!(
            RankSpec::Fraction(0.01)
                .resolve_with(&[4, 3, 3, 4], opts)
                .unwrap(),
            vec![1, 1, 1, 1, 1]
        );
        let r = RankSpec::Same.resolve_with(&[6, 4], opts).unwrap();
        assert_eq!(r, vec![1, 2, 1]); // 24 / 10 = 2.4 -> 2
    }

    #[test]
    fn caps_follow_tensor_train() {
        assert_eq!(cap_ranks(&[4, 3, 5], &[1, 100, 100, 1]), vec![1, 4, 5, 1]);
    }
}
