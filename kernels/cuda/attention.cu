// attention.cu: causal softmax attention with GQA, decode (one query) and prefill (many) alike,
// over a contiguous history (`attention`) or a paged KV pool read through block tables in place
// (`paged_attention`), and the store of a pass's new keys and values into the pool (`kv_store`).
//
// One warp per (query, head): lane l holds dimensions l, l + 32, ... of the query and of the
// output (head_dim ≤ 32 · ATT_MAX_D = 256), keys are visited in order with an online softmax
// (running max and sum in f32, scale head_dim^-0.5 applied to each score). A query at position
// p sees keys 0 ..= p; query head h reads kv head h / (n_heads / n_kv_heads). Where key j's row
// lives is the only difference between the two kernels (a `Rows` functor of attend_warp):
// contiguous (`(j · n_kv_heads + kvh) · head_dim`) or paged (block = table[j >> block_shift],
// row = block << block_shift | j & (block_size − 1), then the same head offset).
#include "common.cuh"

#define ATT_MAX_D 8

// Key/value row j of one sequence in a contiguous history (`ctx_len × n_kv_heads · head_dim`).
struct ContiguousRows {
    __device__ __forceinline__ size_t operator()(int j) const { return (size_t)j; }
};

// Key/value row j of one sequence in a paged pool: through its block table.
struct PagedRows {
    const u32* table;
    int shift;
    __device__ __forceinline__ size_t operator()(int j) const {
        return ((size_t)table[j >> shift] << shift) | (size_t)(j & ((1 << shift) - 1));
    }
};

// One warp: out_row = softmax(q_row · K[0..visible)ᵀ · scale) · V[0..visible) for kv head kvh,
// rows located by `rows`; k and v hold rows of n_kv_heads · head_dim floats.
template <typename Rows>
__device__ __forceinline__ void attend_warp(const float* __restrict__ qr,
                                            const float* __restrict__ k,
                                            const float* __restrict__ v, float* __restrict__ orow,
                                            Rows rows, int visible, int kvh, int n_kv_heads,
                                            int head_dim, float scale) {
    const int lane = threadIdx.x & 31;
    float qv[ATT_MAX_D], acc[ATT_MAX_D];
#pragma unroll
    for (int d = 0; d < ATT_MAX_D; d++) {
        const int e = d * 32 + lane;
        qv[d] = e < head_dim ? qr[e] : 0.0f;
        acc[d] = 0.0f;
    }
    float m = -F32_INF, l = 0.0f;
    for (int j = 0; j < visible; j++) {
        const size_t off = (rows(j) * n_kv_heads + kvh) * head_dim;
        const float* kr = k + off;
        const float* vr = v + off;
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
    const float inv = 1.0f / l;
#pragma unroll
    for (int d = 0; d < ATT_MAX_D; d++) {
        const int e = d * 32 + lane;
        if (e < head_dim) orow[e] = acc[d] * inv;
    }
}

extern "C" __global__ void __launch_bounds__(128)
attention(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
          float* __restrict__ out, int n_heads, int n_kv_heads, int head_dim, int n_queries,
          int ctx_len, float scale) {
    const long long wid = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (wid >= (long long)n_queries * n_heads) return;
    const int i = (int)(wid / n_heads), h = (int)(wid % n_heads);
    const int kvh = h / (n_heads / n_kv_heads);
    const int visible = ctx_len - n_queries + i + 1;
    const size_t qoff = ((size_t)i * n_heads + h) * head_dim;
    attend_warp(q + qoff, k, v, out + qoff, ContiguousRows{}, visible, kvh, n_kv_heads, head_dim,
                scale);
}

// Paged attention over a batch of tokens of several sequences: token t sits at position
// positions[t] of its sequence and reads keys 0 ..= positions[t] through the block table that
// starts at tables[table_start[t]] (block_size = 1 << block_shift). keys / values: one layer of
// the pool, rows of n_kv_heads · head_dim floats; q / out: n_tokens × n_heads · head_dim.
// Launch: 128 threads per block, one warp per (token, head).
extern "C" __global__ void __launch_bounds__(128)
paged_attention(const float* __restrict__ q, const float* __restrict__ keys,
                const float* __restrict__ values, float* __restrict__ out,
                const u32* __restrict__ positions, const u32* __restrict__ table_start,
                const u32* __restrict__ tables, int n_tokens, int n_heads, int n_kv_heads,
                int head_dim, int block_shift, float scale) {
    const long long wid = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (wid >= (long long)n_tokens * n_heads) return;
    const int t = (int)(wid / n_heads), h = (int)(wid % n_heads);
    const int kvh = h / (n_heads / n_kv_heads);
    const int visible = (int)positions[t] + 1;
    const size_t qoff = ((size_t)t * n_heads + h) * head_dim;
    const PagedRows rows{tables + table_start[t], block_shift};
    attend_warp(q + qoff, keys, values, out + qoff, rows, visible, kvh, n_kv_heads, head_dim,
                scale);
}

// Stores a pass's new keys and values in the pool: row slots[t] of keys / values (rows of
// `dim` floats) = row t of k / v, for the n = tokens · dim elements. One thread per element.
extern "C" __global__ void __launch_bounds__(256)
kv_store(float* __restrict__ keys, float* __restrict__ values, const float* __restrict__ k,
         const float* __restrict__ v, const u32* __restrict__ slots, int dim, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const long long t = i / dim;
    const size_t dst = (size_t)slots[t] * dim + (size_t)(i - t * dim);
    keys[dst] = k[i];
    values[dst] = v[i];
}
