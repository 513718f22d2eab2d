//! AVX2 dense kernels (the `avx2` path): 8 f32 lanes with FMA, f16 widened with F16C
//! `vcvtph2ps`, bf16 by a 16-bit shift; the column tail is
//! copied into zero-padded stack buffers and run as one more vector step.

use super::{Block, OutPtr, Weights, ROW_TILE, X_TILE};
use std::arch::x86_64::*;

const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

/// Rows `r0..r1` of `block` into `out` (`out[i · out_stride + r]` for `i < nx`).
///
/// # Safety
/// The processor must have AVX2, FMA and F16C (checked by `CpuPath::Avx2`); `out` must point
/// at `block.nx · block.out_stride` writable floats of which rows `r0..r1` are this caller's.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn run(block: &Block, r0: usize, r1: usize, out: OutPtr) {
    // SAFETY: forwarded from this function's contract; the slices bound every pointer below.
    unsafe {
        match block.w {
            Weights::F32(w) => rows::<F32>(w.as_ptr().cast(), 4, block, r0, r1, out),
            Weights::F16(w) => rows::<F16>(w.as_ptr().cast(), 2, block, r0, r1, out),
            Weights::BF16(w) => rows::<BF16>(w.as_ptr().cast(), 2, block, r0, r1, out),
        }
    }
}

/// Walks rows `r0..r1` in tiles of [`ROW_TILE`] × [`X_TILE`].
///
/// # Safety
/// As [`run`]; `w` points at `out_stride · cols` elements of `elem` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows<const D: u8>(
    w: *const u8,
    elem: usize,
    block: &Block,
    r0: usize,
    r1: usize,
    out: OutPtr,
) {
    let (cols, stride) = (block.cols, block.out_stride);
    let row_bytes = cols * elem;
    if block.nx == 1 {
        // GEMV: one weight row at a time, a single sequential stream per thread.
        for r in r0..r1 {
            // SAFETY: row `r < r1` is inside `w`, `x` holds `cols` floats, and output element
            // `r` belongs to this caller (contract).
            unsafe {
                let y = gemv_row::<D>(w.add(r * row_bytes), elem, block.x.as_ptr(), cols);
                *out.0.add(r) = y;
            }
        }
        return;
    }
    let mut r = r0;
    while r < r1 {
        let wr = w.wrapping_add(r * row_bytes);
        let full = r1 - r >= ROW_TILE;
        let mut j = 0;
        while j < block.nx {
            let x = block.x.as_ptr().wrapping_add(j * cols);
            let o = out.0.wrapping_add(j * stride + r);
            // SAFETY: rows `r .. r + tile` and activations `j .. j + tile` are inside their
            // buffers (loop bounds), and output elements of rows `r..r1` are ours (contract).
            unsafe {
                match (full, block.nx - j) {
                    (true, 1) => tile::<D, ROW_TILE, 1>(wr, elem, row_bytes, x, cols, o, stride),
                    (true, 2) => tile::<D, ROW_TILE, 2>(wr, elem, row_bytes, x, cols, o, stride),
                    (true, 3) => tile::<D, ROW_TILE, 3>(wr, elem, row_bytes, x, cols, o, stride),
                    (true, _) => {
                        tile::<D, ROW_TILE, X_TILE>(wr, elem, row_bytes, x, cols, o, stride)
                    }
                    (false, 1) => tile::<D, 1, 1>(wr, elem, row_bytes, x, cols, o, stride),
                    (false, 2) => tile::<D, 1, 2>(wr, elem, row_bytes, x, cols, o, stride),
                    (false, 3) => tile::<D, 1, 3>(wr, elem, row_bytes, x, cols, o, stride),
                    (false, _) => tile::<D, 1, X_TILE>(wr, elem, row_bytes, x, cols, o, stride),
                }
            }
            j += X_TILE.min(block.nx - j);
        }
        r += if full { ROW_TILE } else { 1 };
    }
}

/// Eight weights at element `k` of row `w`, widened to f32.
///
/// # Safety
/// Eight elements from `k` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load<const D: u8>(w: *const u8, k: usize) -> __m256 {
    // SAFETY: the caller guarantees eight readable elements; unaligned loads are allowed.
    unsafe {
        match D {
            F16 => _mm256_cvtph_ps(_mm_loadu_si128(w.cast::<u16>().add(k).cast())),
            BF16 => {
                let h = _mm_loadu_si128(w.cast::<u16>().add(k).cast());
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            }
            _ => _mm256_loadu_ps(w.cast::<f32>().add(k)),
        }
    }
}

/// Horizontal sum of eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `out[j · stride + r] = Σ_k W[r, k] · x[j, k]` for `r < R`, `j < N` (`elem` bytes a weight).
///
/// # Safety
/// `R` rows of `row_bytes` at `w`, `N` rows of `cols` floats at `x`, and the `R × N` output
/// elements must be valid.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const D: u8, const R: usize, const N: usize>(
    w: *const u8,
    elem: usize,
    row_bytes: usize,
    x: *const f32,
    cols: usize,
    out: *mut f32,
    stride: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); N]; R];
    let mut k = 0;
    // SAFETY: every load below reads columns `< cols` of the rows the caller vouched for, or
    // the zero-padded stack copies of the column tail.
    unsafe {
        while k + 8 <= cols {
            let mut xv = [_mm256_setzero_ps(); N];
            for (j, v) in xv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(x.add(j * cols + k));
            }
            for (r, a) in acc.iter_mut().enumerate() {
                let wv = load::<D>(w.add(r * row_bytes), k);
                for (j, v) in a.iter_mut().enumerate() {
                    *v = _mm256_fmadd_ps(wv, xv[j], *v);
                }
            }
            k += 8;
        }
        if k < cols {
            let rest = cols - k;
            let mut xv = [_mm256_setzero_ps(); N];
            for (j, v) in xv.iter_mut().enumerate() {
                let mut buf = [0.0f32; 8];
                std::ptr::copy_nonoverlapping(x.add(j * cols + k), buf.as_mut_ptr(), rest);
                *v = _mm256_loadu_ps(buf.as_ptr());
            }
            for (r, a) in acc.iter_mut().enumerate() {
                let mut buf = [0u8; 32];
                let src = w.add(r * row_bytes + k * elem);
                std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), rest * elem);
                let wv = load::<D>(buf.as_ptr(), 0);
                for (j, v) in a.iter_mut().enumerate() {
                    *v = _mm256_fmadd_ps(wv, xv[j], *v);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            for (j, v) in a.iter().enumerate() {
                *out.add(j * stride + r) = hsum(*v);
            }
        }
    }
}

/// `Σ_k W[k] · x[k]` of one row in four accumulators (32 columns per step; `elem` bytes a
/// weight).
///
/// # Safety
/// `cols` elements at `w` and `cols` floats at `x` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_row<const D: u8>(w: *const u8, elem: usize, x: *const f32, cols: usize) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut k = 0;
    // SAFETY: every load reads columns `< cols`, or the zero-padded stack copies of the tail.
    unsafe {
        while k + 32 <= cols {
            for (u, a) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(x.add(k + 8 * u));
                *a = _mm256_fmadd_ps(load::<D>(w, k + 8 * u), x, *a);
            }
            k += 32;
        }
        while k + 8 <= cols {
            acc[0] = _mm256_fmadd_ps(load::<D>(w, k), _mm256_loadu_ps(x.add(k)), acc[0]);
            k += 8;
        }
        if k < cols {
            let rest = cols - k;
            let (mut xb, mut wb) = ([0.0f32; 8], [0u8; 32]);
            std::ptr::copy_nonoverlapping(x.add(k), xb.as_mut_ptr(), rest);
            std::ptr::copy_nonoverlapping(w.add(k * elem), wb.as_mut_ptr(), rest * elem);
            let t = _mm256_mul_ps(load::<D>(wb.as_ptr(), 0), _mm256_loadu_ps(xb.as_ptr()));
            acc[1] = _mm256_add_ps(acc[1], t);
        }
    }
    hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ))
}
