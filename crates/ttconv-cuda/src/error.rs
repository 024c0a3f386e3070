//! The crate's error type and its conversion into [`ttconv::Error`].

use cudarc::cublas::result::CublasError;
use cudarc::cublas::sys::cublasStatus_t;
use cudarc::driver::DriverError;
use cudarc::driver::sys::CUresult;

/// Everything that can go wrong in the CUDA backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CUDA driver library (`libcuda`) cannot be loaded: no NVIDIA driver on this machine.
    #[error("no CUDA driver: libcuda could not be loaded")]
    NoDriver,
    /// The NVRTC library (`libnvrtc`) cannot be loaded, so the kernels cannot be compiled.
    #[error(
        "no NVRTC: libnvrtc could not be loaded (install the CUDA 13 toolkit or the \
         `nvidia-cuda-nvrtc` wheel and put its lib folder on LD_LIBRARY_PATH)"
    )]
    NoNvrtc,
    /// The cuBLAS library (`libcublas`) cannot be loaded.
    #[error(
        "no cuBLAS: libcublas could not be loaded (libcublas.so, .so.13 or .so.12 with its \
         libcublasLt: install the CUDA toolkit or the `nvidia-cublas` wheel and put its lib \
         folder on LD_LIBRARY_PATH)"
    )]
    NoCublas,
    /// The driver library loads but does not initialise (e.g. a driver older than the CUDA
    /// version the backend targets, or a container without the device nodes).
    #[error("the CUDA driver does not initialise: {source}")]
    DriverInit {
        /// The driver's error.
        source: DriverError,
    },
    /// The driver loads but reports no device with the requested ordinal.
    #[error("no CUDA device with ordinal {ordinal} ({count} device(s) found)")]
    NoDevice {
        /// The requested device ordinal.
        ordinal: usize,
        /// How many devices the driver reports.
        count: usize,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver error during {op}: {source}")]
    Driver {
        /// What the backend was doing.
        op: &'static str,
        /// The driver's error.
        source: DriverError,
    },
    /// In the synchronize-after-every-launch mode
    /// ([`crate::CudaBackend::with_sync_after_each_launch`]): the stream failed right after
    /// `op` was enqueued, and every earlier launch had completed, so `op` is the culprit.
    #[error("CUDA error in {op} (the stream was synchronized right after this launch): {source}")]
    LaunchFault {
        /// The kernel or GEMM that was launched.
        op: &'static str,
        /// The driver's error.
        source: DriverError,
    },
    /// A cuBLAS call failed.
    #[error("cuBLAS error during {op}: {source}")]
    Cublas {
        /// What the backend was doing.
        op: &'static str,
        /// cuBLAS's status.
        source: CublasError,
    },
    /// NVRTC rejected a kernel source; `log` is NVRTC's compile log.
    #[error("NVRTC failed to compile kernel module `{kernel}`:\n{log}")]
    Compile {
        /// The module name of [`crate::kernel_sources`].
        kernel: &'static str,
        /// NVRTC's log (or the error when there is no log).
        log: String,
    },
    /// The device ran out of memory.
    #[error("CUDA device out of memory during {op}")]
    OutOfMemory {
        /// What the backend was doing.
        op: &'static str,
    },
    /// An operand is outside what the kernels support (too many spatial modes, sizes that do
    /// not fit the 32-bit sizes cuBLAS takes, ...).
    #[error("unsupported by the CUDA backend: {0}")]
    Unsupported(String),
    /// An error of the layer's own kind (a shape mismatch, an empty output), passed through
    /// unchanged by [`Error::into_ttconv`].
    #[error(transparent)]
    Layer(#[from] ttconv::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps a driver error, mapping `CUDA_ERROR_OUT_OF_MEMORY` to [`Error::OutOfMemory`].
    pub fn driver(op: &'static str, source: DriverError) -> Self {
        if source.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            Error::OutOfMemory { op }
        } else {
            Error::Driver { op, source }
        }
    }

    /// Wraps a cuBLAS error, mapping `CUBLAS_STATUS_ALLOC_FAILED` to [`Error::OutOfMemory`].
    pub fn cublas(op: &'static str, source: CublasError) -> Self {
        if source.0 == cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED {
            Error::OutOfMemory { op }
        } else {
            Error::Cublas { op, source }
        }
    }

    /// Whether this error only says that CUDA is not usable on this machine (no driver, a
    /// driver that does not initialise, no NVRTC, no cuBLAS, no device), as opposed to a
    /// failure of a working installation.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::NoDriver
                | Error::DriverInit { .. }
                | Error::NoNvrtc
                | Error::NoCublas
                | Error::NoDevice { .. }
        )
    }

    /// Converts into the layer's error, naming the backend (e.g. `"cuda:0"`).
    pub fn into_ttconv(self, backend: impl Into<String>) -> ttconv::Error {
        match self {
            Error::Layer(e) => e,
            other => ttconv::Error::Backend {
                backend: backend.into(),
                message: other.to_string(),
            },
        }
    }

    /// A shape error naming the operand, what was expected and what was given.
    pub(crate) fn shape(what: &str, expected: impl Into<String>, got: &[usize]) -> Self {
        Error::Layer(ttconv::Error::Shape {
            what: what.to_string(),
            expected: expected.into(),
            got: got.to_vec(),
        })
    }
}

impl From<Error> for ttconv::Error {
    fn from(e: Error) -> Self {
        e.into_ttconv("cuda")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_is_typed_and_converts_with_backend_name() {
        let e = Error::driver("alloc", DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY));
        assert!(matches!(e, Error::OutOfMemory { op: "alloc" }));
        let e = Error::cublas(
            "gemm",
            CublasError(cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED),
        );
        assert!(matches!(e, Error::OutOfMemory { op: "gemm" }));
        match Error::NoDriver.into_ttconv("cuda:1") {
            ttconv::Error::Backend { backend, message } => {
                assert_eq!(backend, "cuda:1");
                assert!(message.contains("no CUDA driver"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            Error::NoDevice {
                ordinal: 0,
                count: 0
            }
            .is_unavailable()
        );
        assert!(!Error::OutOfMemory { op: "x" }.is_unavailable());
    }
}
