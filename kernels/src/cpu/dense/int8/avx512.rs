//! AVX-512 VNNI int8 kernel: `vpdpbusd` multiplies unsigned by signed bytes, so each weight
//! byte is flipped to `w + 128` (xor 0x80) and the sum corrected by `128 · Σ q` afterwards;
//! 64 products per instruction. GEMV streams one weight row at a time (one sequential read per
//! thread, as the float GEMV); GEMM tiles [`ROW_TILE`] weight rows × up to [`X_TILE`]
//! activation rows. Column tails use masked loads (masked-out bytes are zero in both operands).

use super::Int8Block;
use crate::cpu::dense::{OutPtr, ROW_TILE, X_TILE};
use std::arch::x86_64::*;

/// Rows `r0..r1` of `block` into `out`.
///
/// # Safety
/// The processor must have AVX-512 F/BW/VNNI; `out` must point at `block.nx · block.out_stride`
/// writable floats of which rows `r0..r1` are this caller's; the block's slices hold what it
/// says.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn run(block: &Int8Block, r0: usize, r1: usize, out: OutPtr) {
    if block.nx == 1 {
        for r in r0..r1 {
            // SAFETY: row `r < r1` and activation row 0 are inside the block.
            unsafe { tile::<1, 1, 4>(block, r, 0, out) };
        }
        return;
    }
    let mut r = r0;
    while r < r1 {
        let full = r1 - r >= ROW_TILE;
        let mut j = 0;
        while j < block.nx {
            // SAFETY: rows `r .. r + tile` < r1 and activation rows `j .. j + tile` < nx.
            unsafe {
                match (full, block.nx - j) {
                    (true, 1) => tile::<ROW_TILE, 1, 1>(block, r, j, out),
                    (true, 2) => tile::<ROW_TILE, 2, 1>(block, r, j, out),
                    (true, 3) => tile::<ROW_TILE, 3, 1>(block, r, j, out),
                    (true, _) => tile::<ROW_TILE, X_TILE, 1>(block, r, j, out),
                    (false, 1) => tile::<1, 1, 1>(block, r, j, out),
                    (false, 2) => tile::<1, 2, 1>(block, r, j, out),
                    (false, 3) => tile::<1, 3, 1>(block, r, j, out),
                    (false, _) => tile::<1, X_TILE, 1>(block, r, j, out),
                }
            }
            j += X_TILE.min(block.nx - j);
        }
        r += if full { ROW_TILE } else { 1 };
    }
}

/// Weight rows `r .. r + R` against activation rows `j .. j + N`, the columns unrolled `U`
/// times (independent accumulators per unroll step, summed at the end).
///
/// # Safety
/// As [`run`], with the tile inside the block and rows `r .. r + R` this caller's.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const R: usize, const N: usize, const U: usize>(
    b: &Int8Block,
    r: usize,
    j: usize,
    out: OutPtr,
) {
    let cols = b.cols;
    let w = b.w[r * cols..(r + R) * cols].as_ptr();
    let q = b.q[j * cols..(j + N) * cols].as_ptr();
    let flip = _mm512_set1_epi8(-128);
    let mut acc = [[[_mm512_setzero_si512(); N]; R]; U];
    let mut k = 0;
    // SAFETY: every load reads columns `< cols` of the tile's rows (the tail masked).
    unsafe {
        while k + 64 * U <= cols {
            for (u, au) in acc.iter_mut().enumerate() {
                let ku = k + 64 * u;
                let mut xv = [_mm512_setzero_si512(); N];
                for (n, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(q.add(n * cols + ku).cast());
                }
                for (m, a) in au.iter_mut().enumerate() {
                    let wv =
                        _mm512_xor_si512(_mm512_loadu_si512(w.add(m * cols + ku).cast()), flip);
                    for (n, v) in a.iter_mut().enumerate() {
                        *v = _mm512_dpbusd_epi32(*v, wv, xv[n]);
                    }
                }
            }
            k += 64 * U;
        }
        while k < cols {
            let mask: __mmask64 = if cols - k >= 64 {
                !0
            } else {
                (1u64 << (cols - k)) - 1
            };
            let mut xv = [_mm512_setzero_si512(); N];
            for (n, v) in xv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_epi8(mask, q.add(n * cols + k));
            }
            for (m, a) in acc[0].iter_mut().enumerate() {
                let wv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, w.add(m * cols + k)), flip);
                for (n, v) in a.iter_mut().enumerate() {
                    *v = _mm512_dpbusd_epi32(*v, wv, xv[n]);
                }
            }
            k += 64;
        }
    }
    for m in 0..R {
        for n in 0..N {
            let mut sum = acc[0][m][n];
            for au in &acc[1..] {
                sum = _mm512_add_epi32(sum, au[m][n]);
            }
            let dot = _mm512_reduce_add_epi32(sum) - 128 * b.q_sums[j + n];
            // SAFETY: inside the tile, which the caller vouched for.
            unsafe { b.store(out, j + n, r + m, dot) };
        }
    }
}
