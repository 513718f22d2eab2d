// ternary.cu: int8 activations × 2-bit ternary weights with exact i32 accumulation (__dp4a).
//
// Weights are the canonical TernaryMatrix bytes (kernels/src/packing.rs), uploaded unchanged:
// rows in groups of 4, each group `blocks` blocks of 4 rows × 32 bytes. As 16-byte words
// (uint4), word u of a group is block u >> 3, row (u >> 1) & 3, half u & 1, so 32 lanes reading
// words 32s + lane of a group read one contiguous 512-byte "superblock" (4 blocks, 512 columns)
// and lane L always serves row (L >> 1) & 3, half L & 1: one accumulator per lane, no indexing.
// Byte 16h + 4m + t of a block holds, in bit pair i, column 128b + 32i + 16h + 4m + t, so
// (word_m >> 2i) & 0x03030303 are the codes (t + 1) of four consecutive columns that line up
// with one 32-bit word of the activations: Σ code·q by __dp4a, minus Σ q (also __dp4a) gives
// Σ t·q exactly. Activation rows are padded with zeros to `blocks · 128` columns (padding
// weights are code 1, so padding contributes code·q − q = 0 whatever q holds).
//
// The K dimension is split over gridDim.y (more bytes in flight at small row counts); partial
// sums meet through atomicAdd on i32, which is exact and order independent, so `acc` must be
// zeroed before the launch.
#include "common.cuh"

#define GEMV_GROUPS 2  // row groups (of 4 rows) per warp in the batch-1 kernel
#define GEMM_TOKENS 8  // tokens per warp in the batched kernel

// One 16-byte load that bypasses L1: every weight byte is read exactly once per call.
__device__ __forceinline__ uint4 load_stream(const uint4* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

__device__ __forceinline__ u32 word_of(const uint4& v, int m) {
    return m == 0 ? v.x : m == 1 ? v.y : m == 2 ? v.z : v.w;
}

// Σ code·q over the 64 columns of one weight word `w` against the activation words `a[i]`
// (slot i = columns 32i + ...), added to `acc`.
__device__ __forceinline__ int dot_codes(const uint4& w, const uint4 (&a)[4], int acc) {
#pragma unroll
    for (int m = 0; m < 4; m++) {
        const u32 bits = word_of(w, m);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            acc = __dp4a((int)((bits >> (2 * i)) & 0x03030303u), (int)word_of(a[i], m), acc);
        }
    }
    return acc;
}

// Σ q over the 64 activations of `a` (the correction of the code offset), added to `acc`.
__device__ __forceinline__ int sum_q(const uint4 (&a)[4], int acc) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int m = 0; m < 4; m++) acc = __dp4a((int)word_of(a[i], m), 0x01010101, acc);
    }
    return acc;
}

// Lanes serving one row differ in lane bits 0 (half) and 3, 4 (block of the superblock).
__device__ __forceinline__ int reduce_row(int v) {
    v += __shfl_xor_sync(FULL_MASK, v, 1);
    v += __shfl_xor_sync(FULL_MASK, v, 8);
    v += __shfl_xor_sync(FULL_MASK, v, 16);
    return v;
}

// Batch-1 GEMV: acc[o] += Σ_k q[k] · T[o, k] over this block's K split.
// Grid: x covers ceil(groups / GEMV_GROUPS) warps (blockDim.x a multiple of 32), y the K splits
// of `split` superblocks each.
extern "C" __global__ void __launch_bounds__(256)
ternary_gemv(const uint4* __restrict__ w, const uint4* __restrict__ q, int* __restrict__ acc,
             int rows, int blocks, int split) {
    const int lane = threadIdx.x & 31;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int groups = (rows + 3) >> 2;
    const int g0 = warp * GEMV_GROUPS;
    if (g0 >= groups) return;
    const int h = lane & 1;
    const size_t group_u4 = (size_t)blocks * 8;
    const int s_begin = blockIdx.y * split;
    const int s_end = min(s_begin + split, (blocks + 3) >> 2);
    int sums[GEMV_GROUPS];
#pragma unroll
    for (int g = 0; g < GEMV_GROUPS; g++) sums[g] = 0;
    int qsum = 0;
#pragma unroll 2
    for (int s = s_begin; s < s_end; s++) {
        const int b = 4 * s + (lane >> 3);
        if (b >= blocks) continue;
        uint4 wv[GEMV_GROUPS];
#pragma unroll
        for (int g = 0; g < GEMV_GROUPS; g++) {
            wv[g] = g0 + g < groups ? load_stream(w + (g0 + g) * group_u4 + 32 * s + lane)
                                    : make_uint4(0, 0, 0, 0);
        }
        uint4 a[4];
#pragma unroll
        for (int i = 0; i < 4; i++) a[i] = __ldg(q + b * 8 + 2 * i + h);
        qsum = sum_q(a, qsum);
#pragma unroll
        for (int g = 0; g < GEMV_GROUPS; g++) sums[g] = dot_codes(wv[g], a, sums[g]);
    }
#pragma unroll
    for (int g = 0; g < GEMV_GROUPS; g++) {
        const int v = reduce_row(sums[g] - qsum);
        const int row = (g0 + g) * 4 + ((lane >> 1) & 3);
        if ((lane & 0x19) == 0 && g0 + g < groups && row < rows) atomicAdd(acc + row, v);
    }
}

// Batched GEMM (prefill, batched decode): acc[t, o] += Σ_k q[t, k] · T[o, k] for the tokens
// t of this block. One warp per row group and GEMM_TOKENS tokens: each weight word is loaded
// and decoded once for all of them. Grid: x covers the row groups (one per warp), y the K
// splits, z the token tiles. `q` rows are `blocks · 128` bytes apart.
extern "C" __global__ void __launch_bounds__(256)
ternary_gemm_dp4a(const uint4* __restrict__ w, const uint4* __restrict__ q, int* __restrict__ acc,
                  int rows, int blocks, int n, int split) {
    const int lane = threadIdx.x & 31;
    const int group = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int groups = (rows + 3) >> 2;
    if (group >= groups) return;
    const int h = lane & 1;
    const size_t group_u4 = (size_t)blocks * 8;
    const size_t row_u4 = (size_t)blocks * 8;
    const int t0 = blockIdx.z * GEMM_TOKENS;
    const int s_begin = blockIdx.y * split;
    const int s_end = min(s_begin + split, (blocks + 3) >> 2);
    int sums[GEMM_TOKENS], qsums[GEMM_TOKENS];
#pragma unroll
    for (int t = 0; t < GEMM_TOKENS; t++) sums[t] = qsums[t] = 0;
    for (int s = s_begin; s < s_end; s++) {
        const int b = 4 * s + (lane >> 3);
        if (b >= blocks) continue;
        const uint4 wv = load_stream(w + group * group_u4 + 32 * s + lane);
#pragma unroll
        for (int t = 0; t < GEMM_TOKENS; t++) {
            if (t0 + t < n) {
                const uint4* qt = q + (t0 + t) * row_u4 + b * 8 + h;
                uint4 a[4];
#pragma unroll
                for (int i = 0; i < 4; i++) a[i] = __ldg(qt + 2 * i);
                qsums[t] = sum_q(a, qsums[t]);
                sums[t] = dot_codes(wv, a, sums[t]);
            }
        }
    }
    const int row = group * 4 + ((lane >> 1) & 3);
#pragma unroll
    for (int t = 0; t < GEMM_TOKENS; t++) {
        const int v = reduce_row(sums[t] - qsums[t]);
        if ((lane & 0x19) == 0 && t0 + t < n && row < rows) {
            atomicAdd(acc + (size_t)(t0 + t) * rows + row, v);
        }
    }
}
