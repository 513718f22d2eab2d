//! AVX-512 dense kernels (the `avx512vnni` path): 16 f32 lanes, f16 widened with `vcvtph2ps`,
//! bf16 by a 16-bit shift; the column tail uses masked loads.

use super::{Block, OutPtr, Weights, ROW_TILE, X_TILE};
use std::arch::x86_64::*;

const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

/// Rows `r0..r1` of `block` into `out` (`out[i · out_stride + r]` for `i < nx`).
///
/// # Safety
/// The processor must have AVX-512 F/BW/VL (checked by `CpuPath::Avx512Vnni`); `out` must point
/// at `block.nx · block.out_stride` writable floats of which rows `r0..r1` are this caller's.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
                    (true, 1) => tile::<D, ROW_TILE, 1>(wr, row_bytes, x, cols, o, stride),
                    (true, 2) => tile::<D, ROW_TILE, 2>(wr, row_bytes, x, cols, o, stride),
                    (true, 3) => tile::<D, ROW_TILE, 3>(wr, row_bytes, x, cols, o, stride),
                    (true, _) => tile::<D, ROW_TILE, X_TILE>(wr, row_bytes, x, cols, o, stride),
                    (false, 1) => tile::<D, 1, 1>(wr, row_bytes, x, cols, o, stride),
                    (false, 2) => tile::<D, 1, 2>(wr, row_bytes, x, cols, o, stride),
                    (false, 3) => tile::<D, 1, 3>(wr, row_bytes, x, cols, o, stride),
                    (false, _) => tile::<D, 1, X_TILE>(wr, row_bytes, x, cols, o, stride),
                }
            }
            j += X_TILE.min(block.nx - j);
        }
        r += if full { ROW_TILE } else { 1 };
    }
}

/// Sixteen weights at element `k` of row `w`, widened to f32.
///
/// # Safety
/// Sixteen elements from `k` must be readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load<const D: u8>(w: *const u8, k: usize) -> __m512 {
    // SAFETY: the caller guarantees sixteen readable elements; unaligned loads are allowed.
    unsafe {
        match D {
            F16 => _mm512_cvtph_ps(_mm256_loadu_si256(w.cast::<u16>().add(k).cast())),
            BF16 => {
                let h = _mm256_loadu_si256(w.cast::<u16>().add(k).cast());
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            }
            _ => _mm512_loadu_ps(w.cast::<f32>().add(k)),
        }
    }
}

/// The elements of `mask` at element `k` of row `w`, widened to f32 (others 0).
///
/// # Safety
/// The masked-in elements must be readable (masked-out ones are never touched: AVX-512 masked
/// loads suppress faults).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_masked<const D: u8>(w: *const u8, k: usize, mask: __mmask16) -> __m512 {
    // SAFETY: as documented: only masked-in elements are read.
    unsafe {
        match D {
            F16 => _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, w.cast::<i16>().add(k))),
            BF16 => {
                let h = _mm256_maskz_loadu_epi16(mask, w.cast::<i16>().add(k));
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            }
            _ => _mm512_maskz_loadu_ps(mask, w.cast::<f32>().add(k)),
        }
    }
}

/// `out[j · stride + r] = Σ_k W[r, k] · x[j, k]` for `r < R`, `j < N`.
///
/// # Safety
/// `R` rows of `row_bytes` at `w`, `N` rows of `cols` floats at `x`, and the `R × N` output
/// elements must be valid.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn tile<const D: u8, const R: usize, const N: usize>(
    w: *const u8,
    row_bytes: usize,
    x: *const f32,
    cols: usize,
    out: *mut f32,
    stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); N]; R];
    let mut k = 0;
    // SAFETY: every load below reads columns `< cols` of the rows the caller vouched for.
    unsafe {
        while k + 16 <= cols {
            let mut xv = [_mm512_setzero_ps(); N];
            for (j, v) in xv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(x.add(j * cols + k));
            }
            for (r, a) in acc.iter_mut().enumerate() {
                let wv = load::<D>(w.add(r * row_bytes), k);
                for (j, v) in a.iter_mut().enumerate() {
                    *v = _mm512_fmadd_ps(wv, xv[j], *v);
                }
            }
            k += 16;
        }
        if k < cols {
            let mask: __mmask16 = (1u16 << (cols - k)) - 1;
            let mut xv = [_mm512_setzero_ps(); N];
            for (j, v) in xv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask, x.add(j * cols + k));
            }
            for (r, a) in acc.iter_mut().enumerate() {
                let wv = load_masked::<D>(w.add(r * row_bytes), k, mask);
                for (j, v) in a.iter_mut().enumerate() {
                    *v = _mm512_fmadd_ps(wv, xv[j], *v);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            for (j, v) in a.iter().enumerate() {
                *out.add(j * stride + r) = _mm512_reduce_add_ps(*v);
            }
        }
    }
}

/// `Σ_k W[k] · x[k]` of one row in four accumulators (64 columns per step).
///
/// # Safety
/// `cols` elements at `w` and `cols` floats at `x` must be readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn gemv_row<const D: u8>(w: *const u8, _elem: usize, x: *const f32, cols: usize) -> f32 {
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut k = 0;
    // SAFETY: every load reads columns `< cols` (the tail by masked loads).
    unsafe {
        while k + 64 <= cols {
            for (u, a) in acc.iter_mut().enumerate() {
                let x = _mm512_loadu_ps(x.add(k + 16 * u));
                *a = _mm512_fmadd_ps(load::<D>(w, k + 16 * u), x, *a);
            }
            k += 64;
        }
        while k + 16 <= cols {
            acc[0] = _mm512_fmadd_ps(load::<D>(w, k), _mm512_loadu_ps(x.add(k)), acc[0]);
            k += 16;
        }
        if k < cols {
            let mask: __mmask16 = (1u16 << (cols - k)) - 1;
            let x = _mm512_maskz_loadu_ps(mask, x.add(k));
            acc[1] = _mm512_fmadd_ps(load_masked::<D>(w, k, mask), x, acc[1]);
        }
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}
