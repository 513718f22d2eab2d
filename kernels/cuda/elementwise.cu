// elementwise.cu: gating (SiLU·up, ReLU²·up), residual add, column scaling, embedding gathers
// for every table dtype, f32 → f16/bf16 conversion of activations for cuBLAS, and the row /
// column moves of the device-resident forward (gather_rows, take_columns, interleave_parts).
// One thread per element; the float steps are the reference's, in its order (no FMA contraction).
#include "common.cuh"

#define ELEMENT_INDEX                                                   \
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; \
    if (i >= n) return;

// out = silu(gate) · up, silu(x) = x / (1 + exp(−x)).
extern "C" __global__ void __launch_bounds__(256)
silu_mul(const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ out,
         long long n) {
    ELEMENT_INDEX
    const float g = gate[i];
    out[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
}

// out = relu(gate)² · up.
extern "C" __global__ void __launch_bounds__(256)
relu2_mul(const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ out,
          long long n) {
    ELEMENT_INDEX
    const float r = fmaxf(gate[i], 0.0f);
    out[i] = __fmul_rn(__fmul_rn(r, r), up[i]);
}

// x += y.
extern "C" __global__ void __launch_bounds__(256)
add_assign(float* __restrict__ x, const float* __restrict__ y, long long n) {
    ELEMENT_INDEX
    x[i] = __fadd_rn(x[i], y[i]);
}

// x[r, c] *= factors[c] for rows of `cols`.
extern "C" __global__ void __launch_bounds__(256)
scale_columns(float* __restrict__ x, const float* __restrict__ factors, int cols, long long n) {
    ELEMENT_INDEX
    x[i] = __fmul_rn(x[i], factors[i % cols]);
}

// out[t, c] = table[ids[t], c] as f32 (ids checked against the table on the host).
extern "C" __global__ void __launch_bounds__(256)
embedding_f32(const float* __restrict__ table, const u32* __restrict__ ids,
              float* __restrict__ out, int cols, long long n) {
    ELEMENT_INDEX
    out[i] = table[(size_t)ids[i / cols] * cols + i % cols];
}

extern "C" __global__ void __launch_bounds__(256)
embedding_f16(const u16* __restrict__ table, const u32* __restrict__ ids, float* __restrict__ out,
              int cols, long long n) {
    ELEMENT_INDEX
    out[i] = f16_to_f32(table[(size_t)ids[i / cols] * cols + i % cols]);
}

extern "C" __global__ void __launch_bounds__(256)
embedding_bf16(const u16* __restrict__ table, const u32* __restrict__ ids,
               float* __restrict__ out, int cols, long long n) {
    ELEMENT_INDEX
    out[i] = bf16_to_f32(table[(size_t)ids[i / cols] * cols + i % cols]);
}

// Int8 rows with one scale per row: value · scale.
extern "C" __global__ void __launch_bounds__(256)
embedding_i8(const i8* __restrict__ table, const float* __restrict__ scales,
             const u32* __restrict__ ids, float* __restrict__ out, int cols, long long n) {
    ELEMENT_INDEX
    const size_t row = ids[i / cols];
    out[i] = __fmul_rn((float)table[row * cols + i % cols], scales[row]);
}

extern "C" __global__ void __launch_bounds__(256)
f32_to_f16(const float* __restrict__ x, u16* __restrict__ out, long long n) {
    ELEMENT_INDEX
    out[i] = f32_to_f16(x[i]);
}

extern "C" __global__ void __launch_bounds__(256)
f32_to_bf16(const float* __restrict__ x, u16* __restrict__ out, long long n) {
    ELEMENT_INDEX
    out[i] = f32_to_bf16(x[i]);
}

// Row and column moves of the device-resident forward pass (bitnet-worker's CUDA model).

// out[i, c] = x[idx[i], c] for rows of `cols` (the rows whose logits are wanted).
extern "C" __global__ void __launch_bounds__(256)
gather_rows(const float* __restrict__ x, const u32* __restrict__ idx, float* __restrict__ out,
            int cols, long long n) {
    ELEMENT_INDEX
    const long long r = i / cols;
    out[i] = x[(size_t)idx[r] * cols + (size_t)(i - r * cols)];
}

// out[r, c] = x[r, c0 + c] for c < w: columns c0 .. c0 + w of rows `width` wide, zero past
// the row's end (so it also pads rows to a wider stride).
extern "C" __global__ void __launch_bounds__(256)
take_columns(const float* __restrict__ x, float* __restrict__ out, int width, int c0, int w,
             long long n) {
    ELEMENT_INDEX
    const long long r = i / w;
    const int col = c0 + (int)(i - r * w);
    out[i] = col < width ? x[(size_t)r * width + col] : 0.0f;
}

// Whole rows from the ranks' column blocks after an all-gather: `parts` holds, rank after rank,
// `rows` rows of `part_ld` floats (rank p's columns starts[p] .. starts[p + 1] of each row, then
// padding); out[r, c] (rows `width` = starts[world] wide) = part of the rank owning column c.
extern "C" __global__ void __launch_bounds__(256)
interleave_parts(const float* __restrict__ parts, const u32* __restrict__ starts,
                 float* __restrict__ out, int world, int rows, int part_ld, int width,
                 long long n) {
    ELEMENT_INDEX
    const long long r = i / width;
    const int c = (int)(i - r * width);
    int p = 0;
    while (p + 1 < world && c >= (int)starts[p + 1]) p++;
    out[i] = parts[((size_t)p * rows + r) * part_ld + (c - (int)starts[p])];
}
