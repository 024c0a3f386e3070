//! The element types TT algorithms run on: `f32` and `f64`.

use std::fmt::{Debug, Display};

/// A real floating-point element type (`f32` or `f64`).
///
/// The decompositions compute internally in f64 whatever the element type (an f32 SVD loses
/// about three digits on kernels with a decaying spectrum); this trait converts at the edges.
pub trait Scalar:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + std::iter::Sum
    + 'static
{
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// Widens (or copies) to f64 (named so as not to clash with `num_traits::ToPrimitive::to_f64`).
    fn as_f64(self) -> f64;
    /// Narrows (or copies) from f64, rounding to nearest.
    fn from_f64(value: f64) -> Self;
}

impl Scalar for f32 {
    const NAME: &'static str = "f32";
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(value: f64) -> Self {
        value as f32
    }
}

impl Scalar for f64 {
    const NAME: &'static str = "f64";
    fn as_f64(self) -> f64 {
        self
    }
    fn from_f64(value: f64) -> Self {
        value
    }
}

/// `v * 2^shift`, exact (two factors, each a power of two representable in f64, so shifts
/// beyond the exponent range of one factor still work).
pub(crate) fn times_pow2(v: f64, shift: i32) -> f64 {
    let (a, b) = (shift / 2, shift - shift / 2);
    v * 2f64.powi(a) * 2f64.powi(b)
}
