//! Dense projections (`out[n, o] = Σ_k x[n, k] · W[o, k]`) over f32/f16/bf16 weights, per
//! [`super::CpuPath`]: the LM head and the FP16 LLaMA baseline.

use super::CpuBackend;
use crate::DenseMatrix;

/// Dense projection of every row of `x` (shapes already checked).
pub fn matmul(backend: &CpuBackend, w: &DenseMatrix, x: &[f32], out: &mut [f32]) {
    backend.project(w.cols(), w.rows(), x, out, |o, xr| w.row_dot(o, xr));
}
