//! The int8 LM head (`--lm-head int8`, a documented numerics change): int8 weights with one
//! scale per row times int8 activations with one scale per token, accumulated exactly in i32:
//! `out[n, o] = (Σ_k qw[o, k] · qx[n, k]) as f32 · (scale[o] / s[n])`, where `qx` and `s` are
//! the activation quantization every BitLinear input uses ([`crate::Backend::quantize_rows`]:
//! `s = 127 / max|x|`, ties to even). Every path computes the same i32 sums and the same two
//! float operations, so the paths agree bit for bit with [`crate::reference::dense_matmul`].
//!
//! The activations are quantized once per call into a buffer kept per thread (no allocation
//! once it has grown); the output features are split over the backend's pool as for the float
//! kernels. Kernels: [`scalar`], `avx2` (widened to i16, `vpmaddwd`) and `avx512`
//! (`vpdpbusd`, 64 products per instruction: the int8 weights read from DRAM at the bandwidth
//! instead of being widened to f32 and multiplied in f32).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod scalar;

use super::{split_rows, OutPtr, X_BLOCK_BYTES};
use crate::cpu::{ops, CpuBackend, CpuPath};
use std::cell::Cell;

/// One call's worth of work for a kernel: weight rows against `nx` quantized activation rows.
#[derive(Clone, Copy, Debug)]
pub struct Int8Block<'a> {
    /// Every weight row (`out_stride · cols` values).
    pub w: &'a [i8],
    /// One scale per weight row.
    pub w_scales: &'a [f32],
    pub cols: usize,
    /// `nx` quantized activation rows of `cols`.
    pub q: &'a [i8],
    /// `s` of each activation row (`q = round(x · s)`).
    pub q_scales: &'a [f32],
    /// `Σ_k q[n, k]` of each activation row (the `avx512` kernel's offset correction).
    pub q_sums: &'a [i32],
    pub nx: usize,
    /// Stride of an output row (the number of weight rows).
    pub out_stride: usize,
}

impl Int8Block<'_> {
    /// Writes the finished output of weight row `r` and activation row `j` from its i32 sum.
    ///
    /// # Safety
    /// `r < out_stride`, `j < nx`, and the element must belong to the caller (see [`OutPtr`]).
    #[inline]
    pub unsafe fn store(&self, out: OutPtr, j: usize, r: usize, dot: i32) {
        let y = dot as f32 * (self.w_scales[r] / self.q_scales[j]);
        // SAFETY: forwarded from this function's contract.
        unsafe { *out.0.add(j * self.out_stride + r) = y };
    }
}

/// Activation buffers reused from call to call on one thread.
#[derive(Default)]
struct Scratch {
    q: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

/// Int8 projection of every row of `x` (shapes already checked by the caller).
pub fn matmul(
    backend: &CpuBackend,
    w: &[i8],
    w_scales: &[f32],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let rows = w_scales.len();
    let n = x.len() / cols;
    // Taken out of the thread-local for the call, so a nested call on this thread (a pool
    // thread stealing work) cannot alias it; put back afterwards to keep its capacity.
    let mut s = SCRATCH.take();
    s.q.resize(n * cols, 0);
    s.scales.resize(n, 0.0);
    ops::quantize_rows(backend, x, cols, &mut s.q, &mut s.scales)
        .expect("quantize_rows: shapes are the caller's checked ones");
    s.sums.clear();
    s.sums.extend(
        s.q.chunks_exact(cols)
            .map(|r| r.iter().map(|&v| v as i32).sum::<i32>()),
    );
    let xb = (X_BLOCK_BYTES / cols).max(1);
    for (c, os) in out.chunks_mut(xb * rows).enumerate() {
        let nx = os.len() / rows;
        let rng = c * xb..c * xb + nx;
        let block = Int8Block {
            w,
            w_scales,
            cols,
            q: &s.q[rng.start * cols..rng.end * cols],
            q_scales: &s.scales[rng.clone()],
            q_sums: &s.sums[rng],
            nx,
            out_stride: rows,
        };
        let out_ptr = OutPtr(os.as_mut_ptr());
        let path = backend.path();
        split_rows(backend, rows, rows * cols * nx, |r0, r1| {
            run(path, &block, r0, r1, out_ptr)
        });
    }
    SCRATCH.set(s);
}

/// Rows `r0..r1` of one block on `path`.
fn run(path: CpuPath, block: &Int8Block, r0: usize, r1: usize, out: OutPtr) {
    debug_assert!(r0 <= r1 && r1 <= block.out_stride);
    debug_assert!(block.w.len() == block.out_stride * block.cols);
    debug_assert!(block.q.len() == block.nx * block.cols && block.q_sums.len() == block.nx);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `CpuBackend::with_path` only accepts an available path, so this processor has
        // every feature `avx512::run` enables; the slices bound every access (checked above),
        // and the output rows `r0..r1` belong to this task alone (see `OutPtr`).
        CpuPath::Avx512Vnni => unsafe { avx512::run(block, r0, r1, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for the AVX2 features of `avx2::run`.
        CpuPath::Avx2 => unsafe { avx2::run(block, r0, r1, out) },
        // SAFETY: the output rows `r0..r1` belong to this task alone (see `OutPtr`).
        _ => unsafe { scalar::run(block, r0, r1, out) },
    }
}
