//! Tensor-Train factorized convolutions.
//!
//! A convolution kernel `W (out, in, k_1..k_d)` is stored as a TT over the permuted shape
//! `(in, k_1, .., k_d, out)` and applied either in its cheap factorized form (a channel
//! contraction, one 1-D convolution per spatial mode, a second contraction) or by reconstructing
//! the dense kernel. See DESIGN.md section 4 for the exact semantics.

pub mod backend;
pub mod error;
pub mod geometry;
pub mod oracle;

pub use backend::{Backend, FactorizedActivations, FactorizedWeights};
pub use error::{Error, Result};
pub use geometry::AxisGeometry;
