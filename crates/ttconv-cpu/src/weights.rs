//! The CPU form of an uploaded weight array.

use ndarray::{ArrayD, ArrayViewD};

/// A weight array held by [`crate::CpuBackend`]: its logical shape and its f32 data in
/// row-major (standard) layout.
///
/// No repacking is needed: every GEMM of the backend takes its operands as strided views, so a
/// transposed use of a weight costs nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuWeights {
    data: ArrayD<f32>,
}

impl CpuWeights {
    /// Copies `w` (any strides) into row-major layout.
    pub fn new(w: ArrayViewD<'_, f32>) -> Self {
        Self {
            data: w.as_standard_layout().into_owned(),
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
}
