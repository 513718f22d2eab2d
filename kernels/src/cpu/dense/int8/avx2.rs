//! AVX2 int8 kernel: sixteen weights and sixteen activations widened to i16 and multiplied
//! pairwise into i32 lanes with `vpmaddwd` (exact: |product pair| < 2^15 · 2); a tile of
//! [`ROW_TILE`] weight rows × up to [`X_TILE`] activation rows shares each load.

use super::Int8Block;
use crate::cpu::dense::{OutPtr, ROW_TILE, X_TILE};
use std::arch::x86_64::*;

/// Rows `r0..r1` of `block` into `out`.
///
/// # Safety
/// The processor must have AVX2; `out` must point at `block.nx · block.out_stride` writable
/// floats of which rows `r0..r1` are this caller's; the block's slices hold what it says.
#[target_feature(enable = "avx2")]
pub unsafe fn run(block: &Int8Block, r0: usize, r1: usize, out: OutPtr) {
    let mut r = r0;
    while r < r1 {
        let full = r1 - r >= ROW_TILE;
        let mut j = 0;
        while j < block.nx {
            // SAFETY: rows `r .. r + tile` < r1 and activation rows `j .. j + tile` < nx.
            unsafe {
                match (full, block.nx - j) {
                    (true, 1) => tile::<ROW_TILE, 1>(block, r, j, out),
                    (true, 2) => tile::<ROW_TILE, 2>(block, r, j, out),
                    (true, 3) => tile::<ROW_TILE, 3>(block, r, j, out),
                    (true, _) => tile::<ROW_TILE, X_TILE>(block, r, j, out),
                    (false, 1) => tile::<1, 1>(block, r, j, out),
                    (false, 2) => tile::<1, 2>(block, r, j, out),
                    (false, 3) => tile::<1, 3>(block, r, j, out),
                    (false, _) => tile::<1, X_TILE>(block, r, j, out),
                }
            }
            j += X_TILE.min(block.nx - j);
        }
        r += if full { ROW_TILE } else { 1 };
    }
}

/// Sixteen int8 values at `p` widened to i16.
///
/// # Safety
/// Sixteen bytes at `p` must be readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen(p: *const i8) -> __m256i {
    // SAFETY: forwarded; unaligned loads are allowed.
    unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast())) }
}

/// Weight rows `r .. r + R` against activation rows `j .. j + N`.
///
/// # Safety
/// As [`run`], with the tile inside the block and rows `r .. r + R` this caller's.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tile<const R: usize, const N: usize>(b: &Int8Block, r: usize, j: usize, out: OutPtr) {
    let cols = b.cols;
    let w = b.w[r * cols..(r + R) * cols].as_ptr();
    let q = b.q[j * cols..(j + N) * cols].as_ptr();
    let mut acc = [[_mm256_setzero_si256(); N]; R];
    let mut k = 0;
    // SAFETY: every load reads 16 columns `< cols` of the tile's rows.
    unsafe {
        while k + 16 <= cols {
            let mut xv = [_mm256_setzero_si256(); N];
            for (n, v) in xv.iter_mut().enumerate() {
                *v = widen(q.add(n * cols + k));
            }
            for (m, a) in acc.iter_mut().enumerate() {
                let wv = widen(w.add(m * cols + k));
                for (n, v) in a.iter_mut().enumerate() {
                    *v = _mm256_add_epi32(*v, _mm256_madd_epi16(wv, xv[n]));
                }
            }
            k += 16;
        }
    }
    for (m, a) in acc.iter().enumerate() {
        for (n, v) in a.iter().enumerate() {
            let mut lanes = [0i32; 8];
            // SAFETY: `lanes` holds eight i32.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), *v) };
            let wr = &b.w[(r + m) * cols + k..(r + m + 1) * cols];
            let qr = &b.q[(j + n) * cols + k..(j + n + 1) * cols];
            let tail: i32 = wr.iter().zip(qr).map(|(&a, &c)| a as i32 * c as i32).sum();
            // SAFETY: inside the tile, which the caller vouched for.
            unsafe { b.store(out, j + n, r + m, lanes.iter().sum::<i32>() + tail) };
        }
    }
}
