//! int8 × ternary GEMV/GEMM with exact i32 accumulation, per [`CpuPath`].
//!
//! Today every path runs the portable loop over the canonical layout; the SIMD kernels replace
//! it (CPU-kernels issue).

use super::CpuBackend;
use crate::reference;
use crate::TernaryMatrix;

/// `acc[n, o] = Σ_k q[n, k] · T[o, k]` for every row of `q` (shapes already checked).
pub fn matmul(backend: &CpuBackend, w: &TernaryMatrix, q: &[i8], acc: &mut [i32]) {
    backend.project(w.cols(), w.rows(), q, acc, |o, qr| {
        reference::ternary_row_dot(w, o, qr)
    });
}
