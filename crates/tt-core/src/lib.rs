//! Tensor-Train (TT) tensors and algorithms.

pub mod error;
pub use error::{Error, Result};
