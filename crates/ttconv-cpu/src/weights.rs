//! The CPU form of an uploaded weight array.

use std::sync::OnceLock;

use ndarray::{ArrayD, ArrayViewD};

/// A weight array held by [`crate::CpuBackend`]: its logical shape and its f32 data in
/// row-major (standard) layout.
///
/// No repacking is needed: every GEMM of the backend takes its operands as strided views, so a
/// transposed use of a weight costs nothing. The data never changes after construction, so a
/// dense kernel's packing for the direct convolution is cached inside the weight.
#[derive(Clone, Debug)]
pub struct CpuWeights {
    data: ArrayD<f32>,
    /// A dense kernel packed for the direct convolution (see `direct.rs`).
    packed: OnceLock<Vec<f32>>,
}

impl PartialEq for CpuWeights {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl CpuWeights {
    /// Copies `w` (any strides) into row-major layout.
    pub fn new(w: ArrayViewD<'_, f32>) -> Self {
        Self {
            data: w.as_standard_layout().into_owned(),
            packed: OnceLock::new(),
        }
    }

    /// The logical shape, e.g. `(r_in, k, r_out)` for a core.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// A row-major view of the data.
    pub fn view(&self) -> ArrayViewD<'_, f32> {
        self.data.view()
    }

    /// The row-major data.
    pub(crate) fn as_slice(&self) -> &[f32] {
        self.data
            .as_slice()
            .expect("weights are stored in standard layout")
    }

    /// This weight repacked by `f` (the direct convolution's layout of a dense kernel), computed
    /// on first use and kept: the data never changes, so neither does the packing.
    pub(crate) fn packed_with(&self, f: impl FnOnce() -> Vec<f32>) -> &[f32] {
        self.packed.get_or_init(f)
    }
}
