//! Tensor-Train (TT) tensors and algorithms, TensorLy-compatible.
//!
//! - [`TtTensor`]: a tensor of shape `(n_0..n_{N-1})` as cores `G_k (r_k, n_k, r_{k+1})`,
//!   `r_0 = r_N = 1`; validated construction, dense reconstruction, norm, inner product,
//!   scaling and addition in TT form.
//! - [`RankSpec`]: `'same'`, a parameter fraction, a uniform int or an explicit vector, resolved
//!   exactly like TensorLy's `validate_tt_rank`.
//! - [`tt_svd`]: TT-SVD by rank (TensorLy's `tensor_train`) or by relative error tolerance.
//! - [`tt_round`]: TT-rounding of an existing TT, never densifying.
//!
//! Decompositions compute in f64 (through `faer`) for f32 and f64 inputs alike.

mod array;
mod eigen;
mod error;
mod fit;
mod linalg;
mod lobpcg;
mod merge;
mod orthogonalize;
mod project;
mod rank;
mod round;
mod scalar;
mod tensor;
mod truncation;
mod tt_svd;

pub use error::{Error, Result};
pub use fit::{FitOptions, FitReport, Quadratic, fit_tt};
pub use linalg::SvdMethod;
pub use merge::merge_cores;
pub use rank::{RankOptions, RankSpec, Rounding, cap_ranks};
pub use round::tt_round;
pub use scalar::Scalar;
pub use tensor::{MAX_TT_PARAMETERS, TtTensor, check_parameter_count};
pub use truncation::{Truncation, TruncationReport};
pub use tt_svd::tt_svd;
