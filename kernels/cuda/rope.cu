// rope.cu: rotate-half RoPE in place (pairs i and i + head_dim/2), angle = position · inv_freq
// (inv_freq computed on the host exactly as the reference does). sincosf is within 2 ulp of the
// host's libm, so results match the reference within float tolerance, not bit for bit.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
rope(float* __restrict__ x, const u32* __restrict__ positions, const float* __restrict__ inv_freq,
     int n_tokens, int n_heads, int head_dim) {
    const int half = head_dim >> 1;
    const long long total = (long long)n_tokens * n_heads * half;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int k = (int)(i % half);
    const long long th = i / half;  // token · n_heads + head
    const int t = (int)(th / n_heads);
    float s, c;
    sincosf(__fmul_rn((float)positions[t], inv_freq[k]), &s, &c);
    float* base = x + th * head_dim;
    const float a = base[k], b = base[k + half];
    base[k] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    base[k + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}
