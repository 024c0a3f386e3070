//! The crate's error type.

/// Everything that can go wrong in TT construction, rank resolution and decomposition.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// A TT needs at least one core / a tensor at least one mode.
    #[error("empty shape: a TT tensor needs at least one mode")]
    EmptyShape,
    /// A mode of size zero.
    #[error("mode {mode} has size 0 (shape {shape:?}): every mode must be at least 1")]
    ZeroDimension {
        /// The offending mode.
        mode: usize,
        /// The whole shape.
        shape: Vec<usize>,
    },
    /// A core is not 3-D.
    #[error("core {core} must have 3 axes (r_k, n_k, r_k+1), got shape {shape:?}")]
    CoreNotThreeD {
        /// Index of the core.
        core: usize,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// Two neighbouring cores disagree on their shared bond.
    #[error(
        "core {core} has left rank {left} but core {prev} has right rank {right}: neighbouring bonds must agree"
    )]
    BondMismatch {
        /// Index of the core whose left rank disagrees.
        core: usize,
        /// Index of the previous core.
        prev: usize,
        /// Left rank of `core`.
        left: usize,
        /// Right rank of `prev`.
        right: usize,
    },
    /// The first core's left rank or the last core's right rank is not 1.
    #[error("core {core}: boundary rank must be 1, got {rank}")]
    BoundaryRank {
        /// Index of the core (0 or N-1).
        core: usize,
        /// The rank found.
        rank: usize,
    },
    /// A rank of zero (in a core or a rank specification).
    #[error("rank {position} is 0: every TT rank must be at least 1 (ranks {ranks:?})")]
    ZeroRank {
        /// Position in the rank vector.
        position: usize,
        /// The whole rank vector.
        ranks: Vec<usize>,
    },
    /// An explicit rank vector of the wrong length.
    #[error("rank vector has {got} entries, expected {expected} (order {order} + 1)")]
    RankLength {
        /// Order + 1.
        expected: usize,
        /// Entries given.
        got: usize,
        /// Order of the tensor.
        order: usize,
    },
    /// An invalid rank fraction (zero, negative, NaN or infinite).
    #[error("rank fraction must be finite and > 0, got {0}")]
    InvalidFraction(f64),
    /// An invalid error tolerance.
    #[error("relative error tolerance must be finite and >= 0, got {0}")]
    InvalidTolerance(f64),
    /// Tensor data holds NaN or infinity.
    #[error("{what} holds a non-finite value at flat index {index}")]
    NonFinite {
        /// Which tensor.
        what: &'static str,
        /// Position in row-major order.
        index: usize,
    },
    /// A TT would hold more parameters than [`crate::MAX_TT_PARAMETERS`] (or a count overflows
    /// `usize`): nothing was allocated.
    #[error(
        "a TT of shape {shape:?} and ranks {ranks:?} would hold {params} parameters, over the limit of {limit}"
    )]
    TooManyParameters {
        /// The TT shape.
        shape: Vec<usize>,
        /// The rank vector.
        ranks: Vec<usize>,
        /// The parameter count, saturated at `u128::MAX`.
        params: u128,
        /// [`crate::MAX_TT_PARAMETERS`].
        limit: usize,
    },
    /// A result does not fit the element type (e.g. f32 cores of a kernel near `f32::MAX`).
    #[error("{what} does not fit in {element}: {detail}")]
    OutOfRange {
        /// What was being produced.
        what: &'static str,
        /// The element type's name.
        element: &'static str,
        /// The numbers involved.
        detail: String,
    },
    /// Two TT tensors of different shapes were combined.
    #[error("shape mismatch: {left:?} vs {right:?}")]
    ShapeMismatch {
        /// Shape of the left operand.
        left: Vec<usize>,
        /// Shape of the right operand.
        right: Vec<usize>,
    },
    /// A tensor's element count does not fit in memory arithmetic (`usize` overflow).
    #[error("tensor of shape {0:?} is too large")]
    TooLarge(Vec<usize>),
    /// An SVD or eigen-decomposition did not converge.
    #[error("{0} did not converge")]
    NoConvergence(&'static str),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
