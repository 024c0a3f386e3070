//! [`CudaBackend`]: the [`ttconv::Backend`] primitives on one CUDA device (the computations
//! themselves live in `ops.rs`).
//!
//! Channel contractions are cuBLAS strided batched SGEMMs over the batch; the 1-D convolution
//! along an axis and its transpose are NVRTC kernels; the dense N-D convolution is im2col +
//! SGEMM (a 1x1 stride-1 kernel skips the im2col); weight gradients are im2col + batched SGEMM
//! followed by a reduction over the batch. Everything runs on the device's single stream; only
//! [`Backend::download`] and the weight/bias gradients (returned as host arrays, as the trait
//! says) wait for it.

use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use ttconv::{AxisGeometry, Backend};

use crate::compile::CompileTarget;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::exec::Exec;
use crate::tensor::{CudaTensor, CudaWeights, DeviceArray};

/// Default bound on the scratch memory (im2col columns and per-batch partial products) one call
/// allocates, in f32 elements (256 MiB); larger batches are processed in chunks.
pub const DEFAULT_WORKSPACE_ELEMS: usize = 1 << 26;

/// The CUDA backend: device-resident tensors, cuBLAS GEMMs and NVRTC kernels on one device.
///
/// Cheap to clone: every backend on a device shares its context, stream, cuBLAS handle and
/// compiled kernels (compiled once per process and device).
#[derive(Debug, Clone)]
pub struct CudaBackend {
    pub(crate) dev: Arc<Device>,
    pub(crate) allow_tf32: bool,
    pub(crate) workspace_elems: usize,
    pub(crate) sync_each_launch: bool,
}

impl CudaBackend {
    /// The backend on device 0. Returns an error (never panics) when the CUDA driver, NVRTC,
    /// cuBLAS or the device is missing, or the kernels do not compile.
    pub fn new() -> ttconv::Result<Self> {
        Self::with_device(0)
    }

    /// The backend on device `ordinal`; errors as [`Self::new`].
    pub fn with_device(ordinal: usize) -> ttconv::Result<Self> {
        Self::open(ordinal).map_err(|e| e.into_ttconv(format!("cuda:{ordinal}")))
    }

    /// Like [`Self::with_device`] with this crate's typed [`Error`] (e.g. to tell
    /// [`Error::NoDevice`] from a compile error, see [`Error::is_unavailable`]).
    pub fn open(ordinal: usize) -> Result<Self> {
        Ok(Self {
            dev: Device::get(ordinal)?,
            allow_tf32: false,
            workspace_elems: DEFAULT_WORKSPACE_ELEMS,
            sync_each_launch: false,
        })
    }

    /// Lets cuBLAS use TF32 tensor cores for the GEMMs (faster, about 1e-3 relative error);
    /// off by default, so results match the CPU backend to f32 rounding.
    pub fn with_tf32(mut self, allow: bool) -> Self {
        self.allow_tf32 = allow;
        self
    }

    /// Bounds the scratch memory one call allocates, in f32 elements (at least one batch
    /// element's worth is always used). Default [`DEFAULT_WORKSPACE_ELEMS`].
    pub fn with_workspace_limit(mut self, elems: usize) -> Self {
        self.workspace_elems = elems.max(1);
        self
    }

    /// A debugging mode, off by default: waits for the stream after every kernel launch and
    /// GEMM, so that a kernel that faults is reported by its own call ([`Error::LaunchFault`]
    /// names it) instead of by whichever later call synchronizes first. Much slower: use it to
    /// find a fault, not to time.
    pub fn with_sync_after_each_launch(mut self, on: bool) -> Self {
        self.sync_each_launch = on;
        self
    }

    /// Whether [`Self::with_sync_after_each_launch`] is on.
    pub fn syncs_after_each_launch(&self) -> bool {
        self.sync_each_launch
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.dev.ordinal
    }

    /// The device's name as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.dev.name
    }

    /// The architecture the kernels were compiled for: `sm_XY`, the device's own (a CUBIN the
    /// driver loads as it is), or `compute_XY` (PTX the driver compiles, for a device newer
    /// than the loaded NVRTC).
    pub fn arch(&self) -> String {
        self.dev.target.arch()
    }

    /// What the kernels were compiled to ([`CompileTarget`]).
    pub fn compile_target(&self) -> CompileTarget {
        self.dev.target
    }

    /// Waits until every operation enqueued so far has finished (for timing).
    pub fn synchronize(&self) -> ttconv::Result<()> {
        self.wrap(self.dev.synchronize())
    }

    /// The device and this backend's options, as every launcher and GEMM takes them.
    pub(crate) fn exec(&self) -> Exec<'_> {
        Exec {
            dev: &self.dev,
            tf32: self.allow_tf32,
            sync_each_launch: self.sync_each_launch,
        }
    }

    pub(crate) fn wrap<T>(&self, r: Result<T>) -> ttconv::Result<T> {
        r.map_err(|e| e.into_ttconv(self.name()))
    }

    /// How many batch elements of `per_item` scratch elements fit the workspace limit.
    pub(crate) fn chunk(&self, per_item: usize, batch: usize) -> usize {
        (self.workspace_elems / per_item.max(1)).clamp(1, batch.max(1))
    }

    pub(crate) fn alloc(&self, shape: Vec<usize>) -> Result<DeviceArray> {
        DeviceArray::uninit(&self.dev.stream, shape)
    }

    fn download_array(&self, a: &DeviceArray) -> Result<ArrayD<f32>> {
        let host = a.to_host(&self.dev.stream)?;
        ArrayD::from_shape_vec(IxDyn(a.shape()), host)
            .map_err(|e| Error::Unsupported(format!("downloaded array has the wrong size: {e}")))
    }
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type Weights = CudaWeights;

    fn name(&self) -> String {
        format!("cuda:{}", self.dev.ordinal)
    }

    fn upload(&self, x: ArrayViewD<'_, f32>) -> ttconv::Result<CudaTensor> {
        let x = x.as_standard_layout();
        let host = x.as_slice().expect("standard layout is contiguous");
        self.wrap(
            DeviceArray::from_host(&self.dev.stream, host, x.shape().to_vec()).map(CudaTensor),
        )
    }

    fn download(&self, x: &CudaTensor) -> ttconv::Result<ArrayD<f32>> {
        self.wrap(self.download_array(&x.0))
    }

    fn shape(&self, x: &CudaTensor) -> Vec<usize> {
        x.0.shape().to_vec()
    }

    fn reshape(&self, x: CudaTensor, shape: &[usize]) -> ttconv::Result<CudaTensor> {
        let want: usize = shape.iter().product();
        if want != x.0.len() {
            return Err(ttconv::Error::Shape {
                what: "reshape".into(),
                expected: format!("{want} elements (the new shape {shape:?})"),
                got: x.0.shape().to_vec(),
            });
        }
        Ok(CudaTensor(x.0.reshape(shape.to_vec())))
    }

    fn upload_weights(&self, w: ArrayViewD<'_, f32>) -> ttconv::Result<CudaWeights> {
        let w = w.as_standard_layout();
        let host = w.as_slice().expect("standard layout is contiguous");
        self.wrap(
            DeviceArray::from_host(&self.dev.stream, host, w.shape().to_vec()).map(CudaWeights),
        )
    }

    fn contract_channels(
        &self,
        x: &CudaTensor,
        w: &CudaWeights,
        bias: Option<&CudaWeights>,
    ) -> ttconv::Result<CudaTensor> {
        self.wrap(
            self.contract_impl(&x.0, &w.0, bias.map(|b| &b.0))
                .map(CudaTensor),
        )
    }

    fn conv_along(
        &self,
        x: &CudaTensor,
        axis: usize,
        core: &CudaWeights,
        geometry: AxisGeometry,
    ) -> ttconv::Result<CudaTensor> {
        self.wrap(
            self.conv_along_impl(&x.0, axis, &core.0, geometry)
                .map(CudaTensor),
        )
    }

    fn conv_dense(
        &self,
        x: &CudaTensor,
        kernel: &CudaWeights,
        bias: Option<&CudaWeights>,
        geometry: &[AxisGeometry],
    ) -> ttconv::Result<CudaTensor> {
        self.wrap(
            self.conv_dense_impl(&x.0, &kernel.0, bias.map(|b| &b.0), geometry)
                .map(CudaTensor),
        )
    }

    fn contract_channels_grad_input(
        &self,
        gy: &CudaTensor,
        w: &CudaWeights,
    ) -> ttconv::Result<CudaTensor> {
        self.wrap(self.contract_grad_input_impl(&gy.0, &w.0).map(CudaTensor))
    }

    fn contract_channels_grad_weight(
        &self,
        x: &CudaTensor,
        gy: &CudaTensor,
    ) -> ttconv::Result<CudaTensor> {
        self.wrap(self.contract_grad_weight_impl(&x.0, &gy.0).map(CudaTensor))
    }

    fn conv_along_grad_input(
        &self,
        gy: &CudaTensor,
        axis: usize,
        core: &CudaWeights,
        geometry: AxisGeometry,
        input_len: usize,
    ) -> ttconv::Result<CudaTensor> {
        self.wrap(
            self.conv_along_grad_input_impl(&gy.0, axis, &core.0, geometry, input_len)
                .map(CudaTensor),
        )
    }

    fn conv_along_grad_weight(
        &self,
        x: &CudaTensor,
        gy: &CudaTensor,
        axis: usize,
        kernel: usize,
        geometry: AxisGeometry,
    ) -> ttconv::Result<CudaTensor> {
        let g = self.conv_along_grad_weight_impl(&x.0, &gy.0, axis, kernel, geometry);
        self.wrap(g.map(CudaTensor))
    }

    fn conv_dense_grad_input(
        &self,
        gy: &CudaTensor,
        kernel: &CudaWeights,
        geometry: &[AxisGeometry],
        input_spatial: &[usize],
    ) -> ttconv::Result<CudaTensor> {
        self.wrap(
            self.conv_dense_grad_input_impl(&gy.0, &kernel.0, geometry, input_spatial)
                .map(CudaTensor),
        )
    }

    fn conv_dense_grad_weight(
        &self,
        x: &CudaTensor,
        gy: &CudaTensor,
        kernel_size: &[usize],
        geometry: &[AxisGeometry],
    ) -> ttconv::Result<CudaTensor> {
        self.wrap(
            self.conv_dense_grad_weight_impl(&x.0, &gy.0, kernel_size, geometry)
                .map(CudaTensor),
        )
    }

    fn add_bias(&self, mut y: CudaTensor, bias: &CudaWeights) -> ttconv::Result<CudaTensor> {
        let r = self.add_bias_impl(&mut y.0, &bias.0);
        self.wrap(r.map(|()| y))
    }

    fn bias_grad(&self, gy: &CudaTensor) -> ttconv::Result<CudaTensor> {
        self.wrap(self.bias_grad_impl(&gy.0).map(CudaTensor))
    }
}
