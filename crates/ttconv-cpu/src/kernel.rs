//! A register-blocked GEMM whose operand rows are given by a table of offsets ("terms"), for the
//! fused factorized forward (`fused.rs`).
//!
//! `C[i, j] (+)= sum_k A[a_k + i] * B[b_k + j]` for `i < m`, `j < n`: row `k` of the (virtual)
//! `K x m` left operand starts at `A[a_k]` (its `m` entries contiguous: a weight `(K, m)` in
//! row-major layout, or a core `(r_in, k, r_out)` with `K = r_in * k`), and row `k` of the `K x n`
//! right operand starts at `B[b_k]` (its `n` entries contiguous). A shifted 1-D convolution is
//! then one call whose terms point at shifted rows of the input: no im2col, no padded copy.
//!
//! When many row blocks of `C` reuse a block of `B`, or its rows alias in L1, that block is first
//! packed tile by tile (`K x NR` contiguous per tile, zero-padded past `n`), so the micro-kernel
//! streams it sequentially whatever the row strides of `B`. The micro-kernel keeps an `MR x NR`
//! tile of `C` in registers: 8 x 48 (24 zmm) or 8 x 32 (16 zmm, when the column count wastes
//! less of its tiles, [`wide_tiles`]) with AVX-512, 6 x 16 with AVX2 + FMA (12 ymm); partial
//! tiles use masked loads and stores, which never touch masked-out elements. Without either, a
//! portable loop computes the same sums.
//!
//! Why hand-written rather than a crate: faer and matrixmultiply take each operand as one strided
//! matrix, so a 1-D convolution over shifted rows becomes one GEMM per tap (short, skinny calls) or
//! an im2col copy; no GEMM crate accepts rows from an offset table. Every path of this kernel is
//! tested against plain sums in this file and through the fused forward's property tests.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use ndarray::ArrayViewMut2;

use crate::simd::Level;

/// Columns per chunk: the packed `K x NC` block of `B` stays in L2 while every row block of `C`
/// uses it. A multiple of every tile width (48, 32, 16), so only a call's last chunk has a
/// partial tile.
const NC: usize = 288;

/// How a call starts its sums.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Init<'a> {
    /// `C = sum` (overwrite).
    Zero,
    /// `C = bias[i] + sum` (`bias` has `m` entries).
    Bias(&'a [f32]),
}

/// The output operand `C` of [`gemm_terms`]: `m` rows of `n` writable floats, row `i` starting
/// `i * ld` floats after row 0, borrowed exclusively for `'a`. Built from a slice or from a
/// strided view (the rows of one output slab inside the whole output), so the last op of the
/// fused chain writes straight into the layer's output without a copy. `C` is only written,
/// never read.
#[derive(Debug)]
pub(crate) struct Out<'a> {
    ptr: *mut f32,
    ld: usize,
    m: usize,
    n: usize,
    _borrow: PhantomData<&'a mut f32>,
}

impl<'a> Out<'a> {
    /// `C[i, j] = c[c0 + i * ld + j]`, `i < m`, `j < n`. Panics when that leaves `c` or when rows
    /// overlap (`ld < n` with `m > 1`).
    pub(crate) fn in_slice(c: &'a mut [f32], c0: usize, ld: usize, m: usize, n: usize) -> Self {
        if m > 0 && n > 0 {
            assert!(
                c0 + (m - 1) * ld + n <= c.len(),
                "gemm_terms: C out of range"
            );
            assert!(m == 1 || ld >= n, "gemm_terms: C rows overlap");
        }
        Self {
            // In bounds whenever `C` is not empty (checked above); an empty `C` is never written.
            ptr: c.as_mut_ptr().wrapping_add(c0),
            ld,
            m,
            n,
            _borrow: PhantomData,
        }
    }

    /// `C[i, j] = v[i, j0 + j]` for every row `i` of `v`, `j < n`, whose elements may be
    /// uninitialised (`C` is only written). Panics unless `v`'s columns are contiguous (unit
    /// stride), its rows do not overlap and `j0 + n` columns exist.
    pub(crate) fn in_view(
        v: &'a mut ArrayViewMut2<'_, MaybeUninit<f32>>,
        j0: usize,
        n: usize,
    ) -> Self {
        let (m, cols) = v.dim();
        assert!(j0 + n <= cols, "gemm_terms: C columns out of range");
        let s = v.strides();
        assert!(
            cols <= 1 || s[1] == 1,
            "gemm_terms: C columns not contiguous"
        );
        let ld = if m > 1 {
            usize::try_from(s[0])
                .ok()
                .filter(|&ld| ld >= cols)
                .expect("gemm_terms: C rows overlap")
        } else {
            cols
        };
        Self {
            // `MaybeUninit<f32>` has the layout of `f32`; writing through the raw pointer
            // initialises. `j0 + n <= cols`, so a non-empty `C` starts inside row 0 of `v`.
            ptr: v.as_mut_ptr().cast::<f32>().wrapping_add(j0),
            ld,
            m,
            n,
            _borrow: PhantomData,
        }
    }
}

thread_local! {
    /// Per-thread buffer for packed blocks of `B` (grown on demand, never shrunk).
    static PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One GEMM call: `C[i, j] (init) sum_k A[a_k + i] * B[b_k + j]`, `i < m`, `j < n` (the shape of
/// `c`), with `terms[k] = (a_k, b_k)`, at SIMD level `lv` (which the CPU must support: a
/// [`Level::capped`] one). Runs on the calling thread.
///
/// Panics when an operand would be read out of its slice ([`Out`] checked `C` when it was
/// built), so the unchecked inner loops below only ever touch checked elements.
pub(crate) fn gemm_terms(
    lv: Level,
    a: &[f32],
    b: &[f32],
    terms: &[(usize, usize)],
    c: Out<'_>,
    init: Init<'_>,
) {
    debug_assert!(lv.supported());
    gemm_at(lv, a, b, terms, c, init);
}

/// [`gemm_terms`] at SIMD level `lv`, which the CPU must support.
fn gemm_at(lv: Level, a: &[f32], b: &[f32], terms: &[(usize, usize)], c: Out<'_>, init: Init<'_>) {
    let (m, n, ldc) = (c.m, c.n, c.ld);
    if m == 0 || n == 0 {
        return;
    }
    if let Init::Bias(bias) = init {
        assert!(bias.len() >= m, "gemm_terms: bias too short");
    }
    for &(ak, bk) in terms {
        assert!(ak + m <= a.len(), "gemm_terms: A out of range");
        assert!(bk + n <= b.len(), "gemm_terms: B out of range");
    }
    let (mr, nr) = match lv {
        Level::Avx512 if wide_tiles(n) => (8, 48),
        Level::Avx512 => (8, 32),
        Level::Avx2 => (6, 16),
        Level::Portable => return portable(a, b, terms, c, init),
    };
    // Pack `B` when more than eight row blocks of `C` reuse it, or when its rows are a multiple
    // of 4 KiB apart (they would all fall in the same L1 sets); fewer row blocks read it in
    // place. (Packing from three row blocks up cost 10-17% of the forward at 32-64 channel
    // bonds, the pack taking the cache misses on `B` that the reads in place overlap with
    // the FMAs; measured in docs/perf.md.)
    let aliased = terms
        .windows(2)
        .next()
        .is_some_and(|w| w[1].1.abs_diff(w[0].1) % 1024 == 0);
    let pack = !terms.is_empty() && (m > 8 * mr || (m > mr && aliased));
    PACK.with(|buf| {
        let mut buf = buf.borrow_mut();
        let k = terms.len();
        if pack && buf.len() < k * NC.max(nr) {
            buf.resize(k * NC.max(nr), 0.0);
        }
        for nc in (0..n).step_by(NC) {
            let ncols = (n - nc).min(NC);
            if pack {
                let w_all = ncols.div_ceil(nr) * nr;
                debug_assert!(w_all * k <= buf.len());
                #[cfg(target_arch = "x86_64")]
                #[allow(unsafe_code)]
                // SAFETY: as below; `buf` holds `k * NC.max(nr)` floats, at least
                // `ceil(ncols / nr) * nr * k`, and every read of `B` is at
                // `b_k + nc + j < b_k + n` (masked lanes are not read).
                unsafe {
                    match nr {
                        48 => avx512::pack::<3>(b, terms, nc, ncols, &mut buf),
                        32 => avx512::pack::<2>(b, terms, nc, ncols, &mut buf),
                        _ => avx2::pack::<2>(b, terms, nc, ncols, &mut buf),
                    }
                }
            }
            let panel: &[f32] = &buf;
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            // SAFETY: `lv` is `level()` or (in tests) a level `supported` confirmed, so the CPU has
            // the instruction set the called function enables. Every
            // element touched was bounds-checked above (`A[a_k .. a_k + m]`, `B[b_k .. b_k + n]`)
            // or by `Out` (`C` rows `i < m` of `n` floats at `ptr + i * ldc`, exclusively
            // borrowed, disjoint as `ldc >= n`), or lies in the packed panel, which holds
            // `ceil(ncols / nr) * k * nr` floats.
            unsafe {
                let cc = c.ptr.add(nc);
                let panel = pack.then_some(panel);
                match nr {
                    48 => avx512::block::<3>(a, b, terms, panel, nc, cc, ldc, m, ncols, init),
                    32 => avx512::block::<2>(a, b, terms, panel, nc, cc, ldc, m, ncols, init),
                    _ => avx2::block::<2>(a, b, terms, panel, nc, cc, ldc, m, ncols, init),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (panel, nr);
        }
    });
}

/// Whether an AVX-512 call of `n` columns runs 8 x 48 tiles (24 accumulators) rather than
/// 8 x 32 (16): the wider tile does 1.5x the FMAs per load of its broadcast weights and ran the
/// kernel alone 10-20% faster (single thread, operands in L2: 152-172 against 139-149 GFLOP/s),
/// but every tile costs its full reduction however few of its columns are used, so it is taken
/// only when its column tiles, weighted by that speed, cost less (`n = 49`, a 7 x 7 map, is
/// one 48-column tile plus a 1-column one).
fn wide_tiles(n: usize) -> bool {
    // Work in 16-lane vector units (3 per wide tile, 2 per narrow one), the wide tile's at 0.88
    // of the narrow one's cost: 3 * 0.88 * ceil(n / 48) <= 2 * ceil(n / 32).
    264 * n.div_ceil(48) <= 200 * n.div_ceil(32)
}

/// The same sums with plain loops (no AVX2, or another architecture).
fn portable(a: &[f32], b: &[f32], terms: &[(usize, usize)], c: Out<'_>, init: Init<'_>) {
    let (m, n) = (c.m, c.n);
    let mut acc = vec![0.0f32; n];
    for i in 0..m {
        acc.fill(0.0);
        for &(ak, bk) in terms {
            let av = a[ak + i];
            for (s, &bv) in acc.iter_mut().zip(&b[bk..bk + n]) {
                *s = av.mul_add(bv, *s);
            }
        }
        // SAFETY: row `i < m` of `C` is `n` floats at `ptr + i * ld`, exclusively borrowed and
        // disjoint from the other rows (`Out`'s checks).
        #[allow(unsafe_code)]
        let row = unsafe { std::slice::from_raw_parts_mut(c.ptr.add(i * c.ld), n) };
        match init {
            Init::Zero => row.copy_from_slice(&acc),
            Init::Bias(bias) => row.iter_mut().zip(&acc).for_each(|(r, s)| *r = bias[i] + s),
        }
    }
}

/// Generates a SIMD module: `$mr x (2 * $lanes)` tiles over `$v` vectors.
macro_rules! simd_module {
    ($name:ident, $feat:literal, $v:ty, $mask:ty, $lanes:literal, $mr:literal,
     zero = $zero:path, set1 = $set1:path, fmadd = $fmadd:path,
     loadu = $loadu:path, storeu = $storeu:path, helpers = { $($helpers:tt)* }) => {
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        mod $name {
            use std::arch::x86_64::*;

            use super::Init;


            $($helpers)*

            /// Columns `0..ncols` (at most `NC`) of the call, starting at column `nc` of `B` and
            /// at `cp` in `C` (row stride `ldc`); `panel`, if given, is those columns of `B`
            /// packed tile by tile.
            ///
            /// # Safety
            /// The instruction set `$feat` is available and the bounds of
            /// [`super::gemm_terms`] hold.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn block<const NV: usize>(
                a: &[f32],
                b: &[f32],
                terms: &[(usize, usize)],
                panel: Option<&[f32]>,
                nc: usize,
                cp: *mut f32,
                ldc: usize,
                m: usize,
                ncols: usize,
                init: Init<'_>,
            ) {
                let k = terms.len();
                let nr_tile = NV * $lanes;
                // SAFETY (every `add`): offsets inside the ranges the caller checked.
                unsafe {
                    for i0 in (0..m).step_by($mr) {
                        let mr = (m - i0).min($mr);
                        let bias = match init {
                            Init::Bias(bias) => Some(&bias[i0..i0 + mr]),
                            Init::Zero => None,
                        };
                        for (jt, j0) in (0..ncols).step_by(nr_tile).enumerate() {
                            let nr = (ncols - j0).min(nr_tile);
                            let (bp, packed) = match panel {
                                Some(p) => (p.as_ptr().add(jt * k * nr_tile), true),
                                None => (b.as_ptr().add(nc + j0), false),
                            };
                            let ap = a.as_ptr().add(i0);
                            let ct = cp.add(i0 * ldc + j0);
                            macro_rules! go {
                                ($r:literal) => {
                                    tile::<$r, NV>(ap, bp, packed, terms, ct, ldc, nr, bias)
                                };
                            }
                            match mr {
                                8 => go!(8),
                                7 => go!(7),
                                6 => go!(6),
                                5 => go!(5),
                                4 => go!(4),
                                3 => go!(3),
                                2 => go!(2),
                                _ => go!(1),
                            }
                        }
                    }
                }
            }

            /// Packs columns `nc .. nc + ncols` of `B` tile by tile:
            /// `buf[(jt * k + kk) * NR + jj] = B[b_kk + nc + jt * NR + jj]`, zero past `ncols`.
            ///
            /// # Safety
            /// The instruction set `$feat` is available, `B[b_k + nc .. b_k + nc + ncols]` is in
            /// bounds for every term and `buf` holds `ceil(ncols / NR) * NR * k` floats.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn pack<const NV: usize>(
                b: &[f32],
                terms: &[(usize, usize)],
                nc: usize,
                ncols: usize,
                buf: &mut [f32],
            ) {
                let k = terms.len();
                let nr_tile = NV * $lanes;
                // SAFETY: reads inside the checked `B` ranges (masked lanes excluded), writes
                // inside `buf` (caller).
                unsafe {
                    let bp = b.as_ptr().add(nc);
                    let out = buf.as_mut_ptr();
                    // Row by row, each row's `ncols` floats read in one sequential run (the
                    // rows are often a page apart: tile by tile, every row would be a new
                    // stream of three cache lines, which the prefetchers do not follow).
                    let full = ncols / nr_tile;
                    let rest = ncols - full * nr_tile;
                    let masks: [$mask; NV] =
                        std::array::from_fn(|v| mask(rest.saturating_sub(v * $lanes).min($lanes)));
                    for (kk, &(_, bk)) in terms.iter().enumerate() {
                        let row = bp.add(bk);
                        for jt in 0..full {
                            let src = row.add(jt * nr_tile);
                            let dst = out.add(jt * k * nr_tile + kk * nr_tile);
                            for v in 0..NV {
                                $storeu(dst.add(v * $lanes), $loadu(src.add(v * $lanes)));
                            }
                        }
                        if rest > 0 {
                            let src = row.add(full * nr_tile);
                            let dst = out.add(full * k * nr_tile + kk * nr_tile);
                            for v in 0..NV {
                                $storeu(dst.add(v * $lanes), maskload(src.add(v * $lanes), masks[v]));
                            }
                        }
                    }
                }
            }

            /// One `R x nr` tile (`nr <= NR`): `a` points at `A[i0]`, `b` at column `j0` of `B`
            /// (row `k` at `b + b_k`) or at the packed tile (row `k` at `b + k * NR`, `NR`
            /// floats, zero past `nr`), `c` at `C[i0, j0]`.
            ///
            /// # Safety
            /// As [`block`], for rows `0..R` and columns `0..nr` relative to the pointers.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn tile<const R: usize, const NV: usize>(
                a: *const f32,
                b: *const f32,
                packed: bool,
                terms: &[(usize, usize)],
                c: *mut f32,
                ldc: usize,
                nr: usize,
                bias: Option<&[f32]>,
            ) {
                let nr_tile = NV * $lanes;
                let mut acc: [[$v; NV]; R] = [[$zero(); NV]; R];
                if let Some(bias) = bias {
                    for i in 0..R {
                        acc[i] = [$set1(bias[i]); NV];
                    }
                }
                let full = nr == nr_tile;
                let masks: [$mask; NV] =
                    std::array::from_fn(|v| mask(nr.saturating_sub(v * $lanes).min($lanes)));
                // SAFETY: pointers `a + a_k + i` (i < R), `b + b_k + j` (unmasked j < nr) or
                // the packed tile, and `c + i * ldc + j` (j < nr), all in checked ranges.
                unsafe {
                    if packed {
                        for (kk, &(ak, _)) in terms.iter().enumerate() {
                            let br = b.add(kk * nr_tile);
                            let bv: [$v; NV] = std::array::from_fn(|v| $loadu(br.add(v * $lanes)));
                            let ar = a.add(ak);
                            for i in 0..R {
                                let av = $set1(*ar.add(i));
                                for v in 0..NV {
                                    acc[i][v] = $fmadd(av, bv[v], acc[i][v]);
                                }
                            }
                        }
                    } else if full {
                        for &(ak, bk) in terms {
                            let bv: [$v; NV] =
                                std::array::from_fn(|v| $loadu(b.add(bk + v * $lanes)));
                            let ar = a.add(ak);
                            for i in 0..R {
                                let av = $set1(*ar.add(i));
                                for v in 0..NV {
                                    acc[i][v] = $fmadd(av, bv[v], acc[i][v]);
                                }
                            }
                        }
                    } else {
                        for &(ak, bk) in terms {
                            let bv: [$v; NV] = std::array::from_fn(|v| {
                                maskload(b.add(bk + v * $lanes), masks[v])
                            });
                            let ar = a.add(ak);
                            for i in 0..R {
                                let av = $set1(*ar.add(i));
                                for v in 0..NV {
                                    acc[i][v] = $fmadd(av, bv[v], acc[i][v]);
                                }
                            }
                        }
                    }
                    for i in 0..R {
                        let cr = c.add(i * ldc);
                        for v in 0..NV {
                            if full {
                                $storeu(cr.add(v * $lanes), acc[i][v]);
                            } else {
                                maskstore(cr.add(v * $lanes), masks[v], acc[i][v]);
                            }
                        }
                    }
                }
            }
        }
    };
}

simd_module!(
    avx2,
    "avx2,fma",
    __m256,
    __m256i,
    8,
    6,
    zero = _mm256_setzero_ps,
    set1 = _mm256_set1_ps,
    fmadd = _mm256_fmadd_ps,
    loadu = _mm256_loadu_ps,
    storeu = _mm256_storeu_ps,
    helpers = {
        /// Lanes `0..n` (`n <= 8`) set.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        fn mask(n: usize) -> __m256i {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
        }
        /// # Safety
        /// The lanes set in `m` are readable at `p`.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn maskload(p: *const f32, m: __m256i) -> __m256 {
            // SAFETY: masked-out lanes are not accessed; the others are readable (caller).
            unsafe { _mm256_maskload_ps(p, m) }
        }
        /// # Safety
        /// The lanes set in `m` are writable at `p`.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn maskstore(p: *mut f32, m: __m256i, v: __m256) {
            // SAFETY: masked-out lanes are not accessed; the others are writable (caller).
            unsafe { _mm256_maskstore_ps(p, m, v) }
        }
    }
);

simd_module!(
    avx512,
    "avx512f",
    __m512,
    __mmask16,
    16,
    8,
    zero = _mm512_setzero_ps,
    set1 = _mm512_set1_ps,
    fmadd = _mm512_fmadd_ps,
    loadu = _mm512_loadu_ps,
    storeu = _mm512_storeu_ps,
    helpers = {
        /// Lanes `0..n` (`n <= 16`) set.
        #[inline]
        fn mask(n: usize) -> __mmask16 {
            ((1u32 << n) - 1) as __mmask16
        }
        /// # Safety
        /// The lanes set in `m` are readable at `p`.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn maskload(p: *const f32, m: __mmask16) -> __m512 {
            // SAFETY: masked-out lanes are not accessed; the others are readable (caller).
            unsafe { _mm512_maskz_loadu_ps(m, p) }
        }
        /// # Safety
        /// The lanes set in `m` are writable at `p`.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn maskstore(p: *mut f32, m: __mmask16, v: __m512) {
            // SAFETY: masked-out lanes are not accessed; the others are writable (caller).
            unsafe { _mm512_mask_storeu_ps(p, m, v) }
        }
    }
);

#[cfg(test)]
mod tests {
    use ndarray::ShapeBuilder;

    use super::*;

    fn naive(
        a: &[f32],
        b: &[f32],
        terms: &[(usize, usize)],
        c: &mut [f32],
        c0: usize,
        ldc: usize,
        m: usize,
        n: usize,
        init: Init<'_>,
    ) {
        for i in 0..m {
            for j in 0..n {
                let s: f64 = terms
                    .iter()
                    .map(|&(ak, bk)| f64::from(a[ak + i]) * f64::from(b[bk + j]))
                    .sum();
                let cell = &mut c[c0 + i * ldc + j];
                *cell = match init {
                    Init::Zero => s as f32,
                    Init::Bias(bias) => (f64::from(bias[i]) + s) as f32,
                };
            }
        }
    }

    #[test]
    fn writes_a_strided_view_in_place_and_nothing_else() {
        // `C` = columns 3..3 + n of a (m, 50) block whose rows are 64 floats apart inside a
        // larger buffer, as the fused forward's last op writes one slab of the output.
        let a: Vec<f32> = (0..200).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..400).map(|i| (i % 5) as f32 * 0.5).collect();
        let terms: Vec<(usize, usize)> = (0..6).map(|k| (k * 11, k * 53)).collect();
        for m in [1, 3, 8, 9, 17] {
            for n in [1, 16, 33, 47] {
                let mut want = vec![-7.0f32; m * 64];
                naive(&a, &b, &terms, &mut want, 3, 64, m, n, Init::Zero);
                for lv in [Level::Portable, Level::Avx2, Level::Avx512] {
                    if !lv.supported() {
                        continue;
                    }
                    let mut buf = vec![MaybeUninit::new(-7.0f32); m * 64];
                    let mut v =
                        ndarray::ArrayViewMut2::from_shape((m, 50).strides((64, 1)), &mut buf)
                            .expect("rows 64 apart fit");
                    gemm_at(lv, &a, &b, &terms, Out::in_view(&mut v, 3, n), Init::Zero);
                    // SAFETY: every element was initialised to -7 before the call.
                    #[allow(unsafe_code)]
                    let got: Vec<f32> = buf.iter().map(|e| unsafe { e.assume_init() }).collect();
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{lv:?} m={m} n={n} at {i}: {g} {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "C columns out of range")]
    fn a_view_too_narrow_for_the_columns_is_refused() {
        let mut buf = vec![MaybeUninit::new(0.0f32); 20];
        let mut v = ndarray::ArrayViewMut2::from_shape((2, 10), &mut buf).expect("2 x 10");
        let _ = Out::in_view(&mut v, 4, 7);
    }

    /// Rows of `B` a multiple of 1024 floats apart are packed even for few row blocks of `C`
    /// (the 1-D layers' channel rows): every column count around the chunk and tile widths.
    #[test]
    fn packs_rows_a_page_apart() {
        let k = 6;
        let a: Vec<f32> = (0..k * 40)
            .map(|i| ((i * 29) % 19) as f32 * 0.1 - 0.9)
            .collect();
        let b: Vec<f32> = (0..k * 1024)
            .map(|i| ((i * 11) % 23) as f32 * 0.1 - 1.1)
            .collect();
        let terms: Vec<(usize, usize)> = (0..k).map(|t| (t * 40, t * 1024)).collect();
        for m in [9, 17, 33] {
            // 64 and 150 columns take the 32-wide AVX-512 tile with full tiles (`wide_tiles`).
            for n in [1, 16, 47, 48, 64, 100, 150, 287, 288, 289, 600, 1000] {
                let mut want = vec![0.0f32; m * n];
                naive(&a, &b, &terms, &mut want, 0, n, m, n, Init::Zero);
                for lv in [Level::Avx2, Level::Avx512] {
                    if !lv.supported() {
                        continue;
                    }
                    let mut got = vec![f32::NAN; m * n];
                    gemm_at(
                        lv,
                        &a,
                        &b,
                        &terms,
                        Out::in_slice(&mut got, 0, n, m, n),
                        Init::Zero,
                    );
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{lv:?} m={m} n={n}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matches_naive_on_every_tile_shape() {
        let a: Vec<f32> = (0..400)
            .map(|i| ((i * 37) % 23) as f32 * 0.1 - 1.0)
            .collect();
        let b: Vec<f32> = (0..900)
            .map(|i| ((i * 13) % 17) as f32 * 0.1 - 0.8)
            .collect();
        let bias: Vec<f32> = (0..80).map(|i| i as f32 * 0.5).collect();
        // Up to 17 rows `B` is read in place; 65 and 70 rows pack it.
        for m in [1, 2, 5, 6, 7, 8, 9, 13, 17, 65, 70] {
            for n in [1, 7, 8, 9, 15, 16, 17, 31, 33, 40, 130, 200, 300] {
                for kind in 0..2 {
                    let terms: Vec<(usize, usize)> =
                        (0..5).map(|k| (k * 21 + k % 3, k * 97 + 3 * k)).collect();
                    let ldc = n + 3;
                    let init = match kind {
                        0 => Init::Zero,
                        _ => Init::Bias(&bias),
                    };
                    let got: Vec<f32> = (0..m * ldc + 2).map(|i| i as f32 * 0.01).collect();
                    let mut want = got.clone();
                    naive(&a, &b, &terms, &mut want, 2, ldc, m, n, init);
                    for lv in [Level::Portable, Level::Avx2, Level::Avx512] {
                        if !lv.supported() {
                            continue;
                        }
                        let mut got = got.clone();
                        gemm_at(
                            lv,
                            &a,
                            &b,
                            &terms,
                            Out::in_slice(&mut got, 2, ldc, m, n),
                            init,
                        );
                        for (g, w) in got.iter().zip(&want) {
                            assert!(
                                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                "{lv:?} m={m} n={n} {g} {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}
