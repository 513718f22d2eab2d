// dense.cu: the projections cuBLAS does not cover: the int8 LM head with per-row scales
// (`--lm-head int8`) and OneBit's sign matrices. One warp per (token, output row), f32 sums,
// lanes striding over K with 16-byte weight loads where the row allows it.
#include "common.cuh"

// out[t, o] = (Σ_k q[o, k] · x[t, k]) · scales[o].
extern "C" __global__ void __launch_bounds__(256)
dense_i8_matmul(const i8* __restrict__ w, const float* __restrict__ scales,
                const float* __restrict__ x, float* __restrict__ out, int rows, int cols, int n) {
    const int lane = threadIdx.x & 31;
    const long long wid = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (wid >= (long long)n * rows) return;
    const int t = (int)(wid / rows), o = (int)(wid % rows);
    const i8* wr = w + (size_t)o * cols;
    const float* xr = x + (size_t)t * cols;
    float sum = 0.0f;
    for (int k = lane; k < cols; k += 32) sum += (float)wr[k] * xr[k];
    sum = warp_sum_f32(sum);
    if (lane == 0) out[wid] = sum * scales[o];
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
