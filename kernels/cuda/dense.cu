// dense.cu: the projections cuBLAS does not cover: the int8 LM head (`--lm-head int8`: int8
// weights with per-row scales × int8 activations with per-token scales, exact i32 sums) and
// OneBit's sign matrices (one warp per (token, output row), lanes striding over K), and 16-bit
// weights against f32 activations for up to 16 tokens (`dense_h16_rows`, one warp per row).
#include "common.cuh"

// out[t, o] = (float)(Σ_k w[o, k] · q[t, k]) · (w_scales[o] / q_scales[t]), q = quantize_rows(x)
// (the CPU backends' exact order of operations: i32 sum, one division, one product).
extern "C" __global__ void __launch_bounds__(256)
dense_i8_matmul(const i8* __restrict__ w, const float* __restrict__ w_scales,
                const i8* __restrict__ q, const float* __restrict__ q_scales,
                float* __restrict__ out, int rows, int cols, int n) {
    const int lane = threadIdx.x & 31;
    const long long wid = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (wid >= (long long)n * rows) return;
    const int t = (int)(wid / rows), o = (int)(wid % rows);
    const i8* wr = w + (size_t)o * cols;
    const i8* qr = q + (size_t)t * cols;
    int sum = 0;
    for (int k = lane; k < cols; k += 32) sum += (int)wr[k] * (int)qr[k];
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) sum += __shfl_xor_sync(FULL_MASK, sum, s);
    if (lane == 0)
        out[wid] = __fmul_rn(__int2float_rn(sum), __fdiv_rn(w_scales[o], q_scales[t]));
}

// out[t, o] = Σ_k S[o, k] · x[t, k], S = ±1 from bits (bit k of byte j = column 8j + k, set
// = −1); rows are cols / 8 bytes.
extern "C" __global__ void __launch_bounds__(256)
sign_matmul(const u8* __restrict__ bits, const float* __restrict__ x, float* __restrict__ out,
            int rows, int cols, int n) {
    const int lane = threadIdx.x & 31;
    const long long wid = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (wid >= (long long)n * rows) return;
    const int t = (int)(wid / rows), o = (int)(wid % rows);
    const u8* br = bits + (size_t)o * (cols >> 3);
    const float* xr = x + (size_t)t * cols;
    float sum = 0.0f;
    for (int j = lane; j < (cols >> 3); j += 32) {
        const u32 b = br[j];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const float v = xr[8 * j + k];
            sum += (b >> k) & 1u ? -v : v;
        }
    }
    sum = warp_sum_f32(sum);
    if (lane == 0) out[wid] = sum;
}

#define DENSE_ROWS_MAX_TOKENS 16

// 16-bit weight (f16 or bf16 bits) to float, exactly.
__device__ __forceinline__ float h16_to_f32(u16 h, int bf16) {
    return bf16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// out[t, o] = Σ_k x[t, k] · W[o, k] for n ≤ DENSE_ROWS_MAX_TOKENS tokens, W 16-bit (f16, or
// bf16 when `bf16` is set) and the activations kept in f32 with f32 accumulation: the CPU
// backends' numerics (cuBLAS GemmEx rounds the activations to the weight dtype instead). One
// warp per output row reads the row once for every token (a GEMV for decode and LM heads).
// When cols % 8 == 0 each lane loads 8 weights (16 bytes) at a time, else one.
extern "C" __global__ void __launch_bounds__(256)
dense_h16_rows(const u16* __restrict__ w, const float* __restrict__ x, float* __restrict__ out,
               int rows, int cols, int n, int bf16) {
    const int lane = threadIdx.x & 31;
    const long long o = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (o >= rows) return;
    const u16* wr = w + (size_t)o * cols;
    float acc[DENSE_ROWS_MAX_TOKENS];
#pragma unroll
    for (int t = 0; t < DENSE_ROWS_MAX_TOKENS; t++) acc[t] = 0.0f;
    if ((cols & 7) == 0) {
        for (int k = lane * 8; k < cols; k += 32 * 8) {
            const uint4 raw = *reinterpret_cast<const uint4*>(wr + k);
            const u32 words[4] = {raw.x, raw.y, raw.z, raw.w};
            float wf[8];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                wf[2 * i] = h16_to_f32((u16)(words[i] & 0xffffu), bf16);
                wf[2 * i + 1] = h16_to_f32((u16)(words[i] >> 16), bf16);
            }
#pragma unroll
            for (int t = 0; t < DENSE_ROWS_MAX_TOKENS; t++) {
                if (t < n) {
                    const float4* xr = reinterpret_cast<const float4*>(x + (size_t)t * cols + k);
                    const float4 a = xr[0], b = xr[1];
                    acc[t] += wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w +
                              wf[4] * b.x + wf[5] * b.y + wf[6] * b.z + wf[7] * b.w;
                }
            }
        }
    } else {
        for (int k = lane; k < cols; k += 32) {
            const float wk = h16_to_f32(wr[k], bf16);
#pragma unroll
            for (int t = 0; t < DENSE_ROWS_MAX_TOKENS; t++) {
                if (t < n) acc[t] += wk * x[(size_t)t * cols + k];
            }
        }
    }
#pragma unroll
    for (int t = 0; t < DENSE_ROWS_MAX_TOKENS; t++) {
        const float s = warp_sum_f32(acc[t]);
        if (lane == 0 && t < n) out[(size_t)t * rows + o] = s;
    }
}
