//! Tensor-Train factorized convolutions.
//!
//! A convolution kernel `W (out, in, k_1..k_d)` is stored as a TT over the permuted shape
//! `(in, k_1, .., k_d, out)` and applied either in its cheap factorized form (a channel
//! contraction, one 1-D convolution per spatial mode, a second contraction) or by reconstructing
//! the dense kernel. See DESIGN.md section 4 for the exact semantics.
//!
//! The layer ([`TtConv`]) never names a backend: it runs on any [`Backend`] (the CPU one lives in
//! `ttconv-cpu`, the CUDA one in `ttconv-cuda`).

pub mod backend;
pub mod backward;
pub mod config;
pub mod cost;
pub mod error;
pub mod forward;
pub mod geometry;
pub mod layer;
pub mod optim;
pub mod oracle;
pub mod plan;

pub use backend::{Backend, FactorizedActivations, FactorizedWeights};
pub use backward::{Gradients, TrainContext};
pub use config::{Implementation, Padding, PerMode, TtConvConfig};
pub use cost::{Cost, CostConstants};
pub use error::{Error, Result};
pub use forward::PreparedTtConv;
pub use geometry::AxisGeometry;
pub use layer::TtConv;
pub use optim::{Adam, Optimizer, Sgd};
pub use plan::FactorizedPlan;
pub use tt_core::{RankOptions, RankSpec, Rounding, Truncation, TruncationReport, TtTensor};

/// The README's usage example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
