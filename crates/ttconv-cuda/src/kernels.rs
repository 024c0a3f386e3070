//! CUDA C++ sources of every kernel of the backend.
//!
//! The sources are plain strings, compiled at run time by NVRTC (`compile.rs`) for the device's
//! architecture, once per process and device, when a [`crate::CudaBackend`] first opens it;
//! [`crate::compile_all_to_cubin`] and [`crate::compile_all_to_ptx`] compile them for any
//! architecture without a GPU, so a test can check them wherever `libnvrtc` loads.
//!
//! Layout conventions shared with the Rust side: every tensor is f32, row-major, activations
//! `(batch, channels, D_1..D_d)`. Offsets are computed in 64-bit integers.

use cudarc::driver::DeviceRepr;

/// The most spatial modes the dense convolution kernels (`im2col`, `col2im`) take.
pub const MAX_DIMS: usize = 8;

/// Output channels (or input channels for the transposed kernel) one thread of the 1-D
/// convolution kernels accumulates in registers. Must match `TILE` in [`CONV_ALONG_SRC`].
pub(crate) const CHANNEL_TILE: usize = 8;

/// Threads per block of the 1-D convolution kernels.
pub(crate) const CONV_ALONG_BLOCK: u32 = 128;

/// Geometry of an N-D convolution, passed by value to the `im2col` / `col2im` kernels.
///
/// Mirrors `struct ConvGeom` in [`IM2COL_SRC`] field for field (`#[repr(C)]`, all `i32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    /// Number of spatial modes in use (`1..=MAX_DIMS`).
    pub d: i32,
    /// Input spatial sizes.
    pub in_sp: [i32; MAX_DIMS],
    /// Output spatial sizes.
    pub out_sp: [i32; MAX_DIMS],
    /// Kernel sizes.
    pub k: [i32; MAX_DIMS],
    /// Strides.
    pub stride: [i32; MAX_DIMS],
    /// Dilations.
    pub dil: [i32; MAX_DIMS],
    /// Padding before each mode (padding after only shows in `out_sp`).
    pub pad: [i32; MAX_DIMS],
}

// SAFETY: `ConvGeom` is `#[repr(C)]`, made of `i32` and arrays of `i32` only (no padding, no
// pointers), with the same field order and types as the CUDA `struct ConvGeom`, so its bytes are
// a valid kernel parameter of that type.
unsafe impl DeviceRepr for ConvGeom {}

/// Element-wise helpers and reductions: bias add, batch reduction, bias gradient.
pub const ELEMENTWISE_SRC: &str = r#"
// y[i] += bias[(i / inner) % channels] for i < n.
extern "C" __global__ void ttc_add_bias(float* __restrict__ y, const float* __restrict__ bias,
                                        long long n, int channels, long long inner) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        y[i] += bias[(i / inner) % channels];
    }
}

// out[i] = (accumulate ? out[i] : 0) + sum_b ws[b * n + i] for i < n.
extern "C" __global__ void ttc_sum_batches(const float* __restrict__ ws, float* __restrict__ out,
                                           int batches, long long n, int accumulate) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float acc = accumulate ? out[i] : 0.0f;
        for (int b = 0; b < batches; ++b) {
            acc += ws[(long long)b * n + i];
        }
        out[i] = acc;
    }
}

// gb[o] = sum_{b, m} gy[(b * channels + o) * inner + m]; one block per channel o,
// blockDim.x a power of two <= 1024. The batch loop sits outside the position loop, so each
// element costs one load and one add (no 64-bit division to split a flat index).
extern "C" __global__ void ttc_bias_grad(const float* __restrict__ gy, float* __restrict__ gb,
                                         int batch, int channels, long long inner) {
    __shared__ float partial[1024];
    const int o = blockIdx.x;
    float acc = 0.0f;
    for (int b = 0; b < batch; ++b) {
        const float* row = gy + ((long long)b * channels + o) * inner;
        for (long long m = threadIdx.x; m < inner; m += blockDim.x) {
            acc += row[m];
        }
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            partial[threadIdx.x] += partial[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        gb[o] = partial[0];
    }
}
"#;

/// The 1-D convolution along one spatial axis, forward and transposed (input gradient).
///
/// An activation is viewed as `(batch, channels, outer, len, inner)` where `len` is the axis
/// length, `outer` the product of the spatial sizes before it and `inner` of those after it.
/// One thread owns one spatial position and `TILE` channels; the core slice for its channel tile
/// is staged through dynamic shared memory in chunks of the reduced channel dimension.
pub const CONV_ALONG_SRC: &str = r#"
#define TILE 8

// y[b, s, o, p, i] = sum_{a, t} core[a, t, s] * x[b, a, o, p * stride + t * dil - pad, i]
// grid.x covers batch * outer * len_out * inner positions, grid.y the tiles of r_out;
// dynamic shared memory: a_chunk * k * TILE floats.
extern "C" __global__ void ttc_conv_along_fwd(
    const float* __restrict__ x, const float* __restrict__ core, float* __restrict__ y,
    int batch, int r_in, int r_out, long long outer, int len, long long inner, int len_out,
    int k, int stride, int dil, int pad, int a_chunk) {
    extern __shared__ float w_tile[];
    const long long total = (long long)batch * outer * len_out * inner;
    const long long pos = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const bool active = pos < total;
    const int s0 = blockIdx.y * TILE;

    long long rest = active ? pos : 0;
    const long long ii = rest % inner;
    rest /= inner;
    const int p = (int)(rest % len_out);
    rest /= len_out;
    const long long oo = rest % outer;
    const long long b = rest / outer;

    const long long chan_stride = outer * len * inner;
    const float* xb = x + (b * r_in * outer + oo) * len * inner + ii;
    const int base = p * stride - pad;

    float acc[TILE];
#pragma unroll
    for (int j = 0; j < TILE; ++j) acc[j] = 0.0f;

    for (int a0 = 0; a0 < r_in; a0 += a_chunk) {
        const int na = min(a_chunk, r_in - a0);
        __syncthreads();
        for (int q = threadIdx.x; q < na * k * TILE; q += blockDim.x) {
            const int j = q % TILE;
            const int at = q / TILE;  // (a - a0) * k + t
            const int s = s0 + j;
            w_tile[q] = (s < r_out) ? core[((long long)a0 * k + at) * r_out + s] : 0.0f;
        }
        __syncthreads();
        if (active) {
            for (int aa = 0; aa < na; ++aa) {
                const float* xa = xb + (long long)(a0 + aa) * chan_stride;
                for (int t = 0; t < k; ++t) {
                    const int ip = base + t * dil;
                    if (ip >= 0 && ip < len) {
                        const float xv = xa[(long long)ip * inner];
                        const float* w = w_tile + (aa * k + t) * TILE;
#pragma unroll
                        for (int j = 0; j < TILE; ++j) acc[j] = fmaf(xv, w[j], acc[j]);
                    }
                }
            }
        }
    }
    if (active) {
        const long long out_chan = outer * len_out * inner;
        float* yb = y + (b * r_out * outer + oo) * len_out * inner + (long long)p * inner + ii;
#pragma unroll
        for (int j = 0; j < TILE; ++j) {
            const int s = s0 + j;
            if (s < r_out) yb[(long long)s * out_chan] = acc[j];
        }
    }
}

// Transposed convolution (input gradient of ttc_conv_along_fwd):
// gx[b, a, o, i, ii] = sum_{s, t, p : p * stride + t * dil - pad = i} core[a, t, s] * gy[b, s, o, p, ii]
// grid.x covers batch * outer * len * inner positions, grid.y the tiles of r_in;
// dynamic shared memory: s_chunk * k * TILE floats.
extern "C" __global__ void ttc_conv_along_bwd_input(
    const float* __restrict__ gy, const float* __restrict__ core, float* __restrict__ gx,
    int batch, int r_in, int r_out, long long outer, int len, long long inner, int len_out,
    int k, int stride, int dil, int pad, int s_chunk) {
    extern __shared__ float w_tile[];
    const long long total = (long long)batch * outer * len * inner;
    const long long pos = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const bool active = pos < total;
    const int a0 = blockIdx.y * TILE;

    long long rest = active ? pos : 0;
    const long long ii = rest % inner;
    rest /= inner;
    const int i = (int)(rest % len);
    rest /= len;
    const long long oo = rest % outer;
    const long long b = rest / outer;

    const long long chan_stride = outer * len_out * inner;
    const float* gyb = gy + (b * r_out * outer + oo) * len_out * inner + ii;

    float acc[TILE];
#pragma unroll
    for (int j = 0; j < TILE; ++j) acc[j] = 0.0f;

    for (int c0 = 0; c0 < r_out; c0 += s_chunk) {
        const int ns = min(s_chunk, r_out - c0);
        __syncthreads();
        for (int q = threadIdx.x; q < ns * k * TILE; q += blockDim.x) {
            const int j = q % TILE;
            const int st = q / TILE;  // (s - c0) * k + t
            const int t = st % k;
            const int s = c0 + st / k;
            const int a = a0 + j;
            w_tile[q] = (a < r_in) ? core[((long long)a * k + t) * r_out + s] : 0.0f;
        }
        __syncthreads();
        if (active) {
            for (int t = 0; t < k; ++t) {
                const int num = i + pad - t * dil;
                if (num < 0 || num % stride != 0) continue;
                const int p = num / stride;
                if (p >= len_out) continue;
                const float* g = gyb + (long long)p * inner;
                for (int ss = 0; ss < ns; ++ss) {
                    const float gv = g[(long long)(c0 + ss) * chan_stride];
                    const float* w = w_tile + (ss * k + t) * TILE;
#pragma unroll
                    for (int j = 0; j < TILE; ++j) acc[j] = fmaf(gv, w[j], acc[j]);
                }
            }
        }
    }
    if (active) {
        const long long in_chan = outer * len * inner;
        float* gxb = gx + (b * r_in * outer + oo) * len * inner + (long long)i * inner + ii;
#pragma unroll
        for (int j = 0; j < TILE; ++j) {
            const int a = a0 + j;
            if (a < r_in) gxb[(long long)a * in_chan] = acc[j];
        }
    }
}
"#;

/// `im2col` and its adjoint `col2im` for N-D convolutions (up to `MAX_DIMS` spatial modes).
///
/// For a chunk of `nb` batch elements, `col` is `(nb, channels * K, M)` with `K = prod(k)` the
/// kernel taps (row-major over modes) and `M = prod(out_sp)` the output positions.
pub const IM2COL_SRC: &str = r#"
#define MAX_DIMS 8

struct ConvGeom {
    int d;
    int in_sp[MAX_DIMS];
    int out_sp[MAX_DIMS];
    int k[MAX_DIMS];
    int stride[MAX_DIMS];
    int dil[MAX_DIMS];
    int pad[MAX_DIMS];
};

// col[b, c, t, m] = x[b, c, pos(m, t)] (zero outside), for b < nb.
extern "C" __global__ void ttc_im2col(const float* __restrict__ x, float* __restrict__ col,
                                      ConvGeom g, int channels, int nb) {
    long long taps = 1, m_count = 1, in_count = 1;
    for (int j = 0; j < g.d; ++j) {
        taps *= g.k[j];
        m_count *= g.out_sp[j];
        in_count *= g.in_sp[j];
    }
    const long long n = (long long)nb * channels * taps * m_count;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        long long m = idx % m_count;
        long long rest = idx / m_count;
        long long t = rest % taps;
        const long long bc = rest / taps;  // b * channels + c
        long long off = 0, mul = 1;
        bool inside = true;
        for (int j = g.d - 1; j >= 0; --j) {
            const int p = (int)(m % g.out_sp[j]);
            m /= g.out_sp[j];
            const int tj = (int)(t % g.k[j]);
            t /= g.k[j];
            const int ip = p * g.stride[j] + tj * g.dil[j] - g.pad[j];
            inside = inside && ip >= 0 && ip < g.in_sp[j];
            off += (long long)ip * mul;
            mul *= g.in_sp[j];
        }
        col[idx] = inside ? x[bc * in_count + off] : 0.0f;
    }
}

// gx[b, c, i] = sum_{t, m : pos(m, t) = i} col[b, c, t, m], for b < nb (gather, no atomics).
extern "C" __global__ void ttc_col2im(const float* __restrict__ col, float* __restrict__ gx,
                                      ConvGeom g, int channels, int nb) {
    long long taps = 1, m_count = 1, in_count = 1;
    for (int j = 0; j < g.d; ++j) {
        taps *= g.k[j];
        m_count *= g.out_sp[j];
        in_count *= g.in_sp[j];
    }
    const long long n = (long long)nb * channels * in_count;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        int pos[MAX_DIMS];
        long long rest = idx % in_count;
        const long long bc = idx / in_count;
        for (int j = g.d - 1; j >= 0; --j) {
            pos[j] = (int)(rest % g.in_sp[j]);
            rest /= g.in_sp[j];
        }
        const float* colbc = col + bc * taps * m_count;
        float acc = 0.0f;
        for (long long t = 0; t < taps; ++t) {
            long long tr = t, m = 0, mul = 1;
            bool hit = true;
            for (int j = g.d - 1; j >= 0; --j) {
                const int tj = (int)(tr % g.k[j]);
                tr /= g.k[j];
                const int num = pos[j] + g.pad[j] - tj * g.dil[j];
                if (num < 0 || num % g.stride[j] != 0) { hit = false; break; }
                const int p = num / g.stride[j];
                if (p >= g.out_sp[j]) { hit = false; break; }
                m += (long long)p * mul;
                mul *= g.out_sp[j];
            }
            if (hit) acc += colbc[t * m_count + m];
        }
        gx[idx] = acc;
    }
}
"#;

/// Every kernel source as `(module name, CUDA C++ source)`.
pub fn kernel_sources() -> Vec<(&'static str, &'static str)> {
    vec![
        ("elementwise", ELEMENTWISE_SRC),
        ("conv_along", CONV_ALONG_SRC),
        ("im2col", IM2COL_SRC),
    ]
}

/// The `extern "C"` kernel names defined by the module `module` of [`kernel_sources`].
pub(crate) fn kernel_names(module: &str) -> &'static [&'static str] {
    match module {
        "elementwise" => &["ttc_add_bias", "ttc_sum_batches", "ttc_bias_grad"],
        "conv_along" => &["ttc_conv_along_fwd", "ttc_conv_along_bwd_input"],
        "im2col" => &["ttc_im2col", "ttc_col2im"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_names_kernels_defined_in_its_source() {
        for (name, src) in kernel_sources() {
            let names = kernel_names(name);
            assert!(!names.is_empty(), "module {name} has no kernel list");
            for k in names {
                assert!(
                    src.contains(&format!("void {k}(")),
                    "kernel {k} not in module {name}"
                );
            }
        }
    }

    #[test]
    fn conv_geom_matches_cuda_struct_size() {
        // 1 + 6 * MAX_DIMS ints, no padding.
        assert_eq!(std::mem::size_of::<ConvGeom>(), 4 * (1 + 6 * MAX_DIMS));
        assert!(IM2COL_SRC.contains(&format!("#define MAX_DIMS {MAX_DIMS}")));
        assert!(CONV_ALONG_SRC.contains(&format!("#define TILE {CHANNEL_TILE}")));
    }
}
