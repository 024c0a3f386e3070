//! Tensor-Train factorized convolutions.
//!
//! A convolution kernel `W (out, in, k_1..k_d)` is stored as a TT over the permuted shape
//! `(in, k_1, .., k_d, out)` and applied either in its cheap factorized form (a channel
//! contraction, one 1-D convolution per spatial mode, a second contraction) or by reconstructing
//! the dense kernel. `docs/architecture.md` in the repository follows one forward and one
//! backward call through the crates.
//!
//! The layer ([`TtConv`]) never names a backend: it runs on any [`Backend`] (the CPU one lives in
//! `ttconv-cpu`, the CUDA one in `ttconv-cuda`).
//!
//! # Non-finite values (NaN, infinity)
//!
//! - **Weights are rejected at the door.** Every way in — [`TtConv::from_dense`],
//!   [`TtConv::init_from_tensor`], [`TtConv::init_from_decomposition`], [`TtConv::set_cores`],
//!   [`TtConv::set_bias`] — returns [`Error::NonFinite`] (or the TT-SVD's error) and leaves the
//!   layer unchanged, so a layer's weights are always finite.
//! - **Optimiser steps are all or nothing.** [`Optimizer::step`] refuses out-of-range
//!   hyperparameters, non-finite gradients and updates that would overflow, and then changes
//!   neither the layer nor its own state.
//! - **Activations propagate.** Inputs and upstream gradients are not scanned (that would cost a
//!   pass over every tensor per call): a NaN or infinity in `x` or `dL/dy` reaches the outputs
//!   and gradients that depend on it, as in PyTorch.
//! - **Sizes** that overflow or exceed [`MAX_ACTIVATION_ELEMENTS`], [`MAX_KERNEL_ELEMENTS`] or
//!   [`tt_core::MAX_TT_PARAMETERS`] (or an axis plus its padding over `isize::MAX`) are typed
//!   errors before anything is allocated.

mod backend;
mod backward;
mod config;
mod cost;
mod error;
mod forward;
mod geometry;
mod layer;
mod optim;
#[cfg(feature = "oracle")]
#[doc(hidden)]
pub mod oracle;
mod program;

pub use backend::{Backend, FactorizedWeights};
pub use backward::{Gradients, TrainContext};
pub use config::{ConvGeometry, Implementation, Padding, PerMode, TtConvConfig};
pub use cost::{Cost, CostConstants};
pub use error::{Error, Result};
pub use forward::PreparedTtConv;
pub use geometry::{AxisGeometry, output_spatial};
pub use layer::{INIT_STD, Init, MAX_ACTIVATION_ELEMENTS, MAX_KERNEL_ELEMENTS, TtConv};
pub use optim::{Adam, Optimizer, Sgd};
pub use program::{FactorizedProgram, Step, StepGradients, StepOp, StepWeight, StepWeights};
pub use tt_core::{RankOptions, RankSpec, Rounding, Truncation, TruncationReport, TtTensor};

/// The README's usage example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
