//! Dense projections `out[n, o] = Σ_k x[n, k] · W[o, k]` over f32/f16/bf16/int8 weights, per
//! [`super::CpuPath`]: the LM head (the largest single read of a small model) and the FP16
//! LLaMA baseline. Called by [`super::CpuBackend`]'s `dense_matmul`; the kernels live in
//! [`scalar`], `avx2` and `avx512` (x86-64 only).
//!
//! The output features are split into contiguous chunks over the backend's pool. Inside a
//! chunk:
//! - GEMV (one activation row, decode): one weight row at a time in four accumulators, so each
//!   thread reads a single sequential stream while `x` stays in L1. On the 2-core EPYC VMs this
//!   reaches the streaming-read bandwidth measured in the same run; interleaving four rows
//!   (four streams) read DRAM at about half that (measured with `examples/dense_bench.rs`).
//! - GEMM (n > 1): a micro-kernel holds [`ROW_TILE`] weight rows × up to [`X_TILE`] activation
//!   rows of accumulators, so each weight element is loaded and widened once per [`X_TILE`]
//!   activations (compute-bound from n ≈ 4 on this machine). Activation rows are taken
//!   [`x_block`] at a time (as many as fit half of L2), so for batches up to that size `W`
//!   streams from memory exactly once per call.
//!
//! Accumulation is f32 with FMA: results differ from the sequential reference by float
//! reassociation only. Nothing is allocated per call. Int8 weights ([`DenseData::I8`],
//! `--lm-head int8`) go to [`int8`]: int8 activations too, exact i32 sums.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod int8;
pub mod scalar;

use super::{CpuBackend, CpuPath};
use crate::{DenseData, DenseMatrix};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Weight rows per micro-kernel tile.
pub const ROW_TILE: usize = 4;
/// Activation rows per micro-kernel tile.
pub const X_TILE: usize = 4;
/// Bytes of activations an outer block may hold (half of a 1 MiB L2).
const X_BLOCK_BYTES: usize = 512 << 10;
/// Below this many multiply-adds a call stays on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// The weights as the kernels read them: raw element slices in the stored dtype.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    /// f16 bit patterns.
    F16(&'a [u16]),
    /// bf16 bit patterns.
    BF16(&'a [u16]),
}

impl<'a> Weights<'a> {
    /// The float weights of `data`; `None` for int8 (see [`int8`]).
    fn of(data: &'a DenseData) -> Option<Self> {
        match data {
            DenseData::F32(v) => Some(Weights::F32(v)),
            DenseData::F16(v) => Some(Weights::F16(v.reinterpret_cast())),
            DenseData::BF16(v) => Some(Weights::BF16(v.reinterpret_cast())),
            DenseData::I8 { .. } => None,
        }
    }
}

/// One call's worth of work for a kernel: rows `r0..r1` of `w` against `nx` activation rows.
#[derive(Clone, Copy, Debug)]
pub struct Block<'a> {
    pub w: Weights<'a>,
    pub cols: usize,
    /// `nx` activation rows of `cols`.
    pub x: &'a [f32],
    pub nx: usize,
    /// Stride of an output row (`W.rows()`).
    pub out_stride: usize,
}

/// The output of one activation block, shared by the tasks of a parallel call.
#[derive(Clone, Copy, Debug)]
pub struct OutPtr(pub *mut f32);

// SAFETY: an `OutPtr` is only dereferenced at `out[i · out_stride + r]` for rows `r` of the
// task's own chunk; chunks are disjoint, so no two threads write the same element, and the
// buffer outlives the scoped parallel call that uses it.
unsafe impl Send for OutPtr {}
// SAFETY: as above: shared only to hand each task its own disjoint set of elements.
unsafe impl Sync for OutPtr {}

/// How many activation rows one outer block takes (a multiple of [`X_TILE`], at least one tile).
pub fn x_block(cols: usize) -> usize {
    let fit = X_BLOCK_BYTES / (cols.max(1) * 4);
    (fit / X_TILE * X_TILE).max(X_TILE)
}

/// Calls `rows_fn(r0, r1)` for every output row: at once on the calling thread, or in chunks
/// (multiples of [`ROW_TILE`], four per thread) over the backend's pool when the call's
/// `macs` multiply-adds pay for the hand-off. Shared by the float and [`int8`] kernels.
fn split_rows(
    backend: &CpuBackend,
    rows: usize,
    macs: usize,
    rows_fn: impl Fn(usize, usize) + Sync,
) {
    let threads = backend.threads();
    if threads == 1 || macs < PARALLEL_MIN_MACS {
        rows_fn(0, rows);
        return;
    }
    let chunk = rows.div_ceil(threads * 4).next_multiple_of(ROW_TILE);
    backend.pool().install(|| {
        (0..rows.div_ceil(chunk)).into_par_iter().for_each(|c| {
            let r0 = c * chunk;
            rows_fn(r0, (r0 + chunk).min(rows));
        });
    });
}

/// Dense projection of every row of `x` (shapes already checked by the caller).
pub fn matmul(backend: &CpuBackend, w: &DenseMatrix, x: &[f32], out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    if rows == 0 || cols == 0 {
        out.fill(0.0);
        return;
    }
    let n = x.len() / cols;
    let Some(weights) = Weights::of(w.data()) else {
        if let DenseData::I8 { values, scales } = w.data() {
            int8::matmul(backend, values, scales, cols, x, out);
        }
        return;
    };
    let xb = x_block(cols);
    for (xs, os) in x.chunks(xb * cols).zip(out.chunks_mut(xb * rows)) {
        let block = Block {
            w: weights,
            cols,
            x: xs,
            nx: xs.len() / cols,
            out_stride: rows,
        };
        let out_ptr = OutPtr(os.as_mut_ptr());
        let path = backend.path();
        split_rows(backend, rows, rows * cols * n.min(xb), |r0, r1| {
            run(path, &block, r0, r1, out_ptr)
        });
    }
}

/// Rows `r0..r1` of one block on `path`; writes `out[i · out_stride + r]` for `i < nx`.
fn run(path: CpuPath, block: &Block, r0: usize, r1: usize, out: OutPtr) {
    debug_assert!(r0 <= r1 && r1 <= block.out_stride && block.x.len() == block.nx * block.cols);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `CpuBackend::with_path` only accepts an available path, so this processor has
        // every feature `avx512::run` enables; indices stay in bounds as checked above, and the
        // output rows `r0..r1` belong to this task alone (see `OutPtr`).
        CpuPath::Avx512Vnni => unsafe { avx512::run(block, r0, r1, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for the AVX2 + FMA + F16C features of `avx2::run`.
        CpuPath::Avx2 => unsafe { avx2::run(block, r0, r1, out) },
        // SAFETY: the output rows `r0..r1` belong to this task alone (see `OutPtr`).
        _ => unsafe { scalar::run(block, r0, r1, out) },
    }
}
