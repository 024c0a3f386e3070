//! Data-aware fitting: each compressed Conv's TT cores fitted to the original layer's outputs on
//! calibration inputs, layer after layer.
//!
//! Sequential, as the model runs: for the `l`-th compressed layer (in graph order), its input
//! activations are captured from the model whose layers `1..l-1` are already compressed and
//! fitted, and its target is the original model's output of that layer. The fit minimises, from
//! the TT-SVD start, the layer's squared output error plus a ridge toward the dense kernel,
//! `sum ||y_hat - y||^2 + lambda ||W_tt - W||^2` with `lambda = alpha tr(S) / m` (`S` the patch
//! second moment of [`crate::moments`], `m` the patch length), by alternating least squares over
//! the cores ([`tt_core::fit_tt`]); the bias is then refitted in closed form. Layers inside
//! subgraphs, and weights that are not f32, keep their TT-SVD cores (with the reason).

use std::time::Instant;

use ndarray::{Array1, ArrayD, IxDyn};
use serde::Serialize;
use tt_core::{FitOptions, Quadratic, TtTensor, fit_tt};
use ttconv_models::{DType, Policy, Progress, Report, ReportOptions};

use crate::compress::{InputShapes, Plan, apply, plan, report};
use crate::error::{Error, Result};
use crate::moments::Moments;
use crate::proto::{ModelProto, TensorProto, ValueInfoProto, data_type, type_proto};
use crate::runtime::{Runtime, Value};
use crate::tensor::to_f32;

/// Model inputs for one run, by graph input name.
pub type Sample = Vec<(String, Value)>;

/// The optimiser of a layer's fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FitMethod {
    /// Alternating least squares on the patch moments (module docs): the default, since it did
    /// better than Adam on every layer measured (docs/onnx.md).
    Als,
    /// Adam on the cores and bias through the layer's own backward (CPU backend), full batch
    /// over the calibration samples, loss `sum ||y_hat - y||^2 / sum ||y||^2`, no ridge; for
    /// Conv nodes with their own weight (a shared weight is fitted by ALS).
    Adam {
        /// Full-batch steps.
        steps: usize,
        /// Learning rate.
        lr: f32,
    },
}

/// How the cores are fitted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalibrationOptions {
    /// The ridge weight relative to the patch energy: `lambda = alpha tr(S) / m` (ALS).
    pub alpha: f64,
    /// The ALS iterations.
    pub fit: FitOptions,
    /// ALS or Adam.
    pub method: FitMethod,
}

impl Default for CalibrationOptions {
    /// ALS, `alpha = 1e-2`, 5 sweeps.
    fn default() -> Self {
        Self {
            alpha: 1e-2,
            fit: FitOptions::default(),
            method: FitMethod::Als,
        }
    }
}

/// The fit of one compressed weight (all the Conv nodes that read it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerFit {
    /// The weight's name.
    pub weight: String,
    /// Its layer output's relative error `||y_hat - y|| / ||y||` on the calibration inputs with
    /// the TT-SVD cores (and the original bias).
    pub output_error_before: f64,
    /// The same after fitting (cores and bias).
    pub output_error_after: f64,
    /// `||W_tt - W|| / ||W||` after fitting.
    pub kernel_error_after: f64,
    /// Seconds spent on this layer (capture, moments and fit).
    pub seconds: f64,
    /// Why it was not fitted, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Adds `names` as graph outputs of a copy of `model` (float tensors, shape left to the
/// runtime), so a run returns those intermediate values.
fn with_outputs(model: &ModelProto, names: &[String]) -> ModelProto {
    let mut m = model.clone();
    let g = m.graph.as_mut().expect("a planned model has a graph");
    for n in names {
        if g.output.iter().all(|o| &o.name != n) {
            g.output.push(ValueInfoProto {
                name: n.clone(),
                r#type: Some(crate::proto::TypeProto {
                    value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                        elem_type: data_type::FLOAT,
                        shape: None,
                    })),
                    ..Default::default()
                }),
                ..ValueInfoProto::default()
            });
        }
    }
    m
}

/// Runs `model` on every sample and returns, per sample, the f32 values named `names` (a graph
/// input is taken from the sample itself).
fn capture(
    runtime: &Runtime,
    model: &ModelProto,
    names: &[String],
    samples: &[Sample],
) -> Result<Vec<Vec<ArrayD<f32>>>> {
    let inputs: Vec<String> = crate::input_specs(model)?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let computed: Vec<String> = names
        .iter()
        .filter(|n| !inputs.contains(n))
        .cloned()
        .collect();
    let bytes = crate::model_to_bytes(&with_outputs(model, &computed));
    let runs = if computed.is_empty() {
        vec![Vec::new(); samples.len()]
    } else {
        runtime.run_all(&bytes, samples)?
    };
    runs.into_iter()
        .zip(samples)
        .map(|(outputs, sample)| {
            names
                .iter()
                .map(|n| {
                    let found = outputs.iter().chain(sample.iter()).find(|(o, _)| o == n);
                    match found {
                        Some((_, Value::F32(a))) => Ok(a.clone()),
                        Some(_) => Err(Error::Unsupported(format!(
                            "calibration: `{n}` is not a float tensor"
                        ))),
                        None => Err(Error::Runtime(format!("calibration: no value `{n}`"))),
                    }
                })
                .collect()
        })
        .collect()
}

/// The input shape of every Conv of the main graph on `sample`, by the name of the value it
/// reads (a run of `model` with those values as extra outputs).
pub fn conv_input_shapes(
    runtime: &Runtime,
    model: &ModelProto,
    sample: &Sample,
) -> Result<InputShapes> {
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("model", "no graph"))?;
    let mut names: Vec<String> = g
        .node
        .iter()
        .filter(|n| n.op_type == "Conv" && !n.input.is_empty())
        .map(|n| n.input[0].clone())
        .collect();
    names.sort();
    names.dedup();
    let values = capture(runtime, model, &names, std::slice::from_ref(sample))?;
    Ok(names
        .into_iter()
        .zip(&values[0])
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect())
}

/// The kernel `(out, in, k..)` in the TT layout `(in k.., out)`, flattened row-major.
fn tt_layout(kernel: &ArrayD<f32>) -> Vec<f64> {
    let n = kernel.ndim();
    let mut perm: Vec<usize> = (1..n).collect();
    perm.push(0);
    kernel
        .view()
        .permuted_axes(IxDyn(&perm))
        .iter()
        .map(|&v| f64::from(v))
        .collect()
}

fn dense_f64(tt: &TtTensor<f64>) -> Result<Vec<f64>> {
    Ok(tt.to_dense()?.iter().copied().collect())
}

fn relative(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// A site's bias as f32 values, when its Conv has one and it is a constant of the main graph.
fn constant_bias(model: &ModelProto, name: &str) -> Option<Result<Vec<f32>>> {
    let g = model.graph.as_ref()?;
    let t: &TensorProto = g.initializer.iter().find(|t| t.name == name).or_else(|| {
        g.node
            .iter()
            .filter(|n| n.output.first().is_some_and(|o| o == name))
            .find_map(crate::compress::constant_value)
    })?;
    Some(to_f32(t).map(|a| a.iter().copied().collect()))
}

/// The longest patch (`in k_1..k_d`) fitted: the patch moments hold `m^2` f64 (512 MiB at
/// this limit) a few times over.
pub const MAX_PATCH: usize = 8192;

/// Why unit `u` cannot be fitted, if it cannot.
fn unfit_reason(model: &ModelProto, plan: &Plan, u: usize) -> Option<String> {
    let unit = &plan.units[u];
    if unit.dtype != DType::F32 {
        return Some(format!("{} weight (f32 only)", unit.dtype));
    }
    let shape = crate::tensor::dims(plan.weight(model, u)).ok()?;
    let m: usize = shape[1..].iter().product();
    if m > MAX_PATCH {
        return Some(format!(
            "patches of {m} values (in x kernel), above the {MAX_PATCH} fitted"
        ));
    }
    for (s, _) in &unit.sites {
        let (path, node) = plan.site(*s);
        if !path.is_empty() {
            return Some("inside a subgraph".into());
        }
        let node = &model.graph.as_ref().expect("graph").node[node];
        if let Some(b) = node.input.get(2).filter(|b| !b.is_empty())
            && constant_bias(model, b).is_none()
        {
            return Some(format!("bias `{b}` is not a constant"));
        }
    }
    None
}

/// Compresses `model` under `policy` as [`crate::compress`] does, then fits every compressed
/// main-graph f32 layer to the original's outputs on `samples` (module docs). Returns the model,
/// its report (ranks unchanged, kernel errors those of the fitted cores) and one [`LayerFit`]
/// per compressed weight.
pub fn compress_calibrated(
    model: &ModelProto,
    policy: &Policy,
    options: &ReportOptions,
    shapes: &InputShapes,
    runtime: &Runtime,
    samples: &[Sample],
    calibration: &CalibrationOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(ModelProto, Report, Vec<LayerFit>)> {
    if samples.is_empty() {
        return Err(Error::Inputs(
            "calibration needs at least one sample".into(),
        ));
    }
    if !(calibration.alpha.is_finite() && calibration.alpha >= 0.0) {
        return Err(Error::Inputs(format!(
            "calibration alpha {}: finite and >= 0 expected",
            calibration.alpha
        )));
    }
    let mut plan = plan(model, policy, options, shapes, &mut |_| {})?;
    let root = model.graph.as_ref().expect("planned");
    // Compressed units in graph order (of their first node).
    let mut order: Vec<usize> = (0..plan.units.len())
        .filter(|&u| plan.units[u].tt.is_some())
        .collect();
    order.sort_by_key(|&u| {
        let (path, node) = plan.site(plan.units[u].sites[0].0);
        (path.clone(), node)
    });
    let output_of = |plan: &Plan, s: usize| {
        let (path, node) = plan.site(s);
        let g = crate::graph::graph_at(root, path);
        (
            g.node[node].input[0].clone(),
            g.node[node].output[0].clone(),
        )
    };
    // Targets: the original's output of every fitted node, in one pass.
    let fitted: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&u| unfit_reason(model, &plan, u).is_none())
        .collect();
    let target_names: Vec<String> = fitted
        .iter()
        .flat_map(|&u| {
            plan.units[u]
                .sites
                .iter()
                .map(|(s, _)| output_of(&plan, *s).1)
        })
        .collect();
    let targets = capture(runtime, model, &target_names, samples)?;
    let mut active = vec![false; plan.units.len()];
    let mut fits = Vec::new();
    let mut target_index = 0usize;
    for (step, &u) in order.iter().enumerate() {
        let weight = plan.units[u].weight.clone();
        progress(Progress {
            done: step,
            total: order.len(),
            what: &weight,
        });
        let start = Instant::now();
        if let Some(reason) = unfit_reason(model, &plan, u) {
            fits.push(LayerFit {
                weight,
                output_error_before: f64::NAN,
                output_error_after: f64::NAN,
                kernel_error_after: f64::NAN,
                seconds: 0.0,
                skipped: Some(reason),
            });
            active[u] = true;
            continue;
        }
        // Inputs from the model compressed (and fitted) so far.
        let partial = apply(model, &plan, &active)?;
        let sites = plan.units[u].sites.clone();
        let input_names: Vec<String> = sites.iter().map(|(s, _)| output_of(&plan, *s).0).collect();
        let inputs = capture(runtime, &partial, &input_names, samples)?;
        let kernel = to_f32(plan.weight(model, u))?;
        let (cout, m) = (kernel.shape()[0], kernel.len() / kernel.shape()[0]);
        let anchor = tt_layout(&kernel);
        // Per-site moments: each node has its own geometry and bias.
        let mut per_site = Vec::with_capacity(sites.len());
        for (i, (s, attrs)) in sites.iter().enumerate() {
            let mut mo = Moments::new(m, cout);
            for (x, y) in inputs.iter().zip(&targets) {
                let (x, y) = (&x[i], &y[target_index + i]);
                let geometry = attrs.resolve(&x.shape()[2..])?;
                mo.add(x, y, &attrs.kernel, &geometry)?;
            }
            let (path, node) = plan.site(*s);
            let node = &crate::graph::graph_at(root, path).node[node];
            let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
                Some(b) => Some(constant_bias(model, b).expect("checked")?),
                None => None,
            };
            per_site.push((mo, bias));
        }
        target_index += sites.len();
        // The objective: centered moments where the node has a bias (refitted), plain ones where
        // it has none.
        let mut total = Moments::new(m, cout);
        for (mo, bias) in &per_site {
            total.merge(&if bias.is_some() {
                mo.centered()
            } else {
                mo.clone()
            });
        }
        let trace: f64 = (0..m).map(|i| total.s[i * m + i]).sum();
        let ridge = calibration.alpha * trace / m as f64;
        let start_tt = plan.units[u].tt.clone().expect("compressed").cast::<f64>();
        let m_svd = dense_f64(&start_tt)?;
        // The layer's relative output error over the calibration data for a kernel and the
        // biases of its sites.
        let output_error = |mmat: &[f64], biases: &[Option<Vec<f64>>]| -> f64 {
            let (mut num, mut den) = (0.0, 0.0);
            for ((mo, _), b) in per_site.iter().zip(biases) {
                num += mo.squared_error(mmat, b.as_deref());
                den += mo.yy;
            }
            (num / den.max(f64::MIN_POSITIVE)).sqrt()
        };
        let original_biases: Vec<Option<Vec<f64>>> = per_site
            .iter()
            .map(|(_, b)| {
                b.as_ref()
                    .map(|b| b.iter().map(|&v| f64::from(v)).collect())
            })
            .collect();
        let before = output_error(&m_svd, &original_biases);
        let q = Quadratic {
            s: &total.s,
            c: &total.c,
            c0: total.yy,
            ridge,
            anchor: Some(&anchor),
        };
        let adam = match calibration.method {
            FitMethod::Adam { steps, lr } if sites.len() == 1 => Some((steps, lr)),
            _ => None,
        };
        let (fitted_tt, biases): (TtTensor<f64>, Vec<Option<Array1<f32>>>) = match adam {
            Some((steps, lr)) => {
                let x: Vec<&ArrayD<f32>> = inputs.iter().map(|v| &v[0]).collect();
                let y: Vec<&ArrayD<f32>> = targets.iter().map(|v| &v[target_index - 1]).collect();
                let (tt, bias) = adam_fit(
                    plan.units[u].tt.clone().expect("compressed"),
                    per_site[0].1.as_ref().map(|b| Array1::from(b.clone())),
                    &sites[0].1,
                    &x,
                    &y,
                    steps,
                    lr,
                )?;
                (tt.cast::<f64>(), vec![bias])
            }
            None => {
                let (fitted_tt, _) = fit_tt(&start_tt, &q, &calibration.fit)?;
                let m_fit = dense_f64(&fitted_tt)?;
                let biases = per_site
                    .iter()
                    .map(|(mo, bias)| {
                        bias.as_ref()
                            .map(|_| mo.best_bias(&m_fit).iter().map(|&v| v as f32).collect())
                    })
                    .collect();
                (fitted_tt, biases)
            }
        };
        let m_fit = dense_f64(&fitted_tt)?;
        let fitted_biases: Vec<Option<Vec<f64>>> = biases
            .iter()
            .map(|b| {
                b.as_ref()
                    .map(|b| b.iter().map(|&v| f64::from(v)).collect())
            })
            .collect();
        let after = output_error(&m_fit, &fitted_biases);
        let kernel_error = relative(&m_fit, &anchor);
        plan.set_tt(
            u,
            fitted_tt.cast::<f32>(),
            kernel_error,
            &format!(
                "{} + fitted ({})",
                rule_of(&plan, u),
                if adam.is_some() { "Adam" } else { "ALS" }
            ),
        );
        plan.units[u].biases = biases;
        active[u] = true;
        fits.push(LayerFit {
            weight,
            output_error_before: before,
            output_error_after: after,
            kernel_error_after: kernel_error,
            seconds: start.elapsed().as_secs_f64(),
            skipped: None,
        });
    }
    progress(Progress {
        done: order.len(),
        total: order.len(),
        what: "",
    });
    let out = apply(model, &plan, &vec![true; plan.units.len()])?;
    let report = report(&plan, model, &out);
    Ok((out, report, fits))
}

fn rule_of(plan: &Plan, u: usize) -> String {
    plan.rule(u).unwrap_or_default()
}

/// Adam on one Conv's cores and bias through the layer's backward (see [`FitMethod::Adam`]):
/// `x[i] (batch, in, D..)` and the targets `y[i]`, per calibration sample.
fn adam_fit(
    tt: TtTensor<f32>,
    bias: Option<Array1<f32>>,
    attrs: &crate::conv::ConvAttrs,
    x: &[&ArrayD<f32>],
    y: &[&ArrayD<f32>],
    steps: usize,
    lr: f32,
) -> Result<(TtTensor<f32>, Option<Array1<f32>>)> {
    use ttconv::{Gradients, Implementation, Optimizer};
    let geometry = attrs.resolve(&x[0].shape()[2..])?;
    let g = ttconv_models::Geometry::from_axes(&geometry);
    let mut layer = ttconv_models::build_layer(tt, bias.as_ref(), Some(&g))?;
    let cpu = ttconv_cpu::CpuBackend::new();
    let norm: f64 = y
        .iter()
        .map(|t| t.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>())
        .sum();
    let scale = (2.0 / norm.max(f64::MIN_POSITIVE)) as f32;
    let mut adam = ttconv::Adam::new(lr);
    for _ in 0..steps {
        let mut total: Option<Gradients> = None;
        for (xi, yi) in x.iter().zip(y) {
            if attrs.resolve(&xi.shape()[2..])? != geometry {
                return Err(Error::Inputs(
                    "Adam fitting needs calibration inputs of one spatial size".into(),
                ));
            }
            let yhat = layer.forward_with(&cpu, xi.view(), Implementation::Factorized)?;
            let gy = (&yhat - *yi) * scale;
            let (_, grads) = layer.forward_backward(
                &cpu,
                xi.view(),
                gy.view(),
                Implementation::Factorized,
                false,
            )?;
            total = Some(match total {
                None => grads,
                Some(mut t) => {
                    for (a, b) in t.cores.iter_mut().zip(&grads.cores) {
                        *a += b;
                    }
                    if let (Some(a), Some(b)) = (&mut t.bias, &grads.bias) {
                        *a += b;
                    }
                    t
                }
            });
        }
        adam.step(&mut layer, &total.expect("at least one sample"))?;
    }
    Ok(layer.decomposition())
}
