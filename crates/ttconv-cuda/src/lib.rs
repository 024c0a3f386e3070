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
//! The kernel sources ([`kernel_sources`]) compile to PTX without a GPU wherever `libnvrtc`
//! loads ([`compile_all_to_ptx`]); `.ci/install-nvrtc.sh` installs it from PyPI.

mod backend;
mod blas;
mod device;
pub mod error;
pub mod kernels;
mod launch;
mod ops;
mod shapes;
mod tensor;

pub use backend::{CudaBackend, DEFAULT_WORKSPACE_ELEMS};
pub use device::{cublas_available, device_count, driver_available};
pub use error::{Error, Result};
pub use kernels::{compile_all_to_ptx, kernel_sources, nvrtc_available, nvrtc_supported_archs};
pub use tensor::{CudaTensor, CudaWeights, DeviceArray};
