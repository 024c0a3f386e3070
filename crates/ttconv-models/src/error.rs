//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong reading, writing or compressing a model file.
///
/// Messages are one line and say what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a file operation.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is none of the formats we read.
    #[error("unknown file format: {0}")]
    UnknownFormat(String),
    /// The file ends before a structure it announces.
    #[error("truncated {what}: needs {needed} bytes, {available} available")]
    Truncated {
        /// Which structure.
        what: String,
        /// Bytes it needs.
        needed: u64,
        /// Bytes there are.
        available: u64,
    },
    /// A size announced by the file is above the configured limit.
    #[error("{what} of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Which structure.
        what: String,
        /// Its announced size.
        size: u64,
        /// The limit in force (see [`crate::Limits`]).
        limit: u64,
    },
    /// The file's structure is inconsistent.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// Which structure (`"safetensors header"`, `"pickle"`, ...).
        what: String,
        /// What was expected and what was found.
        reason: String,
    },
    /// A pickle names a Python global that is not one of the tensor-rebuilding ones: pickles are
    /// data, never code.
    #[error(
        "refused pickle global `{module}.{name}`: only tensor-rebuilding globals are allowed (torch._utils._rebuild_tensor_v2, torch.*Storage, collections.OrderedDict, ...)"
    )]
    ForbiddenGlobal {
        /// The module.
        module: String,
        /// The attribute.
        name: String,
    },
    /// A pickle uses an opcode this reader does not implement.
    #[error("unsupported pickle opcode 0x{opcode:02x} at byte {offset}")]
    UnsupportedOpcode {
        /// The opcode byte.
        opcode: u8,
        /// Its position in the pickle.
        offset: usize,
    },
    /// A tensor has a dtype we do not handle.
    #[error("tensor `{tensor}`: unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The tensor's name.
        tensor: String,
        /// The dtype as the file names it.
        dtype: String,
    },
    /// A checkpoint does not hold the tensors an operation needs.
    #[error("{0}")]
    Missing(String),
    /// A TT layer's tensors do not fit together.
    #[error("TT layer `{prefix}`: {reason}")]
    Layer {
        /// The layer's name prefix.
        prefix: String,
        /// What does not fit.
        reason: String,
    },
    /// A compression policy or option is invalid.
    #[error("invalid policy: {0}")]
    Policy(String),
    /// Writing would overwrite the input file.
    #[error("refusing to overwrite the input file {0}")]
    WouldOverwriteInput(PathBuf),
    /// An error of the layer crate (shapes, decomposition).
    #[error(transparent)]
    Conv(#[from] ttconv::Error),
    /// An error of the TT algorithms.
    #[error(transparent)]
    Tt(#[from] tt_core::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A [`Error::Corrupt`] for `what`.
    pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
