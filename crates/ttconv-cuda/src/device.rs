//! One CUDA device as the backend uses it: context, the single stream, cuBLAS handle and the
//! compiled kernels, opened once per process and device and shared by every
//! [`crate::CudaBackend`] on it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream};

use crate::compile::{self, CompileTarget};
use crate::error::{Error, Result};
use crate::kernels;

/// The kernels of [`crate::kernel_sources`], loaded on one device.
#[derive(Debug)]
pub(crate) struct Kernels {
    pub add_bias: CudaFunction,
    pub sum_batches: CudaFunction,
    pub bias_grad: CudaFunction,
    pub conv_along_fwd: CudaFunction,
    pub conv_along_bwd_input: CudaFunction,
    pub im2col: CudaFunction,
    pub col2im: CudaFunction,
}

/// A device opened for the backend. Every operation is enqueued on `stream`, in order.
pub(crate) struct Device {
    pub ordinal: usize,
    pub name: String,
    /// What the kernels were compiled to (a CUBIN for the device, or PTX).
    pub target: CompileTarget,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// cuBLAS handles are not safe to use from two threads at once.
    pub blas: Mutex<CudaBlas>,
    pub kernels: Kernels,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("ordinal", &self.ordinal)
            .field("name", &self.name)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Whether the CUDA driver library can be loaded (so that driver calls cannot panic).
pub fn driver_available() -> bool {
    // SAFETY: only tries to `dlopen` a list of library names; no preconditions.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether the cuBLAS library can be loaded (so that cuBLAS calls cannot panic).
pub fn cublas_available() -> bool {
    // SAFETY: only tries to `dlopen` a list of library names; no preconditions.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// Number of CUDA devices, or the reason there are none usable. Never panics.
pub fn device_count() -> Result<usize> {
    if !driver_available() {
        return Err(Error::NoDriver);
    }
    match CudaContext::device_count() {
        Ok(n) => Ok(n.max(0) as usize),
        Err(e) if e.0 == CUresult::CUDA_ERROR_NO_DEVICE => Ok(0),
        Err(e) => Err(Error::DriverInit { source: e }),
    }
}

/// Stops the device's stream-ordered memory pool from handing its memory back to the system at
/// every synchronisation, so the scratch buffers of each call are recycled instead of mapped
/// again. A performance hint only: failures are ignored.
fn keep_pool_memory(ctx: &CudaContext) {
    use cudarc::driver::{result, sys};
    // SAFETY: `cu_device` comes from a live context (so from `cuDeviceGet`); the attribute
    // value is a u64 as `CU_MEMPOOL_ATTR_RELEASE_THRESHOLD` requires, alive for the call.
    unsafe {
        if let Ok(pool) = result::device::get_mem_pool(ctx.cu_device()) {
            let mut threshold: u64 = u64::MAX;
            let _ = sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold) as *mut u64 as *mut std::ffi::c_void,
            );
        }
    }
}

fn registry() -> &'static Mutex<HashMap<usize, Arc<Device>>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<Device>>>> = OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Device {
    /// The process-wide device `ordinal`, opened (and its kernels compiled) on first use.
    ///
    /// Checks, in order and without panicking: the driver library, the device count, NVRTC,
    /// cuBLAS. A failed open is not cached, so a later call tries again.
    pub fn get(ordinal: usize) -> Result<Arc<Device>> {
        let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dev) = map.get(&ordinal) {
            return Ok(dev.clone());
        }
        let dev = Arc::new(Device::open(ordinal)?);
        map.insert(ordinal, dev.clone());
        Ok(dev)
    }

    fn open(ordinal: usize) -> Result<Device> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::NoDevice { ordinal, count });
        }
        if !compile::nvrtc_available() {
            return Err(Error::NoNvrtc);
        }
        if !cublas_available() {
            return Err(Error::NoCublas);
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::driver("context creation", e))?;
        // SAFETY: the backend enqueues everything on the single stream created below, so
        // stream order alone keeps every buffer's uses ordered; no cross-stream events needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| Error::driver("stream creation", e))?;
        if ctx.has_async_alloc() {
            keep_pool_memory(&ctx);
        }
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| Error::driver("compute capability", e))?;
        let target =
            CompileTarget::for_device(major * 10 + minor, &compile::nvrtc_supported_archs())?;

        let mut funcs: HashMap<&'static str, CudaFunction> = HashMap::new();
        for (module_name, src) in kernels::kernel_sources() {
            let image = compile::compile(module_name, src, target)?;
            let module = ctx.load_module(image.into_loadable()).map_err(|e| {
                if e.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
                    Error::Unsupported(format!(
                        "the driver cannot load PTX from this NVRTC (newer than the driver); \
                         use an NVRTC not newer than the driver's CUDA version ({e})"
                    ))
                } else if matches!(target, CompileTarget::Cubin(_)) {
                    Error::driver("CUBIN module load", e)
                } else {
                    Error::driver("PTX module load", e)
                }
            })?;
            for &fname in kernels::kernel_names(module_name) {
                let f = module
                    .load_function(fname)
                    .map_err(|e| Error::driver("function load", e))?;
                funcs.insert(fname, f);
            }
        }
        let mut take = |n: &'static str| {
            funcs
                .remove(n)
                .ok_or_else(|| Error::Unsupported(format!("kernel {n} missing from its module")))
        };
        let kernels = Kernels {
            add_bias: take("ttc_add_bias")?,
            sum_batches: take("ttc_sum_batches")?,
            bias_grad: take("ttc_bias_grad")?,
            conv_along_fwd: take("ttc_conv_along_fwd")?,
            conv_along_bwd_input: take("ttc_conv_along_bwd_input")?,
            im2col: take("ttc_im2col")?,
            col2im: take("ttc_col2im")?,
        };
        let blas =
            CudaBlas::new(stream.clone()).map_err(|e| Error::cublas("handle creation", e))?;
        Ok(Device {
            ordinal,
            name,
            target,
            ctx,
            stream,
            blas: Mutex::new(blas),
            kernels,
        })
    }

    /// Makes this device's context current on the calling thread (cuBLAS calls need it).
    pub fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| Error::driver("context bind", e))
    }

    /// Waits until every operation enqueued so far has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| Error::driver("stream synchronize", e))
    }
}
