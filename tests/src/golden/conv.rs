//! `kind = "conv"`: a TT convolution built from TensorLy-Torch's f32 cores, checked on the CPU
//! backend with both implementations against the f64 PyTorch reference:
//! - `full_weight` (the kernel reconstructed from the cores) within [`WEIGHT_RTOL`] of its max abs;
//! - `y` elementwise within `Y_ATOL * max_abs_y + Y_RTOL * |y|` (the check TensorLy-Torch itself
//!   passes on these files);
//! - the gradients of `sum(y * grad_y)` (`grad_x`, every `grad_core_i`, `grad_bias`) in the same
//!   form, relative to each gradient's max abs.

use ndarray::{ArrayD, ArrayView1};
use ttconv::{Implementation, Padding, RankSpec, TtConv, TtConvConfig, TtTensor};
use ttconv_cpu::CpuBackend;

use super::{CaseFile, CaseOutcome, GoldenError, Kind};

/// Tolerance on the reconstructed kernel, relative to its max abs.
pub const WEIGHT_RTOL: f32 = 1e-6;
/// Absolute part of the output tolerance, relative to the output's max abs.
pub const Y_ATOL: f32 = 1e-5;
/// Relative part of the output tolerance.
pub const Y_RTOL: f32 = 1e-4;

/// The largest violation of `|ours - reference| <= atol * max|reference| + rtol * |reference|`,
/// as a multiple of the allowed bound (<= 1 passes), and the max abs difference over max abs.
pub fn compare(ours: &ArrayD<f32>, reference: &ArrayD<f32>) -> Result<(f32, f32), String> {
    if ours.shape() != reference.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            ours.shape(),
            reference.shape()
        ));
    }
    let scale = reference
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let (mut worst, mut max_diff) = (0.0f32, 0.0f32);
    for (a, b) in ours.iter().zip(reference.iter()) {
        let diff = (a - b).abs();
        let bound = Y_ATOL * scale + Y_RTOL * b.abs();
        worst = worst.max(diff / bound);
        max_diff = max_diff.max(diff);
        if !a.is_finite() {
            worst = f32::INFINITY;
        }
    }
    Ok((worst, max_diff / scale))
}

/// Builds a layer from a case's configuration, cores and bias.
pub fn layer_from(
    file: &CaseFile,
    order: usize,
    core_prefix: &str,
    bias: Option<ArrayView1<'_, f32>>,
) -> Result<TtConv, GoldenError> {
    let kernel = file.meta_usize_list("kernel_size")?;
    let stride = file.meta_usize_list("stride")?;
    let padding = file.meta_usize_list("padding")?;
    let dilation = file.meta_usize_list("dilation")?;
    let ranks = file.meta_usize_list("ranks")?;
    let bad = |message: String| GoldenError::BadTensor {
        path: file.path.clone(),
        name: format!("{core_prefix}*"),
        message,
    };
    if kernel.len() != order {
        return Err(bad(format!(
            "kernel_size {kernel:?} is not of order {order}"
        )));
    }
    let config = TtConvConfig::new(
        file.meta_usize("in_channels")?,
        file.meta_usize("out_channels")?,
        kernel,
    )
    .stride(stride)
    .padding(Padding::Each(padding))
    .dilation(dilation)
    .rank(RankSpec::Explicit(ranks))
    .bias(bias.is_some());
    let mut layer = TtConv::new(config).map_err(|e| bad(e.to_string()))?;
    let cores = (0..order + 2)
        .map(|i| file.f32_tensor(&format!("{core_prefix}{i}")).cloned())
        .collect::<Result<Vec<_>, _>>()?;
    let tt = TtTensor::from_dyn_cores(cores).map_err(|e| bad(e.to_string()))?;
    layer
        .init_from_decomposition(tt, bias)
        .map_err(|e| bad(e.to_string()))?;
    Ok(layer)
}

/// The case's `bias` tensor as a 1-D view.
pub fn bias_view(file: &CaseFile) -> Result<ArrayView1<'_, f32>, GoldenError> {
    let b = file.f32_tensor("bias")?;
    b.view()
        .into_dimensionality()
        .map_err(|_| GoldenError::BadTensor {
            path: file.path.clone(),
            name: "bias".into(),
            message: format!("expected 1 axis, got shape {:?}", b.shape()),
        })
}

/// Problems found in a case, and the worst ratio to the bound among the comparisons that passed.
#[derive(Default)]
struct Findings {
    problems: Vec<String>,
    worst: f32,
}

impl Findings {
    fn note(&mut self, what: String, result: Result<(f32, f32), String>) {
        match result {
            Ok((worst, rel)) => {
                self.worst = self.worst.max(worst);
                if worst > 1.0 {
                    self.problems.push(format!(
                        "{what}: max diff {rel:.2e} of max abs ({worst:.1}x the bound)"
                    ));
                }
            }
            Err(message) => self.problems.push(format!("{what}: {message}")),
        }
    }
}

/// Checks one `conv` case file.
pub fn check(file: &CaseFile) -> Result<Vec<CaseOutcome>, GoldenError> {
    let order = file.meta_usize("order")?;
    let has_bias = file.meta_bool("has_bias")?;
    let bias = if has_bias {
        Some(bias_view(file)?)
    } else {
        None
    };
    let layer = layer_from(file, order, "core_", bias)?;
    let x = file.f32_tensor("x")?;
    let y = file.f32_tensor("y")?;
    let grad_y = file.f32_tensor("grad_y")?;
    let cpu = CpuBackend::new();
    let mut found = Findings::default();
    let (w_worst, w_rel) =
        compare(layer.full_weights(), file.f32_tensor("full_weight")?).map_err(|message| {
            GoldenError::BadTensor {
                path: file.path.clone(),
                name: "full_weight".into(),
                message,
            }
        })?;
    if w_rel > WEIGHT_RTOL {
        found.problems.push(format!(
            "full_weight: max diff {w_rel:.2e} of max abs ({w_worst:.1}x)"
        ));
    }
    for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
        let tag = match implementation {
            Implementation::Reconstructed => "reconstructed",
            _ => "factorized",
        };
        match layer.forward_with(&cpu, x.view(), implementation) {
            Ok(ours) => found.note(format!("{tag} y"), compare(&ours, y)),
            Err(e) => found.problems.push(format!("{tag} forward: {e}")),
        }
        match layer
            .forward_backward(&cpu, x.view(), grad_y.view(), implementation, true)
            .map(|(_, grads)| grads)
        {
            Ok(grads) => {
                let gx = grads.input.expect("input gradient was asked for");
                found.note(
                    format!("{tag} grad_x"),
                    compare(&gx, file.f32_tensor("grad_x")?),
                );
                for (i, g) in grads.cores.into_iter().enumerate() {
                    let reference = file.f32_tensor(&format!("grad_core_{i}"))?;
                    found.note(
                        format!("{tag} grad_core_{i}"),
                        compare(&g.into_dyn(), reference),
                    );
                }
                if let Some(gb) = grads.bias {
                    found.note(
                        format!("{tag} grad_bias"),
                        compare(&gb.into_dyn(), file.f32_tensor("grad_bias")?),
                    );
                }
            }
            Err(e) => found.problems.push(format!("{tag} backward: {e}")),
        }
    }
    let passed = found.problems.is_empty();
    let details = if passed {
        format!(
            "y and gradients within {:.2} of the bound, both implementations",
            found.worst
        )
    } else {
        found.problems.join("; ")
    };
    Ok(vec![CaseOutcome::new(
        file.file_name(),
        Kind::Conv,
        passed,
        details,
    )])
}
