//! AVX2 + FMA + F16C kernels of the row and element ops (the `avx2` path): 8 lanes; float
//! column tails by `vmaskmovps`, integer and 16-bit tails by the scalar arithmetic (identical
//! results); `exp` by range reduction, a Cephes polynomial and an exponent-field `2^n`.
//! Same function list as [`super::scalar`].

use super::attention::GroupTask;
use super::scalar;
use crate::reference;
use std::arch::x86_64::*;

/// Lanes per vector.
const L: usize = 8;

/// Lane mask (all ones) of the first `min(n, 8)` lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mask(n: usize) -> __m256i {
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(L) as i32), iota)
}

/// Eight floats of `x` from `i`, or the `x.len() - i < 8` left (zeros after them).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load(x: &[f32], i: usize) -> __m256 {
    let n = x.len() - i;
    // SAFETY: `i <= x.len()`; the full load reads `x[i..i + 8]` only when `n >= 8`, the masked
    // one only the `n` lanes that exist (`vmaskmovps` does not touch masked-out elements).
    unsafe {
        if n >= L {
            _mm256_loadu_ps(x.as_ptr().add(i))
        } else {
            _mm256_maskload_ps(x.as_ptr().add(i), mask(n))
        }
    }
}

/// Writes eight lanes to `o` from `i`, or the `o.len() - i < 8` left.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store(o: &mut [f32], i: usize, v: __m256) {
    let n = o.len() - i;
    // SAFETY: as `load`: only existing elements of `o` are written.
    unsafe {
        if n >= L {
            _mm256_storeu_ps(o.as_mut_ptr().add(i), v)
        } else {
            _mm256_maskstore_ps(o.as_mut_ptr().add(i), mask(n), v)
        }
    }
}

/// Sum of eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Maximum of eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
}

/// `exp(x)` per lane, within 2 ulp of `f32::exp` on [−87.3, 88.3]; clamped outside (so at
/// most 1.2e-38 instead of 0 below, 2.4e38 instead of +inf above).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn exp(x: __m256) -> __m256 {
    let x = _mm256_max_ps(
        _mm256_min_ps(x, _mm256_set1_ps(88.3)),
        _mm256_set1_ps(-87.3),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    // n ∈ [−126, 127]: 2^n is a normal float with biased exponent n + 127.
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(y, _mm256_castsi256_ps(bits))
}

/// `Σ f(x) as f64` over eight lanes at a time (lanes past the end are zeroed after `f`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_f64_of(x: &[f32], f: impl Fn(__m256) -> __m256) -> f64 {
    let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    for i in (0..x.len()).step_by(L) {
        let t = _mm256_and_ps(f(load(x, i)), _mm256_castsi256_ps(mask(x.len() - i)));
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(t)));
    }
    let s = _mm256_add_pd(lo, hi);
    let s = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd::<1>(s));
    _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
}

/// Sum of the squares (in f32) of `x`, widened and summed in f64 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn sum_sq_f64(x: &[f32]) -> f64 {
    sum_f64_of(x, |v| _mm256_mul_ps(v, v))
}

/// Sum of `x` in f64 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn sum_f64(x: &[f32]) -> f64 {
    sum_f64_of(x, |v| v)
}

/// `Σ ((x − mean)² as f64)`.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn sum_sq_dev_f64(x: &[f32], mean: f32) -> f64 {
    let m = _mm256_set1_ps(mean);
    sum_f64_of(x, |v| {
        let d = _mm256_sub_ps(v, m);
        _mm256_mul_ps(d, d)
    })
}

/// `o = x · inv · w` (weight 1 when absent), two roundings as in the reference.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn scale_into(x: &[f32], inv: f32, w: Option<&[f32]>, o: &mut [f32]) {
    assert!(o.len() == x.len() && w.is_none_or(|w| w.len() == x.len()));
    let s = _mm256_set1_ps(inv);
    for i in (0..x.len()).step_by(L) {
        let y = _mm256_mul_ps(load(x, i), s);
        store(o, i, w.map_or(y, |w| _mm256_mul_ps(y, load(w, i))));
    }
}

/// `o = (x − mean) · inv`.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn center_scale_into(x: &[f32], mean: f32, inv: f32, o: &mut [f32]) {
    assert_eq!(o.len(), x.len());
    let (m, s) = (_mm256_set1_ps(mean), _mm256_set1_ps(inv));
    for i in (0..x.len()).step_by(L) {
        store(o, i, _mm256_mul_ps(_mm256_sub_ps(load(x, i), m), s));
    }
}

/// `max |x|` (0 for an empty row; NaNs are skipped as `f32::max` skips them).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn absmax(x: &[f32]) -> f32 {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    for i in (0..x.len()).step_by(L) {
        // Zero tail lanes cannot raise a maximum of absolute values; `max(v, m)` returns `m`
        // when `v` is NaN.
        m = _mm256_max_ps(_mm256_and_ps(load(x, i), abs), m);
    }
    hmax(m)
}

/// `q = clamp(round_ties_even(x · s), -128, 127)`, bit-exact with the reference.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn quantize(x: &[f32], s: f32, q: &mut [i8]) {
    assert_eq!(q.len(), x.len());
    let (sv, lo, hi) = (
        _mm256_set1_ps(s),
        _mm256_set1_ps(-128.0),
        _mm256_set1_ps(127.0),
    );
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let full = x.len() / L * L;
    for i in (0..full).step_by(L) {
        let y = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(load(x, i), sv),
        );
        let y = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(y, lo), hi));
        // i32 → i16 → i8 within 128-bit lanes (exact: values are in [-128, 127]); bytes 0..4
        // of each lane hold that lane's four values, gathered into the low 8 bytes.
        let p = _mm256_packs_epi16(_mm256_packs_epi32(y, y), _mm256_setzero_si256());
        let p = _mm256_permutevar8x32_epi32(p, order);
        // SAFETY: `i + 8 <= full <= q.len()`: writes `q[i..i + 8]`.
        unsafe { _mm_storel_epi64(q.as_mut_ptr().add(i).cast(), _mm256_castsi256_si128(p)) };
    }
    for (q, &v) in q[full..].iter_mut().zip(&x[full..]) {
        *q = reference::quantize_value(v, s);
    }
}

/// `o = acc · f`.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dequantize(acc: &[i32], f: f32, o: &mut [f32]) {
    assert_eq!(o.len(), acc.len());
    let fv = _mm256_set1_ps(f);
    let full = acc.len() / L * L;
    for i in (0..full).step_by(L) {
        // SAFETY: `i + 8 <= acc.len()`: reads `acc[i..i + 8]`.
        let a = unsafe { _mm256_loadu_si256(acc.as_ptr().add(i).cast()) };
        store(o, i, _mm256_mul_ps(_mm256_cvtepi32_ps(a), fv));
    }
    scalar::dequantize(&acc[full..], f, &mut o[full..]);
}

/// f16 bit patterns to f32 (F16C).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn widen_f16(src: &[u16], o: &mut [f32]) {
    assert_eq!(o.len(), src.len());
    let full = src.len() / L * L;
    for i in (0..full).step_by(L) {
        // SAFETY: `i + 8 <= src.len()`: reads `src[i..i + 8]`.
        let h = unsafe { _mm_loadu_si128(src.as_ptr().add(i).cast()) };
        store(o, i, _mm256_cvtph_ps(h));
    }
    scalar::widen_f16(&src[full..], &mut o[full..]);
}

/// bf16 bit patterns to f32.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn widen_bf16(src: &[u16], o: &mut [f32]) {
    assert_eq!(o.len(), src.len());
    let full = src.len() / L * L;
    for i in (0..full).step_by(L) {
        // SAFETY: `i + 8 <= src.len()`: reads `src[i..i + 8]`.
        let h = unsafe { _mm_loadu_si128(src.as_ptr().add(i).cast()) };
        let v = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
        store(o, i, _mm256_castsi256_ps(v));
    }
    scalar::widen_bf16(&src[full..], &mut o[full..]);
}

/// Int8 values times their row scale.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn widen_i8(src: &[i8], scale: f32, o: &mut [f32]) {
    assert_eq!(o.len(), src.len());
    let s = _mm256_set1_ps(scale);
    let full = src.len() / L * L;
    for i in (0..full).step_by(L) {
        // SAFETY: `i + 8 <= src.len()`: reads the 8 bytes `src[i..i + 8]`.
        let b = unsafe { _mm_loadl_epi64(src.as_ptr().add(i).cast()) };
        let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
        store(o, i, _mm256_mul_ps(v, s));
    }
    scalar::widen_i8(&src[full..], scale, &mut o[full..]);
}

/// `x *= f` element-wise.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn mul_assign(x: &mut [f32], f: &[f32]) {
    assert_eq!(x.len(), f.len());
    for i in (0..x.len()).step_by(L) {
        let y = _mm256_mul_ps(load(x, i), load(f, i));
        store(x, i, y);
    }
}

/// Rotates pairs `(a[i], b[i])` by `(cos[i], sin[i])` with separate roundings (no FMA).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn rotate(a: &mut [f32], b: &mut [f32], cos: &[f32], sin: &[f32]) {
    assert!(b.len() == a.len() && cos.len() == a.len() && sin.len() == a.len());
    for i in (0..a.len()).step_by(L) {
        let (x, y, c, s) = (load(a, i), load(b, i), load(cos, i), load(sin, i));
        store(
            a,
            i,
            _mm256_sub_ps(_mm256_mul_ps(x, c), _mm256_mul_ps(y, s)),
        );
        store(
            b,
            i,
            _mm256_add_ps(_mm256_mul_ps(y, c), _mm256_mul_ps(x, s)),
        );
    }
}

/// `o = g / (1 + exp(−g)) · u`.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn silu_mul(g: &[f32], u: &[f32], o: &mut [f32]) {
    assert!(u.len() == g.len() && o.len() == g.len());
    let one = _mm256_set1_ps(1.0);
    for i in (0..g.len()).step_by(L) {
        let x = load(g, i);
        let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let s = _mm256_div_ps(x, _mm256_add_ps(one, e));
        store(o, i, _mm256_mul_ps(s, load(u, i)));
    }
}

/// `o = relu(g)² · u`.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn relu2_mul(g: &[f32], u: &[f32], o: &mut [f32]) {
    assert!(u.len() == g.len() && o.len() == g.len());
    for i in (0..g.len()).step_by(L) {
        let r = _mm256_max_ps(load(g, i), _mm256_setzero_ps());
        store(o, i, _mm256_mul_ps(_mm256_mul_ps(r, r), load(u, i)));
    }
}

/// `x += y`.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    for i in (0..x.len()).step_by(L) {
        let s = _mm256_add_ps(load(x, i), load(y, i));
        store(x, i, s);
    }
}

/// Softmax of one row in place: `exp(s − max) / Σ`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn softmax(row: &mut [f32]) {
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    for i in (0..row.len()).step_by(L) {
        let live = _mm256_castsi256_ps(mask(row.len() - i));
        m = _mm256_blendv_ps(m, _mm256_max_ps(load(row, i), m), live);
    }
    let m = _mm256_set1_ps(hmax(m));
    let mut sum = _mm256_setzero_ps();
    for i in (0..row.len()).step_by(L) {
        let live = _mm256_castsi256_ps(mask(row.len() - i));
        let e = _mm256_and_ps(exp(_mm256_sub_ps(load(row, i), m)), live);
        sum = _mm256_add_ps(sum, e);
        store(row, i, e);
    }
    let sum = _mm256_set1_ps(hsum(sum));
    for i in (0..row.len()).step_by(L) {
        let p = _mm256_div_ps(load(row, i), sum);
        store(row, i, p);
    }
}

/// Attention of one GQA group (see [`GroupTask`]): register tiles of query heads × keys for the
/// scores, softmax per head, then tiles of heads × value columns over blocks of keys.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn attend(t: &GroupTask, scores: &mut [f32], out: &mut [f32]) {
    let (hd, vis, group) = (t.head_dim, t.visible, t.group);
    assert!(scores.len() == group * vis && out.len() == group * hd && t.q.len() == group * hd);
    let mut h = 0;
    while h < group {
        let hb = if group - h >= 2 { 2 } else { 1 };
        let mut j = 0;
        while j < vis {
            j += match (hb, vis - j) {
                (2, 4..) => score_tile::<2, 4>(t, h, j, scores),
                (_, 4..) => score_tile::<1, 4>(t, h, j, scores),
                (2, _) => score_tile::<2, 1>(t, h, j, scores),
                _ => score_tile::<1, 1>(t, h, j, scores),
            };
        }
        h += hb;
    }
    for row in scores.chunks_exact_mut(vis) {
        softmax(row);
    }
    out.fill(0.0);
    for j0 in (0..vis).step_by(KEY_BLOCK) {
        let keys = j0..(j0 + KEY_BLOCK).min(vis);
        let mut h = 0;
        while h < group {
            let hb = if group - h >= 2 { 2 } else { 1 };
            for d in (0..hd).step_by(4 * L) {
                let k = keys.clone();
                match (hb, (hd - d).div_ceil(L)) {
                    (2, 4..) => value_tile::<2, 4>(t, h, d, k, scores, out),
                    (2, 3) => value_tile::<2, 3>(t, h, d, k, scores, out),
                    (2, 2) => value_tile::<2, 2>(t, h, d, k, scores, out),
                    (2, _) => value_tile::<2, 1>(t, h, d, k, scores, out),
                    (_, 4..) => value_tile::<1, 4>(t, h, d, k, scores, out),
                    (_, 3) => value_tile::<1, 3>(t, h, d, k, scores, out),
                    (_, 2) => value_tile::<1, 2>(t, h, d, k, scores, out),
                    (_, _) => value_tile::<1, 1>(t, h, d, k, scores, out),
                }
            }
            h += hb;
        }
    }
}

/// Keys per block of the weighted sum (their value rows stay in L1 across column tiles).
const KEY_BLOCK: usize = 32;

/// Sums of each of four vectors, in one vector (`[Σa, Σb, Σc, Σd]`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce4(v: &[__m256]) -> __m128 {
    let ab = _mm256_hadd_ps(v[0], v[1]);
    let cd = _mm256_hadd_ps(v[2], v[3]);
    let abcd = _mm256_hadd_ps(ab, cd);
    _mm_add_ps(
        _mm256_castps256_ps128(abcd),
        _mm256_extractf128_ps::<1>(abcd),
    )
}

/// `scores[h · vis + j] = (q_h · k_j) · scale` for heads `h0 .. h0 + HB`, keys `j0 .. j0 + KB`;
/// returns `KB`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn score_tile<const HB: usize, const KB: usize>(
    t: &GroupTask,
    h0: usize,
    j0: usize,
    scores: &mut [f32],
) -> usize {
    let (hd, vis) = (t.head_dim, t.visible);
    let keys: [&[f32]; KB] = std::array::from_fn(|b| t.key(j0 + b));
    let qs: [&[f32]; HB] = std::array::from_fn(|a| &t.q[(h0 + a) * hd..][..hd]);
    let mut acc = [[_mm256_setzero_ps(); KB]; HB];
    for d in (0..hd).step_by(L) {
        let kv: [__m256; KB] = std::array::from_fn(|b| load(keys[b], d));
        for (a, acc) in acc.iter_mut().enumerate() {
            let qv = load(qs[a], d);
            for (s, k) in acc.iter_mut().zip(&kv) {
                *s = _mm256_fmadd_ps(qv, *k, *s);
            }
        }
    }
    for (a, acc) in acc.iter().enumerate() {
        let row = &mut scores[(h0 + a) * vis + j0..][..KB];
        if KB.is_multiple_of(4) {
            for (quad, sums) in row.chunks_exact_mut(4).zip(acc.chunks_exact(4)) {
                let v = _mm_mul_ps(reduce4(sums), _mm_set1_ps(t.scale));
                // SAFETY: `quad` holds exactly the four floats written.
                unsafe { _mm_storeu_ps(quad.as_mut_ptr(), v) };
            }
        } else {
            for (s, v) in row.iter_mut().zip(acc) {
                *s = hsum(*v) * t.scale;
            }
        }
    }
    KB
}

/// `out_h[d .. d + 8·DB] += Σ_{j ∈ keys} p_h[j] · v_j[d ..]` for heads `h0 .. h0 + HB`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn value_tile<const HB: usize, const DB: usize>(
    t: &GroupTask,
    h0: usize,
    d: usize,
    keys: std::ops::Range<usize>,
    scores: &[f32],
    out: &mut [f32],
) {
    let (hd, vis) = (t.head_dim, t.visible);
    let mut acc = [[_mm256_setzero_ps(); DB]; HB];
    for (a, acc) in acc.iter_mut().enumerate() {
        let o = &out[(h0 + a) * hd..][..hd];
        for (c, v) in acc.iter_mut().enumerate() {
            *v = load(o, d + c * L);
        }
    }
    for j in keys {
        let row = t.value(j);
        let vv: [__m256; DB] = std::array::from_fn(|c| load(row, d + c * L));
        for (a, acc) in acc.iter_mut().enumerate() {
            let p = _mm256_set1_ps(scores[(h0 + a) * vis + j]);
            for (s, v) in acc.iter_mut().zip(&vv) {
                *s = _mm256_fmadd_ps(p, *v, *s);
            }
        }
    }
    for (a, acc) in acc.iter().enumerate() {
        let o = &mut out[(h0 + a) * hd..][..hd];
        for (c, v) in acc.iter().enumerate() {
            store(o, d + c * L, *v);
        }
    }
}
