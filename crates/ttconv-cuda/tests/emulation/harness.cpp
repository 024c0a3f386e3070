// Runs every kernel of the CUDA backend on the CPU (see shim.h) on random problems and compares
// with direct reference loops in double precision. Built and run by tests/kernel_emulation.rs;
// `kernels_emu.inc` is the backend's kernel sources with the shared memory declarations adapted.
// The launch configurations mirror src/launch.rs (128 threads and 8 channels per thread for the
// 1-D convolutions, 256 threads for the rest), with a few small chunk and grid sizes on top to
// exercise the chunk loops and grid-stride loops.
#include <cstdlib>

#include "shim.h"
#include "kernels_emu.inc"

static std::mt19937_64 rng(42);
static int failures = 0;

static int rand_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

static std::vector<float> rand_vec(size_t n) {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

static void check(const char* what, const std::vector<float>& got, const std::vector<double>& want) {
    double scale = 1.0, worst = 0.0;
    for (double w : want) scale = std::max(scale, std::fabs(w));
    for (size_t i = 0; i < want.size(); ++i) {
        const double d = std::fabs(got[i] - want[i]);
        worst = std::isnan(d) ? INFINITY : std::max(worst, d);
        if (std::isinf(worst)) break;
    }
    if (worst > 1e-4 * scale) {
        std::printf("FAIL %s: max |diff| %g (scale %g)\n", what, worst, scale);
        ++failures;
    }
}

static unsigned blocks_for(long long n, long long per_block) {
    return (unsigned)((n + per_block - 1) / per_block);
}

// ttc_conv_along_fwd and ttc_conv_along_bwd_input against the definition.
static void test_conv_along() {
    const int batch = rand_int(1, 3), r_in = rand_int(1, 11), r_out = rand_int(1, 11);
    const long long outer = rand_int(1, 3), inner = rand_int(1, 4);
    const int len = rand_int(1, 9), k = rand_int(1, 4), stride = rand_int(1, 3);
    const int dil = rand_int(1, 3), pad = rand_int(0, 3), pad_after = rand_int(0, 3);
    const int span = dil * (k - 1) + 1, padded = len + pad + pad_after;
    if (span > padded) return;
    const int len_out = (padded - span) / stride + 1;

    const auto x = rand_vec((size_t)batch * r_in * outer * len * inner);
    const auto core = rand_vec((size_t)r_in * k * r_out);
    auto x_at = [&](int b, int a, long long o, int i, long long ii) {
        return (((size_t)b * r_in + a) * outer + o) * len * inner + (size_t)i * inner + ii;
    };
    auto y_at = [&](int b, int s, long long o, int p, long long ii) {
        return (((size_t)b * r_out + s) * outer + o) * len_out * inner + (size_t)p * inner + ii;
    };
    auto w_at = [&](int a, int t, int s) { return ((size_t)a * k + t) * r_out + s; };

    std::vector<double> y((size_t)batch * r_out * outer * len_out * inner, 0.0);
    const auto gy = rand_vec(y.size());
    std::vector<double> gx(x.size(), 0.0);
    for (int b = 0; b < batch; ++b)
        for (int s = 0; s < r_out; ++s)
            for (long long o = 0; o < outer; ++o)
                for (int p = 0; p < len_out; ++p)
                    for (long long ii = 0; ii < inner; ++ii)
                        for (int a = 0; a < r_in; ++a)
                            for (int t = 0; t < k; ++t) {
                                const int ip = p * stride + t * dil - pad;
                                if (ip < 0 || ip >= len) continue;
                                y[y_at(b, s, o, p, ii)] += (double)core[w_at(a, t, s)] * x[x_at(b, a, o, ip, ii)];
                                gx[x_at(b, a, o, ip, ii)] += (double)core[w_at(a, t, s)] * gy[y_at(b, s, o, p, ii)];
                            }

    const dim3 block{128, 1, 1};
    for (int chunk : {1, 3, std::max(1, std::min(4096 / (k * 8), r_in))}) {
        std::vector<float> got(y.size(), NAN);
        const dim3 grid{blocks_for((long long)batch * outer * len_out * inner, 128), blocks_for(r_out, 8), 1};
        launch(grid, block, (size_t)chunk * k * 8, [&] {
            ttc_conv_along_fwd(x.data(), core.data(), got.data(), batch, r_in, r_out, outer, len, inner,
                               len_out, k, stride, dil, pad, chunk);
        });
        check("ttc_conv_along_fwd", got, y);
    }
    for (int chunk : {1, 2, std::max(1, std::min(4096 / (k * 8), r_out))}) {
        std::vector<float> got(x.size(), NAN);
        const dim3 grid{blocks_for((long long)batch * outer * len * inner, 128), blocks_for(r_in, 8), 1};
        launch(grid, block, (size_t)chunk * k * 8, [&] {
            ttc_conv_along_bwd_input(gy.data(), core.data(), got.data(), batch, r_in, r_out, outer, len,
                                     inner, len_out, k, stride, dil, pad, chunk);
        });
        check("ttc_conv_along_bwd_input", got, gx);
    }
}

// ttc_im2col against the definition, ttc_col2im against the adjoint of im2col.
static void test_im2col() {
    ConvGeom g{};
    g.d = rand_int(1, 4);
    const int channels = rand_int(1, 3), nb = rand_int(1, 2);
    long long taps = 1, m_count = 1, in_count = 1;
    for (int j = 0; j < g.d; ++j) {
        g.in_sp[j] = rand_int(1, 5);
        g.k[j] = rand_int(1, 3);
        g.stride[j] = rand_int(1, 3);
        g.dil[j] = rand_int(1, 2);
        g.pad[j] = rand_int(0, 2);
        const int span = g.dil[j] * (g.k[j] - 1) + 1, padded = g.in_sp[j] + g.pad[j] + rand_int(0, 2);
        if (span > padded) return;
        g.out_sp[j] = (padded - span) / g.stride[j] + 1;
        taps *= g.k[j];
        m_count *= g.out_sp[j];
        in_count *= g.in_sp[j];
    }
    // Input offset read by column entry (t, m) of one (batch, channel) plane, or -1 outside.
    auto source = [&](long long t, long long m) -> long long {
        int tj[8], pj[8];
        for (int j = g.d - 1; j >= 0; --j) {
            tj[j] = (int)(t % g.k[j]);
            t /= g.k[j];
            pj[j] = (int)(m % g.out_sp[j]);
            m /= g.out_sp[j];
        }
        long long off = 0;
        for (int j = 0; j < g.d; ++j) {
            const int ip = pj[j] * g.stride[j] + tj[j] * g.dil[j] - g.pad[j];
            if (ip < 0 || ip >= g.in_sp[j]) return -1;
            off = off * g.in_sp[j] + ip;
        }
        return off;
    };

    const auto x = rand_vec((size_t)nb * channels * in_count);
    const auto c = rand_vec((size_t)nb * channels * taps * m_count);
    std::vector<double> col(c.size(), 0.0), gx(x.size(), 0.0);
    for (long long bc = 0; bc < nb * channels; ++bc)
        for (long long t = 0; t < taps; ++t)
            for (long long m = 0; m < m_count; ++m) {
                const long long off = source(t, m);
                if (off < 0) continue;
                const size_t ci = (bc * taps + t) * m_count + m;
                col[ci] = x[bc * in_count + off];
                gx[bc * in_count + off] += c[ci];
            }

    const dim3 block{256, 1, 1};
    std::vector<float> got_col(col.size(), NAN);
    launch(dim3{std::min(blocks_for((long long)col.size(), 256), 3u), 1, 1}, block, 0,
           [&] { ttc_im2col(x.data(), got_col.data(), g, channels, nb); });
    check("ttc_im2col", got_col, col);
    std::vector<float> got_gx(x.size(), NAN);
    launch(dim3{std::min(blocks_for((long long)x.size(), 256), 2u), 1, 1}, block, 0,
           [&] { ttc_col2im(c.data(), got_gx.data(), g, channels, nb); });
    check("ttc_col2im", got_gx, gx);
}

// ttc_add_bias, ttc_bias_grad and ttc_sum_batches.
static void test_elementwise() {
    const int batch = rand_int(1, 4), channels = rand_int(1, 5);
    const long long inner = rand_int(1, 300);
    const size_t n = (size_t)batch * channels * inner;
    const auto y = rand_vec(n), bias = rand_vec(channels);
    const dim3 block{256, 1, 1};

    std::vector<double> want(n), gb(channels, 0.0);
    for (size_t i = 0; i < n; ++i) {
        want[i] = y[i] + bias[(i / inner) % channels];
        gb[(i / inner) % channels] += y[i];
    }
    auto got = y;
    launch(dim3{2, 1, 1}, block, 0, [&] { ttc_add_bias(got.data(), bias.data(), (long long)n, channels, inner); });
    check("ttc_add_bias", got, want);

    std::vector<float> got_gb(channels, NAN);
    launch(dim3{(unsigned)channels, 1, 1}, block, 0,
           [&] { ttc_bias_grad(y.data(), got_gb.data(), batch, channels, inner); });
    check("ttc_bias_grad", got_gb, gb);

    const auto ws = rand_vec((size_t)batch * inner), out = rand_vec(inner);
    for (int accumulate : {0, 1}) {
        std::vector<double> sum(inner);
        for (long long i = 0; i < inner; ++i) {
            sum[i] = accumulate ? out[i] : 0.0;
            for (int b = 0; b < batch; ++b) sum[i] += ws[b * inner + i];
        }
        auto got_sum = out;
        launch(dim3{1, 1, 1}, block, 0,
               [&] { ttc_sum_batches(ws.data(), got_sum.data(), batch, inner, accumulate); });
        check("ttc_sum_batches", got_sum, sum);
    }
}

int main(int argc, char** argv) {
    const int cases = argc > 1 ? std::atoi(argv[1]) : 60;
    for (int i = 0; i < cases; ++i) test_conv_along();
    for (int i = 0; i < cases; ++i) test_im2col();
    for (int i = 0; i < cases / 6 + 1; ++i) test_elementwise();
    std::printf("%d failure(s)\n", failures);
    return failures != 0;
}
