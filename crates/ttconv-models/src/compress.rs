//! `compress(checkpoint, policy) -> (checkpoint, report)`: every eligible convolution kernel
//! replaced by its TT cores under TensorLy-Torch's names, every other tensor copied bit for bit.

use ndarray::ArrayD;
use ttconv::CostConstants;

use crate::budget::{Spectrum, allocate_ranks};
use crate::error::{Error, Result};
use crate::layer_bridge::{self, Decomposition, TtTensor};
use crate::meta::{Geometry, LayerMeta, TtMetadata};
use crate::policy::{Policy, RankRule, SkipReason, Target, is_kernel_candidate, layer_name};
use crate::report::{LayerReport, Macs, Outcome, Report, Totals};
use crate::tensor::{Checkpoint, DType};
use crate::tt_layers::factor_tensors;

/// Options of the report (not of the decomposition).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ReportOptions {
    /// Input spatial size `(D_1..D_d)` at which to model each layer's MACs (batch 1); layers of
    /// another order get none.
    pub input_spatial: Option<Vec<usize>>,
    /// Throughputs `Auto` decides with (a backend's `cost_constants()`).
    pub cost_constants: CostConstants,
}

/// Where [`compress`] is, for a progress display.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress<'a> {
    /// Steps done (each eligible layer is one step, its spectrum another under a ratio).
    pub done: usize,
    /// Steps in all.
    pub total: usize,
    /// What is being worked on.
    pub what: &'a str,
}

struct Candidate {
    index: usize,
    tensor: String,
    layer: String,
    shape: Vec<usize>,
    dtype: DType,
}

struct Eligible {
    cand: Candidate,
    kernel: ArrayD<f32>,
    /// An override, or `None` for the policy's target.
    rule: Option<RankRule>,
}

fn decomposition(rule: &RankRule, max_rank: Option<usize>) -> Decomposition {
    match rule {
        RankRule::Rank(spec) => Decomposition::Rank {
            spec: spec.clone(),
            max_rank,
        },
        RankRule::Tolerance(eps) => Decomposition::Tolerance {
            eps: *eps,
            max_rank,
        },
        RankRule::Dense => unreachable!("dense overrides are skipped before decomposition"),
    }
}

/// The first skip reason that applies to a kernel, or its override rule.
fn classify(c: &Candidate, policy: &Policy) -> std::result::Result<Option<RankRule>, SkipReason> {
    if !c.dtype.is_float() {
        return Err(SkipReason::NotFloat {
            dtype: c.dtype.to_string(),
        });
    }
    if c.shape[2..].iter().all(|&k| k == 1) {
        return Err(SkipReason::Pointwise);
    }
    if c.shape[1] == 1 {
        return Err(SkipReason::SingleInputChannel);
    }
    if let Some(p) = policy
        .exclude
        .iter()
        .find(|p| p.matches(&c.layer, &c.tensor))
    {
        return Err(SkipReason::Excluded {
            pattern: p.as_str().to_string(),
        });
    }
    if !policy.include.is_empty()
        && !policy
            .include
            .iter()
            .any(|p| p.matches(&c.layer, &c.tensor))
    {
        return Err(SkipReason::NotIncluded);
    }
    let params: usize = c.shape.iter().product();
    if params < policy.min_params {
        return Err(SkipReason::TooSmall {
            params,
            min: policy.min_params,
        });
    }
    match policy
        .overrides
        .iter()
        .find(|(p, _)| p.matches(&c.layer, &c.tensor))
    {
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

/// Compresses every eligible convolution kernel of `ckpt` under `policy`.
///
/// A kernel is a tensor named `*weight` with 3 to 6 axes `(out, in, k_1..k_d)`; it is skipped
/// (kept dense, with the reason in the report) when it is not floating point, is 1x1, has one
/// input channel, matches an exclude pattern or no include pattern, is below the size minimum,
/// has a `dense` override, or (with `require_smaller`) would not shrink. The others become
/// `<layer>.weight.factors.factor_*` at the kernel's place in the tensor order, in the kernel's
/// dtype; the bias `<layer>.bias` keeps its name. TT layers already in the file pass through.
/// The `ttconv` metadata gains one entry per compressed layer (ranks, kernel shape, order,
/// error; geometry unknown for a state_dict). `progress` is called before each step.
pub fn compress(
    ckpt: &Checkpoint,
    policy: &Policy,
    options: &ReportOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Checkpoint, Report)> {
    policy.validate()?;
    let mut reports: Vec<(usize, LayerReport)> = Vec::new();
    let mut eligible: Vec<Eligible> = Vec::new();
    for (index, (name, t)) in ckpt.tensors.iter().enumerate() {
        if !is_kernel_candidate(name, t.shape()) {
            continue;
        }
        let cand = Candidate {
            index,
            tensor: name.clone(),
            layer: layer_name(name).to_string(),
            shape: t.shape().to_vec(),
            dtype: t.dtype(),
        };
        match classify(&cand, policy) {
            Err(reason) => reports.push((index, skipped(&cand, reason))),
            Ok(rule) => {
                let kernel = t.to_f32(name)?;
                eligible.push(Eligible { cand, kernel, rule });
            }
        }
    }
    let dense_eligible: usize = eligible.iter().map(|e| e.kernel.len()).sum();
    let by_ratio: Vec<usize> = match policy.target {
        Target::Ratio(_) => (0..eligible.len())
            .filter(|&i| eligible[i].rule.is_none())
            .collect(),
        Target::PerLayer(_) => Vec::new(),
    };
    let total_steps = eligible.len() + by_ratio.len();
    let mut done = 0usize;
    let mut tts: Vec<Option<(TtTensor<f32>, String)>> = vec![None; eligible.len()];
    // Layers with a rule of their own (all of them without a ratio) first.
    for (i, e) in eligible.iter().enumerate() {
        let rule = match (&e.rule, &policy.target) {
            (Some(r), _) => r.clone(),
            (None, Target::PerLayer(r)) => r.clone(),
            (None, Target::Ratio(_)) => continue,
        };
        if rule == RankRule::Dense {
            continue;
        }
        progress(Progress {
            done,
            total: total_steps,
            what: &e.cand.layer,
        });
        done += 1;
        let tt = layer_bridge::decompose(&e.kernel, &decomposition(&rule, policy.max_rank))
            .map_err(|err| layer_error(&e.cand, err))?;
        tts[i] = Some((tt, rule.describe()));
    }
    if let Target::Ratio(x) = policy.target
        && !by_ratio.is_empty()
    {
        let fixed: usize = tts.iter().flatten().map(|(tt, _)| tt.num_params()).sum();
        let budget = ((dense_eligible as f64 / x).floor() as usize).checked_sub(fixed).ok_or_else(|| {
            Error::Policy(format!(
                "ratio {x}: the layers with their own rules already hold {fixed} parameters, over the budget of {}",
                (dense_eligible as f64 / x).floor()
            ))
        })?;
        let mut spectra = Vec::with_capacity(by_ratio.len());
        for &i in &by_ratio {
            let e = &eligible[i];
            progress(Progress {
                done,
                total: total_steps,
                what: &e.cand.layer,
            });
            done += 1;
            let (sv, norm) =
                layer_bridge::spectra(&e.kernel).map_err(|err| layer_error(&e.cand, err))?;
            spectra.push(Spectrum {
                shape: layer_bridge::tt_shape(&e.cand.shape),
                singular_values: sv,
                norm,
            });
        }
        let ranks = allocate_ranks(&spectra, budget, policy.max_rank)?;
        for (&i, r) in by_ratio.iter().zip(ranks) {
            let e = &eligible[i];
            progress(Progress {
                done,
                total: total_steps,
                what: &e.cand.layer,
            });
            done += 1;
            let tt = layer_bridge::decompose(&e.kernel, &Decomposition::Ranks(r))
                .map_err(|err| layer_error(&e.cand, err))?;
            tts[i] = Some((tt, format!("ratio {x} (allocated)")));
        }
    }
    progress(Progress {
        done: total_steps,
        total: total_steps,
        what: "",
    });

    // Assemble the output and the report.
    let mut replaced: Vec<Option<TtTensor<f32>>> = vec![None; ckpt.tensors.len()];
    let mut meta = TtMetadata::from_metadata(&ckpt.metadata)?;
    for (e, slot) in eligible.iter().zip(tts) {
        let Some((tt, rule)) = slot else {
            continue;
        };
        let tt = round_to(tt, e.cand.dtype)?;
        let params = e.kernel.len();
        let tt_params = tt.num_params();
        if policy.require_smaller && tt_params >= params {
            reports.push((
                e.cand.index,
                skipped(&e.cand, SkipReason::NotSmaller { tt_params, params }),
            ));
            continue;
        }
        let rel_error = layer_bridge::relative_error(&e.kernel, &tt)?;
        let macs = match &options.input_spatial {
            Some(size) if size.len() == e.cand.shape.len() - 2 => {
                let g = Geometry::same_like(&e.cand.shape[2..]);
                let (dense, factorized, auto) =
                    layer_bridge::macs(&tt, &g, size, &options.cost_constants)
                        .map_err(|err| layer_error(&e.cand, err))?;
                Some(Macs {
                    input_spatial: size.clone(),
                    dense,
                    factorized,
                    auto: auto.to_string(),
                    geometry_assumed: true,
                })
            }
            _ => None,
        };
        meta.layers.insert(
            e.cand.layer.clone(),
            LayerMeta {
                ranks: tt.ranks(),
                kernel_shape: Some(e.cand.shape.clone()),
                order: Some(e.cand.shape.len() - 2),
                rel_error: Some(rel_error),
                ..LayerMeta::default()
            },
        );
        reports.push((
            e.cand.index,
            LayerReport {
                name: e.cand.layer.clone(),
                tensor: e.cand.tensor.clone(),
                kernel_shape: e.cand.shape.clone(),
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
        ));
        replaced[e.cand.index] = Some(tt);
    }
    let mut out = Checkpoint {
        tensors: Vec::with_capacity(ckpt.tensors.len() + 4 * eligible.len()),
        metadata: ckpt.metadata.clone(),
    };
    for ((name, t), tt) in ckpt.tensors.iter().zip(&replaced) {
        match tt {
            Some(tt) => out
                .tensors
                .extend(factor_tensors(layer_name(name), tt, t.dtype())),
            None => out.tensors.push((name.clone(), t.clone())),
        }
    }
    meta.store(&mut out.metadata);
    reports.sort_by_key(|(i, _)| *i);
    let layers: Vec<LayerReport> = reports.into_iter().map(|(_, r)| r).collect();
    let mut totals = Totals {
        file_params_before: ckpt.numel(),
        file_params_after: out.numel(),
        ..Totals::default()
    };
    for l in &layers {
        match &l.outcome {
            Outcome::Compressed { .. } => {
                totals.compressed += 1;
                totals.eligible_params_before += l.params_before;
                totals.eligible_params_after += l.params_after;
            }
            Outcome::Skipped { reason } => {
                totals.skipped += 1;
                if matches!(reason, SkipReason::NotSmaller { .. }) {
                    totals.eligible_params_before += l.params_before;
                    totals.eligible_params_after += l.params_before;
                }
            }
        }
    }
    let report = Report {
        policy: policy.describe(),
        layers,
        totals,
    };
    Ok((out, report))
}

fn skipped(c: &Candidate, reason: SkipReason) -> LayerReport {
    let params = c.shape.iter().product();
    LayerReport {
        name: c.layer.clone(),
        tensor: c.tensor.clone(),
        kernel_shape: c.shape.clone(),
        params_before: params,
        params_after: params,
        outcome: Outcome::Skipped { reason },
    }
}

fn layer_error(c: &Candidate, err: Error) -> Error {
    Error::Layer {
        prefix: c.layer.clone(),
        reason: err.to_string(),
    }
}
