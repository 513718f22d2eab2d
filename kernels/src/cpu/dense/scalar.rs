//! Portable dense kernel (the `scalar` path): the SIMD kernels' tile order, each dot product in
//! eight f32 lanes held in an array the compiler may vectorize with the baseline ISA.

use super::{Block, OutPtr, Weights, ROW_TILE, X_TILE};
use half::slice::HalfBitsSliceExt;
use half::{bf16, f16};

/// Lanes per accumulator.
const LANES: usize = 8;

/// A stored weight element widened to f32.
trait Widen: Copy {
    fn widen(self) -> f32;
}

impl Widen for f32 {
    fn widen(self) -> f32 {
        self
    }
}

impl Widen for f16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl Widen for bf16 {
    fn widen(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

/// Rows `r0..r1` of `block` into `out` (`out[i · out_stride + r]` for `i < nx`).
///
/// # Safety
/// `out` must point at `block.nx · block.out_stride` writable floats, and no other thread may
/// access the elements of rows `r0..r1` while this runs.
pub unsafe fn run(block: &Block, r0: usize, r1: usize, out: OutPtr) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match block.w {
            Weights::F32(w) => rows(w, block, r0, r1, out),
            Weights::F16(w) => rows(w.reinterpret_cast::<f16>(), block, r0, r1, out),
            Weights::BF16(w) => rows(w.reinterpret_cast::<bf16>(), block, r0, r1, out),
        }
    }
}

/// Tiles rows `r0..r1` × every activation row.
///
/// # Safety
/// As [`run`].
unsafe fn rows<T: Widen>(w: &[T], block: &Block, r0: usize, r1: usize, out: OutPtr) {
    let cols = block.cols;
    let mut r = r0;
    while r < r1 {
        let rt = (r1 - r).min(ROW_TILE);
        let mut j = 0;
        while j < block.nx {
            let xt = (block.nx - j).min(X_TILE);
            let mut sums = [[0.0f32; X_TILE]; ROW_TILE];
            for (ri, s) in sums.iter_mut().enumerate().take(rt) {
                let wr = &w[(r + ri) * cols..][..cols];
                for (ji, y) in s.iter_mut().enumerate().take(xt) {
                    *y = dot(wr, &block.x[(j + ji) * cols..][..cols]);
                }
            }
            for (ri, s) in sums.iter().enumerate().take(rt) {
                for (ji, y) in s.iter().enumerate().take(xt) {
                    // SAFETY: `(j + ji) < nx` and `r + ri < r1 <= out_stride`, inside the
                    // buffer, and row `r + ri` belongs to this caller alone (contract of `run`).
                    unsafe { *out.0.add((j + ji) * block.out_stride + r + ri) = *y };
                }
            }
            j += xt;
        }
        r += rt;
    }
}

/// `Σ w[k] · x[k]` in [`LANES`] f32 lanes, then the lanes summed.
fn dot<T: Widen>(w: &[T], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (wc, xc) = (w.chunks_exact(LANES), x.chunks_exact(LANES));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (wv, xv) in wc.zip(xc) {
        for l in 0..LANES {
            acc[l] += wv[l].widen() * xv[l];
        }
    }
    let tail: f32 = wt.iter().zip(xt).map(|(a, b)| a.widen() * b).sum();
    acc.iter().sum::<f32>() + tail
}
