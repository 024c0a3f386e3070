//! Row-major batched matrix products on cuBLAS (column-major), as the primitives use them.
//!
//! Every activation is `(batch, rows, M)` row-major with `M` the flattened spatial positions, so
//! one batch element is a row-major `(rows, M)` matrix, which cuBLAS sees as the column-major
//! `(M, rows)` matrix with leading dimension `M`. The helpers below state the row-major product
//! they compute and translate it to one strided batched SGEMM.

use std::ffi::c_void;

use cudarc::cublas::result as cublas_result;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut};

use crate::error::{Error, Result};
use crate::exec::Exec;

/// Converts a size to the 32-bit integer cuBLAS takes, or explains why it cannot.
pub(crate) fn to_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::Unsupported(format!(
            "{what} = {v} exceeds the 32-bit range of the kernels"
        ))
    })
}

/// One column-major strided batched SGEMM: `C_i = op(A_i) op(B_i) + beta C_i`.
#[derive(Clone, Copy, Debug)]
struct BatchedGemm {
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldb: usize,
    ldc: usize,
    stride_a: usize,
    stride_b: usize,
    stride_c: usize,
    batch: usize,
    beta: f32,
}

/// Elements a column-major operand of `rows x cols` (after undoing `op`) with leading
/// dimension `ld`, repeated `batch` times `stride` apart, spans.
fn extent(rows: usize, cols: usize, ld: usize, stride: usize, batch: usize) -> usize {
    if rows == 0 || cols == 0 || batch == 0 {
        0
    } else {
        (batch - 1) * stride + (cols - 1) * ld + rows
    }
}

impl BatchedGemm {
    fn run(
        &self,
        ex: &Exec<'_>,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        c: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        if self.m == 0 || self.n == 0 || self.batch == 0 {
            return Ok(());
        }
        // Stored shapes (column-major) of A and B: op(A) is m x k, op(B) is k x n.
        let (ar, ac) = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (br, bc) = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        // These checks make the unsafe call below stay inside the three buffers.
        assert!(self.lda >= ar.max(1) && self.ldb >= br.max(1) && self.ldc >= self.m.max(1));
        assert!(
            extent(ar, ac, self.lda, self.stride_a, self.batch) <= a.len(),
            "gemm A"
        );
        assert!(
            extent(br, bc, self.ldb, self.stride_b, self.batch) <= b.len(),
            "gemm B"
        );
        assert!(
            extent(self.m, self.n, self.ldc, self.stride_c, self.batch) <= c.len(),
            "gemm C"
        );
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let compute = if ex.tf32 {
            cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            cublasComputeType_t::CUBLAS_COMPUTE_32F
        };
        let (m, n, k) = (
            to_i32(self.m, "gemm m")?,
            to_i32(self.n, "gemm n")?,
            to_i32(self.k, "gemm k")?,
        );
        let (lda, ldb, ldc) = (
            to_i32(self.lda, "gemm lda")?,
            to_i32(self.ldb, "gemm ldb")?,
            to_i32(self.ldc, "gemm ldc")?,
        );
        let batch = to_i32(self.batch, "gemm batch")?;
        let alpha = 1.0f32;
        let beta = self.beta;

        let dev = ex.dev;
        let blas = dev.blas.lock().unwrap_or_else(|p| p.into_inner());
        dev.bind()?;
        let (pa, _ra) = a.device_ptr(&dev.stream);
        let (pb, _rb) = b.device_ptr(&dev.stream);
        let (pc, _rc) = c.device_ptr_mut(&dev.stream);
        // SAFETY: the handle is bound to `dev.stream` (the stream every buffer is used on) and
        // held under its mutex; the context is current on this thread; the assertions above
        // keep every matrix of every batch entry inside its buffer; alpha and beta are host
        // f32 values alive for the call (pointer mode host), and A, B, C are f32 (CUDA_R_32F).
        unsafe {
            cublas_result::gemm_strided_batched_ex(
                *blas.handle(),
                op(self.trans_a),
                op(self.trans_b),
                m,
                n,
                k,
                (&alpha) as *const f32 as *const c_void,
                pa as *const c_void,
                cudaDataType::CUDA_R_32F,
                lda,
                self.stride_a as i64,
                pb as *const c_void,
                cudaDataType::CUDA_R_32F,
                ldb,
                self.stride_b as i64,
                (&beta) as *const f32 as *const c_void,
                pc as *mut c_void,
                cudaDataType::CUDA_R_32F,
                ldc,
                self.stride_c as i64,
                batch,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::cublas("strided batched gemm", e))?;
        ex.after_launch("strided batched gemm")
    }
}

/// `out_b = op(W) x_b` for `b < batch`, all row-major: `W` is `(w_rows, w_cols)`, `op(W)` is
/// `W^T` when `transpose` and `W` otherwise, `x_b` is `(K, m)` and `out_b` is `(R, m)` where
/// `op(W)` is `(R, K)`; `x` and `out` hold the `batch` matrices contiguously.
pub(crate) fn left_mul(
    ex: &Exec<'_>,
    w: &CudaView<'_, f32>,
    (w_rows, w_cols): (usize, usize),
    transpose: bool,
    x: &CudaView<'_, f32>,
    batch: usize,
    m: usize,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    left_mul_spec((w_rows, w_cols), transpose, batch, m).run(ex, x, w, out)
}

/// The SGEMM of [`left_mul`], with `x` as cuBLAS's A and `W` as its B.
fn left_mul_spec(
    (w_rows, w_cols): (usize, usize),
    transpose: bool,
    batch: usize,
    m: usize,
) -> BatchedGemm {
    let (r, k) = if transpose {
        (w_cols, w_rows)
    } else {
        (w_rows, w_cols)
    };
    // Column-major: out_b^T (m x R) = x_b^T (m x K) * op(W)^T (K x R). `W` stored row-major is
    // the column-major (w_cols x w_rows) matrix W^T: without transpose op(W)^T = W^T is it as
    // stored; with transpose op(W)^T = W needs op = T.
    BatchedGemm {
        trans_a: false,
        trans_b: transpose,
        m,
        n: r,
        k,
        lda: m.max(1),
        ldb: w_cols.max(1),
        ldc: m.max(1),
        stride_a: k * m,
        stride_b: 0,
        stride_c: r * m,
        batch,
        beta: 0.0,
    }
}

/// `out_b = A_b B_b^T` for `b < batch`, all row-major: `A_b` is `(p, m)`, `B_b` is `(r, m)` and
/// `out_b` is `(p, r)`; `beta = 1` adds to `out` instead of overwriting it.
pub(crate) fn batched_nt(
    ex: &Exec<'_>,
    a: &CudaView<'_, f32>,
    p: usize,
    b: &CudaView<'_, f32>,
    r: usize,
    batch: usize,
    m: usize,
    out: &mut CudaViewMut<'_, f32>,
    accumulate: bool,
) -> Result<()> {
    batched_nt_spec(p, r, batch, m, accumulate).run(ex, b, a, out)
}

/// The SGEMM of [`batched_nt`], with `B` as cuBLAS's A and `A` as its B.
fn batched_nt_spec(p: usize, r: usize, batch: usize, m: usize, accumulate: bool) -> BatchedGemm {
    // Column-major: out_b^T (r x p) = B_b (r x m) * A_b^T (m x p). B_b row-major is the
    // column-major (m x r) matrix B_b^T, so op = T; A_b row-major is column-major A_b^T as is.
    BatchedGemm {
        trans_a: true,
        trans_b: false,
        m: r,
        n: p,
        k: m,
        lda: m.max(1),
        ldb: m.max(1),
        ldc: r.max(1),
        stride_a: r * m,
        stride_b: p * m,
        stride_c: p * r,
        batch,
        beta: if accumulate { 1.0 } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What cuBLAS computes for `g` (column-major, host memory), with the same extent checks.
    fn emulate(g: &BatchedGemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (ar, ac) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (br, bc) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        assert!(extent(ar, ac, g.lda, g.stride_a, g.batch) <= a.len());
        assert!(extent(br, bc, g.ldb, g.stride_b, g.batch) <= b.len());
        assert!(extent(g.m, g.n, g.ldc, g.stride_c, g.batch) <= c.len());
        for bi in 0..g.batch {
            let (a, b) = (&a[bi * g.stride_a..], &b[bi * g.stride_b..]);
            for i in 0..g.m {
                for j in 0..g.n {
                    let mut acc = 0f64;
                    for l in 0..g.k {
                        let av = if g.trans_a {
                            a[l + i * g.lda]
                        } else {
                            a[i + l * g.lda]
                        };
                        let bv = if g.trans_b {
                            b[j + l * g.ldb]
                        } else {
                            b[l + j * g.ldb]
                        };
                        acc += f64::from(av) * f64::from(bv);
                    }
                    let ci = bi * g.stride_c + i + j * g.ldc;
                    // cuBLAS does not read C when beta is 0.
                    if g.beta != 0.0 {
                        acc += f64::from(g.beta) * f64::from(c[ci]);
                    }
                    c[ci] = acc as f32;
                }
            }
        }
    }

    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + seed * 13) % 11) as f32 - 5.0)
            .collect()
    }

    #[test]
    fn left_mul_spec_computes_row_major_products() {
        let (batch, m) = (3, 5);
        for transpose in [false, true] {
            // op(W) is (r, k).
            let (r, k) = (4, 6);
            let (w_rows, w_cols) = if transpose { (k, r) } else { (r, k) };
            let w = data(w_rows * w_cols, 1);
            let x = data(batch * k * m, 2);
            let mut out = vec![f32::NAN; batch * r * m];
            emulate(
                &left_mul_spec((w_rows, w_cols), transpose, batch, m),
                &x,
                &w,
                &mut out,
            );
            for b in 0..batch {
                for i in 0..r {
                    for p in 0..m {
                        let want: f32 = (0..k)
                            .map(|l| {
                                let wv = if transpose {
                                    w[l * w_cols + i]
                                } else {
                                    w[i * w_cols + l]
                                };
                                wv * x[(b * k + l) * m + p]
                            })
                            .sum();
                        assert_eq!(out[(b * r + i) * m + p], want, "transpose {transpose}");
                    }
                }
            }
        }
    }

    #[test]
    fn batched_nt_spec_computes_row_major_products() {
        let (p, r, batch, m) = (3, 4, 2, 5);
        let a = data(batch * p * m, 3);
        let b = data(batch * r * m, 4);
        let mut out = vec![1.0f32; batch * p * r];
        emulate(&batched_nt_spec(p, r, batch, m, true), &b, &a, &mut out);
        for bi in 0..batch {
            for i in 0..p {
                for j in 0..r {
                    let want: f32 = 1.0
                        + (0..m)
                            .map(|l| a[(bi * p + i) * m + l] * b[(bi * r + j) * m + l])
                            .sum::<f32>();
                    assert_eq!(out[(bi * p + i) * r + j], want);
                }
            }
        }
    }

    #[test]
    fn extent_of_batched_operands() {
        assert_eq!(extent(3, 4, 3, 12, 2), 12 + 3 * 3 + 3);
        assert_eq!(extent(0, 4, 1, 0, 5), 0);
        assert_eq!(extent(5, 1, 5, 0, 7), 5);
    }
}
