//! The CPU backend's options: explicit values, chosen when the backend is built.

/// The algorithm of the dense (reconstructed) forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DenseAlgorithm {
    /// Per shape: the direct AVX-512 kernel (`direct.rs`) for unit strides at SIMD level AVX-512
    /// where its padded grid wastes little, else [`Self::Rows`].
    #[default]
    Auto,
    /// The im2col over the last axis only (`row_im2col.rs`) where it applies (2-D, at least 384
    /// output positions), else [`Self::Im2col`].
    Rows,
    /// The full im2col (`conv_dense.rs`) followed by one GEMM per block.
    Im2col,
}

/// The highest SIMD level the backend's own kernels (the fused chain's GEMM; the direct dense
/// kernel, which runs only at AVX-512) may use; the processor's best level is used when it is lower. Capping runs and tests
/// the paths of processors without AVX-512 (most laptops) on a machine that has it. faer's GEMMs
/// (the im2col paths, the primitives) choose their own level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SimdLevel {
    /// The best the processor supports (AVX-512F, else AVX2 + FMA, else plain loops).
    #[default]
    Auto,
    /// At most AVX2 + FMA.
    Avx2,
    /// Plain loops only.
    Portable,
}

/// How a [`crate::CpuBackend`] runs its forwards.
///
/// The defaults are the fastest paths measured; the others exist for A/B timing and for tests
/// of the plain chain (`cargo xtask bench --cpu-dense rows`, `--unfused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// The dense forward's algorithm.
    pub dense: DenseAlgorithm,
    /// Whether the factorized forward runs the fused chain (`fused.rs`: tiles carried through
    /// every step in a per-thread workspace) rather than the steps one primitive at a time.
    pub fused: bool,
    /// The SIMD cap of the backend's own kernels.
    pub simd: SimdLevel,
}

impl Default for CpuOptions {
    fn default() -> Self {
        Self {
            dense: DenseAlgorithm::Auto,
            fused: true,
            simd: SimdLevel::Auto,
        }
    }
}
