//! Workspace-level test support for ttconv.
//!
//! - [`golden`]: the golden-case runner, which checks tt-core (and later the TT convolution)
//!   against reference cases generated with TensorLy / TensorLy-Torch (see `tests/golden/README.md`).
//!   Used by `cargo xtask golden` and by the `golden` integration test of this package.

pub mod golden;
