//! The one GEMM entry point of the crate: `c (+)= a * b` on strided ndarray views.
//!
//! Every hot path of the backend ends here. The engine is `faer`'s matmul, always called
//! sequentially (`Par::Seq`): the callers split the work into rayon tasks themselves, so both
//! cores are busy even at batch 1 and no GEMM spawns threads inside a rayon task.
//!
//! Why `faer` and not `matrixmultiply`: measured on the 2-core AVX2/AVX-512 development machine
//! (single thread, f32), faer was 1.25x faster on large GEMMs (256x2304x128: 222 vs 176
//! GFLOP/s), 1.8x on tall-skinny ones (3136x256x16: 131 vs 73) and 3x on the tiny ones of the
//! 1-D convolutions (16x16x56: 137 vs 44). `matrixmultiply`'s own thread pool (workspace feature
//! `threading`) also cannot be turned off per call: called from two rayon tasks it
//! oversubscribes the cores (a 16x256x3136 batch ran at 85 instead of 155 GFLOP/s).

use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{ArrayView2, ArrayViewMut2, s};

/// Rows of faer's f32 AVX-512 micro-kernel tile (96 x 4) in its SIMD direction, which the
/// dense convolutions map to output positions: column blocks that are a multiple of it leave the
/// masked tail kernels to the last block only (measured: 227-column blocks spent 15% of the
/// time in them).
pub(crate) const GEMM_TILE: usize = 96;

/// `cols` rounded down to a multiple of [`GEMM_TILE`] when at least one tile long.
pub(crate) fn tile_aligned(cols: usize) -> usize {
    if cols >= GEMM_TILE {
        cols / GEMM_TILE * GEMM_TILE
    } else {
        cols
    }
}

/// `c = a * b` (`accumulate == false`) or `c += a * b` (`accumulate == true`), with `a` of
/// shape `(m, k)`, `b` of shape `(k, n)` and `c` of shape `(m, n)`; any strides.
///
/// Runs on the calling thread. Panics if the shapes disagree: callers build the views from
/// validated shapes, so a mismatch is a bug of this crate.
#[allow(unsafe_code)]
pub(crate) fn gemm(
    mut c: ArrayViewMut2<'_, f32>,
    accumulate: bool,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
) {
    let (m, k) = a.dim();
    let (kb, n) = b.dim();
    assert_eq!(k, kb, "gemm: inner dimensions differ");
    assert_eq!(c.dim(), (m, n), "gemm: output shape");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    let (ars, acs) = (a.strides()[0], a.strides()[1]);
    let (brs, bcs) = (b.strides()[0], b.strides()[1]);
    let (crs, ccs) = (c.strides()[0], c.strides()[1]);
    // SAFETY: each pointer/shape/stride triple comes from a live ndarray view, which guarantees
    // that every element `(i, j)` with `i < rows, j < cols` lies at `ptr + i*rs + j*cs` inside one
    // allocation, is initialised and aligned (ndarray's view invariant; the dimensions are
    // non-zero here, so the pointers are real element addresses). `a` and `b` are shared borrows
    // and `c` a unique one for the duration of this call, so no element of `c` is reachable
    // through `a`, `b` or anything else; ndarray's mutable views never alias themselves (a zero
    // stride only occurs on an axis of length <= 1).
    let (a, b, c) = unsafe {
        (
            MatRef::<f32>::from_raw_parts(a.as_ptr(), m, k, ars, acs),
            MatRef::<f32>::from_raw_parts(b.as_ptr(), k, n, brs, bcs),
            MatMut::<f32>::from_raw_parts_mut(c.as_mut_ptr(), m, n, crs, ccs),
        )
    };
    let beta = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    faer::linalg::matmul::matmul(c, beta, a, b, 1.0f32, Par::Seq);
}

/// Columns `start, start + step, ..` (`n` of them, `n >= 1`) of a matrix view.
pub(crate) fn cols<'a>(
    m: &ArrayView2<'a, f32>,
    start: usize,
    step: usize,
    n: usize,
) -> ArrayView2<'a, f32> {
    let end = start + (n - 1) * step + 1;
    (*m).slice_move(s![.., start..end; step as isize])
}

/// Mutable [`cols`].
pub(crate) fn cols_mut<'b>(
    m: &'b mut ArrayViewMut2<'_, f32>,
    start: usize,
    step: usize,
    n: usize,
) -> ArrayViewMut2<'b, f32> {
    let end = start + (n - 1) * step + 1;
    m.slice_mut(s![.., start..end; step as isize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn strided_and_transposed_operands() {
        let a = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32 - 5.0);
        let b = Array2::from_shape_fn((6, 5), |(i, j)| (i as f32) * 0.5 - j as f32);
        // a^T is a transposed view (4 x 3); bt takes every other row of b (3 x 5, row stride 10).
        let bt = b.slice(s![..;2, ..]);
        let mut c = Array2::<f32>::from_elem((4, 5), 1.0);
        gemm(c.view_mut(), true, a.t(), bt);
        for i in 0..4 {
            for j in 0..5 {
                let want: f32 = 1.0 + (0..3).map(|l| a[[l, i]] * b[[2 * l, j]]).sum::<f32>();
                assert!((c[[i, j]] - want).abs() < 1e-4);
            }
        }
        gemm(
            c.view_mut(),
            false,
            a.t().slice(s![.., ..0]),
            b.slice(s![..0, ..]),
        );
        assert!(c.iter().all(|&v| v == 0.0));
    }
}
