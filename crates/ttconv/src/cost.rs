//! The cost model: multiply-adds and bytes moved by each implementation, and `Auto`'s choice.
//!
//! For batch `B`, input spatial `D`, output spatial `D'`, TT ranks `(1, r_1..r_{d+1}, 1)`:
//! - dense: `B * prod(D') * out * in * prod(k)` multiply-adds;
//! - factorized: `B * [prod(D) * in * r_1 + sum_j S_j * r_{j+1} * k_j * r_{j+2} + prod(D') * r_{d+1} * out]`
//!   where `S_j` is the spatial size after spatial mode `j` (modes `<= j` at their output size,
//!   the others at their input size), with the merged ends of the
//!   [`crate::FactorizedProgram`] counted as the one convolution they become: the factorized
//!   cost is computed by the program from its steps ([`crate::FactorizedProgram::cost`]).
//!
//! Bytes (f32) count the input and output once and every intermediate of the factorized chain
//! twice (written, then read), as an unfused backend moves them.

use crate::config::Implementation;
use crate::error::{Error, Result};
use crate::geometry::{AxisGeometry, output_spatial};

/// Work and traffic of one forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cost {
    /// Multiply-adds.
    pub macs: u64,
    /// Bytes read and written in main memory, assuming no fusion.
    pub bytes: u64,
}

impl Cost {
    /// Floating-point operations, `2 * macs`.
    pub fn flops(&self) -> u64 {
        2 * self.macs
    }
}

/// Throughputs used to turn a [`Cost`] into modelled seconds.
///
/// The defaults are typical of a 2-core AVX2 machine; a backend with measured constants can
/// supply its own through [`crate::Backend::cost_constants`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostConstants {
    /// Sustained multiply-adds per second of the dense convolution, in units of 1e9.
    pub dense_gmacs: f64,
    /// Sustained multiply-adds per second of the factorized chain's small GEMMs, in units of 1e9.
    pub factorized_gmacs: f64,
    /// Main-memory bandwidth, GB/s.
    pub bandwidth_gbs: f64,
}

impl Default for CostConstants {
    fn default() -> Self {
        Self {
            dense_gmacs: 55.0,
            factorized_gmacs: 35.0,
            bandwidth_gbs: 15.0,
        }
    }
}

impl CostConstants {
    /// Modelled seconds of `cost` run by `implementation` (`Factorized` or `Reconstructed`):
    /// `macs / throughput + bytes / bandwidth`.
    pub fn seconds(&self, cost: &Cost, implementation: Implementation) -> f64 {
        let gmacs = match implementation {
            Implementation::Reconstructed => self.dense_gmacs,
            _ => self.factorized_gmacs,
        };
        cost.macs as f64 / (gmacs * 1e9) + cost.bytes as f64 / (self.bandwidth_gbs * 1e9)
    }
}

/// The shapes a cost depends on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayerShape<'a> {
    /// Batch size.
    pub(crate) batch: usize,
    /// Input channels.
    pub(crate) in_channels: usize,
    /// Output channels.
    pub(crate) out_channels: usize,
    /// Kernel size per spatial mode.
    pub(crate) kernel_size: &'a [usize],
    /// TT ranks `(1, r_1..r_{d+1}, 1)`.
    pub(crate) ranks: &'a [usize],
    /// Input spatial size per mode.
    pub(crate) input_spatial: &'a [usize],
    /// Geometry per mode.
    pub(crate) geometry: &'a [AxisGeometry],
}

/// `prod(v)` in `u128`, saturating (products of a few `usize` sizes never reach it).
pub(crate) fn saturating_product(v: &[usize]) -> u128 {
    v.iter().fold(1u128, |a, &x| a.saturating_mul(x as u128))
}

impl Cost {
    /// A cost from counts made in `u128`; [`Error::TooLarge`] naming `what` when either does
    /// not fit in `u64`.
    pub(crate) fn from_counts(macs: u128, bytes: u128, what: &str) -> Result<Self> {
        match (u64::try_from(macs), u64::try_from(bytes)) {
            (Ok(macs), Ok(bytes)) => Ok(Cost { macs, bytes }),
            _ => Err(Error::TooLarge {
                what: what.into(),
                detail: format!("{macs} multiply-adds and {bytes} bytes do not fit in u64"),
            }),
        }
    }
}
/// Cost of the reconstructed (dense) forward, kernel already reconstructed.
/// Counted in `u128` (saturating) and refused when it exceeds `u64`.
pub(crate) fn dense_cost(s: &LayerShape<'_>) -> Result<Cost> {
    let out_sp = output_spatial(s.input_spatial, s.kernel_size, s.geometry)?;
    let b = s.batch as u128;
    let (cin, cout) = (s.in_channels as u128, s.out_channels as u128);
    let prod = saturating_product;
    let y = b.saturating_mul(prod(&out_sp)).saturating_mul(cout);
    let x = b.saturating_mul(prod(s.input_spatial)).saturating_mul(cin);
    let taps = prod(s.kernel_size);
    let kernel = cout.saturating_mul(cin).saturating_mul(taps);
    let macs = y.saturating_mul(cin).saturating_mul(taps);
    let bytes = x.saturating_add(y).saturating_add(kernel).saturating_mul(4);
    Cost::from_counts(macs, bytes, "dense forward")
}

/// Resolves `Auto` to the implementation with the lower modelled time under `constants`, given
/// the factorized cost (its [`crate::FactorizedProgram`]'s) and the dense one; others pass through.
pub(crate) fn choose_implementation(
    factorized: &Cost,
    dense: &Cost,
    implementation: Implementation,
    constants: &CostConstants,
) -> Implementation {
    if implementation != Implementation::Auto {
        return implementation;
    }
    let f = constants.seconds(factorized, Implementation::Factorized);
    let r = constants.seconds(dense, Implementation::Reconstructed);
    if f <= r {
        Implementation::Factorized
    } else {
        Implementation::Reconstructed
    }
}

/// The layer shape the cost tests count by hand: batch 2, 4 -> 6 channels, 3 x 3 kernel, ranks
/// `(1, 2, 3, 2, 1)`, input 8 x 10.
#[cfg(test)]
pub(crate) fn by_hand_shape(geometry: &[AxisGeometry]) -> LayerShape<'_> {
    LayerShape {
        batch: 2,
        in_channels: 4,
        out_channels: 6,
        kernel_size: &[3, 3],
        ranks: &[1, 2, 3, 2, 1],
        input_spatial: &[8, 10],
        geometry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_cost_matches_the_formula_by_hand() {
        let g = [AxisGeometry::symmetric(2, 1, 1); 2];
        let s = by_hand_shape(&g);
        // output 4 x 5
        let d = dense_cost(&s).unwrap();
        assert_eq!(d.macs, (2 * 20 * 6 * 4 * 9) as u64);
        assert_eq!(d.bytes, 4 * (2 * 20 * 6 + 2 * 80 * 4 + 6 * 4 * 9));
    }

    #[test]
    fn auto_picks_the_cheaper_and_others_pass_through() {
        let c = CostConstants::default();
        let small = Cost { macs: 1, bytes: 4 };
        let big = Cost {
            macs: 1_000_000_000,
            bytes: 4,
        };
        let auto = Implementation::Auto;
        assert_eq!(
            choose_implementation(&small, &big, auto, &c),
            Implementation::Factorized
        );
        assert_eq!(
            choose_implementation(&big, &small, auto, &c),
            Implementation::Reconstructed
        );
        let fixed = Implementation::Factorized;
        assert_eq!(choose_implementation(&big, &small, fixed, &c), fixed);
    }
}
