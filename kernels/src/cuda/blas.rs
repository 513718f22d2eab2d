//! Dense projections through cuBLAS: the LM head and the FP16 LLaMA baseline.
//!
//! `out[n, o] = Σ_k x[n, k] · W[o, k]` with W row-major `rows × cols`: in cuBLAS's column-major
//! terms, `C (rows × n) = op(A) · B` with A = W seen as `cols × rows` (lda = cols) transposed,
//! B = x as `cols × n` (ldb = cols). f32 weights use SGEMM (f32 in, f32 accumulate); f16 / bf16
//! weights against at most `DENSE_ROWS_MAX_TOKENS` (16) rows — decode, LM heads — use the
//! `dense_h16_rows` kernel (f32 activations and accumulation: the CPU's numerics), and against
//! more rows GemmEx with the activations converted to the weight dtype and f32 accumulation and
//! output (what an FP16 engine computes; within 16-bit rounding of the f32 reference).
//! Int8 LM heads use the `dense_i8_matmul` kernel instead (`super::ops`).

use super::ops::DeviceOps;
use super::weights::{DeviceDense, DeviceDenseMatrix};
use super::CudaError;
use cudarc::cublas::{result, sys, CudaBlas};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;

/// A cuBLAS handle bound to the backend's stream.
pub struct Blas {
    blas: CudaBlas,
}

impl Blas {
    /// A handle on `stream` (cuBLAS must be loadable: [`super::libs::check_cublas`]).
    pub fn new(stream: Arc<CudaStream>) -> Result<Self, CudaError> {
        super::libs::check_cublas()?;
        let blas = CudaBlas::new(stream).map_err(|e| CudaError::cublas("creating a handle", e))?;
        Ok(Self { blas })
    }

    /// `out = x · Wᵀ` for `n` rows of `x`.
    pub fn matmul(
        &self,
        ops: &DeviceOps<'_>,
        w: &DeviceDenseMatrix,
        x: &CudaSlice<f32>,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        if n * w.rows == 0 {
            return Ok(());
        }
        let (m, nn, k) = (w.rows as i32, n as i32, w.cols as i32);
        let stream = ops.stream;
        let handle = *self.blas.handle();
        let (alpha, beta) = (1.0f32, 0.0f32);
        let op_t = sys::cublasOperation_t::CUBLAS_OP_T;
        let op_n = sys::cublasOperation_t::CUBLAS_OP_N;
        match &w.data {
            DeviceDense::F32(a) => {
                let (a_ptr, _ga) = a.device_ptr(stream);
                let (x_ptr, _gx) = x.device_ptr(stream);
                let (c_ptr, _gc) = out.device_ptr_mut(stream);
                // SAFETY: pointers are live device buffers of the documented sizes.
                unsafe {
                    result::sgemm(
                        handle,
                        op_t,
                        op_n,
                        m,
                        nn,
                        k,
                        &alpha,
                        a_ptr as *const f32,
                        k,
                        x_ptr as *const f32,
                        k,
                        &beta,
                        c_ptr as *mut f32,
                        m,
                    )
                }
                .map_err(|e| CudaError::cublas("sgemm", e))
            }
            DeviceDense::F16(_) | DeviceDense::BF16(_)
                if ops.dense_h16_rows(w, x, n, out)?.is_some() =>
            {
                Ok(())
            }
            DeviceDense::F16(a) | DeviceDense::BF16(a) => {
                let (kernel, dtype) = if matches!(w.data, DeviceDense::F16(_)) {
                    ("f32_to_f16", sys::cudaDataType::CUDA_R_16F)
                } else {
                    ("f32_to_bf16", sys::cudaDataType::CUDA_R_16BF)
                };
                let mut xh = stream
                    .alloc_zeros::<u16>(x.len())
                    .map_err(|e| CudaError::driver("allocating 16-bit activations", e))?;
                ops.to_half(kernel, x, &mut xh)?;
                let (a_ptr, _ga) = a.device_ptr(stream);
                let (x_ptr, _gx) = xh.device_ptr(stream);
                let (c_ptr, _gc) = out.device_ptr_mut(stream);
                // SAFETY: as above; A and B share the 16-bit dtype, C is f32.
                unsafe {
                    result::gemm_ex(
                        handle,
                        op_t,
                        op_n,
                        m,
                        nn,
                        k,
                        &alpha as *const f32 as *const _,
                        a_ptr as *const _,
                        dtype,
                        k,
                        x_ptr as *const _,
                        dtype,
                        k,
                        &beta as *const f32 as *const _,
                        c_ptr as *mut _,
                        sys::cudaDataType::CUDA_R_32F,
                        m,
                        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                        sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
                    )
                }
                .map_err(|e| CudaError::cublas("gemm_ex", e))
            }
            DeviceDense::I8 { .. } => ops.dense_i8(w, x, n, out),
        }
    }
}
