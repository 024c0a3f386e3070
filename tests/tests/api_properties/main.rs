//! The public API under hostile and careless use: configurations, shapes, values, weights,
//! hyperparameters and memory layouts drawn from wide ranges (0, 1, huge sizes, NaN, infinities,
//! subnormals, every layout ndarray can express). Every call either answers, and then agrees with
//! the direct oracle (or with the same call on a plain row-major copy, bit for bit), or returns
//! the documented error variant; none panics (proptest turns a panic into a failure and shrinks
//! its input).
//!
//! `cargo test` runs this suite in the test profile (overflow checks and debug assertions on);
//! `release_profile.rs` runs it once more in the release profile, where arithmetic wraps.

#[path = "../common/mod.rs"]
mod common;
mod configurations;
mod decomposition;
mod layouts;
mod optimisers;
mod training;
mod values;
mod weights;
mod wide;
