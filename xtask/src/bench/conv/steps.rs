//! The step timer: every step of the layer's factorized program (forward, and backward in
//! reverse) timed alone through the backend's primitives on the activations the real chain gives
//! it, to show where the time goes.

use ndarray::ArrayD;
use ttconv::{Backend, PreparedTtConv, StepOp};
use ttconv_cpu::CpuBackend;

use super::err;
use crate::bench::measure::{Reps, Timing, time_it};

/// One primitive of the factorized chain, timed alone on its real input.
#[derive(Clone, Debug)]
pub struct Step {
    /// What the step does (`contract 64->16`, `along0 16->16 k3`, `grad weight contract 16->64`, ...).
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

/// Times every step of the layer's factorized program separately, forward and backward (the
/// backward with the input gradient, as `forward+backward` times it), each on the activations
/// the real chain gives it. Returns `(forward steps, backward steps)`.
pub fn factorized_steps(
    backend: &CpuBackend,
    prepared: &PreparedTtConv<'_, CpuBackend>,
    x: &ArrayD<f32>,
    gy: &ArrayD<f32>,
    reps: Reps,
) -> Result<(Vec<Step>, Vec<Step>), String> {
    let program = prepared.layer().program(x.shape()).map_err(err)?;
    let weights = prepared.step_weights(&program).map_err(err)?;
    let (_, inputs) = program
        .run_keeping_inputs(backend, x.clone(), &weights)
        .map_err(err)?;
    let ms = |t: Timing| t.median() * 1e3;
    let label = |step: &ttconv::Step| match step.op {
        StepOp::Contract => format!("contract {}->{}", step.in_channels(), step.out_channels()),
        StepOp::ConvAlong { axis, kernel, .. } => format!(
            "along{axis} {}->{} k{kernel}",
            step.in_channels(),
            step.out_channels()
        ),
    };
    let mut fwd = Vec::new();
    for (i, step) in program.steps().iter().enumerate() {
        let t = time_it(
            reps,
            || (),
            |_| {
                program
                    .run_step(backend, i, &inputs[i], &weights)
                    .map_err(err)
            },
        )?;
        fwd.push(Step {
            name: label(step),
            ms: ms(t),
            macs: step.macs(),
        });
    }
    // Backward, in the order of `PreparedTtConv::backward`: per step from the last, the weight
    // gradient, then the input gradient (which feeds the step before).
    let mut bwd = Vec::new();
    let mut g = gy.clone();
    for (i, step) in program.steps().iter().enumerate().rev() {
        let (z, w) = (&inputs[i], weights.steps[i]);
        let grad_weight = || match step.op {
            StepOp::Contract => backend
                .contract_channels_grad_weight(z, &g)
                .map(drop)
                .map_err(err),
            StepOp::ConvAlong {
                axis,
                kernel,
                geometry,
            } => backend
                .conv_along_grad_weight(z, &g, axis, kernel, geometry)
                .map(drop)
                .map_err(err),
        };
        let grad_input = || match step.op {
            StepOp::Contract => backend.contract_channels_grad_input(&g, w).map_err(err),
            StepOp::ConvAlong { axis, geometry, .. } => backend
                .conv_along_grad_input(&g, axis, w, geometry, step.input_shape[axis + 2])
                .map_err(err),
        };
        let t = time_it(reps, || (), |_| grad_weight())?;
        bwd.push(Step {
            name: format!("grad weight {}", label(step)),
            ms: ms(t),
            macs: step.macs(),
        });
        let t = time_it(reps, || (), |_| grad_input())?;
        bwd.push(Step {
            name: format!("grad input {}", label(step)),
            ms: ms(t),
            macs: step.macs(),
        });
        let next = grad_input()?;
        g = next;
    }
    Ok((fwd, bwd))
}
