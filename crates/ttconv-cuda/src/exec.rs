//! [`Exec`]: the device a kernel launch or a GEMM goes to, with the options of the backend that
//! issues it (TF32 GEMMs, the synchronize-after-every-launch debug mode).

use cudarc::driver::DriverError;

use crate::device::Device;
use crate::error::{Error, Result};

/// What every launcher (`launch.rs`) and GEMM (`blas.rs`) takes: the device and the issuing
/// backend's options, copied out of [`crate::CudaBackend`] for one call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Exec<'a> {
    /// The device (its single stream, cuBLAS handle and kernels).
    pub dev: &'a Device,
    /// Whether cuBLAS may use TF32 tensor cores.
    pub tf32: bool,
    /// Whether to wait for the stream after every launch, so that a faulting kernel is named
    /// by its own error instead of by whichever later call synchronizes first.
    pub sync_each_launch: bool,
}

impl Exec<'_> {
    /// The outcome of enqueuing the launch `op`: the enqueue error if any, then (in the debug
    /// mode) the error of the stream once it has run.
    pub fn launched<T>(
        &self,
        r: std::result::Result<T, DriverError>,
        op: &'static str,
    ) -> Result<()> {
        r.map_err(|e| Error::driver(op, e))?;
        self.after_launch(op)
    }

    /// In the debug mode, waits for the stream and blames a failure on `op`, the launch just
    /// enqueued (every earlier launch was waited for the same way); otherwise nothing.
    pub fn after_launch(&self, op: &'static str) -> Result<()> {
        if self.sync_each_launch {
            self.dev
                .stream
                .synchronize()
                .map_err(|source| Error::LaunchFault { op, source })?;
        }
        Ok(())
    }
}
