//! AVX2 ternary kernel: `vpmaddubsw` (u8 codes × s8 activations) + `vpmaddwd` with ones.
//!
//! A 32-byte block load gives four code vectors `(v >> 2i) & 3` (16-bit shifts, masked per
//! byte), each against 32 consecutive activations. Codes are at most 2, so a `vpmaddubsw` pair
//! sum is at most 2 · 2 · 128 = 512 in magnitude and the four of a block add up in i16 without
//! saturation (≤ 2048) before one `vpmaddwd` widens them to i32 (a lane grows by ≤ 4096 per
//! block: no overflow below 2¹⁹ blocks).
//!
//! GEMV (n = 1) takes the [`ROW_GROUP`] rows of a group per pass over the activations (one
//! sequential stream of weights); GEMM takes
//! [`GEMM_ROWS`] rows × up to [`GEMM_ACTS`] activation rows per block load, over panels of rows
//! small enough to stay in L2 while every activation tile passes over them.

use super::{Activations, Output};
use crate::packing::{BLOCK_BYTES, BLOCK_COLS, ROW_GROUP};
use crate::TernaryMatrix;
use std::arch::x86_64::*;
use std::ops::Range;

/// Bytes from one block of a row group to the next.
const GROUP_BLOCK: usize = ROW_GROUP * BLOCK_BYTES;
/// Rows per GEMM tile.
const GEMM_ROWS: usize = 1;
// A GEMM tile never straddles two row groups.
const _: () = assert!(ROW_GROUP.is_multiple_of(GEMM_ROWS));
/// Activation rows per GEMM tile.
const GEMM_ACTS: usize = 4;
/// Bytes of weights per GEMM row panel (kept in L2 across the activation tiles).
const PANEL_BYTES: usize = 192 << 10;

/// Computes output rows `rows` for every activation row.
///
/// # Safety
/// Concurrent calls on one `out` must be given disjoint `rows` of whole row groups (see
/// `Kernel::run`), and the processor must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn run(w: &TernaryMatrix, acts: &Activations, rows: Range<usize>, out: &Output) {
    assert!(acts.stride >= w.padded_cols() && acts.data.len() >= acts.n * acts.stride);
    assert!(
        rows.start.is_multiple_of(ROW_GROUP)
            && (rows.end.is_multiple_of(ROW_GROUP) || rows.end == w.rows()),
        "row ranges cover whole row groups"
    );
    // The padding rows of the last group are computed with it and not stored.
    let end = rows.end.next_multiple_of(ROW_GROUP);
    if acts.n == 1 {
        for r in (rows.start..end).step_by(ROW_GROUP) {
            emit::<ROW_GROUP, 1>(w, acts, r, 0, out);
        }
        return;
    }
    let panel = (PANEL_BYTES / w.group_bytes()).max(1) * ROW_GROUP;
    for p0 in (rows.start..end).step_by(panel) {
        let p1 = (p0 + panel).min(end);
        let mut n0 = 0;
        while n0 < acts.n {
            let tile_n = (acts.n - n0).min(GEMM_ACTS);
            for r in (p0..p1).step_by(GEMM_ROWS) {
                emit_n::<GEMM_ROWS>(w, acts, r, n0, tile_n, out);
            }
            n0 += tile_n;
        }
    }
}

/// [`emit`] with a run-time tile width `n` (1 ..= [`GEMM_ACTS`]).
#[target_feature(enable = "avx2")]
fn emit_n<const R: usize>(
    w: &TernaryMatrix,
    acts: &Activations,
    r0: usize,
    n0: usize,
    n: usize,
    out: &Output,
) {
    debug_assert!((1..=GEMM_ACTS).contains(&n));
    match n {
        1 => emit::<R, 1>(w, acts, r0, n0, out),
        2 => emit::<R, 2>(w, acts, r0, n0, out),
        3 => emit::<R, 3>(w, acts, r0, n0, out),
        _ => emit::<R, GEMM_ACTS>(w, acts, r0, n0, out),
    }
}

/// Computes and stores the `R × N` outputs of rows `r0..r0+R` and activations `n0..n0+N`.
#[target_feature(enable = "avx2")]
fn emit<const R: usize, const N: usize>(
    w: &TernaryMatrix,
    acts: &Activations,
    r0: usize,
    n0: usize,
    out: &Output,
) {
    let (stride, blocks) = (acts.stride, w.blocks());
    // Bounds of everything `tile` reads, checked once here through slicing: block `b` of row
    // `r0 + r` is at `b · GROUP_BLOCK + r · 32` from the first byte of row `r0`.
    let start = w.byte_index(r0, 0);
    let wp = w.packed()[start..start + (blocks - 1) * GROUP_BLOCK + R * BLOCK_BYTES].as_ptr();
    let ap = acts.data[n0 * stride..(n0 + N) * stride].as_ptr();
    // SAFETY: `wp` covers the R rows' blocks and `ap` N rows of `stride ≥ blocks · 128` bytes
    // (checked by the slices above and the assert in `run`); `r0..r0+R` lies in one row group
    // (R divides ROW_GROUP and r0 is a multiple of R); the caller of `run` guaranteed the
    // instructions.
    let dots = unsafe { tile::<R, N>(wp, ap, stride, blocks) };
    for (r, row) in dots.iter().enumerate().filter(|(r, _)| r0 + r < w.rows()) {
        for (n, &dot) in row.iter().enumerate() {
            // SAFETY: the caller of `run` owns output rows `r0..r0+R` (inside its `rows`,
            // rounded up to the row group whose padding rows are never stored).
            unsafe { out.store(n0 + n, r0 + r, dot - acts.sums[n0 + n]) };
        }
    }
}

/// `Σ code · q` for R rows of one row group (block `b` of row `r` at `w + b · GROUP_BLOCK +
/// r · 32`) × N activation rows (`stride` apart).
///
/// # Safety
/// `w` must be readable for `(blocks − 1) · GROUP_BLOCK + R · 32` bytes and `a` for
/// `N · stride` bytes with `stride ≥ blocks · 128`; AVX2 must be present.
#[target_feature(enable = "avx2")]
unsafe fn tile<const R: usize, const N: usize>(
    w: *const u8,
    a: *const i8,
    stride: usize,
    blocks: usize,
) -> [[i32; N]; R] {
    let m3 = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); N]; R];
    for b in 0..blocks {
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: block `b < blocks` of row `r < R` lies inside the bytes `w` covers.
            let v = unsafe {
                _mm256_loadu_si256(w.add(b * GROUP_BLOCK + r * BLOCK_BYTES) as *const __m256i)
            };
            let c0 = _mm256_and_si256(v, m3);
            let c1 = _mm256_and_si256(_mm256_srli_epi16::<2>(v), m3);
            let c2 = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m3);
            let c3 = _mm256_and_si256(_mm256_srli_epi16::<6>(v), m3);
            for (n, acc_rn) in acc_r.iter_mut().enumerate() {
                // SAFETY: columns `128b .. 128b + 128` of activation row `n < N` lie inside its
                // `stride ≥ blocks · 128` bytes.
                let [q0, q1, q2, q3] = unsafe {
                    let p = a.add(n * stride + b * BLOCK_COLS) as *const __m256i;
                    [
                        _mm256_loadu_si256(p),
                        _mm256_loadu_si256(p.add(1)),
                        _mm256_loadu_si256(p.add(2)),
                        _mm256_loadu_si256(p.add(3)),
                    ]
                };
                let s01 =
                    _mm256_add_epi16(_mm256_maddubs_epi16(c0, q0), _mm256_maddubs_epi16(c1, q1));
                let s23 =
                    _mm256_add_epi16(_mm256_maddubs_epi16(c2, q2), _mm256_maddubs_epi16(c3, q3));
                let s = _mm256_madd_epi16(_mm256_add_epi16(s01, s23), ones);
                *acc_rn = _mm256_add_epi32(*acc_rn, s);
            }
        }
    }
    acc.map(|row| row.map(|v| hsum(v)))
}

/// Sum of the eight i32 lanes.
#[target_feature(enable = "avx2")]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}
