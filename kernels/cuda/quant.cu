// quant.cu: activation quantization (per-row absmax → int8; also of one column span of a row)
// and dequantization of the i32 accumulators, bit-exact with kernels/src/reference.rs: every
// float operation is one correctly rounded IEEE operation in the reference's order (explicit
// __f*_rn intrinsics, so no FMA contraction), rounding ties to even (rintf).
#include "common.cuh"

// One block per row: s = 127 / max(max|x|, 1e-5), q = clamp(rint(x · s), -128, 127) (NaN → 0,
// as Rust's `as i8` does); q rows are `ldq` bytes apart and columns cols..ldq are zeroed (the
// padding the ternary kernels read).
extern "C" __global__ void __launch_bounds__(256)
quantize_rows(const float* __restrict__ x, i8* __restrict__ q, float* __restrict__ scales,
              int cols, int ldq) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float m = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, fabsf(xr[j]));
    m = block_max_f32(m, scratch);
    const float s = __fdiv_rn(127.0f, fmaxf(m, 1e-5f));
    i8* qr = q + (size_t)blockIdx.x * ldq;
    for (int j = threadIdx.x; j < ldq; j += blockDim.x) {
        float v = 0.0f;
        if (j < cols) {
            v = rintf(__fmul_rn(xr[j], s));
            v = v != v ? 0.0f : fminf(fmaxf(v, -128.0f), 127.0f);
        }
        qr[j] = (i8)(int)v;
    }
    if (threadIdx.x == 0) scales[blockIdx.x] = s;
}

// out[i] = acc[i] · (beta / scales[row]) for `total` elements in rows of `cols`.
extern "C" __global__ void __launch_bounds__(256)
dequantize_rows(const int* __restrict__ acc, float beta, const float* __restrict__ scales,
                float* __restrict__ out, int cols, int total) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const float f = __fdiv_rn(beta, scales[i / cols]);
    out[i] = __fmul_rn(__int2float_rn(acc[i]), f);
}

// quantize_rows for one column span of each row: s is the whole row's (absmax over all `cols`,
// as one rank of a tensor-parallel group must quantize the gathered row exactly as a single
// rank does), but q row r (ldq bytes) holds only columns c0 .. c1 of it, zero padded. With
// c0 = 0, c1 = cols it is quantize_rows. One block per row.
extern "C" __global__ void __launch_bounds__(256)
quantize_cols(const float* __restrict__ x, i8* __restrict__ q, float* __restrict__ scales,
              int cols, int c0, int c1, int ldq) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float m = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, fabsf(xr[j]));
    m = block_max_f32(m, scratch);
    const float s = __fdiv_rn(127.0f, fmaxf(m, 1e-5f));
    i8* qr = q + (size_t)blockIdx.x * ldq;
    const int width = c1 - c0;
    for (int j = threadIdx.x; j < ldq; j += blockDim.x) {
        float v = 0.0f;
        if (j < width) {
            v = rintf(__fmul_rn(xr[c0 + j], s));
            v = v != v ? 0.0f : fminf(fmaxf(v, -128.0f), 127.0f);
        }
        qr[j] = (i8)(int)v;
    }
    if (threadIdx.x == 0) scales[blockIdx.x] = s;
}
