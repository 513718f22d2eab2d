//! AVX-512 VNNI ternary kernel: `vpdpbusd` on a 32-byte block broadcast to both halves of a zmm.
//!
//! Per block and row, one broadcast load and two masks give two u8 vectors:
//! `A = [codes of columns 0..32 | codes of columns 32..64 · 4]` (masks `0x03 | 0x0C`) and
//! `B = [columns 64..96 · 16 | columns 96..128 · 64]` (masks `0x30 | 0xC0`), each multiplied by
//! 64 consecutive activations with one `vpdpbusd`. The codes stay in place (no shifts in the
//! loop): each accumulator lane holds a known power-of-four multiple of its true sum, divided
//! out exactly with an arithmetic shift at the end. A u8 operand is at most 2 · 64 = 128, so a
//! lane grows by at most 4 · 128 · 128 = 65536 per block; the block loop is cut into segments
//! of [`SEGMENT_BLOCKS`] to stay inside i32 whatever `cols` is.
//!
//! GEMV (n = 1) takes the [`ROW_GROUP`] rows of a group per pass over the activations (one
//! sequential stream of weights); GEMM takes
//! [`GEMM_ROWS`] rows × up to [`GEMM_ACTS`] activation rows per block load (2 · R · N zmm
//! accumulators), over panels of rows small enough to stay in L2 while every activation tile
//! passes over them.

use super::{Activations, Output};
use crate::packing::{BLOCK_BYTES, BLOCK_COLS, ROW_GROUP};
use crate::TernaryMatrix;
use std::arch::x86_64::*;
use std::ops::Range;

/// Bytes from one block of a row group to the next.
const GROUP_BLOCK: usize = ROW_GROUP * BLOCK_BYTES;
/// Rows per GEMM tile.
const GEMM_ROWS: usize = 2;
// A GEMM tile never straddles two row groups.
const _: () = assert!(ROW_GROUP.is_multiple_of(GEMM_ROWS));
/// Activation rows per GEMM tile.
const GEMM_ACTS: usize = 4;
/// Blocks per accumulation segment: 16384 · 65536 = 2³⁰ < i32::MAX.
const SEGMENT_BLOCKS: usize = 1 << 14;
/// Bytes of weights per GEMM row panel (kept in L2 across the activation tiles).
const PANEL_BYTES: usize = 192 << 10;

/// Computes output rows `rows` for every activation row.
///
/// # Safety
/// Concurrent calls on one `out` must be given disjoint `rows` of whole row groups (see
/// `Kernel::run`), and the processor must have AVX-512 F, BW, VL and VNNI.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
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
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
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
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
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
/// `N · stride` bytes with `stride ≥ blocks · 128`; AVX-512 F/BW/VNNI must be present.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const R: usize, const N: usize>(
    w: *const u8,
    a: *const i8,
    stride: usize,
    blocks: usize,
) -> [[i32; N]; R] {
    let mask_a = _mm512_inserti64x4::<1>(_mm512_set1_epi8(0x03), _mm256_set1_epi8(0x0C));
    let mask_b = _mm512_inserti64x4::<1>(_mm512_set1_epi8(0x30), _mm256_set1_epi8(-0x40));
    let shift_a = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi32(2));
    let shift_b = _mm512_inserti64x4::<1>(_mm512_set1_epi32(4), _mm256_set1_epi32(6));
    let mut dots = [[0i32; N]; R];
    let mut b0 = 0;
    while b0 < blocks {
        let b1 = (b0 + SEGMENT_BLOCKS).min(blocks);
        let mut acc_a = [[_mm512_setzero_si512(); N]; R];
        let mut acc_b = [[_mm512_setzero_si512(); N]; R];
        for b in b0..b1 {
            let mut codes_a = [_mm512_setzero_si512(); R];
            let mut codes_b = [_mm512_setzero_si512(); R];
            for r in 0..R {
                // SAFETY: block `b < blocks` of row `r < R` lies inside the bytes `w` covers.
                let v = unsafe {
                    let p = w.add(b * GROUP_BLOCK + r * BLOCK_BYTES);
                    _mm256_loadu_si256(p as *const __m256i)
                };
                let v = _mm512_broadcast_i64x4(v);
                codes_a[r] = _mm512_and_si512(v, mask_a);
                codes_b[r] = _mm512_and_si512(v, mask_b);
            }
            for n in 0..N {
                // SAFETY: columns `128b .. 128b + 128` of activation row `n < N` lie inside
                // its `stride ≥ blocks · 128` bytes.
                let (qa, qb) = unsafe {
                    let p = a.add(n * stride + b * BLOCK_COLS);
                    (
                        _mm512_loadu_si512(p as *const __m512i),
                        _mm512_loadu_si512(p.add(64) as *const __m512i),
                    )
                };
                for r in 0..R {
                    acc_a[r][n] = _mm512_dpbusd_epi32(acc_a[r][n], codes_a[r], qa);
                    acc_b[r][n] = _mm512_dpbusd_epi32(acc_b[r][n], codes_b[r], qb);
                }
            }
        }
        for r in 0..R {
            for n in 0..N {
                // Each lane is an exact multiple of its scale: the shifts divide exactly.
                let sum = _mm512_add_epi32(
                    _mm512_srav_epi32(acc_a[r][n], shift_a),
                    _mm512_srav_epi32(acc_b[r][n], shift_b),
                );
                dots[r][n] += _mm512_reduce_add_epi32(sum);
            }
        }
        b0 = b1;
    }
    dots
}
