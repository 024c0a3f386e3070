//! The compression policy: which tensors are convolution kernels, which are skipped and why, and
//! the rank rule of each layer.

use ttconv::RankSpec;

use crate::error::{Error, Result};

/// How the ranks of one layer are chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum RankRule {
    /// TensorLy's rank spec: `'same'`, a parameter fraction, a uniform int or an explicit list
    /// `[1, r_1, .., r_{d+1}, 1]`.
    Rank(RankSpec),
    /// The smallest ranks whose relative kernel error is at most this (TT-SVD delta truncation).
    Tolerance(f64),
    /// Keep this layer dense.
    Dense,
}

impl RankRule {
    /// Parses `same`, `0.5` (fraction), `8` (uniform), `1,8,8,1` or `[1,8,8,1]` (explicit),
    /// `tol:0.1` / `tol=0.1` (tolerance) or `dense`.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let bad = |why: &str| Error::Policy(format!("rank `{text}`: {why}"));
        if t.eq_ignore_ascii_case("same") {
            return Ok(RankRule::Rank(RankSpec::Same));
        }
        if t.eq_ignore_ascii_case("dense") {
            return Ok(RankRule::Dense);
        }
        if let Some(eps) = t.strip_prefix("tol:").or_else(|| t.strip_prefix("tol=")) {
            let eps: f64 = eps
                .trim()
                .parse()
                .map_err(|_| bad("tolerance is not a number"))?;
            return Self::tolerance(eps);
        }
        let list = t.trim_start_matches('[').trim_end_matches(']');
        if list.contains(',') {
            let ranks = list
                .split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| bad("an explicit rank list holds integers only"))?;
            return Ok(RankRule::Rank(RankSpec::Explicit(ranks)));
        }
        if let Ok(r) = t.parse::<usize>() {
            if r == 0 {
                return Err(bad("a rank is at least 1"));
            }
            return Ok(RankRule::Rank(RankSpec::Uniform(r)));
        }
        match t.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(RankRule::Rank(RankSpec::Fraction(f))),
            Ok(_) => Err(bad("a fraction is finite and > 0")),
            Err(_) => Err(bad(
                "expected same, a fraction (0.5), an int (8), a list (1,8,8,1), tol:EPS or dense",
            )),
        }
    }

    /// A tolerance rule; an error unless `0 <= eps` and finite.
    pub fn tolerance(eps: f64) -> Result<Self> {
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::Policy(format!(
                "tolerance {eps}: a finite relative error >= 0 expected"
            )));
        }
        Ok(RankRule::Tolerance(eps))
    }

    /// A short text form (`rank 0.5`, `tol 0.3`, ...).
    pub fn describe(&self) -> String {
        match self {
            RankRule::Rank(RankSpec::Same) => "rank same".into(),
            RankRule::Rank(RankSpec::Fraction(f)) => format!("rank {f}"),
            RankRule::Rank(RankSpec::Uniform(r)) => format!("rank {r}"),
            RankRule::Rank(RankSpec::Explicit(r)) => format!("ranks {r:?}"),
            RankRule::Tolerance(e) => format!("tol {e}"),
            RankRule::Dense => "dense".into(),
        }
    }
}

/// The rule for every layer without an override.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// The same rule per layer.
    PerLayer(RankRule),
    /// A compression ratio `X` of all eligible kernels together (dense parameters over TT
    /// parameters >= X), met with the smallest total error by allocating ranks across layers
    /// from their singular spectra (see [`crate::allocate_ranks`]).
    Ratio(f64),
}

/// A name pattern: a glob (`*` any run of characters, `?` one, `[..]` a class) matched against
/// a layer's name (the kernel tensor's name without `.weight`) and against the tensor's name.
#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    glob: glob::Pattern,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Pattern {
    /// Compiles a glob.
    pub fn new(text: &str) -> Result<Self> {
        let glob = glob::Pattern::new(text)
            .map_err(|e| Error::Policy(format!("pattern `{text}`: {e}")))?;
        Ok(Self {
            text: text.to_string(),
            glob,
        })
    }

    /// Whether the layer `layer` (tensor `tensor`) matches.
    pub fn matches(&self, layer: &str, tensor: &str) -> bool {
        self.glob.matches(layer) || self.glob.matches(tensor)
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The whole policy of [`crate::compress`].
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The default rule or the global ratio.
    pub target: Target,
    /// Cap on every TT rank (all rules, the ratio too).
    pub max_rank: Option<usize>,
    /// Per-layer rules by name pattern; the first match wins.
    pub overrides: Vec<(Pattern, RankRule)>,
    /// When not empty, only layers matching one of these are eligible.
    pub include: Vec<Pattern>,
    /// Layers matching one of these are skipped.
    pub exclude: Vec<Pattern>,
    /// Kernels with fewer parameters than this are skipped.
    pub min_params: usize,
    /// Keep a layer dense when its TT form would not have fewer parameters than the kernel.
    pub require_smaller: bool,
    /// Keep a layer dense when `Auto` would run it dense at its input size under the report's
    /// cost constants (its chain modelled slower than the dense convolution); applies to the
    /// kernels whose input size is known ([`crate::KernelInput::input_spatial`] or the report's).
    pub require_faster: bool,
}

impl Default for Policy {
    /// TensorLy-Torch's usual `rank=0.5`, no cap, no patterns, every size, dense kept when not
    /// smaller.
    fn default() -> Self {
        Self {
            target: Target::PerLayer(RankRule::Rank(RankSpec::Fraction(0.5))),
            max_rank: None,
            overrides: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            min_params: 0,
            require_smaller: true,
            require_faster: false,
        }
    }
}

impl Policy {
    /// Checks the numbers (ratio > 1 finite, max rank >= 1).
    pub fn validate(&self) -> Result<()> {
        if let Target::Ratio(x) = self.target
            && !(x.is_finite() && x >= 1.0)
        {
            return Err(Error::Policy(format!(
                "ratio {x}: a finite compression ratio >= 1 expected"
            )));
        }
        if self.max_rank == Some(0) {
            return Err(Error::Policy("max rank 0: at least 1 expected".into()));
        }
        Ok(())
    }

    /// A short description (`tol 0.3, max rank 16, 2 overrides`).
    pub fn describe(&self) -> String {
        let mut s = match &self.target {
            Target::PerLayer(r) => r.describe(),
            Target::Ratio(x) => format!("ratio {x}"),
        };
        if let Some(r) = self.max_rank {
            s += &format!(", max rank {r}");
        }
        for (p, r) in &self.overrides {
            s += &format!(", {}={}", p.as_str(), r.describe());
        }
        s
    }
}

/// Why a tensor that looks like a kernel is not decomposed.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// Every spatial size is 1: a 1x1 kernel is a matrix, not a convolution to factorize.
    Pointwise,
    /// One input channel: in a state_dict a depthwise kernel looks the same, and TT would treat
    /// it as a dense convolution.
    SingleInputChannel,
    /// Not a floating-point tensor.
    NotFloat {
        /// Its dtype.
        dtype: String,
    },
    /// Fewer parameters than the policy's minimum.
    TooSmall {
        /// Kernel parameters.
        params: usize,
        /// The minimum.
        min: usize,
    },
    /// Matches an exclude pattern.
    Excluded {
        /// The pattern.
        pattern: String,
    },
    /// Matches no include pattern.
    NotIncluded,
    /// An override says `dense` (or the policy's own rule does: the pattern is then empty).
    KeptDense {
        /// The pattern (empty for the policy's rule).
        pattern: String,
    },
    /// A grouped (or depthwise) convolution: its kernel is `group` separate kernels, not one TT.
    Grouped {
        /// The number of groups.
        group: usize,
    },
    /// A convolution of more spatial modes than the layer supports (1 to 4).
    TooManyModes {
        /// Its number of spatial modes.
        order: usize,
    },
    /// The weight is not a constant of the model (computed by the graph, or a graph input that
    /// a caller may override).
    NotConstant,
    /// The cost model runs the dense convolution faster than the chain at the layer's input
    /// size.
    Slower {
        /// Modelled multiply-adds of the dense convolution (batch 1).
        dense_macs: u64,
        /// Those of the factorized chain.
        factorized_macs: u64,
    },
    /// The TT form would not be smaller than the kernel.
    NotSmaller {
        /// TT parameters.
        tt_params: usize,
        /// Kernel parameters.
        params: usize,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Pointwise => write!(f, "1x1 kernel"),
            SkipReason::SingleInputChannel => {
                write!(f, "one input channel (cannot be told from depthwise)")
            }
            SkipReason::NotFloat { dtype } => write!(f, "{dtype} tensor"),
            SkipReason::TooSmall { params, min } => write!(f, "{params} params < minimum {min}"),
            SkipReason::Excluded { pattern } => write!(f, "excluded by `{pattern}`"),
            SkipReason::NotIncluded => write!(f, "not included"),
            SkipReason::KeptDense { pattern } if pattern.is_empty() => {
                write!(f, "kept dense by the policy")
            }
            SkipReason::KeptDense { pattern } => write!(f, "kept dense by `{pattern}`"),
            SkipReason::Grouped { group } => write!(f, "grouped convolution ({group} groups)"),
            SkipReason::NotConstant => write!(f, "weight is not a constant of the model"),
            SkipReason::TooManyModes { order } => {
                write!(f, "{order} spatial modes (1 to 4 are factorized)")
            }
            SkipReason::Slower {
                dense_macs,
                factorized_macs,
            } => write!(
                f,
                "TT modelled slower ({factorized_macs} vs {dense_macs} dense MACs)"
            ),
            SkipReason::NotSmaller { tt_params, params } => {
                write!(f, "TT not smaller ({tt_params} >= {params} params)")
            }
        }
    }
}

/// Whether a tensor is a convolution kernel candidate: a name ending in `weight`, 3 to 6 axes
/// `(out, in, k_1..k_d)`, and not a TT factor.
pub fn is_kernel_candidate(name: &str, shape: &[usize]) -> bool {
    name.ends_with("weight")
        && (3..=6).contains(&shape.len())
        && !crate::tt_layers::is_factor_name(name)
}

/// The layer name of a kernel tensor (`features.0.weight` -> `features.0`).
pub fn layer_name(tensor: &str) -> &str {
    tensor
        .strip_suffix(".weight")
        .or_else(|| tensor.strip_suffix("weight"))
        .unwrap_or(tensor)
}
