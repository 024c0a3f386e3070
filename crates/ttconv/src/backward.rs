//! Backward passes: gradients of a scalar loss for the input, every TT core and the bias.
//!
//! Given `gy = dL/dy`:
//! - factorized: the backend's [`Backend::factorized_backward`] walks the steps of the training
//!   forward's [`FactorizedProgram`] in reverse (by default each through its backward
//!   counterparts: GEMM transposes for the contractions, a transposed 1-D convolution for the
//!   input gradient of each spatial step, the correlation of the step's kept input with the
//!   gradient for its weight; the CPU backend fuses them per batch item); the gradient of a merged end core is
//!   split on the backend into the gradients of the two cores it was made of. Every gradient
//!   stays a backend tensor until the end of the call, then is downloaded once;
//! - reconstructed: the dense kernel gradient `dL/dW` (a correlation of the input with `gy`), then
//!   projected onto each core by contracting with the left and right partial products of the other
//!   cores: `dL/dG_k[a, i, b] = sum_{p, q} L_k[p, a] dL/dT[p, i, q] R_k[b, q]`, where `T` is the
//!   kernel over `(in, k.., out)`, `L_k = G_0 .. G_{k-1}` unfolded to `(n_0..n_{k-1}, r_k)` and
//!   `R_k = G_{k+1} .. G_N` unfolded to `(r_{k+1}, n_{k+1}..)`.
//!
//! Both give the same gradients up to rounding. A training context records which layer (and
//! which state of its weights) ran the forward: a backward with another layer is an error.

use ndarray::{Array1, Array3, ArrayD, ArrayViewD, IxDyn};

use crate::backend::Backend;
use crate::config::Implementation;
use crate::error::{Error, Result};
use crate::forward::PreparedTtConv;
use crate::layer::TtConv;
use crate::program::{FactorizedProgram, StepWeight};

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

/// The input gradient (when asked for, on the backend) and the core gradients (on the backend
/// for the factorized backward, `C = T`; on the host for the reconstructed one).
type InputAndCoreGrads<T, C = T> = (Option<T>, Vec<C>);

/// What a training forward ([`PreparedTtConv::forward_train`]) keeps for the backward pass, tied
/// to the layer (and the state of its weights) that ran it.
#[derive(Debug)]
pub struct TrainContext<T> {
    layer_stamp: u64,
    kept: Kept<T>,
}

#[derive(Debug)]
enum Kept<T> {
    /// The program that ran and the input of each of its steps.
    Factorized {
        program: FactorizedProgram,
        inputs: Vec<T>,
    },
    /// The input of the dense convolution.
    Reconstructed { input: T },
}

impl<T> TrainContext<T> {
    /// The input the forward ran on.
    pub fn input(&self) -> &T {
        match &self.kept {
            Kept::Factorized { inputs, .. } => &inputs[0],
            Kept::Reconstructed { input } => input,
        }
    }
}

impl TtConv {
    /// Runs a training forward on `x` with `implementation` (`Auto` resolved by the cost model)
    /// and then the backward for the upstream gradient `grad_y = dL/dy`: returns the output and
    /// the gradients, the input gradient only when `input_grad` (skip it for a first layer).
    ///
    /// This prepares the weights on every call; to run the backward of a forward already done,
    /// keep a [`PreparedTtConv`] and use [`PreparedTtConv::forward_train`] and
    /// [`PreparedTtConv::backward`].
    pub fn forward_backward<B: Backend>(
        &self,
        backend: &B,
        x: ArrayViewD<'_, f32>,
        grad_y: ArrayViewD<'_, f32>,
        implementation: Implementation,
        input_grad: bool,
    ) -> Result<(ArrayD<f32>, Gradients)> {
        self.output_shape(x.shape())?;
        let prepared = self.prepare(backend)?;
        let (y, ctx) = prepared.forward_train(backend.upload(x)?, implementation)?;
        let gy = backend.upload(grad_y)?;
        let grads = prepared.backward(&ctx, &gy, input_grad)?;
        Ok((backend.download_owned(y)?, grads))
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
        let layer_stamp = self.layer().stamp();
        match self.implementation_for(&shape, implementation)? {
            Implementation::Reconstructed => {
                let y = backend.conv_dense(
                    &x,
                    self.dense_kernel()?,
                    self.factorized_weights().bias.as_ref(),
                    self.layer().geometry(),
                )?;
                let kept = Kept::Reconstructed { input: x };
                Ok((y, TrainContext { layer_stamp, kept }))
            }
            _ => {
                let program = self.layer().program(&shape)?;
                let weights = self.weights_of(&program)?;
                let (y, inputs) = backend.factorized_forward_train(x, &program, &weights)?;
                let kept = Kept::Factorized { program, inputs };
                Ok((y, TrainContext { layer_stamp, kept }))
            }
        }
    }

    /// Gradients from a training forward's context and `gy = dL/dy` (same shape as its output).
    /// The context must come from a forward of this layer with its current weights.
    pub fn backward(
        &self,
        ctx: &TrainContext<B::Tensor>,
        gy: &B::Tensor,
        input_grad: bool,
    ) -> Result<Gradients> {
        let backend = self.backend();
        if ctx.layer_stamp != self.layer().stamp() {
            return Err(Error::State(
                "training context: it was made by a forward of another layer (or of this layer \
                 before its weights changed); run forward_train with this layer first"
                    .into(),
            ));
        }
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
        // Every gradient stays on the backend until here: one download each, at the end.
        let (input, cores) = match &ctx.kept {
            Kept::Factorized { program, inputs } => {
                let (input, cores) = self.factorized_backward(program, inputs, gy, input_grad)?;
                let shapes = self.layer().tt().cores().iter().map(Array3::dim);
                let cores = cores
                    .into_iter()
                    .zip(shapes)
                    .map(|(g, shape)| Ok(into_core(backend.download_owned(g)?, shape)))
                    .collect::<Result<_>>()?;
                (input, cores)
            }
            Kept::Reconstructed { input } => self.reconstructed_backward(input, gy, input_grad)?,
        };
        let bias = bias
            .map(|b| -> Result<Array1<f32>> {
                let b = backend.download_owned(b)?;
                Ok(Array1::from_iter(b.iter().copied()))
            })
            .transpose()?;
        Ok(Gradients {
            input: input.map(|t| backend.download_owned(t)).transpose()?,
            cores,
            bias,
        })
    }

    /// The backend's factorized backward ([`Backend::factorized_backward`]: the steps in
    /// reverse), then each step's weight gradient filed under the cores it is made of.
    fn factorized_backward(
        &self,
        program: &FactorizedProgram,
        inputs: &[B::Tensor],
        gy: &B::Tensor,
        input_grad: bool,
    ) -> Result<InputAndCoreGrads<B::Tensor>> {
        let backend = self.backend();
        // The context's stamp was checked: the program is this layer's.
        let weights = self.weights_of(program)?;
        let (input, step_grads) =
            backend.factorized_backward(program, &weights, inputs, gy, input_grad)?;
        let mut grads: Vec<Option<B::Tensor>> =
            (0..self.layer().order() + 2).map(|_| None).collect();
        for (step, g) in program.steps().iter().zip(step_grads) {
            self.assign_gradient(step.weight, g, &mut grads)?;
        }
        let grads = grads
            .into_iter()
            .map(|g| g.expect("every core is read by one step"))
            .collect();
        Ok((input, grads))
    }

    /// Files the gradient of one step's weight (a backend tensor) under the cores it is made of,
    /// reshaped to the cores' shapes; a merged core's gradient is split on the backend.
    fn assign_gradient(
        &self,
        weight: StepWeight,
        g: B::Tensor,
        grads: &mut [Option<B::Tensor>],
    ) -> Result<()> {
        let backend = self.backend();
        let d = self.layer().order();
        let cores = self.layer().tt().cores();
        let as_core = |g, k: usize| backend.reshape(g, cores[k].shape());
        match weight {
            StepWeight::First => grads[0] = Some(as_core(g, 0)?),
            StepWeight::Spatial(j) => grads[j + 1] = Some(g),
            StepWeight::Last => grads[d + 1] = Some(as_core(g, d + 1)?),
            StepWeight::MergedHead => {
                let (g0, g1) =
                    self.split_merged_gradient(0, g, &self.factorized_weights().first)?;
                (grads[0], grads[1]) = (Some(g0), Some(g1));
            }
            StepWeight::MergedTail => {
                let gd = backend.upload_weights(unfold_left(&cores[d]).view())?;
                let (gd, gl) = self.split_merged_gradient(d, g, &gd)?;
                (grads[d], grads[d + 1]) = (Some(gd), Some(gl));
            }
        }
        Ok(())
    }

    /// The gradients of neighbouring cores `A = G_k (p, n, r)` and `B = G_{k+1} (r, m, q)` from
    /// that of their merged core `M`, with `M[(p n), (m q)] = A[(p n), r] B[r, (m q)]`
    /// (the merged head `(in, k_1, r_2)` is `k = 0`, `p = 1`; the merged tail
    /// `(r_d, k_d, out)` is `k = d`, `q = 1`): `dA = dM B^T` and `dB = A^T dM`, as two GEMMs on
    /// the backend with `dM` viewed as a one-item activation `(1, p n, m q)`:
    /// `dA` is the weight gradient of a contraction against `B` viewed as `(1, r, m q)`, `dB`
    /// the contraction of `dM` with `A` as an `(p n, r)` weight (`a_weight`).
    fn split_merged_gradient(
        &self,
        k: usize,
        g_merged: B::Tensor,
        a_weight: &B::Weights,
    ) -> Result<(B::Tensor, B::Tensor)> {
        let backend = self.backend();
        let cores = self.layer().tt().cores();
        let (a, b) = (&cores[k], &cores[k + 1]);
        let (p, n, _) = a.dim();
        let (r, m, q) = b.dim();
        let gm = backend.reshape(g_merged, &[1, p * n, m * q])?;
        let b_rows = b.to_shape(IxDyn(&[1, r, m * q])).expect("core sizes");
        let b_rows = backend.upload(b_rows.view())?;
        let ga = backend.contract_channels_grad_weight(&gm, &b_rows)?;
        let gb = backend.contract_channels(&gm, a_weight, None)?;
        Ok((
            backend.reshape(ga, a.shape())?,
            backend.reshape(gb, b.shape())?,
        ))
    }

    fn reconstructed_backward(
        &self,
        x: &B::Tensor,
        gy: &B::Tensor,
        input_grad: bool,
    ) -> Result<InputAndCoreGrads<B::Tensor, Array3<f32>>> {
        let backend = self.backend();
        let layer = self.layer();
        let geometry = layer.geometry();
        let kernel_size = &layer.config().kernel_size;
        let g_kernel = backend.conv_dense_grad_weight(x, gy, kernel_size, geometry)?;
        let g_kernel = backend.download_owned(g_kernel)?;
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

/// A core `(p, n, r)` unfolded to the row-major matrix `(p n, r)`.
fn unfold_left(core: &Array3<f32>) -> ndarray::CowArray<'_, f32, IxDyn> {
    let (p, n, r) = core.dim();
    core.to_shape(IxDyn(&[p * n, r])).expect("core sizes")
}

/// A gradient from the backend reshaped row-major to a core.
fn into_core(a: ArrayD<f32>, shape: (usize, usize, usize)) -> Array3<f32> {
    // A row-major gradient is reshaped in place; another layout is copied in logical order first.
    let a = if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    };
    a.into_shape_with_order(shape)
        .expect("the program's weight shapes are the cores' shapes")
}
