//! The crate's error type.

/// Everything that can go wrong when configuring, initialising or running a TT convolution.
///
/// Messages say what was expected and what was given.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration field has an invalid value (zero channels, wrong list length, ...).
    #[error("invalid configuration `{field}`: {reason}")]
    Config {
        /// The offending field, as named in [`crate::TtConvConfig`].
        field: &'static str,
        /// What was expected and what was given.
        reason: String,
    },
    /// A tensor handed to the layer has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which tensor (e.g. `"input"`, `"kernel"`, `"core 2"`).
        what: String,
        /// The expected shape, in words or as a list.
        expected: String,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// A convolution would produce an empty output along a spatial mode.
    #[error(
        "spatial mode {mode}: input size {input} with padding ({pad_before}, {pad_after}), kernel {kernel} and dilation {dilation} gives no output (the dilated kernel spans {span} > padded size {padded})"
    )]
    EmptyOutput {
        /// Spatial mode (0-based).
        mode: usize,
        /// Input size along the mode.
        input: usize,
        /// Padding before.
        pad_before: usize,
        /// Padding after.
        pad_after: usize,
        /// Kernel size.
        kernel: usize,
        /// Dilation.
        dilation: usize,
        /// `dilation * (kernel - 1) + 1`.
        span: usize,
        /// `input + pad_before + pad_after`.
        padded: usize,
    },
    /// Data that must be finite holds NaN or infinity.
    #[error("{what} holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// Which tensor.
        what: String,
        /// The first offending value.
        value: f32,
        /// Its position in row-major order.
        index: usize,
    },
    /// A layer operation was called before the layer held weights of the right kind, or with
    /// state (a training context, an optimiser) that belongs to another layer.
    #[error("{0}")]
    State(String),
    /// A size or an amount of work does not fit in the machine's integers (or over a documented
    /// limit): nothing was allocated.
    #[error("{what} is too large: {detail}")]
    TooLarge {
        /// What was being sized (e.g. `"spatial mode 0: input plus padding"`).
        what: String,
        /// The numbers involved.
        detail: String,
    },
    /// An error of the TT algorithms (rank resolution, TT-SVD, invalid cores).
    #[error(transparent)]
    Tt(#[from] tt_core::Error),
    /// A backend failed (no device, out of memory, kernel compilation, ...).
    #[error("backend `{backend}`: {message}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// What went wrong.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Returns an error naming the first non-finite entry of `data`, if any.
pub(crate) fn check_finite(what: &str, data: impl IntoIterator<Item = f32>) -> Result<()> {
    for (index, value) in data.into_iter().enumerate() {
        if !value.is_finite() {
            return Err(Error::NonFinite {
                what: what.to_string(),
                value,
                index,
            });
        }
    }
    Ok(())
}
