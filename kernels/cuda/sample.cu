// sample.cu: greedy sampling on the GPU: the index of the largest logit of each row (the first
// one on ties, as worker::sampler::argmax), so only token ids cross to the host.
#include "common.cuh"

// One block per row of `cols` logits; blockDim.x a multiple of 32, at most 1024.
extern "C" __global__ void __launch_bounds__(256)
argmax_rows(const float* __restrict__ logits, u32* __restrict__ ids, int cols) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    const float* row = logits + (size_t)blockIdx.x * cols;
    float v = -F32_INF;
    int idx = 0x7fffffff;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float x = row[j];
        if (x > v || (idx == 0x7fffffff && x == x)) { v = x; idx = j; }
    }
    // (value, index) max with the smaller index on ties, over the warp then the block.
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(FULL_MASK, v, o);
        const int oi = __shfl_xor_sync(FULL_MASK, idx, o);
        if (ov > v || (ov == v && oi < idx)) { v = ov; idx = oi; }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) { best_v[warp] = v; best_i[warp] = idx; }
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? best_v[lane] : -F32_INF;
        idx = lane < warps ? best_i[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, v, o);
            const int oi = __shfl_xor_sync(FULL_MASK, idx, o);
            if (ov > v || (ov == v && oi < idx)) { v = ov; idx = oi; }
        }
        if (lane == 0) ids[blockIdx.x] = idx == 0x7fffffff ? 0u : (u32)idx;
    }
}
