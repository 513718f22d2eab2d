// dense.cu: the projections cuBLAS does not cover: the int8 LM head (`--lm-head int8`: int8
// weights with per-row scales × int8 activations with per-token scales, exact i32 sums) and
// OneBit's sign matrices. One warp per (token, output row), lanes striding over K.
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
