//! Backward passes: gradients of a scalar loss for the input, every TT core and the bias.
//!
//! Given `gy = dL/dy`:
//! - factorized: the steps of the training forward's [`FactorizedProgram`] are walked in
//!   reverse, each through its backward counterpart (GEMM transposes for the contractions, a
//!   transposed 1-D convolution for the input gradient of each spatial step, the correlation of
//!   the step's kept input with the gradient for its weight); the gradient of a merged end core is
//!   split into the gradients of the two cores it was made of (see [`split_merged_gradient`]);
//! - reconstructed: the dense kernel gradient `dL/dW` (a correlation of the input with `gy`), then
//!   projected onto each core by contracting with the left and right partial products of the other
//!   cores: `dL/dG_k[a, i, b] = sum_{p, q} L_k[p, a] dL/dT[p, i, q] R_k[b, q]`, where `T` is the
//!   kernel over `(in, k.., out)`, `L_k = G_0 .. G_{k-1}` unfolded to `(n_0..n_{k-1}, r_k)` and
//!   `R_k = G_{k+1} .. G_N` unfolded to `(r_{k+1}, n_{k+1}..)`.
//!
//! Both give the same gradients up to rounding. A training context records which layer (and
//! which state of its weights) ran the forward: a backward with another layer is an error.

use ndarray::{Array1, Array2, Array3, ArrayD, ArrayView2, ArrayViewD, IxDyn};

use crate::backend::Backend;
use crate::config::Implementation;
use crate::error::{Error, Result};
use crate::forward::PreparedTtConv;
use crate::layer::TtConv;
use crate::program::{FactorizedProgram, StepOp, StepWeight};

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

    /// The implementation that ran (`Factorized` or `Reconstructed`).
    pub fn implementation(&self) -> Implementation {
        match self.kept {
            Kept::Factorized { .. } => Implementation::Factorized,
            Kept::Reconstructed { .. } => Implementation::Reconstructed,
        }
    }

    /// The factorized program that ran, if the forward was factorized.
    pub fn program(&self) -> Option<&FactorizedProgram> {
        match &self.kept {
            Kept::Factorized { program, .. } => Some(program),
            Kept::Reconstructed { .. } => None,
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
                let weights = self.step_weights(&program)?;
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
        let (input, cores) = match &ctx.kept {
            Kept::Factorized { program, inputs } => {
                self.factorized_backward(program, inputs, gy, input_grad)?
            }
            Kept::Reconstructed { input } => self.reconstructed_backward(input, gy, input_grad)?,
        };
        Ok(Gradients {
            input: input.map(|t| backend.download_owned(t)).transpose()?,
            cores,
            bias,
        })
    }

    /// Walks the program's steps in reverse: each step's weight gradient from its kept input
    /// and the gradient of its output, then the gradient of its input.
    fn factorized_backward(
        &self,
        program: &FactorizedProgram,
        inputs: &[B::Tensor],
        gy: &B::Tensor,
        input_grad: bool,
    ) -> Result<InputAndCoreGrads<B::Tensor>> {
        let backend = self.backend();
        let weights = self.step_weights(program)?;
        let steps = program.steps();
        debug_assert_eq!(inputs.len(), steps.len(), "one kept input per step");
        let mut grads = vec![Array3::<f32>::zeros((0, 0, 0)); self.layer().order() + 2];
        let mut g: Option<B::Tensor> = None;
        for (i, step) in steps.iter().enumerate().rev() {
            let upstream = g.as_ref().unwrap_or(gy);
            let z = &inputs[i];
            let w = weights.steps[i];
            let g_weight = match step.op {
                StepOp::Contract => backend
                    .contract_channels_grad_weight(z, upstream)?
                    .into_dyn(),
                StepOp::ConvAlong {
                    axis,
                    kernel,
                    geometry,
                } => backend
                    .conv_along_grad_weight(z, upstream, axis, kernel, geometry)?
                    .into_dyn(),
            };
            self.assign_gradient(step.weight, g_weight, &mut grads);
            let g_input = if i > 0 || input_grad {
                Some(match step.op {
                    StepOp::Contract => backend.contract_channels_grad_input(upstream, w)?,
                    StepOp::ConvAlong { axis, geometry, .. } => {
                        let len = step.input_shape[axis + 2];
                        backend.conv_along_grad_input(upstream, axis, w, geometry, len)?
                    }
                })
            } else {
                None
            };
            g = g_input;
        }
        Ok((if input_grad { g } else { None }, grads))
    }

    /// Files the gradient of one step's weight under the cores it is made of.
    fn assign_gradient(&self, weight: StepWeight, g: ArrayD<f32>, grads: &mut [Array3<f32>]) {
        let d = self.layer().order();
        let cores = self.layer().tt().cores();
        match weight {
            StepWeight::First => grads[0] = into_core(g, cores[0].dim()),
            StepWeight::Spatial(j) => grads[j + 1] = into_core(g, cores[j + 1].dim()),
            StepWeight::Last => grads[d + 1] = into_core(g, cores[d + 1].dim()),
            StepWeight::MergedHead => {
                let (g0, g1) = split_merged_gradient(&cores[0], &cores[1], &g);
                (grads[0], grads[1]) = (g0, g1);
            }
            StepWeight::MergedTail => {
                let (gd, gl) = split_merged_gradient(&cores[d], &cores[d + 1], &g);
                (grads[d], grads[d + 1]) = (gd, gl);
            }
        }
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

/// The gradients of two neighbouring cores `A (p, n, r)` and `B (r, m, q)` from that of their
/// merged core `M (p, n, m, q)` (stored as the step's weight: `(n, m, q)` for the head, where
/// `p = 1`, and `(p, n, m)` for the tail, where `q = 1`), with `M[(p n), (m q)] = A[(p n), r]
/// B[r, (m q)]`: `dA = dM B^T` and `dB = A^T dM`, accumulated in f64 on the host.
fn split_merged_gradient(
    a: &Array3<f32>,
    b: &Array3<f32>,
    g_merged: &ArrayD<f32>,
) -> (Array3<f32>, Array3<f32>) {
    let (p, n, r) = a.dim();
    let (_, m, q) = b.dim();
    let as_f64 = |v: ArrayView2<'_, f32>| v.mapv(f64::from);
    let am = as_f64(a.to_shape((p * n, r)).expect("core sizes").view());
    let bm = as_f64(b.to_shape((r, m * q)).expect("core sizes").view());
    let gm: Array2<f64> = Array2::from_shape_vec(
        (p * n, m * q),
        g_merged.iter().map(|&v| f64::from(v)).collect(),
    )
    .expect("a merged gradient has the merged core's size");
    // `iter` walks the products in logical (row-major) order whatever layout `dot` chose.
    let to_core = |g: Array2<f64>, shape| {
        Array3::from_shape_vec(shape, g.iter().map(|&v| v as f32).collect()).expect("core sizes")
    };
    (
        to_core(gm.dot(&bm.t()), (p, n, r)),
        to_core(am.t().dot(&gm), (r, m, q)),
    )
}

/// A gradient from the backend reshaped row-major to a core.
fn into_core(a: ArrayD<f32>, shape: (usize, usize, usize)) -> Array3<f32> {
    // `iter` walks the logical (row-major) order whatever the array's memory layout.
    Array3::from_shape_vec(shape, a.iter().copied().collect())
        .expect("the program's weight shapes are the cores' shapes")
}
