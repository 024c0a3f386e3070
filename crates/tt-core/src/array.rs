//! Small `ndarray` helpers shared by the TT algorithms and the layer.

use ndarray::{Array, Dimension, IntoDimension};

/// Reshapes an owned array in row-major order, copying it into standard layout first when its
/// memory is not (a GEMM result can come back column-major). `shape` must have as many elements
/// as `a`; that is the caller's invariant, and a violation panics.
pub(crate) fn reshape_owned<A: Clone, D: Dimension, E: IntoDimension>(
    a: Array<A, D>,
    shape: E,
) -> Array<A, E::Dim> {
    let a = if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    };
    a.into_shape_with_order(shape)
        .expect("reshape_owned: element count must match")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn reshapes_column_major_in_row_major_order() {
        let a = Array2::from_shape_vec((2, 3), vec![1, 2, 3, 4, 5, 6]).unwrap();
        let t = a.t().to_owned(); // (3, 2) column-major memory
        let r = reshape_owned(t, 6);
        assert_eq!(r.to_vec(), vec![1, 4, 2, 5, 3, 6]);
    }
}
