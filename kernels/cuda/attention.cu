// attention.cu: causal softmax attention with GQA, decode (one query) and prefill (many) alike.
//
// One warp per (query, head): lane l holds dimensions l, l + 32, ... of the query and of the
// output (head_dim ≤ 32 · ATT_MAX_D = 256), keys are visited in order with an online softmax
// (running max and sum in f32). Query i of n_queries sits at position ctx_len − n_queries + i
// and sees keys 0 ..= that position; query head h reads kv head h / (n_heads / n_kv_heads).
// K and V are one contiguous history per sequence (`ctx_len × n_kv_heads · head_dim`); the
// only place that knows this is kv_row(), so a paged cache changes that function alone (a
// block table lookup: block = table[j / block_size], row = block · block_size + j % block_size).
#include "common.cuh"

#define ATT_MAX_D 8

__device__ __forceinline__ size_t kv_row(int j, int kvh, int n_kv_heads, int head_dim) {
    return ((size_t)j * n_kv_heads + kvh) * head_dim;
}

extern "C" __global__ void __launch_bounds__(128)
attention(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
          float* __restrict__ out, int n_heads, int n_kv_heads, int head_dim, int n_queries,
          int ctx_len, float scale) {
    const int lane = threadIdx.x & 31;
    const long long wid = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (wid >= (long long)n_queries * n_heads) return;
    const int i = (int)(wid / n_heads), h = (int)(wid % n_heads);
    const int kvh = h / (n_heads / n_kv_heads);
    const int visible = ctx_len - n_queries + i + 1;
    const float* qr = q + ((size_t)i * n_heads + h) * head_dim;
    float qv[ATT_MAX_D], acc[ATT_MAX_D];
#pragma unroll
    for (int d = 0; d < ATT_MAX_D; d++) {
        const int e = d * 32 + lane;
        qv[d] = e < head_dim ? qr[e] : 0.0f;
        acc[d] = 0.0f;
    }
    float m = -F32_INF, l = 0.0f;
    for (int j = 0; j < visible; j++) {
        const float* kr = k + kv_row(j, kvh, n_kv_heads, head_dim);
        const float* vr = v + kv_row(j, kvh, n_kv_heads, head_dim);
        float p = 0.0f;
#pragma unroll
        for (int d = 0; d < ATT_MAX_D; d++) {
            const int e = d * 32 + lane;
            if (e < head_dim) p += qv[d] * kr[e];
        }
        const float s = warp_sum_f32(p) * scale;
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new);
        const float e_s = expf(s - m_new);
        l = l * corr + e_s;
#pragma unroll
        for (int d = 0; d < ATT_MAX_D; d++) {
            const int e = d * 32 + lane;
            if (e < head_dim) acc[d] = acc[d] * corr + e_s * vr[e];
        }
        m = m_new;
    }
    float* orow = out + ((size_t)i * n_heads + h) * head_dim;
    const float inv = 1.0f / l;
#pragma unroll
    for (int d = 0; d < ATT_MAX_D; d++) {
        const int e = d * 32 + lane;
        if (e < head_dim) orow[e] = acc[d] * inv;
    }
}
