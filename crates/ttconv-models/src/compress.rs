//! `compress(checkpoint, policy) -> (checkpoint, report)`: every eligible convolution kernel
//! replaced by its TT cores under TensorLy-Torch's names, every other tensor copied bit for bit.

use ttconv::CostConstants;

use crate::error::Result;
use crate::kernels::{KernelInput, compress_kernels};
use crate::layer_bridge::TtTensor;
use crate::meta::{LayerMeta, TtMetadata};
use crate::policy::{Policy, is_kernel_candidate, layer_name};
use crate::report::{LayerReport, Outcome, Report, Totals};
use crate::tensor::Checkpoint;
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
    let mut kernels: Vec<KernelInput> = Vec::new();
    let mut index_of: Vec<usize> = Vec::new();
    for (index, (name, t)) in ckpt.tensors.iter().enumerate() {
        if !is_kernel_candidate(name, t.shape()) {
            continue;
        }
        kernels.push(KernelInput {
            tensor: name.clone(),
            layer: layer_name(name).to_string(),
            shape: t.shape().to_vec(),
            dtype: t.dtype(),
            geometry: None,
            input_spatial: None,
            skip: None,
        });
        index_of.push(index);
    }
    let outcomes = compress_kernels(
        &kernels,
        &mut |i| {
            let (name, t) = &ckpt.tensors[index_of[i]];
            t.to_f32(name)
        },
        policy,
        options,
        progress,
    )?;
    // Assemble the output and the report.
    let mut replaced: Vec<Option<&TtTensor<f32>>> = vec![None; ckpt.tensors.len()];
    let mut meta = TtMetadata::from_metadata(&ckpt.metadata)?;
    for ((k, o), &index) in kernels.iter().zip(&outcomes).zip(&index_of) {
        let Some(tt) = &o.tt else {
            continue;
        };
        let rel_error = match &o.report.outcome {
            Outcome::Compressed { rel_error, .. } => Some(*rel_error),
            Outcome::Skipped { .. } => None,
        };
        meta.layers.insert(
            k.layer.clone(),
            LayerMeta {
                ranks: tt.ranks(),
                kernel_shape: Some(k.shape.clone()),
                order: Some(k.shape.len() - 2),
                rel_error,
                ..LayerMeta::default()
            },
        );
        replaced[index] = Some(tt);
    }
    let mut out = Checkpoint {
        tensors: Vec::with_capacity(ckpt.tensors.len() + 4 * kernels.len()),
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
    let layers: Vec<LayerReport> = outcomes.into_iter().map(|o| o.report).collect();
    let totals = Totals::from_layers(&layers, ckpt.numel(), out.numel());
    let report = Report {
        policy: policy.describe(),
        layers,
        totals,
    };
    Ok((out, report))
}
