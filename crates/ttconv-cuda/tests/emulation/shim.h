// A CPU stand-in for the CUDA execution model, enough to run the backend's kernels unchanged:
// blocks run one after another, the threads of a block run as OS threads meeting at a barrier
// for __syncthreads(), dynamic shared memory is a per-block buffer filled with NaN.
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

using std::max;
using std::min;

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
std::barrier<>* g_barrier;
float* g_dyn_smem;

#define __syncthreads() g_barrier->arrive_and_wait()
#define __global__
#define __restrict__ __restrict

// Runs `f` (a call of one kernel) as the grid `grid` of blocks `block`, with `smem_floats`
// floats of dynamic shared memory.
template <class F>
void launch(dim3 grid, dim3 block, size_t smem_floats, F f) {
    gridDim = grid;
    blockDim = block;
    std::vector<float> smem(smem_floats + 1);
    g_dyn_smem = smem.data();
    for (unsigned by = 0; by < grid.y; ++by) {
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            std::fill(smem.begin(), smem.end(), NAN);
            std::barrier<> bar(block.x);
            g_barrier = &bar;
            std::vector<std::thread> ts;
            for (unsigned t = 0; t < block.x; ++t) {
                ts.emplace_back([=] {
                    threadIdx.x = t;
                    blockIdx.x = bx;
                    blockIdx.y = by;
                    f();
                });
            }
            for (auto& t : ts) t.join();
        }
    }
}
