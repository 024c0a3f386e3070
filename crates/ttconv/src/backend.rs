//! The `Backend` trait: the primitives a TT convolution is made of, and their backward passes.
//!
//! Activations live in the backend's [`Backend::Tensor`] (host memory for the CPU, device memory
//! for CUDA), always f32, laid out like PyTorch: `(batch, channels, D_1, ..., D_d)`, row-major.
//! Weights are uploaded once into [`Backend::Weights`] (a backend may transpose or pack them
//! there) and reused by every call.
//!
//! Notation used below: `x` is an input activation, `gy` the gradient of a scalar loss with
//! respect to a primitive's output, `D` the spatial positions. Spatial axes are numbered from 0
//! (axis `j` of the activation is array axis `j + 2`).
//!
//! The factorized forward is the default method [`Backend::factorized_forward`], which runs the
//! steps of a [`FactorizedProgram`] through the primitives; a backend may override it with a
//! fused version of the same steps as long as the result is the same. Backends never plan: the
//! layer builds the program (with every step's shapes validated) and hands it over.

use ndarray::{ArrayD, ArrayViewD};

use crate::cost::CostConstants;
use crate::error::Result;
use crate::geometry::AxisGeometry;
use crate::program::{FactorizedProgram, StepGradients, StepWeights};

/// The weights of a factorized TT convolution, prepared for one backend.
///
/// For a layer of order `d` with TT ranks `(1, r_1, ..., r_{d+1}, 1)`:
/// `first` is `G_0` as a matrix `(in, r_1)`, `spatial[j]` is `G_{j+1}` of shape
/// `(r_{j+1}, k_j, r_{j+2})`, `last` is `G_{d+1}` as a matrix `(r_{d+1}, out)`, and `bias` is
/// `(out,)`.
#[derive(Debug)]
pub struct FactorizedWeights<B: Backend + ?Sized> {
    /// `G_0` reshaped to `(in, r_1)`.
    pub first: B::Weights,
    /// `G_1 .. G_d`, each `(r_j, k_j, r_{j+1})`.
    pub spatial: Vec<B::Weights>,
    /// `G_{d+1}` reshaped to `(r_{d+1}, out)`.
    pub last: B::Weights,
    /// The bias `(out,)`, if the layer has one.
    pub bias: Option<B::Weights>,
}

/// A compute backend for TT convolutions.
///
/// The layer validates shapes before it calls a backend (a [`FactorizedProgram`]'s steps are
/// consistent by construction); a backend still returns a typed error, never a panic, for
/// operands that do not fit together when a primitive is called directly, and for its own
/// failures (out of memory, a device error, ...).
pub trait Backend: Send + Sync {
    /// An f32 activation tensor `(batch, channels, D_1..D_d)` resident on the backend.
    type Tensor: Send + Sync;
    /// An f32 weight array resident on the backend, in whatever layout the backend prefers.
    type Weights: Send + Sync + std::fmt::Debug;

    /// A short name for messages and reports (`"cpu"`, `"cuda:0"`).
    fn name(&self) -> String;

    /// Throughputs used by `Auto` to choose an implementation on this backend (measured
    /// constants where the backend has them).
    fn cost_constants(&self) -> CostConstants {
        CostConstants::default()
    }

    /// Copies a host array into a backend tensor (row-major, any input strides accepted).
    fn upload(&self, x: ArrayViewD<'_, f32>) -> Result<Self::Tensor>;
    /// Copies a backend tensor back to the host.
    fn download(&self, x: &Self::Tensor) -> Result<ArrayD<f32>>;
    /// Moves a backend tensor to the host; the default copies it with [`Self::download`], a
    /// backend whose tensors already live on the host returns them without a copy.
    fn download_owned(&self, x: Self::Tensor) -> Result<ArrayD<f32>> {
        self.download(&x)
    }

    /// The shape of a backend tensor.
    fn shape(&self, x: &Self::Tensor) -> Vec<usize>;

    /// The same elements, row-major, under another shape with the same number of elements (a
    /// change of metadata on backends whose tensors are contiguous).
    fn reshape(&self, x: Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;

    /// Uploads (and possibly repacks) a weight array once; its logical shape is kept.
    fn upload_weights(&self, w: ArrayViewD<'_, f32>) -> Result<Self::Weights>;

    /// Channel contraction (a 1x1 convolution):
    /// `y[b, o, D] = sum_c w[c, o] * x[b, c, D] + bias[o]`, with `w` of shape `(c_in, c_out)`
    /// and `bias` of shape `(c_out,)`.
    fn contract_channels(
        &self,
        x: &Self::Tensor,
        w: &Self::Weights,
        bias: Option<&Self::Weights>,
    ) -> Result<Self::Tensor>;

    /// 1-D convolution along spatial axis `axis` only, mixing channels:
    /// `y[b, s, .., p, ..] = sum_{a, t} core[a, t, s] * x[b, a, .., p * stride + t * dilation - pad_before, ..]`
    /// (zero outside the input), `core` of shape `(r_in, k, r_out)`; the other spatial axes are
    /// untouched. Output length along `axis` per [`AxisGeometry::output_len`].
    fn conv_along(
        &self,
        x: &Self::Tensor,
        axis: usize,
        core: &Self::Weights,
        geometry: AxisGeometry,
    ) -> Result<Self::Tensor>;

    /// Dense N-D convolution (PyTorch's cross-correlation) with `kernel` of shape
    /// `(out, in, k_1..k_d)`:
    /// `y[b, o, p] = bias[o] + sum_{c, t} kernel[o, c, t] * x[b, c, p * stride + t * dilation - pad_before]`.
    fn conv_dense(
        &self,
        x: &Self::Tensor,
        kernel: &Self::Weights,
        bias: Option<&Self::Weights>,
        geometry: &[AxisGeometry],
    ) -> Result<Self::Tensor>;

    /// Input gradient of [`Self::contract_channels`]: `gx[b, c, D] = sum_o w[c, o] * gy[b, o, D]`.
    fn contract_channels_grad_input(
        &self,
        gy: &Self::Tensor,
        w: &Self::Weights,
    ) -> Result<Self::Tensor>;

    /// Weight gradient of [`Self::contract_channels`]:
    /// `gw[c, o] = sum_{b, D} x[b, c, D] * gy[b, o, D]`, a backend tensor of shape
    /// `(c_in, c_out)` (gradients stay on the backend until the caller downloads them).
    fn contract_channels_grad_weight(
        &self,
        x: &Self::Tensor,
        gy: &Self::Tensor,
    ) -> Result<Self::Tensor>;

    /// Input gradient of [`Self::conv_along`] (a transposed 1-D convolution along `axis`):
    /// `gx[b, a, .., i, ..] = sum_{s, t, p : p * stride + t * dilation - pad_before = i} core[a, t, s] * gy[b, s, .., p, ..]`,
    /// with `input_len` the length of `x` along `axis` (not recoverable from `gy` when
    /// `stride > 1`).
    fn conv_along_grad_input(
        &self,
        gy: &Self::Tensor,
        axis: usize,
        core: &Self::Weights,
        geometry: AxisGeometry,
        input_len: usize,
    ) -> Result<Self::Tensor>;

    /// Core gradient of [`Self::conv_along`]:
    /// `gcore[a, t, s] = sum_{b, p, other D} x[b, a, .., p * stride + t * dilation - pad_before, ..] * gy[b, s, .., p, ..]`,
    /// a backend tensor of shape `(r_in, kernel, r_out)`.
    fn conv_along_grad_weight(
        &self,
        x: &Self::Tensor,
        gy: &Self::Tensor,
        axis: usize,
        kernel: usize,
        geometry: AxisGeometry,
    ) -> Result<Self::Tensor>;

    /// Input gradient of [`Self::conv_dense`], with `input_spatial` the spatial shape of `x`.
    fn conv_dense_grad_input(
        &self,
        gy: &Self::Tensor,
        kernel: &Self::Weights,
        geometry: &[AxisGeometry],
        input_spatial: &[usize],
    ) -> Result<Self::Tensor>;

    /// Kernel gradient of [`Self::conv_dense`]:
    /// `gk[o, c, t] = sum_{b, p} x[b, c, p * stride + t * dilation - pad_before] * gy[b, o, p]`,
    /// a backend tensor of shape `(out, in, k_1..k_d)` with `kernel_size = (k_1..k_d)`.
    fn conv_dense_grad_weight(
        &self,
        x: &Self::Tensor,
        gy: &Self::Tensor,
        kernel_size: &[usize],
        geometry: &[AxisGeometry],
    ) -> Result<Self::Tensor>;

    /// Adds a bias to `y` (in place where the backend can): `y[b, o, D] += bias[o]`, `bias` of
    /// shape `(out,)`. Used where the last step of a chain is not a contraction (a merged tail).
    fn add_bias(&self, y: Self::Tensor, bias: &Self::Weights) -> Result<Self::Tensor>;

    /// Bias gradient: `gb[o] = sum_{b, D} gy[b, o, D]`, a backend tensor of shape `(out,)`.
    fn bias_grad(&self, gy: &Self::Tensor) -> Result<Self::Tensor>;

    /// The factorized forward: runs the steps of `program` on `x` (shape
    /// [`FactorizedProgram::input_shape`]) with `weights[i]` the weight of step `i`, and returns
    /// the output (shape [`FactorizedProgram::output_shape`]).
    ///
    /// The default runs each step through the primitives ([`FactorizedProgram::run`]) and
    /// materialises every intermediate; a backend may override it with a fused version of the
    /// same steps giving the same result.
    fn factorized_forward(
        &self,
        x: &Self::Tensor,
        program: &FactorizedProgram,
        weights: &StepWeights<'_, Self>,
    ) -> Result<Self::Tensor> {
        program.run(self, x, weights)
    }

    /// The factorized forward that keeps what the backward needs: returns the output and the
    /// input of every step, in order (`x`, moved in, first).
    fn factorized_forward_train(
        &self,
        x: Self::Tensor,
        program: &FactorizedProgram,
        weights: &StepWeights<'_, Self>,
    ) -> Result<(Self::Tensor, Vec<Self::Tensor>)> {
        program.run_keeping_inputs(self, x, weights)
    }

    /// The factorized backward: from the step inputs `kept` of a
    /// [`Self::factorized_forward_train`] of `program` and `gy = dL/dy` (shape
    /// [`FactorizedProgram::output_shape`]), returns `dL/dx` (when `input_grad`) and the gradient
    /// of every step's weight in step order, each of shape [`crate::Step::weight_shape`]. The bias
    /// gradient is [`Self::bias_grad`].
    ///
    /// The default walks the steps in reverse through the primitives
    /// ([`FactorizedProgram::backward`]), materialising every intermediate gradient; a backend
    /// may override it with a fused version giving the same gradients up to rounding.
    fn factorized_backward(
        &self,
        program: &FactorizedProgram,
        weights: &StepWeights<'_, Self>,
        kept: &[Self::Tensor],
        gy: &Self::Tensor,
        input_grad: bool,
    ) -> Result<StepGradients<Self::Tensor>> {
        program.backward(self, weights, kept, gy, input_grad)
    }
}
