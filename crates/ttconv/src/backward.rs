//! Backward passes: gradients of a scalar loss for the input, every TT core and the bias.
//!
//! Given `gy = dL/dy`:
//! - factorized: the chain of [`crate::Backend::factorized_forward_train`] is reversed, each
//!   primitive through its backward counterpart (GEMM transposes for the contractions, a
//!   transposed 1-D convolution for the input gradient of each spatial step, the correlation of
//!   the kept activation with the gradient for each core);
//! - reconstructed: the dense kernel gradient `dL/dW` (a correlation of the input with `gy`), then
//!   projected onto each core by contracting with the left and right partial products of the other
//!   cores: `dL/dG_k[a, i, b] = sum_{p, q} L_k[p, a] dL/dT[p, i, q] R_k[b, q]`, where `T` is the
//!   kernel over `(in, k.., out)`, `L_k = G_0 .. G_{k-1}` unfolded to `(n_0..n_{k-1}, r_k)` and
//!   `R_k = G_{k+1} .. G_N` unfolded to `(r_{k+1}, n_{k+1}..)`.
//!
//! Both give the same gradients up to rounding.

use ndarray::{Array1, Array3, ArrayD, ArrayViewD, Axis, IxDyn};

use crate::backend::{Backend, FactorizedActivations};
use crate::config::Implementation;
use crate::error::{Error, Result};
use crate::forward::PreparedTtConv;
use crate::layer::TtConv;
use crate::plan::FactorizedPlan;

/// Gradients of a scalar loss with respect to a layer's input and parameters.
#[derive(Clone, Debug)]
pub struct Gradients {
    /// `dL/dx`, `(batch, in, D_1..D_d)`, when asked for.
    pub input: Option<ArrayD<f32>>,
    /// `dL/dG_k`, same shapes as the cores.
    pub cores: Vec<Array3<f32>>,
    /// `dL/dbias`, `(out,)`, when the layer has a bias.
    pub bias: Option<Array1<f32>>,
}

/// The input gradient (when asked for) and the core gradients, before download.
type InputAndCoreGrads<T> = (Option<T>, Vec<Array3<f32>>);

/// What a training forward keeps for the backward pass.
#[derive(Debug)]
pub enum TrainContext<T> {
    /// The factorized chain's input and intermediates.
    Factorized(FactorizedActivations<T>),
    /// The input of the dense convolution.
    Reconstructed {
        /// The input `x`.
        input: T,
    },
}

impl<T> TrainContext<T> {
    /// The input the forward ran on.
    pub fn input(&self) -> &T {
        match self {
            TrainContext::Factorized(a) => &a.stages[0],
            TrainContext::Reconstructed { input } => input,
        }
    }
}

impl TtConv {
    /// Gradients of `L` for input `x` and upstream gradient `grad_y = dL/dy`, computed with
    /// `implementation` (`Auto` resolved by the cost model); the input gradient only when
    /// `input_grad` (skip it for a first layer).
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        x: ArrayViewD<'_, f32>,
        grad_y: ArrayViewD<'_, f32>,
        implementation: Implementation,
        input_grad: bool,
    ) -> Result<Gradients> {
        let prepared = self.prepare(backend)?;
        let (_, ctx) = prepared.forward_train(backend.upload(x)?, implementation)?;
        let gy = backend.upload(grad_y)?;
        prepared.backward(&ctx, &gy, input_grad)
    }
}

impl<B: Backend> PreparedTtConv<'_, B> {
    /// A forward that keeps what [`Self::backward`] needs; `x` is moved into the context.
    pub fn forward_train(
        &self,
        x: B::Tensor,
        implementation: Implementation,
    ) -> Result<(B::Tensor, TrainContext<B::Tensor>)> {
        let backend = self.backend();
        let shape = backend.shape(&x);
        match self.implementation_for(&shape, implementation)? {
            Implementation::Reconstructed => {
                let y = backend.conv_dense(
                    &x,
                    self.dense_kernel()?,
                    self.factorized_weights().bias.as_ref(),
                    self.layer().geometry(),
                )?;
                Ok((y, TrainContext::Reconstructed { input: x }))
            }
            _ => {
                let plan = self.layer().factorized_plan(&shape);
                let (y, acts) = if plan == FactorizedPlan::default() {
                    backend.factorized_forward_train(
                        x,
                        self.factorized_weights(),
                        self.layer().geometry(),
                    )?
                } else {
                    self.merged_forward_train(x, plan)?
                };
                Ok((y, TrainContext::Factorized(acts)))
            }
        }
    }

    /// Gradients from a training forward's context and `gy = dL/dy` (same shape as its output).
    pub fn backward(
        &self,
        ctx: &TrainContext<B::Tensor>,
        gy: &B::Tensor,
        input_grad: bool,
    ) -> Result<Gradients> {
        let backend = self.backend();
        let expected = self.layer().output_shape(&backend.shape(ctx.input()))?;
        let got = backend.shape(gy);
        if got != expected {
            return Err(Error::Shape {
                what: "output gradient".into(),
                expected: format!("{expected:?}"),
                got,
            });
        }
        let bias = match self.layer().bias() {
            Some(_) => Some(backend.bias_grad(gy)?),
            None => None,
        };
        let (input, cores) = match ctx {
            TrainContext::Factorized(acts) => self.factorized_backward(acts, gy, input_grad)?,
            TrainContext::Reconstructed { input } => {
                self.reconstructed_backward(input, gy, input_grad)?
            }
        };
        Ok(Gradients {
            input: input.map(|t| backend.download_owned(t)).transpose()?,
            cores,
            bias,
        })
    }

    /// The factorized training forward with merged ends (see [`FactorizedPlan`]): the steps of
    /// the chain through the backend's primitives, keeping the input of each.
    fn merged_forward_train(
        &self,
        x: B::Tensor,
        plan: FactorizedPlan,
    ) -> Result<(B::Tensor, FactorizedActivations<B::Tensor>)> {
        let mut later = Vec::with_capacity(self.layer().order() + 1);
        let y = self.merged_forward(&x, plan, Some(&mut later))?;
        let mut stages = Vec::with_capacity(later.len() + 1);
        stages.push(x);
        stages.extend(later);
        Ok((y, FactorizedActivations { stages, plan }))
    }

    /// Reverses the chain of a factorized training forward (plain or with merged ends).
    fn factorized_backward(
        &self,
        acts: &FactorizedActivations<B::Tensor>,
        gy: &B::Tensor,
        input_grad: bool,
    ) -> Result<InputAndCoreGrads<B::Tensor>> {
        let backend = self.backend();
        let w = self.factorized_weights();
        let layer = self.layer();
        let geometry = layer.geometry();
        let d = geometry.len();
        let plan = acts.plan;
        let stages = &acts.stages;
        let expected = d + 2 - usize::from(plan.merge_head) - usize::from(plan.merge_tail);
        if stages.len() != expected {
            return Err(Error::Shape {
                what: "training context".into(),
                expected: format!("{expected} kept activations for plan {plan:?}"),
                got: vec![stages.len()],
            });
        }
        let mut grads = vec![Array3::<f32>::zeros((0, 0, 0)); d + 2];
        // `stages[conv0 + j]` is the input of spatial step `j`.
        let conv0 = usize::from(!plan.merge_head);
        let mut g = if plan.merge_tail {
            None
        } else {
            let g_last = backend.contract_channels_grad_weight(&stages[conv0 + d], gy)?;
            grads[d + 1] = g_last.insert_axis(Axis(2));
            Some(backend.contract_channels_grad_input(gy, &w.last)?)
        };
        for j in (0..d).rev() {
            let upstream = g.as_ref().unwrap_or(gy);
            let z = &stages[conv0 + j];
            let k = layer.config().kernel_size[j];
            let g_step = backend.conv_along_grad_weight(z, upstream, j, k, geometry[j])?;
            if j + 1 == d && plan.merge_tail {
                let (g_core, g_last) = self.split_tail_gradient(&g_step)?;
                grads[d] = g_core;
                grads[d + 1] = g_last;
            } else if j == 0 && plan.merge_head {
                let (g_first, g_core) = self.split_head_gradient(&g_step)?;
                grads[0] = g_first;
                grads[1] = g_core;
            } else {
                grads[j + 1] = g_step;
            }
            if j > 0 || !plan.merge_head || input_grad {
                let len = backend.shape(z)[j + 2];
                let weight = self.step_weight(plan, j)?;
                g = Some(backend.conv_along_grad_input(upstream, j, weight, geometry[j], len)?);
            }
        }
        let input = if plan.merge_head {
            if input_grad { g } else { None }
        } else {
            let g = g.expect("the first convolution's input gradient");
            let g_first = backend.contract_channels_grad_weight(&stages[0], &g)?;
            grads[0] = g_first.insert_axis(Axis(0));
            if input_grad {
                Some(backend.contract_channels_grad_input(&g, &w.first)?)
            } else {
                None
            }
        };
        Ok((input, grads))
    }

    /// The gradients of `G_d (r_d, k, r_{d+1})` and `G_{d+1} (r_{d+1}, out, 1)` from that of
    /// their merged core `M[a, t, o] = sum_s G_d[a, t, s] G_{d+1}[s, o]`, as two GEMMs of the
    /// backend with `dM` viewed as a one-item activation (channels `(a, t)`, positions `o`):
    /// `dG_d[a, t, s] = sum_o dM[a, t, o] G_{d+1}[s, o]` (a weight gradient against `G_{d+1}`
    /// viewed likewise), `dG_{d+1}[s, o] = sum_{a, t} G_d[a, t, s] dM[a, t, o]` (a contraction
    /// with `G_d` as an `(r_d k, r_{d+1})` matrix).
    fn split_tail_gradient(&self, g_merged: &Array3<f32>) -> Result<(Array3<f32>, Array3<f32>)> {
        let backend = self.backend();
        let cores = self.layer().tt().cores();
        let d = self.layer().order();
        let (rd, k, re) = cores[d].dim();
        let cout = cores[d + 1].shape()[1];
        let gm = backend.upload(reshaped(g_merged, &[1, rd * k, cout]).view())?;
        let last = backend.upload(reshaped(&cores[d + 1], &[1, re, cout]).view())?;
        let g_core = backend.contract_channels_grad_weight(&gm, &last)?;
        let core = backend.upload_weights(reshaped(&cores[d], &[rd * k, re]).view())?;
        let g_last = backend.download_owned(backend.contract_channels(&gm, &core, None)?)?;
        Ok((
            into_core(g_core.into_dyn(), (rd, k, re)),
            into_core(g_last, (re, cout, 1)),
        ))
    }

    /// The gradients of `G_0 (1, in, r_1)` and `G_1 (r_1, k, r_2)` from that of their merged
    /// core `M[c, t, s] = sum_r G_0[c, r] G_1[r, t, s]`, as two GEMMs of the backend with `dM`
    /// viewed as a one-item activation (channels `c`, positions `(t, s)`):
    /// `dG_0[c, r] = sum_{t, s} dM[c, t, s] G_1[r, t, s]` (a weight gradient against `G_1`
    /// viewed likewise), `dG_1[r, t, s] = sum_c G_0[c, r] dM[c, t, s]` (a contraction with the
    /// prepared `G_0`).
    fn split_head_gradient(&self, g_merged: &Array3<f32>) -> Result<(Array3<f32>, Array3<f32>)> {
        let backend = self.backend();
        let cores = self.layer().tt().cores();
        let (r1, k, r2) = cores[1].dim();
        let cin = cores[0].shape()[1];
        let gm = backend.upload(reshaped(g_merged, &[1, cin, k * r2]).view())?;
        let core = backend.upload(reshaped(&cores[1], &[1, r1, k * r2]).view())?;
        let g_first = backend.contract_channels_grad_weight(&gm, &core)?;
        let first = &self.factorized_weights().first;
        let g_core = backend.download_owned(backend.contract_channels(&gm, first, None)?)?;
        Ok((
            into_core(g_first.into_dyn(), (1, cin, r1)),
            into_core(g_core, (r1, k, r2)),
        ))
    }

    fn reconstructed_backward(
        &self,
        x: &B::Tensor,
        gy: &B::Tensor,
        input_grad: bool,
    ) -> Result<InputAndCoreGrads<B::Tensor>> {
        let backend = self.backend();
        let layer = self.layer();
        let geometry = layer.geometry();
        let kernel_size = &layer.config().kernel_size;
        let g_kernel = backend.conv_dense_grad_weight(x, gy, kernel_size, geometry)?;
        let input = if input_grad {
            let spatial = backend.shape(x)[2..].to_vec();
            Some(backend.conv_dense_grad_input(gy, self.dense_kernel()?, geometry, &spatial)?)
        } else {
            None
        };
        Ok((input, project_onto_cores(layer, g_kernel.view())?))
    }
}

/// Projects a dense kernel gradient `(out, in, k..)` onto every core (see the module docs), in
/// f64 by [`tt_core::TtTensor::project_dense_gradient`].
fn project_onto_cores(layer: &TtConv, g_kernel: ArrayViewD<'_, f32>) -> Result<Vec<Array3<f32>>> {
    let d = layer.order();
    // (out, in, k..) -> (in, k.., out)
    let mut perm: Vec<usize> = (1..d + 2).collect();
    perm.push(0);
    Ok(layer
        .tt()
        .project_dense_gradient(g_kernel.permuted_axes(IxDyn(&perm)))?)
}

/// `a` reshaped row-major to `shape` (a copy only when `a` is not in standard layout).
fn reshaped<'a>(a: &'a Array3<f32>, shape: &[usize]) -> ndarray::CowArray<'a, f32, IxDyn> {
    a.to_shape(IxDyn(shape))
        .expect("the caller's sizes multiply out")
}

/// A gradient from the backend reshaped row-major to a core.
fn into_core(a: ArrayD<f32>, shape: (usize, usize, usize)) -> Array3<f32> {
    // `iter` walks the logical (row-major) order whatever the array's memory layout.
    Array3::from_shape_vec(shape, a.iter().copied().collect())
        .expect("the caller's sizes multiply out")
}
