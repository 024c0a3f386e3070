//! The format-independent half of compression: a list of convolution kernels in, a TT (or the
//! reason it was kept dense) and a report row per kernel out, under a [`Policy`].
//!
//! Checkpoints ([`crate::compress`]) and other model formats (an ONNX graph, in its own crate)
//! gather their kernels, call [`compress_kernels`], and write the results back their own way, so
//! the policy (skip rules, per-layer overrides, the global ratio budget, the `require_smaller`
//! rule) and the report have one owner.

use ndarray::ArrayD;

use crate::budget::{Spectrum, allocate_ranks};
use crate::compress::{Progress, ReportOptions};
use crate::error::{Error, Result};
use crate::layer_bridge::{self, Decomposition, TtTensor};
use crate::meta::Geometry;
use crate::policy::{Policy, RankRule, SkipReason, Target};
use crate::report::{LayerReport, Macs, Outcome};
use crate::tensor::DType;
use crate::tt_layers::factor_tensors;

/// One convolution kernel offered to the policy.
#[derive(Clone, Debug)]
pub struct KernelInput {
    /// The weight tensor's name (`features.0.weight`, an ONNX initializer name).
    pub tensor: String,
    /// The layer's name, matched by the policy's patterns with `tensor`.
    pub layer: String,
    /// `(out, in, k_1..k_d)`.
    pub shape: Vec<usize>,
    /// The dtype the weight is stored in (TT cores are rounded to it before errors are measured).
    pub dtype: DType,
    /// The layer's stride, padding and dilation when the file records them (the MACs of the
    /// report are then exact instead of assumed).
    pub geometry: Option<Geometry>,
    /// The layer's input spatial size `(D_1..D_d)` when the caller knows it (a model's shapes):
    /// its MACs and `require_faster` use it instead of the report's size.
    pub input_spatial: Option<Vec<usize>>,
    /// A reason the caller already knows for keeping the kernel dense (a grouped convolution, a
    /// weight computed at run time); the policy's own rules are not consulted then.
    pub skip: Option<SkipReason>,
}

/// What became of one [`KernelInput`].
#[derive(Clone, Debug)]
pub struct KernelOutcome {
    /// Its report row.
    pub report: LayerReport,
    /// Its TT cores (rounded to the kernel's dtype) when it is compressed.
    pub tt: Option<TtTensor<f32>>,
}

fn decomposition(rule: &RankRule, max_rank: Option<usize>) -> Option<Decomposition> {
    match rule {
        RankRule::Rank(spec) => Some(Decomposition::Rank {
            spec: spec.clone(),
            max_rank,
        }),
        RankRule::Tolerance(eps) => Some(Decomposition::Tolerance {
            eps: *eps,
            max_rank,
        }),
        RankRule::Dense => None,
    }
}

/// The first skip reason that applies to a kernel, or its override rule.
fn classify(k: &KernelInput, policy: &Policy) -> std::result::Result<Option<RankRule>, SkipReason> {
    if let Some(reason) = &k.skip {
        return Err(reason.clone());
    }
    if !k.dtype.is_float() {
        return Err(SkipReason::NotFloat {
            dtype: k.dtype.to_string(),
        });
    }
    if k.shape[2..].iter().all(|&n| n == 1) {
        return Err(SkipReason::Pointwise);
    }
    if k.shape[1] == 1 {
        return Err(SkipReason::SingleInputChannel);
    }
    let matches = |p: &crate::policy::Pattern| p.matches(&k.layer, &k.tensor);
    if let Some(p) = policy.exclude.iter().find(|p| matches(p)) {
        return Err(SkipReason::Excluded {
            pattern: p.as_str().to_string(),
        });
    }
    if !policy.include.is_empty() && !policy.include.iter().any(matches) {
        return Err(SkipReason::NotIncluded);
    }
    let params: usize = k.shape.iter().product();
    if params < policy.min_params {
        return Err(SkipReason::TooSmall {
            params,
            min: policy.min_params,
        });
    }
    match policy.overrides.iter().find(|(p, _)| matches(p)) {
        Some((p, RankRule::Dense)) => Err(SkipReason::KeptDense {
            pattern: p.as_str().to_string(),
        }),
        Some((_, rule)) => Ok(Some(rule.clone())),
        None => Ok(None),
    }
}

/// Rounds cores to the dtype they are stored in (so errors describe the cores as written).
fn round_to(tt: TtTensor<f32>, dtype: DType) -> Result<TtTensor<f32>> {
    if !matches!(dtype, DType::F16 | DType::BF16) {
        return Ok(tt);
    }
    let cores = factor_tensors("", &tt, dtype)
        .into_iter()
        .map(|(n, t)| {
            t.to_f32(&n)?
                .into_dimensionality()
                .map_err(|_| Error::corrupt("cores", "not 3-D"))
        })
        .collect::<Result<Vec<_>>>()?;
    layer_bridge::tt_from_cores(cores)
}

struct Eligible {
    index: usize,
    values: ArrayD<f32>,
    /// An override, or `None` for the policy's target.
    rule: Option<RankRule>,
}

/// Decomposes every kernel of `kernels` that the policy makes eligible.
///
/// `values(i)` returns kernel `i`'s weights as f32, `(out, in, k_1..k_d)`; it is called only for
/// kernels that are not skipped. A kernel is skipped (kept dense, with the reason in its row)
/// when the caller says so, it is not floating point, is 1x1, has one input channel, matches an
/// exclude pattern or no include pattern, is below the size minimum, has a `dense` override, or
/// (with `require_smaller`) would not shrink, or (with `require_faster`) is modelled slower
/// factorized than dense. Under [`Target::Ratio`], the kernels without an
/// override share the budget `sum(params) / ratio` minus what the overridden ones hold, with
/// ranks from [`allocate_ranks`]. `progress` is called before each step. The outcomes are in
/// the order of `kernels`.
pub fn compress_kernels(
    kernels: &[KernelInput],
    values: &mut dyn FnMut(usize) -> Result<ArrayD<f32>>,
    policy: &Policy,
    options: &ReportOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<KernelOutcome>> {
    policy.validate()?;
    for k in kernels {
        if !(3..=6).contains(&k.shape.len()) {
            return Err(Error::Layer {
                prefix: k.layer.clone(),
                reason: format!(
                    "a kernel (out, in, k_1..k_d) has 3 to 6 axes, got shape {:?}",
                    k.shape
                ),
            });
        }
    }
    let mut skipped: Vec<Option<SkipReason>> = vec![None; kernels.len()];
    let mut eligible: Vec<Eligible> = Vec::new();
    for (index, k) in kernels.iter().enumerate() {
        match classify(k, policy) {
            Err(reason) => skipped[index] = Some(reason),
            Ok(rule) => eligible.push(Eligible {
                index,
                values: values(index)?,
                rule,
            }),
        }
    }
    let dense_eligible: usize = eligible.iter().map(|e| e.values.len()).sum();
    let by_ratio: Vec<usize> = match policy.target {
        Target::Ratio(_) => (0..eligible.len())
            .filter(|&i| eligible[i].rule.is_none())
            .collect(),
        Target::PerLayer(_) => Vec::new(),
    };
    let total_steps = eligible.len() + by_ratio.len();
    let mut done = 0usize;
    let mut step = |what: &str| {
        progress(Progress {
            done,
            total: total_steps,
            what,
        });
        done += 1;
    };
    let mut tts: Vec<Option<(TtTensor<f32>, String)>> = vec![None; eligible.len()];
    // Layers with a rule of their own (all of them without a ratio) first.
    for (i, e) in eligible.iter().enumerate() {
        let k = &kernels[e.index];
        let rule = match (&e.rule, &policy.target) {
            (Some(r), _) => r.clone(),
            (None, Target::PerLayer(r)) => r.clone(),
            (None, Target::Ratio(_)) => continue,
        };
        let Some(how) = decomposition(&rule, policy.max_rank) else {
            continue;
        };
        step(&k.layer);
        let tt = layer_bridge::decompose(&e.values, &how).map_err(|err| layer_error(k, err))?;
        tts[i] = Some((tt, rule.describe()));
    }
    if let Target::Ratio(x) = policy.target
        && !by_ratio.is_empty()
    {
        let fixed: usize = tts.iter().flatten().map(|(tt, _)| tt.num_params()).sum();
        let whole = (dense_eligible as f64 / x).floor();
        let budget = (whole as usize).checked_sub(fixed).ok_or_else(|| {
            Error::Policy(format!(
                "ratio {x}: the layers with their own rules already hold {fixed} parameters, over the budget of {whole}"
            ))
        })?;
        let mut spectra = Vec::with_capacity(by_ratio.len());
        for &i in &by_ratio {
            let k = &kernels[eligible[i].index];
            step(&k.layer);
            let (sv, norm) =
                layer_bridge::spectra(&eligible[i].values).map_err(|err| layer_error(k, err))?;
            spectra.push(Spectrum {
                shape: layer_bridge::tt_shape(&k.shape),
                singular_values: sv,
                norm,
            });
        }
        let ranks = allocate_ranks(&spectra, budget, policy.max_rank)?;
        for (&i, r) in by_ratio.iter().zip(ranks) {
            let k = &kernels[eligible[i].index];
            step(&k.layer);
            let tt = layer_bridge::decompose(&eligible[i].values, &Decomposition::Ranks(r))
                .map_err(|err| layer_error(k, err))?;
            tts[i] = Some((tt, format!("ratio {x} (allocated)")));
        }
    }
    progress(Progress {
        done: total_steps,
        total: total_steps,
        what: "",
    });

    let mut outcomes: Vec<Option<KernelOutcome>> = vec![None; kernels.len()];
    for (e, slot) in eligible.iter().zip(tts) {
        let k = &kernels[e.index];
        let Some((tt, rule)) = slot else {
            skipped[e.index] = Some(SkipReason::KeptDense {
                pattern: String::new(),
            });
            continue;
        };
        let tt = round_to(tt, k.dtype)?;
        let params = e.values.len();
        let tt_params = tt.num_params();
        if policy.require_smaller && tt_params >= params {
            skipped[e.index] = Some(SkipReason::NotSmaller { tt_params, params });
            continue;
        }
        let macs = macs(k, &tt, options)?;
        if let Some(m) = macs
            .as_ref()
            .filter(|m| policy.require_faster && m.auto == "dense")
        {
            skipped[e.index] = Some(SkipReason::Slower {
                dense_macs: m.dense,
                factorized_macs: m.factorized,
            });
            continue;
        }
        let rel_error = layer_bridge::relative_error(&e.values, &tt)?;
        outcomes[e.index] = Some(KernelOutcome {
            report: LayerReport {
                name: k.layer.clone(),
                tensor: k.tensor.clone(),
                kernel_shape: k.shape.clone(),
                params_before: params,
                params_after: tt_params,
                outcome: Outcome::Compressed {
                    rule,
                    ranks: tt.ranks(),
                    ratio: params as f64 / tt_params as f64,
                    rel_error,
                    macs,
                },
            },
            tt: Some(tt),
        });
    }
    Ok(outcomes
        .into_iter()
        .zip(skipped)
        .zip(kernels)
        .map(|((outcome, reason), k)| {
            outcome.unwrap_or_else(|| KernelOutcome {
                report: skipped_row(k, reason.expect("every kernel is compressed or skipped")),
                tt: None,
            })
        })
        .collect())
}

/// The modelled MACs of a compressed kernel at the report's input size, when one is given and
/// has the kernel's order.
fn macs(k: &KernelInput, tt: &TtTensor<f32>, options: &ReportOptions) -> Result<Option<Macs>> {
    let Some(size) = k.input_spatial.as_ref().or(options.input_spatial.as_ref()) else {
        return Ok(None);
    };
    if size.len() != k.shape.len() - 2 {
        return Ok(None);
    }
    let (g, assumed) = match &k.geometry {
        Some(g) => (g.clone(), false),
        None => (Geometry::same_like(&k.shape[2..]), true),
    };
    let (dense, factorized, auto) = layer_bridge::macs(tt, &g, size, &options.cost_constants)
        .map_err(|err| layer_error(k, err))?;
    Ok(Some(Macs {
        input_spatial: size.clone(),
        dense,
        factorized,
        auto: auto.to_string(),
        geometry_assumed: assumed,
    }))
}

fn skipped_row(k: &KernelInput, reason: SkipReason) -> LayerReport {
    let params = k.shape.iter().product();
    LayerReport {
        name: k.layer.clone(),
        tensor: k.tensor.clone(),
        kernel_shape: k.shape.clone(),
        params_before: params,
        params_after: params,
        outcome: Outcome::Skipped { reason },
    }
}

fn layer_error(k: &KernelInput, err: Error) -> Error {
    Error::Layer {
        prefix: k.layer.clone(),
        reason: err.to_string(),
    }
}
