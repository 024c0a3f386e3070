//! `kind = "transduct"`: a 2-D TT conv turned into a 3-D one by `transduct`, checked against
//! TensorLy-Torch: the new cores exactly (`==`), the resulting 3-D configuration, the reconstructed
//! kernel, and the 3-D output of both implementations (tolerances of [`super::conv`]).

use ttconv::{AxisGeometry, Implementation};
use ttconv_cpu::CpuBackend;

use super::conv::{WEIGHT_RTOL, bias_view, compare, layer_from};
use super::{CaseFile, CaseOutcome, GoldenError, Kind};

/// Checks one `transduct` case file.
pub fn check(file: &CaseFile) -> Result<Vec<CaseOutcome>, GoldenError> {
    let bias = if file.meta_bool("has_bias")? {
        Some(bias_view(file)?)
    } else {
        None
    };
    let mut layer = layer_from(file, 2, "core_", bias)?;
    let mode = file.meta_usize("mode")?;
    let mut problems = Vec::new();
    let geometry = AxisGeometry::symmetric(
        file.meta_usize("new_stride")?,
        file.meta_usize("new_padding")?,
        file.meta_usize("new_dilation")?,
    );
    if let Err(e) = layer.transduct(mode, file.meta_usize("new_kernel_size")?, geometry) {
        problems.push(format!("transduct: {e}"));
    } else {
        for (i, core) in layer.tt().cores().iter().enumerate() {
            let reference = file.f32_tensor(&format!("new_core_{i}"))?;
            if core.shape() != reference.shape() || core.iter().ne(reference.iter()) {
                problems.push(format!("new_core_{i} differs (shape {:?})", core.shape()));
            }
        }
        let g = layer.geometry();
        let checks = [
            ("kernel_size_3d", layer.config().kernel_size.clone()),
            ("stride_3d", g.iter().map(|a| a.stride).collect()),
            ("dilation_3d", g.iter().map(|a| a.dilation).collect()),
            ("padding_3d", g.iter().map(|a| a.pad_before).collect()),
            ("ranks_3d", layer.ranks()),
        ];
        for (key, ours) in checks {
            let reference = file.meta_usize_list(key)?;
            if ours != reference {
                problems.push(format!("{key}: ours {ours:?}, expected {reference:?}"));
            }
        }
        match compare(layer.full_weights(), file.f32_tensor("full_weight")?) {
            Ok((_, rel)) if rel <= WEIGHT_RTOL => {}
            Ok((_, rel)) => problems.push(format!("full_weight: max diff {rel:.2e} of max abs")),
            Err(message) => problems.push(format!("full_weight: {message}")),
        }
        let x = file.f32_tensor("x")?;
        let y = file.f32_tensor("y")?;
        let cpu = CpuBackend::new();
        for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
            match layer.forward_with(&cpu, x.view(), implementation) {
                Ok(ours) => match compare(&ours, y) {
                    Ok((worst, _)) if worst <= 1.0 => {}
                    Ok((worst, rel)) => problems.push(format!(
                        "{implementation:?} y: max diff {rel:.2e} of max abs ({worst:.1}x the bound)"
                    )),
                    Err(message) => problems.push(format!("{implementation:?} y: {message}")),
                },
                Err(e) => problems.push(format!("{implementation:?} forward: {e}")),
            }
        }
    }
    let passed = problems.is_empty();
    let details = if passed {
        format!("mode {mode}: cores exact, kernel and outputs within tolerance")
    } else {
        problems.join("; ")
    };
    Ok(vec![CaseOutcome::new(
        file.file_name(),
        Kind::Transduct,
        passed,
        details,
    )])
}
