// sample.cu: sampling on the GPU, so only token ids (and requested logprobs) cross to the host:
// greedy (argmax_rows: the index of the largest logit of each row, the first one on ties, as
// worker::sampler::argmax) and temperature / top-k / top-p with top-n logprobs (sample_rows).
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

// ---------------------------------------------------------------------------------------------
// sample_rows: temperature / top-k / top-p sampling and top-n logprobs, one block per row, so
// only ids and the requested logprobs cross to the host. The semantics are
// worker::sampler::Sampler's: candidates s_i = l_i / T in the order (s desc, id asc); keep the
// first top_k; p_i ∝ exp(s_i − s_max); keep the shortest prefix whose mass reaches top_p; pick
// the first candidate whose cumulative probability exceeds the uniform r drawn on the host from
// the request's ChaCha8 stream (the same draw the CPU sampler makes). Instead of sorting, every
// "first element in that order whose running count / mass exceeds a target" is found by a radix
// select over the 64-bit key (ordered bits of s, then ~id: unique, larger = earlier), 8 passes
// of 8 bits with a 256-bin histogram in shared memory. Masses are fixed point (p · 2^40 in
// u64, exp in f32 as on the CPU), so every sum is exact and order independent: a draw can
// differ from the CPU's only when r falls between a boundary of the exact CDF and the CPU's
// f32-rounded one (rare within small top-k / top-p nuclei; over a whole flat 32k vocabulary,
// thousands of boundaries each moved by ~1e-6, several percent of draws), and tokens with
// p < 2^-41 of the top token's (which the CPU could still pick, with that probability) are
// never picked. Temperature 0 is greedy: the first index of the largest
// logit, as argmax_rows.
//
// Logprobs (lp_n ≥ 0) are of the raw logits, as worker::logprobs: (l − max) − ln Σ exp(l − max)
// with f32 exponentials summed in f64 (here in a block order), for the sampled token and the
// lp_n (≤ SAMPLE_MAX_LOGPROBS) largest logits, largest first, lower id first on ties.
//
// params: 5 words per row: temperature (f32 bits), top_k (0: off), top_p (f32 bits), r (f32
// bits), lp_n (i32; −1: no logprobs). Outputs per row: ids[row]; lp[row] (NaN without
// logprobs); top_ids / top_lp[row · SAMPLE_MAX_LOGPROBS + j] for j < lp_n.
#define SAMPLE_THREADS 512
#define SAMPLE_MAX_LOGPROBS 32
#define MASS_ONE 1099511627776.0  // 2^40

__device__ __forceinline__ u32 ordered_bits(float f) {
    const u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ u64 order_key(float s, int id) {
    return ((u64)ordered_bits(s) << 32) | (u64)(0xffffffffu - (u32)id);
}

__device__ __forceinline__ int key_id(u64 key) { return (int)(0xffffffffu - (u32)(key & 0xffffffffu)); }

// Block reductions over SAMPLE_THREADS threads; every thread gets the result. `sh` holds 32
// words of shared scratch; the leading __syncthreads makes back-to-back calls safe.
__device__ __forceinline__ u64 block_max_u64(u64 v, u64* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const u64 w = __shfl_xor_sync(FULL_MASK, v, o);
        v = w > v ? w : v;
    }
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < warps ? sh[lane] : 0ull;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const u64 w = __shfl_xor_sync(FULL_MASK, v, o);
        v = w > v ? w : v;
    }
    return v;
}

__device__ __forceinline__ u64 block_sum_u64(u64 v, u64* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < warps ? sh[lane] : 0ull;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float block_max_any_f32(float v, float* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max_f32(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < warps ? sh[lane] : -F32_INF;
    return warp_max_f32(v);
}

// One row's candidates: scaled logits s_i = l_i / temperature and fixed-point masses.
struct Candidates {
    const float* l;
    int cols;
    float temperature;
    float s_max;
    __device__ __forceinline__ float scaled(int i) const { return __fdiv_rn(l[i], temperature); }
    __device__ __forceinline__ u64 key(int i) const { return order_key(scaled(i), i); }
    __device__ __forceinline__ u64 mass(float s) const {
        const float e = expf(__fsub_rn(s, s_max));  // in [0, 1] (the CPU's (s - max).exp())
        return (u64)__double2ull_rn((double)e * MASS_ONE);
    }
};

// Shared state of the radix select.
struct SelectShared {
    u64 hist[256];
    u64 above;
    u64 own;
    u32 digit;
};

// The first candidate in key order (descending) whose running quantity — 1 per candidate
// (`by_mass` false) or its mass — exceeds `target`. Returns its key; *before = the quantity of
// the candidates ahead of it, *own = its own. Called by every thread of the block.
__device__ u64 radix_select(const Candidates& c, bool by_mass, u64 target, SelectShared* sh,
                            u64* before, u64* own) {
    u64 prefix = 0, mask = 0, above = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) sh->hist[b] = 0;
        __syncthreads();
        // Runs of one digit are summed per thread before one atomic (the high digits of a row
        // mostly agree, so this keeps the shared atomics off a single hot bin).
        u32 run_digit = 0xffffffffu;
        u64 run = 0;
        for (int i = threadIdx.x; i < c.cols; i += blockDim.x) {
            const float s = c.scaled(i);
            const u64 k = order_key(s, i);
            if ((k & mask) != prefix) continue;
            const u32 d = (u32)(k >> shift) & 0xffu;
            const u64 q = by_mass ? c.mass(s) : 1ull;
            if (d != run_digit) {
                if (run_digit != 0xffffffffu && run) atomicAdd(&sh->hist[run_digit], run);
                run_digit = d;
                run = 0;
            }
            run += q;
        }
        if (run_digit != 0xffffffffu && run) atomicAdd(&sh->hist[run_digit], run);
        __syncthreads();
        if (threadIdx.x == 0) {
            u64 cum = above;
            int pick = -1, last_nonzero = -1;
            for (int b = 255; b >= 0; b--) {
                const u64 h = sh->hist[b];
                if (h == 0) continue;
                last_nonzero = b;
                if (cum + h > target) {
                    pick = b;
                    break;
                }
                cum += h;
            }
            if (pick < 0) {  // target past every candidate: take the last one
                pick = last_nonzero < 0 ? 0 : last_nonzero;
                cum -= last_nonzero < 0 ? 0 : sh->hist[pick];
            }
            sh->digit = (u32)pick;
            sh->above = cum;
            sh->own = sh->hist[pick];
        }
        __syncthreads();
        prefix |= (u64)sh->digit << shift;
        mask |= 0xffull << shift;
        above = sh->above;
        __syncthreads();
    }
    *before = above;
    *own = sh->own;
    return prefix;
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
sample_rows(const float* __restrict__ logits, const u32* __restrict__ params, int cols,
            u32* __restrict__ ids, float* __restrict__ lp, u32* __restrict__ top_ids,
            float* __restrict__ top_lp) {
    __shared__ SelectShared sel;
    __shared__ u64 scratch_u64[32];
    __shared__ float scratch_f32[32];
    __shared__ double scratch_f64[32];
    const int row = blockIdx.x;
    const float* l = logits + (size_t)row * cols;
    const u32* p = params + (size_t)row * 5;
    const float temperature = __uint_as_float(p[0]);
    const u32 top_k = p[1];
    const float top_p = __uint_as_float(p[2]);
    const float r = __uint_as_float(p[3]);
    const int lp_n = min(min((int)p[4], SAMPLE_MAX_LOGPROBS), cols);

    u64 best = 0;  // key of the largest raw logit (first index on ties)
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const u64 k = order_key(l[i], i);
        best = k > best ? k : best;
    }
    best = block_max_u64(best, scratch_u64);
    int token = key_id(best);

    if (temperature > 0.0f && cols > 0) {
        Candidates c{l, cols, temperature, 0.0f};
        float m = -F32_INF;
        for (int i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, c.scaled(i));
        c.s_max = block_max_any_f32(m, scratch_f32);
        u64 before, own;
        // top-k: the keys at or above the k-th candidate's.
        u64 k_min = 0;
        if (top_k > 0 && top_k < (u32)cols) {
            k_min = radix_select(c, false, (u64)top_k - 1, &sel, &before, &own);
        }
        u64 total = 0;
        for (int i = threadIdx.x; i < cols; i += blockDim.x) {
            const float s = c.scaled(i);
            if (order_key(s, i) >= k_min) total += c.mass(s);
        }
        total = block_sum_u64(total, scratch_u64);
        // top-p: the shortest prefix whose mass reaches top_p of the kept mass.
        if (top_p < 1.0f && total > 0) {
            double want = ceil((double)top_p * (double)total);
            u64 target = want < 1.0 ? 0ull : (u64)want - 1ull;
            if (target >= total) target = total - 1;
            radix_select(c, true, target, &sel, &before, &own);
            total = before + own;
        }
        if (total > 0) {
            u64 target = (u64)floor((double)r * (double)total);
            if (target >= total) target = total - 1;
            token = key_id(radix_select(c, true, target, &sel, &before, &own));
        }
    }

    if (lp_n >= 0) {
        float mx = -F32_INF;
        for (int i = threadIdx.x; i < cols; i += blockDim.x) mx = fmaxf(mx, l[i]);
        mx = block_max_any_f32(mx, scratch_f32);
        double z = 0.0;
        for (int i = threadIdx.x; i < cols; i += blockDim.x) z += (double)expf(__fsub_rn(l[i], mx));
        z = block_sum_f64(z, scratch_f64);
        const double log_z = log(z);
        if (threadIdx.x == 0) {
            lp[row] = (float)((double)__fsub_rn(l[token], mx) - log_z);
        }
        u64 below = ~0ull;  // keys strictly below the previous pick
        for (int j = 0; j < lp_n; j++) {
            u64 k = 0;
            for (int i = threadIdx.x; i < cols; i += blockDim.x) {
                const u64 ki = order_key(l[i], i);
                if (ki < below && ki > k) k = ki;
            }
            k = block_max_u64(k, scratch_u64);
            const int id = key_id(k);
            if (threadIdx.x == 0) {
                top_ids[(size_t)row * SAMPLE_MAX_LOGPROBS + j] = (u32)id;
                top_lp[(size_t)row * SAMPLE_MAX_LOGPROBS + j] =
                    (float)((double)__fsub_rn(l[id], mx) - log_z);
            }
            below = k;
        }
    } else if (threadIdx.x == 0) {
        lp[row] = __uint_as_float(0x7fc00000u);
    }
    if (threadIdx.x == 0) ids[row] = (u32)token;
}
