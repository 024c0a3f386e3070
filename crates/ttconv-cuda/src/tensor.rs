//! Device-resident tensors and weights.

use std::fmt;

use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut};

use crate::error::{Error, Result};

/// An f32 array in device memory, row-major, with its logical shape.
///
/// The allocation holds at least one element, so an empty shape (a zero in it) still owns a
/// valid (unused) buffer; only the first `len()` elements are ever read or written.
pub struct DeviceArray {
    data: CudaSlice<f32>,
    shape: Vec<usize>,
}

impl fmt::Debug for DeviceArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceArray")
            .field("shape", &self.shape)
            .field("device", &self.data.ordinal())
            .finish()
    }
}

/// Makes the array's context current on the dropping thread before its memory is freed.
///
/// cudarc frees a `CudaSlice` (`cuMemFreeAsync` on its stream, or `cuMemFree`) without binding
/// its context; on a thread that never made a CUDA call (a tensor moved to a worker thread and
/// dropped there) that free fails, and cudarc only records the error, which then surfaces in an
/// unrelated later call. Binding first makes the free succeed on any thread.
impl Drop for DeviceArray {
    fn drop(&mut self) {
        let ctx = self.data.context();
        let current = cudarc::driver::result::ctx::get_current();
        if current.is_ok_and(|c| c == Some(ctx.cu_ctx())) {
            return;
        }
        // SAFETY: `ctx.cu_ctx()` is a live context: `self.data` holds an `Arc` to its stream,
        // which holds an `Arc` to the context, and the context is destroyed only when the last
        // of them is dropped (after this function). Binding a live context to the calling
        // thread has no other precondition.
        let bound = unsafe { cudarc::driver::result::ctx::set_current(ctx.cu_ctx()) };
        // Nowhere to return an error from `drop`: keep it where cudarc keeps the free's own
        // errors, so that the next checked call on this context reports it.
        ctx.record_err(bound);
        // `self.data` is dropped (freed) right after this, with the context bound.
    }
}

impl DeviceArray {
    /// Allocates an array of `shape` whose contents are unspecified; every caller overwrites
    /// all `len()` elements before reading them.
    pub(crate) fn uninit(stream: &std::sync::Arc<CudaStream>, shape: Vec<usize>) -> Result<Self> {
        let n: usize = shape.iter().product();
        // SAFETY: the memory is uninitialised f32 (any bit pattern is a valid f32); callers
        // write every element before reading it (kernels or GEMMs with beta = 0 cover the
        // whole logical extent).
        let data = unsafe { stream.alloc::<f32>(n.max(1)) }
            .map_err(|e| Error::driver("device allocation", e))?;
        Ok(Self { data, shape })
    }

    /// Allocates an array of `shape` filled with zeros.
    pub(crate) fn zeros(stream: &std::sync::Arc<CudaStream>, shape: Vec<usize>) -> Result<Self> {
        let n: usize = shape.iter().product();
        let data = stream
            .alloc_zeros::<f32>(n.max(1))
            .map_err(|e| Error::driver("device allocation", e))?;
        Ok(Self { data, shape })
    }

    /// Copies `host` (row-major, `shape.product()` elements) to a new device array.
    pub(crate) fn from_host(
        stream: &std::sync::Arc<CudaStream>,
        host: &[f32],
        shape: Vec<usize>,
    ) -> Result<Self> {
        debug_assert_eq!(host.len(), shape.iter().product::<usize>());
        let mut arr = Self::uninit(stream, shape)?;
        if !host.is_empty() {
            let mut dst = arr.data.slice_mut(0..host.len());
            stream
                .memcpy_htod(host, &mut dst)
                .map_err(|e| Error::driver("host to device copy", e))?;
        }
        Ok(arr)
    }

    /// Copies the array back to a host vector (row-major), waiting for the stream.
    pub(crate) fn to_host(&self, stream: &std::sync::Arc<CudaStream>) -> Result<Vec<f32>> {
        let n = self.len();
        let mut host = vec![0f32; n];
        if n > 0 {
            stream
                .memcpy_dtoh(&self.view(), &mut host)
                .map_err(|e| Error::driver("device to host copy", e))?;
        }
        stream
            .synchronize()
            .map_err(|e| Error::driver("stream synchronize", e))?;
        Ok(host)
    }

    /// The logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements of the logical shape.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the logical shape has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reinterprets the array with another shape of the same element count.
    pub(crate) fn reshape(mut self, shape: Vec<usize>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.len(),
            "reshape changes size"
        );
        self.shape = shape;
        self
    }

    /// The device memory of the logical elements.
    pub(crate) fn view(&self) -> CudaView<'_, f32> {
        self.data.slice(0..self.len())
    }

    /// Elements `start..end` of the device memory.
    pub(crate) fn view_range(&self, start: usize, end: usize) -> CudaView<'_, f32> {
        assert!(start <= end && end <= self.len(), "view out of range");
        self.data.slice(start..end)
    }

    /// The device memory of the logical elements, writable.
    pub(crate) fn view_mut(&mut self) -> CudaViewMut<'_, f32> {
        let n = self.len();
        self.data.slice_mut(0..n)
    }

    /// Elements `start..end` of the device memory, writable.
    pub(crate) fn view_range_mut(&mut self, start: usize, end: usize) -> CudaViewMut<'_, f32> {
        assert!(start <= end && end <= self.len(), "view out of range");
        self.data.slice_mut(start..end)
    }
}

/// An activation tensor `(batch, channels, D_1..D_d)` resident on a CUDA device.
#[derive(Debug)]
pub struct CudaTensor(pub(crate) DeviceArray);

impl CudaTensor {
    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        self.0.shape()
    }
}

/// A weight array uploaded once to a CUDA device, with its logical shape.
#[derive(Debug)]
pub struct CudaWeights(pub(crate) DeviceArray);

impl CudaWeights {
    /// The weight array's logical shape.
    pub fn shape(&self) -> &[usize] {
        self.0.shape()
    }
}
