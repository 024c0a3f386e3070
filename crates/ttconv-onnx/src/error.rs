//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong reading, rewriting, writing or running an ONNX model.
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
    /// The file is larger than the limit in force.
    #[error("{what} of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Which file or structure.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes are not a protobuf `ModelProto` (truncated, or not ONNX at all).
    #[error("not an ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The model decodes but is inconsistent (a missing graph, a node naming an absent weight,
    /// a tensor whose data does not match its dims, ...).
    #[error("invalid ONNX model: {what}: {reason}")]
    Invalid {
        /// Where (`graph`, `node "conv1"`, `initializer "w"`).
        what: String,
        /// What was expected and what was found.
        reason: String,
    },
    /// Something the model uses that this crate does not handle (external tensor data, a
    /// data type it cannot read).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// ONNX Runtime is not available or refused the model or its inputs.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// Inputs for a run are missing or do not match the model.
    #[error("inputs: {0}")]
    Inputs(String),
    /// The compressed model's outputs are further from the original's than allowed.
    #[error("output `{output}`: relative error {error:.3e} is over the maximum {max:.3e}")]
    OutputError {
        /// The graph output.
        output: String,
        /// Its relative error.
        error: f64,
        /// The maximum allowed.
        max: f64,
    },
    /// An error of the policy, the decomposition or the file writer.
    #[error(transparent)]
    Models(#[from] ttconv_models::Error),
    /// An error of the layer crate.
    #[error(transparent)]
    Conv(#[from] ttconv::Error),
    /// An error of the TT algorithms.
    #[error(transparent)]
    Tt(#[from] tt_core::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Invalid`].
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

impl<R> From<ort::Error<R>> for Error {
    fn from(e: ort::Error<R>) -> Self {
        Error::Runtime(e.to_string())
    }
}
