//! The step timer: every backend primitive of the factorized chain (forward and backward) timed
//! alone on the activations the real chain gives it, to show where the time goes.

use ndarray::ArrayD;
use ttconv::{Backend, PreparedTtConv};
use ttconv_cpu::CpuBackend;

use super::err;
use crate::bench::measure::{Reps, Timing, time_it};

/// One primitive of the factorized chain, timed alone on its real input.
#[derive(Clone, Debug)]
pub struct Step {
    /// What the step does (`contract 64->16`, `along0 16->16 k3`, `grad core last`, ...).
    pub name: String,
    /// Median milliseconds.
    pub ms: f64,
    /// Multiply-adds of the step.
    pub macs: u64,
}

impl Step {
    /// Useful GFLOP/s, `2 * macs / time`.
    pub fn gflops(&self) -> f64 {
        2.0 * self.macs as f64 / (self.ms * 1e-3) / 1e9
    }
}

fn numel(shape: &[usize]) -> u64 {
    shape.iter().map(|&n| n as u64).product()
}

/// Times every backend primitive of the factorized forward and backward separately (the
/// backward with the input gradient, as `forward+backward` times it), each on the activations
/// the real chain gives it. Returns `(forward steps, backward steps)`.
pub fn factorized_steps(
    backend: &CpuBackend,
    prepared: &PreparedTtConv<'_, CpuBackend>,
    x: &ArrayD<f32>,
    gy: &ArrayD<f32>,
    reps: Reps,
) -> Result<(Vec<Step>, Vec<Step>), String> {
    let layer = prepared.layer();
    let w = prepared.factorized_weights();
    let geo = layer.geometry();
    let kernel = &layer.config().kernel_size;
    let ranks = layer.ranks();
    let d = geo.len();
    let (_, acts) = backend
        .factorized_forward_train(x.clone(), w, geo)
        .map_err(err)?;
    let z = &acts.stages;
    let ms = |t: Timing| t.median() * 1e3;
    let mut fwd = Vec::new();
    let mut bwd = Vec::new();
    // Forward: contract in -> r_1, one conv_along per axis, contract r_{d+1} -> out.
    let t = time_it(
        reps,
        || (),
        |_| {
            backend
                .contract_channels(&z[0], &w.first, None)
                .map_err(err)
        },
    )?;
    fwd.push(Step {
        name: format!(
            "contract {}->{}",
            ranks[0] * layer.config().in_channels,
            ranks[1]
        ),
        ms: ms(t),
        macs: numel(z[1].shape()) * layer.config().in_channels as u64,
    });
    for j in 0..d {
        let t = time_it(
            reps,
            || (),
            |_| {
                backend
                    .conv_along(&z[j + 1], j, &w.spatial[j], geo[j])
                    .map_err(err)
            },
        )?;
        fwd.push(Step {
            name: format!("along{j} {}->{} k{}", ranks[j + 1], ranks[j + 2], kernel[j]),
            ms: ms(t),
            macs: numel(z[j + 2].shape()) * (ranks[j + 1] * kernel[j]) as u64,
        });
    }
    let out = layer.config().out_channels;
    let t = time_it(
        reps,
        || (),
        |_| {
            backend
                .contract_channels(&z[d + 1], &w.last, w.bias.as_ref())
                .map_err(err)
        },
    )?;
    fwd.push(Step {
        name: format!("contract {}->{out}", ranks[d + 1]),
        ms: ms(t),
        macs: numel(gy.shape()) * ranks[d + 1] as u64,
    });
    // Backward, in the order of `PreparedTtConv::backward`.
    let last_macs = numel(gy.shape()) * ranks[d + 1] as u64;
    let t = time_it(
        reps,
        || (),
        |_| {
            backend
                .contract_channels_grad_weight(&z[d + 1], gy)
                .map_err(err)
        },
    )?;
    bwd.push(Step {
        name: "grad core last".into(),
        ms: ms(t),
        macs: last_macs,
    });
    let t = time_it(
        reps,
        || (),
        |_| {
            backend
                .contract_channels_grad_input(gy, &w.last)
                .map_err(err)
        },
    )?;
    bwd.push(Step {
        name: "grad input last".into(),
        ms: ms(t),
        macs: last_macs,
    });
    let mut g = backend
        .contract_channels_grad_input(gy, &w.last)
        .map_err(err)?;
    for j in (0..d).rev() {
        let macs = numel(g.shape()) * (ranks[j + 1] * kernel[j]) as u64;
        let t = time_it(
            reps,
            || (),
            |_| {
                backend
                    .conv_along_grad_weight(&z[j + 1], &g, j, kernel[j], geo[j])
                    .map_err(err)
            },
        )?;
        bwd.push(Step {
            name: format!("grad core along{j}"),
            ms: ms(t),
            macs,
        });
        let len = z[j + 1].shape()[j + 2];
        let t = time_it(
            reps,
            || (),
            |_| {
                backend
                    .conv_along_grad_input(&g, j, &w.spatial[j], geo[j], len)
                    .map_err(err)
            },
        )?;
        bwd.push(Step {
            name: format!("grad input along{j}"),
            ms: ms(t),
            macs,
        });
        g = backend
            .conv_along_grad_input(&g, j, &w.spatial[j], geo[j], len)
            .map_err(err)?;
    }
    let first_macs = numel(z[1].shape()) * layer.config().in_channels as u64;
    let t = time_it(
        reps,
        || (),
        |_| {
            backend
                .contract_channels_grad_weight(&z[0], &g)
                .map_err(err)
        },
    )?;
    bwd.push(Step {
        name: "grad core first".into(),
        ms: ms(t),
        macs: first_macs,
    });
    let t = time_it(
        reps,
        || (),
        |_| {
            backend
                .contract_channels_grad_input(&g, &w.first)
                .map_err(err)
        },
    )?;
    bwd.push(Step {
        name: "grad input first".into(),
        ms: ms(t),
        macs: first_macs,
    });
    Ok((fwd, bwd))
}
