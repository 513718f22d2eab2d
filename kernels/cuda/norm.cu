// norm.cu: RMSNorm and OneBit's parameter-free LayerNorm, one block per row. Sums are taken
// in f64 (as the reference does) and every float step is the reference's IEEE operation, so
// results differ from kernels/src/reference.rs only when the f64 summation order changes the
// f32 rounding of the mean (rare, last bit).
#include "common.cuh"

// out = x · (1 / sqrt(mean(x²) + eps)) · weight (weight may be null: 1).
extern "C" __global__ void __launch_bounds__(256)
rms_norm(const float* __restrict__ x, const float* __restrict__ weight, float eps, int cols,
         float* __restrict__ out) {
    __shared__ double scratch[32];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* orow = out + (size_t)blockIdx.x * cols;
    double ss = 0.0;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) ss += (double)__fmul_rn(xr[j], xr[j]);
    ss = block_sum_f64(ss, scratch);
    const float mean_sq = __double2float_rn(__ddiv_rn(ss, (double)cols));
    const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean_sq, eps)));
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float o = __fmul_rn(xr[j], inv);
        orow[j] = weight ? __fmul_rn(o, weight[j]) : o;
    }
}

// out = (x − mean) / sqrt(var + eps), biased variance, no parameters.
extern "C" __global__ void __launch_bounds__(256)
layer_norm(const float* __restrict__ x, float eps, int cols, float* __restrict__ out) {
    __shared__ double scratch[32];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* orow = out + (size_t)blockIdx.x * cols;
    double s = 0.0;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) s += (double)xr[j];
    s = block_sum_f64(s, scratch);
    const float mean = __double2float_rn(__ddiv_rn(s, (double)cols));
    double v = 0.0;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float d = __fsub_rn(xr[j], mean);
        v += (double)__fmul_rn(d, d);
    }
    v = block_sum_f64(v, scratch);
    const float var = __double2float_rn(__ddiv_rn(v, (double)cols));
    const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        orow[j] = __fmul_rn(__fsub_rn(xr[j], mean), inv);
    }
}
