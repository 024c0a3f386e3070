//! CUDA backend for `ttconv`: [`CudaBackend`] implements [`ttconv::Backend`] with device-resident
//! tensors, cuBLAS strided batched SGEMMs and NVRTC-compiled kernels, all on one stream.
//!
//! The crate builds and links on machines without any CUDA installation: `cudarc` loads
//! `libcuda`, `libnvrtc` and `libcublas` at run time. [`CudaBackend::new`] checks that they load
//! and that a device is there before touching them, and returns an error (never panics)
//! otherwise:
//!
//! ```no_run
//! use ttconv::Backend;
//! match ttconv_cuda::CudaBackend::new() {
//!     Ok(cuda) => println!("running on {} ({})", cuda.name(), cuda.device_name()),
//!     Err(e) => println!("skipped: {e}"),
//! }
//! ```
//!
//! On a device, the kernels are compiled once per process to a CUBIN for its own `sm_XY`
//! (PTX only for a device newer than the loaded NVRTC, see [`CompileTarget::for_device`]).
//! The kernel sources ([`kernel_sources`]) compile without a GPU wherever `libnvrtc` loads
//! ([`compile_all_to_cubin`], [`compile_all_to_ptx`]); `.ci/install-nvrtc.sh` installs it from
//! PyPI. [`loaded_cuda_libraries`] says which CUDA library files this process has loaded.

mod backend;
mod blas;
mod compile;
mod device;
pub mod error;
mod exec;
pub mod kernels;
mod launch;
mod libraries;
mod ops;
mod shapes;
mod tensor;

pub use backend::{CudaBackend, DEFAULT_WORKSPACE_ELEMS};
pub use compile::{
    CompileTarget, KernelImage, compile, compile_all, compile_all_to_cubin, compile_all_to_ptx,
    nvrtc_available, nvrtc_supported_archs,
};
pub use device::{cublas_available, device_count, driver_available};
pub use error::{Error, Result};
pub use kernels::kernel_sources;
pub use libraries::loaded_cuda_libraries;
pub use tensor::{CudaTensor, CudaWeights, DeviceArray};
