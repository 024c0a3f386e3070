//! Forward passes: a layer's weights prepared once for a backend, then run on inputs.

use std::sync::OnceLock;

use ndarray::{ArrayD, ArrayViewD};

use crate::backend::{Backend, FactorizedWeights};
use crate::config::Implementation;
use crate::error::{Error, Result};
use crate::layer::TtConv;
use crate::program::{FactorizedProgram, StepWeight, StepWeights};

/// A layer's weights uploaded to a backend, ready for repeated forward passes.
///
/// The factorized weights are uploaded at preparation; the dense kernel (reconstructed once by
/// [`TtConv::full_weights`]) is uploaded the first time the reconstructed path runs and kept, and
/// so are the merged end cores the first time a [`FactorizedProgram`] merges them: this is the
/// one cache of merged cores.
/// The preparation borrows the layer: changing the weights means preparing again.
#[derive(Debug)]
pub struct PreparedTtConv<'a, B: Backend> {
    layer: &'a TtConv,
    backend: &'a B,
    factorized: FactorizedWeights<B>,
    dense_kernel: OnceLock<B::Weights>,
    merged_head: OnceLock<B::Weights>,
    merged_tail: OnceLock<B::Weights>,
}

impl TtConv {
    /// Uploads the layer's weights to `backend` for repeated forward passes.
    pub fn prepare<'a, B: Backend>(&'a self, backend: &'a B) -> Result<PreparedTtConv<'a, B>> {
        let (first, spatial, last) = self.factor_matrices();
        let factorized = FactorizedWeights {
            first: backend.upload_weights(first.view())?,
            spatial: spatial
                .iter()
                .map(|c| backend.upload_weights(c.view()))
                .collect::<Result<_>>()?,
            last: backend.upload_weights(last.view())?,
            bias: self
                .bias()
                .map(|b| backend.upload_weights(b.view().into_dyn()))
                .transpose()?,
        };
        Ok(PreparedTtConv {
            layer: self,
            backend,
            factorized,
            dense_kernel: OnceLock::new(),
            merged_head: OnceLock::new(),
            merged_tail: OnceLock::new(),
        })
    }

    /// Runs the layer on a host input `(batch, in, D_1..D_d)` with its configured
    /// implementation and returns `(batch, out, D'_1..D'_d)`.
    ///
    /// This prepares the weights on every call; keep a [`PreparedTtConv`] to run many inputs.
    pub fn forward<B: Backend>(&self, backend: &B, x: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>> {
        self.forward_with(backend, x, self.config().implementation)
    }

    /// Like [`Self::forward`] with an explicit implementation.
    pub fn forward_with<B: Backend>(
        &self,
        backend: &B,
        x: ArrayViewD<'_, f32>,
        implementation: Implementation,
    ) -> Result<ArrayD<f32>> {
        self.output_shape(x.shape())?;
        let prepared = self.prepare(backend)?;
        let xt = backend.upload(x)?;
        let y = prepared.forward_with(&xt, implementation)?;
        backend.download_owned(y)
    }
}

impl<'a, B: Backend> PreparedTtConv<'a, B> {
    /// The layer this was prepared from.
    pub fn layer(&self) -> &'a TtConv {
        self.layer
    }

    /// The backend the weights live on.
    pub fn backend(&self) -> &'a B {
        self.backend
    }

    /// The uploaded factorized weights.
    pub fn factorized_weights(&self) -> &FactorizedWeights<B> {
        &self.factorized
    }

    /// The uploaded dense kernel `(out, in, k_1..k_d)`, uploading it on first use.
    pub fn dense_kernel(&self) -> Result<&B::Weights> {
        upload_once(&self.dense_kernel, || {
            self.backend
                .upload_weights(self.layer.full_weights().view())
        })
    }

    /// The merged head core `G_0 G_1` `(in, k_1, r_2)`, uploading it on first use.
    pub fn merged_head(&self) -> Result<&B::Weights> {
        upload_once(&self.merged_head, || {
            self.backend
                .upload_weights(self.layer.merged_head().view().into_dyn())
        })
    }

    /// The merged tail core `G_d G_{d+1}` `(r_d, k_d, out)`, uploading it on first use.
    pub fn merged_tail(&self) -> Result<&B::Weights> {
        upload_once(&self.merged_tail, || {
            self.backend
                .upload_weights(self.layer.merged_tail().view().into_dyn())
        })
    }

    /// The implementation a forward on `input_shape` runs (`Auto` resolved with the backend's
    /// cost constants).
    pub fn implementation_for(
        &self,
        input_shape: &[usize],
        implementation: Implementation,
    ) -> Result<Implementation> {
        self.layer.resolve_implementation(
            input_shape,
            implementation,
            &self.backend.cost_constants(),
        )
    }

    /// Runs the layer's configured implementation on a backend tensor.
    pub fn forward(&self, x: &B::Tensor) -> Result<B::Tensor> {
        self.forward_with(x, self.layer.config().implementation)
    }

    /// Runs `implementation` on a backend tensor `(batch, in, D_1..D_d)`.
    pub fn forward_with(&self, x: &B::Tensor, implementation: Implementation) -> Result<B::Tensor> {
        let shape = self.backend.shape(x);
        match self.implementation_for(&shape, implementation)? {
            Implementation::Reconstructed => self.backend.conv_dense(
                x,
                self.dense_kernel()?,
                self.factorized.bias.as_ref(),
                self.layer.geometry(),
            ),
            _ => {
                let program = self.layer.program(&shape)?;
                let weights = self.weights_of(&program)?;
                self.backend.factorized_forward(x, &program, &weights)
            }
        }
    }

    /// The weights of `program`'s steps on this backend (the merged end cores uploaded on first
    /// use); an error when `program` was not built by this layer.
    pub fn step_weights(&self, program: &FactorizedProgram) -> Result<StepWeights<'_, B>> {
        let own = self.layer.program(program.input_shape())?;
        if own != *program {
            return Err(Error::Shape {
                what: "factorized program".into(),
                expected: format!(
                    "a program of this layer (ranks {:?}) for input {:?}",
                    self.layer.ranks(),
                    program.input_shape()
                ),
                got: program.ranks().to_vec(),
            });
        }
        self.weights_of(program)
    }

    /// [`Self::step_weights`] for a program this layer just built (no re-check).
    pub(crate) fn weights_of(&self, program: &FactorizedProgram) -> Result<StepWeights<'_, B>> {
        let w = &self.factorized;
        let steps = program
            .steps()
            .iter()
            .map(|step| match step.weight {
                StepWeight::First => Ok(&w.first),
                StepWeight::Spatial(j) => Ok(&w.spatial[j]),
                StepWeight::Last => Ok(&w.last),
                StepWeight::MergedHead => self.merged_head(),
                StepWeight::MergedTail => self.merged_tail(),
            })
            .collect::<Result<_>>()?;
        Ok(StepWeights {
            steps,
            bias: w.bias.as_ref(),
        })
    }
}

/// The value of `cell`, filled by `upload` on first use (an error leaves it empty).
fn upload_once<W>(cell: &OnceLock<W>, upload: impl FnOnce() -> Result<W>) -> Result<&W> {
    if let Some(w) = cell.get() {
        return Ok(w);
    }
    let w = upload()?;
    Ok(cell.get_or_init(|| w))
}
