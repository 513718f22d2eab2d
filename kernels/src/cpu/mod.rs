//! [`CpuBackend`]: the always-built CPU implementation of [`Backend`].
//!
//! - [`dispatch`]: which SIMD path runs ([`CpuPath`]: scalar, AVX2, AVX-512 VNNI), chosen at run
//!   time and overridable with `BITNET_CPU_PATH`.
//! - [`ternary`]: int8 × 2-bit ternary GEMV/GEMM with exact i32 accumulation.
//! - [`dense`]: dense f32/f16/bf16 projections (LM head, FP16 baseline).
//! - [`ops`]: the element-wise and row-wise ops (norms, RoPE, attention, gating, quantization).
//!
//! Work is split over output rows on a rayon pool of `threads` threads owned by the backend
//! (no oversubscription: nothing else in the process computes while a step runs).

pub mod dense;
pub mod dispatch;
pub mod ops;
pub mod ternary;

pub use dispatch::CpuPath;

use crate::backend::{AttentionShape, Backend, PagedAttentionCall, PagedKv};
use crate::error::KernelError;
use crate::reference::projection_rows;
use crate::{DenseMatrix, SignMatrix, TernaryMatrix};
use rayon::prelude::*;
use std::sync::Arc;

/// Work below this many multiply-adds per token stays on the calling thread.
pub const PARALLEL_MIN_WORK: usize = 1 << 16;

/// CPU backend: one SIMD path and one thread pool.
#[derive(Clone, Debug)]
pub struct CpuBackend {
    path: CpuPath,
    threads: usize,
    pool: Arc<rayon::ThreadPool>,
}

/// Physical cores of this machine (logical ones when unknown).
pub fn physical_cores() -> usize {
    num_cpus::get_physical().max(1)
}

impl CpuBackend {
    /// The best available path with `threads` threads (at least 1).
    pub fn new(threads: usize) -> Self {
        Self::with_path(CpuPath::best(), threads).expect("the best path is available")
    }

    /// The path named by `BITNET_CPU_PATH` (default: the best one) with `threads` threads.
    pub fn from_env(threads: usize) -> Result<Self, KernelError> {
        Self::with_path(CpuPath::from_env()?, threads)
    }

    /// A given path; fails when this processor lacks it.
    pub fn with_path(path: CpuPath, threads: usize) -> Result<Self, KernelError> {
        if !path.is_available() {
            return Err(KernelError::Shape {
                op: "CpuBackend::with_path",
                reason: format!("this processor cannot run the {} path", path.name()),
            });
        }
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("bitnet-cpu-{i}"))
            .build()
            .map_err(|e| KernelError::Shape {
                op: "CpuBackend::with_path",
                reason: format!("cannot start {threads} threads: {e}"),
            })?;
        Ok(Self {
            path,
            threads,
            pool: Arc::new(pool),
        })
    }

    /// The best path on every physical core.
    pub fn with_available_threads() -> Self {
        Self::new(physical_cores())
    }

    /// The thread count used by the projections.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The SIMD path.
    pub fn path(&self) -> CpuPath {
        self.path
    }

    /// The thread pool (for kernels that split their own work).
    pub fn pool(&self) -> &rayon::ThreadPool {
        &self.pool
    }

    /// Runs `row_fn(o, x_row)` for every output feature `o` of every token (`x` holds rows of
    /// `cols`, `out` rows of `rows`), splitting the output features of a token over the pool.
    pub fn project<T: Sync, O: Send>(
        &self,
        cols: usize,
        rows: usize,
        x: &[T],
        out: &mut [O],
        row_fn: impl Fn(usize, &[T]) -> O + Sync,
    ) {
        let parallel = self.threads > 1 && rows * cols >= PARALLEL_MIN_WORK;
        for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rows)) {
            if !parallel {
                for (o, y) in or.iter_mut().enumerate() {
                    *y = row_fn(o, xr);
                }
                continue;
            }
            let chunk = rows.div_ceil(self.threads * 4).max(16);
            self.pool.install(|| {
                or.par_chunks_mut(chunk).enumerate().for_each(|(i, part)| {
                    for (j, y) in part.iter_mut().enumerate() {
                        *y = row_fn(i * chunk + j, xr);
                    }
                });
            });
        }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn scope<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
    fn embedding(&self, t: &DenseMatrix, ids: &[u32], out: &mut [f32]) -> Result<(), KernelError> {
        ops::embedding(self, t, ids, out)
    }
    fn rms_norm(
        &self,
        x: &[f32],
        w: Option<&[f32]>,
        eps: f32,
        cols: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        ops::rms_norm(self, x, w, eps, cols, out)
    }
    fn layer_norm(&self, x: &[f32], eps: f32, c: usize, o: &mut [f32]) -> Result<(), KernelError> {
        ops::layer_norm(self, x, eps, c, o)
    }
    fn quantize_rows(
        &self,
        x: &[f32],
        cols: usize,
        q: &mut [i8],
        s: &mut [f32],
    ) -> Result<(), KernelError> {
        ops::quantize_rows(self, x, cols, q, s)
    }
    fn ternary_matmul(
        &self,
        w: &TernaryMatrix,
        q: &[i8],
        acc: &mut [i32],
    ) -> Result<(), KernelError> {
        projection_rows("ternary_matmul", w.cols(), w.rows(), q.len(), acc.len())?;
        ternary::matmul(self, w, q, acc);
        Ok(())
    }
    fn dequantize_rows(
        &self,
        acc: &[i32],
        beta: f32,
        s: &[f32],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        ops::dequantize_rows(self, acc, beta, s, out)
    }
    fn dense_matmul(&self, w: &DenseMatrix, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
        projection_rows("dense_matmul", w.cols(), w.rows(), x.len(), out.len())?;
        dense::matmul(self, w, x, out);
        Ok(())
    }
    fn sign_matmul(&self, w: &SignMatrix, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
        projection_rows("sign_matmul", w.cols(), w.rows(), x.len(), out.len())?;
        self.project(w.cols(), w.rows(), x, out, |o, xr| {
            // (x · S[o]) = Σ x − 2 · Σ_{bit set} x
            let mut total = 0.0f32;
            let mut negative = 0.0f32;
            for (byte, xs) in w.row_bits(o).iter().zip(xr.chunks_exact(8)) {
                for (k, v) in xs.iter().enumerate() {
                    total += v;
                    if byte >> k & 1 == 1 {
                        negative += v;
                    }
                }
            }
            total - 2.0 * negative
        });
        Ok(())
    }
    fn scale_columns(&self, x: &mut [f32], f: &[f32]) -> Result<(), KernelError> {
        ops::scale_columns(self, x, f)
    }
    fn rope(
        &self,
        x: &mut [f32],
        p: &[usize],
        nh: usize,
        hd: usize,
        theta: f32,
    ) -> Result<(), KernelError> {
        ops::rope(self, x, p, nh, hd, theta)
    }
    fn attention(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        ops::attention(self, shape, q, k, v, out)
    }
    fn paged_attention(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        kv: &PagedKv<'_>,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        ops::attention::paged_attention(self, shape, q, kv, out)
    }
    fn paged_attention_batch(
        &self,
        calls: &mut [PagedAttentionCall<'_>],
    ) -> Result<(), KernelError> {
        ops::attention::paged_attention_batch(self, calls)
    }
    fn silu_mul(&self, g: &[f32], u: &[f32], o: &mut [f32]) -> Result<(), KernelError> {
        ops::silu_mul(self, g, u, o)
    }
    fn relu2_mul(&self, g: &[f32], u: &[f32], o: &mut [f32]) -> Result<(), KernelError> {
        ops::relu2_mul(self, g, u, o)
    }
    fn add_assign(&self, x: &mut [f32], y: &[f32]) -> Result<(), KernelError> {
        ops::add_assign(self, x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ReferenceBackend;
    use crate::DenseData;

    /// Deterministic pseudo-random values in [-1, 1) (no dependency needed for a test).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn threaded_projections_match_the_reference() {
        let cpu = CpuBackend::new(3);
        let refb = ReferenceBackend;
        let mut cases = 0;
        for (rows, cols, n) in [(7, 5, 1), (769, 96, 3), (300, 257, 2)] {
            let w = TernaryMatrix::from_latent(rows, cols, &noise(rows * cols, 1)).unwrap();
            let x = noise(n * cols, 2);
            let mut q = vec![0i8; n * cols];
            let mut s = vec![0.0f32; n];
            refb.quantize_rows(&x, cols, &mut q, &mut s).unwrap();
            let (mut a, mut b) = (vec![0i32; n * rows], vec![0i32; n * rows]);
            cpu.ternary_matmul(&w, &q, &mut a).unwrap();
            refb.ternary_matmul(&w, &q, &mut b).unwrap();
            assert_eq!(a, b, "ternary {rows}x{cols} n={n}");
            let d = DenseMatrix::new(rows, cols, DenseData::F32(noise(rows * cols, 3))).unwrap();
            let (mut fa, mut fb) = (vec![0.0f32; n * rows], vec![0.0f32; n * rows]);
            cpu.dense_matmul(&d, &x, &mut fa).unwrap();
            refb.dense_matmul(&d, &x, &mut fb).unwrap();
            // Dense sums are reassociated by the SIMD paths: compare within float rounding.
            for (i, (p, r)) in fa.iter().zip(&fb).enumerate() {
                let tol = 1e-5 * (cols as f32).sqrt() * r.abs().max(1.0);
                assert!(
                    (p - r).abs() <= tol,
                    "dense {rows}x{cols} n={n} [{i}]: {p} vs {r}"
                );
            }
            cases += 1;
        }
        assert_eq!(cases, 3);
    }

    #[test]
    fn sign_matmul_identity_matches_reference() {
        let (rows, cols) = (33, 64);
        let signs: Vec<i8> = noise(rows * cols, 4)
            .iter()
            .map(|v| if *v < 0.0 { -1 } else { 1 })
            .collect();
        let w = SignMatrix::from_signs(rows, cols, &signs).unwrap();
        let x = noise(2 * cols, 5);
        let (mut a, mut b) = (vec![0.0f32; 2 * rows], vec![0.0f32; 2 * rows]);
        CpuBackend::new(2).sign_matmul(&w, &x, &mut a).unwrap();
        ReferenceBackend.sign_matmul(&w, &x, &mut b).unwrap();
        for (i, (p, r)) in a.iter().zip(&b).enumerate() {
            assert!(
                (p - r).abs() <= 1e-4 * r.abs().max(1.0),
                "index {i}: {p} vs {r}"
            );
        }
    }
}
