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
                let (y, acts) = backend.factorized_forward_train(
                    x,
                    self.factorized_weights(),
                    self.layer().geometry(),
                )?;
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

    fn factorized_backward(
        &self,
        acts: &FactorizedActivations<B::Tensor>,
        gy: &B::Tensor,
        input_grad: bool,
    ) -> Result<InputAndCoreGrads<B::Tensor>> {
        let backend = self.backend();
        let w = self.factorized_weights();
        let geometry = self.layer().geometry();
        let d = geometry.len();
        let stages = &acts.stages;
        let mut cores = vec![Array3::<f32>::zeros((0, 0, 0)); d + 2];
        let g_last = backend.contract_channels_grad_weight(&stages[d + 1], gy)?;
        cores[d + 1] = g_last.insert_axis(Axis(2));
        let mut g = backend.contract_channels_grad_input(gy, &w.last)?;
        for j in (0..d).rev() {
            let z = &stages[j + 1];
            let k = self.layer().config().kernel_size[j];
            cores[j + 1] = backend.conv_along_grad_weight(z, &g, j, k, geometry[j])?;
            let len = backend.shape(z)[j + 2];
            g = backend.conv_along_grad_input(&g, j, &w.spatial[j], geometry[j], len)?;
        }
        let g_first = backend.contract_channels_grad_weight(&stages[0], &g)?;
        cores[0] = g_first.insert_axis(Axis(0));
        let input = if input_grad {
            Some(backend.contract_channels_grad_input(&g, &w.first)?)
        } else {
            None
        };
        Ok((input, cores))
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
