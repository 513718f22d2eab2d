//! AVX-512 kernels of the row and element ops (the `avx512vnni` path): 16 lanes, column tails
//! by masked loads and stores, `exp` by range reduction, a Cephes polynomial and `vscalefps`.
//! Same function list as [`super::scalar`].

use super::attention::GroupTask;
use std::arch::x86_64::*;

/// Lanes per vector.
const L: usize = 16;

/// Mask of the first `n < 16` lanes.
#[inline]
fn tail(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// Sixteen floats of `x` from `i`, or the `n - i < 16` left (zeros after them).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn load(x: &[f32], i: usize) -> __m512 {
    let n = x.len() - i;
    // SAFETY: `i <= x.len()`; the full load reads `x[i..i + 16]` only when `n >= 16`, the
    // masked one only the `n` lanes that exist (masked loads suppress faults).
    unsafe {
        if n >= L {
            _mm512_loadu_ps(x.as_ptr().add(i))
        } else {
            _mm512_maskz_loadu_ps(tail(n), x.as_ptr().add(i))
        }
    }
}

/// Writes sixteen lanes to `o` from `i`, or the `o.len() - i < 16` left.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn store(o: &mut [f32], i: usize, v: __m512) {
    let n = o.len() - i;
    // SAFETY: as `load`: only existing elements of `o` are written.
    unsafe {
        if n >= L {
            _mm512_storeu_ps(o.as_mut_ptr().add(i), v)
        } else {
            _mm512_mask_storeu_ps(o.as_mut_ptr().add(i), tail(n), v)
        }
    }
}

/// `exp(x)` per lane, within 2 ulp of `f32::exp` (0 below −104, +inf above 89).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn exp(x: __m512) -> __m512 {
    let x = _mm512_max_ps(
        _mm512_min_ps(x, _mm512_set1_ps(89.0)),
        _mm512_set1_ps(-104.0),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_fmadd_ps(
        p,
        _mm512_mul_ps(r, r),
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    _mm512_scalef_ps(y, n)
}

/// Sum of the squares (in f32) of `x`, widened and summed in f64 lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn sum_sq_f64(x: &[f32]) -> f64 {
    sum_f64_of(x, |v| _mm512_mul_ps(v, v))
}

/// Sum of `x` in f64 lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn sum_f64(x: &[f32]) -> f64 {
    sum_f64_of(x, |v| v)
}

/// `Σ ((x − mean)² as f64)`; the padding lanes of the tail are zeroed before widening.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn sum_sq_dev_f64(x: &[f32], mean: f32) -> f64 {
    let m = _mm512_set1_ps(mean);
    sum_f64_of(x, |v| {
        let d = _mm512_sub_ps(v, m);
        _mm512_mul_ps(d, d)
    })
}

/// `Σ f(x) as f64` over sixteen lanes at a time (lanes past the end are zeroed after `f`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn sum_f64_of(x: &[f32], f: impl Fn(__m512) -> __m512) -> f64 {
    let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
    for i in (0..x.len()).step_by(L) {
        let n = (x.len() - i).min(L);
        let t = _mm512_maskz_mov_ps(tail_or_all(n), f(load(x, i)));
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(t)));
        let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(t)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(upper));
    }
    _mm512_reduce_add_pd(_mm512_add_pd(lo, hi))
}

/// All lanes when `n >= 16`, else the first `n`.
#[inline]
fn tail_or_all(n: usize) -> __mmask16 {
    if n >= L {
        0xffff
    } else {
        tail(n)
    }
}

/// `o = x · inv · w` (weight 1 when absent), two roundings as in the reference.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn scale_into(x: &[f32], inv: f32, w: Option<&[f32]>, o: &mut [f32]) {
    assert!(o.len() == x.len() && w.is_none_or(|w| w.len() == x.len()));
    let s = _mm512_set1_ps(inv);
    for i in (0..x.len()).step_by(L) {
        let y = _mm512_mul_ps(load(x, i), s);
        store(o, i, w.map_or(y, |w| _mm512_mul_ps(y, load(w, i))));
    }
}

/// `o = (x − mean) · inv`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn center_scale_into(x: &[f32], mean: f32, inv: f32, o: &mut [f32]) {
    assert_eq!(o.len(), x.len());
    let (m, s) = (_mm512_set1_ps(mean), _mm512_set1_ps(inv));
    for i in (0..x.len()).step_by(L) {
        store(o, i, _mm512_mul_ps(_mm512_sub_ps(load(x, i), m), s));
    }
}

/// `max |x|` (0 for an empty row; NaNs are skipped as `f32::max` skips them).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn absmax(x: &[f32]) -> f32 {
    let mut m = _mm512_setzero_ps();
    for i in (0..x.len()).step_by(L) {
        // `max(v, m)` returns `m` when `v` is NaN.
        m = _mm512_max_ps(_mm512_abs_ps(load(x, i)), m);
    }
    _mm512_reduce_max_ps(m)
}

/// `q = clamp(round_ties_even(x · s), -128, 127)`, bit-exact with the reference.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn quantize(x: &[f32], s: f32, q: &mut [i8]) {
    assert_eq!(q.len(), x.len());
    let (sv, lo, hi) = (
        _mm512_set1_ps(s),
        _mm512_set1_ps(-128.0),
        _mm512_set1_ps(127.0),
    );
    for i in (0..x.len()).step_by(L) {
        let y = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(load(x, i), sv),
        );
        let y = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(y, lo), hi));
        let n = (x.len() - i).min(L);
        // SAFETY: the masked store writes the `n` bytes `q[i..i + n]` only.
        unsafe { _mm512_mask_cvtepi32_storeu_epi8(q.as_mut_ptr().add(i), tail_or_all(n), y) };
    }
}

/// `o = acc · f`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn dequantize(acc: &[i32], f: f32, o: &mut [f32]) {
    assert_eq!(o.len(), acc.len());
    let fv = _mm512_set1_ps(f);
    for i in (0..acc.len()).step_by(L) {
        let n = (acc.len() - i).min(L);
        // SAFETY: masked load of the `n` existing accumulators `acc[i..i + n]`.
        let a = unsafe { _mm512_maskz_loadu_epi32(tail_or_all(n), acc.as_ptr().add(i)) };
        store(o, i, _mm512_mul_ps(_mm512_cvtepi32_ps(a), fv));
    }
}

/// Widens sixteen-bit patterns (`bf16` when `BF16`, else f16) of `src` into `o`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn widen16<const BF16: bool>(src: &[u16], o: &mut [f32]) {
    assert_eq!(o.len(), src.len());
    for i in (0..src.len()).step_by(L) {
        let n = (src.len() - i).min(L);
        // SAFETY: masked load of the `n` existing elements `src[i..i + n]`.
        let h = unsafe { _mm256_maskz_loadu_epi16(tail_or_all(n), src.as_ptr().add(i).cast()) };
        let v = if BF16 {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        } else {
            _mm512_cvtph_ps(h)
        };
        store(o, i, v);
    }
}

/// f16 bit patterns to f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn widen_f16(src: &[u16], o: &mut [f32]) {
    widen16::<false>(src, o)
}

/// bf16 bit patterns to f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn widen_bf16(src: &[u16], o: &mut [f32]) {
    widen16::<true>(src, o)
}

/// Int8 values times their row scale.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn widen_i8(src: &[i8], scale: f32, o: &mut [f32]) {
    assert_eq!(o.len(), src.len());
    let s = _mm512_set1_ps(scale);
    for i in (0..src.len()).step_by(L) {
        let n = (src.len() - i).min(L);
        // SAFETY: masked load of the `n` existing bytes `src[i..i + n]`.
        let b = unsafe { _mm_maskz_loadu_epi8(tail_or_all(n), src.as_ptr().add(i)) };
        store(
            o,
            i,
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), s),
        );
    }
}

/// `x *= f` element-wise.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn mul_assign(x: &mut [f32], f: &[f32]) {
    assert_eq!(x.len(), f.len());
    for i in (0..x.len()).step_by(L) {
        let y = _mm512_mul_ps(load(x, i), load(f, i));
        store(x, i, y);
    }
}

/// Rotates pairs `(a[i], b[i])` by `(cos[i], sin[i])` with separate roundings (no FMA).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn rotate(a: &mut [f32], b: &mut [f32], cos: &[f32], sin: &[f32]) {
    assert!(b.len() == a.len() && cos.len() == a.len() && sin.len() == a.len());
    for i in (0..a.len()).step_by(L) {
        let (x, y, c, s) = (load(a, i), load(b, i), load(cos, i), load(sin, i));
        store(
            a,
            i,
            _mm512_sub_ps(_mm512_mul_ps(x, c), _mm512_mul_ps(y, s)),
        );
        store(
            b,
            i,
            _mm512_add_ps(_mm512_mul_ps(y, c), _mm512_mul_ps(x, s)),
        );
    }
}

/// `o = g / (1 + exp(−g)) · u`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn silu_mul(g: &[f32], u: &[f32], o: &mut [f32]) {
    assert!(u.len() == g.len() && o.len() == g.len());
    let one = _mm512_set1_ps(1.0);
    for i in (0..g.len()).step_by(L) {
        let x = load(g, i);
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
        let s = _mm512_div_ps(x, _mm512_add_ps(one, e));
        store(o, i, _mm512_mul_ps(s, load(u, i)));
    }
}

/// `o = relu(g)² · u`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn relu2_mul(g: &[f32], u: &[f32], o: &mut [f32]) {
    assert!(u.len() == g.len() && o.len() == g.len());
    for i in (0..g.len()).step_by(L) {
        let r = _mm512_max_ps(load(g, i), _mm512_setzero_ps());
        store(o, i, _mm512_mul_ps(_mm512_mul_ps(r, r), load(u, i)));
    }
}

/// `x += y`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    for i in (0..x.len()).step_by(L) {
        let s = _mm512_add_ps(load(x, i), load(y, i));
        store(x, i, s);
    }
}

/// Softmax of one row in place: `exp(s − max) / Σ`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn softmax(row: &mut [f32]) {
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in (0..row.len()).step_by(L) {
        let n = (row.len() - i).min(L);
        m = _mm512_mask_max_ps(m, tail_or_all(n), load(row, i), m);
    }
    let m = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    let mut sum = _mm512_setzero_ps();
    for i in (0..row.len()).step_by(L) {
        let n = (row.len() - i).min(L);
        let e = _mm512_maskz_mov_ps(tail_or_all(n), exp(_mm512_sub_ps(load(row, i), m)));
        sum = _mm512_add_ps(sum, e);
        store(row, i, e);
    }
    let sum = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
    for i in (0..row.len()).step_by(L) {
        let p = _mm512_div_ps(load(row, i), sum);
        store(row, i, p);
    }
}

/// Attention of one GQA group (see [`GroupTask`]): register tiles of query heads × keys for the
/// scores, softmax per head, then tiles of heads × value columns over blocks of keys.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn attend(t: &GroupTask, scores: &mut [f32], out: &mut [f32]) {
    let (hd, vis, group) = (t.head_dim, t.visible, t.group);
    assert!(scores.len() == group * vis && out.len() == group * hd && t.q.len() == group * hd);
    let mut h = 0;
    while h < group {
        let hb = head_block(group - h);
        let mut j = 0;
        while j < vis {
            j += match (hb, vis - j) {
                (4, 4..) => score_tile::<4, 4>(t, h, j, scores),
                (2, 4..) => score_tile::<2, 4>(t, h, j, scores),
                (1, 8..) => score_tile::<1, 8>(t, h, j, scores),
                (1, 4..) => score_tile::<1, 4>(t, h, j, scores),
                (4, _) => score_tile::<4, 1>(t, h, j, scores),
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
            let hb = head_block(group - h);
            for d in (0..hd).step_by(4 * L) {
                let k = keys.clone();
                match (hb, (hd - d).div_ceil(L)) {
                    (4, 4..) => value_tile::<4, 4>(t, h, d, k, scores, out),
                    (4, 3) => value_tile::<4, 3>(t, h, d, k, scores, out),
                    (4, 2) => value_tile::<4, 2>(t, h, d, k, scores, out),
                    (4, _) => value_tile::<4, 1>(t, h, d, k, scores, out),
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

/// Query heads per tile: 4, 2 or 1.
fn head_block(left: usize) -> usize {
    match left {
        4.. => 4,
        2 | 3 => 2,
        _ => 1,
    }
}

/// Sums of each of four vectors, in one vector (`[Σa, Σb, Σc, Σd]`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn reduce4(v: &[__m512]) -> __m128 {
    let half = |x: __m512| {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)));
        _mm256_add_ps(_mm512_castps512_ps256(x), hi)
    };
    let ab = _mm256_hadd_ps(half(v[0]), half(v[1]));
    let cd = _mm256_hadd_ps(half(v[2]), half(v[3]));
    let abcd = _mm256_hadd_ps(ab, cd);
    _mm_add_ps(
        _mm256_castps256_ps128(abcd),
        _mm256_extractf128_ps::<1>(abcd),
    )
}

/// `scores[h · vis + j] = (q_h · k_j) · scale` for heads `h0 .. h0 + HB`, keys `j0 .. j0 + KB`;
/// returns `KB`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn score_tile<const HB: usize, const KB: usize>(
    t: &GroupTask,
    h0: usize,
    j0: usize,
    scores: &mut [f32],
) -> usize {
    let (hd, vis) = (t.head_dim, t.visible);
    let keys: [&[f32]; KB] = std::array::from_fn(|b| t.key(j0 + b));
    let qs: [&[f32]; HB] = std::array::from_fn(|a| &t.q[(h0 + a) * hd..][..hd]);
    let mut acc = [[_mm512_setzero_ps(); KB]; HB];
    for d in (0..hd).step_by(L) {
        let kv: [__m512; KB] = std::array::from_fn(|b| load(keys[b], d));
        for (a, acc) in acc.iter_mut().enumerate() {
            let qv = load(qs[a], d);
            for (s, k) in acc.iter_mut().zip(&kv) {
                *s = _mm512_fmadd_ps(qv, *k, *s);
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
                *s = _mm512_reduce_add_ps(*v) * t.scale;
            }
        }
    }
    KB
}

/// `out_h[d .. d + 16·DB] += Σ_{j ∈ keys} p_h[j] · v_j[d ..]` for heads `h0 .. h0 + HB`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn value_tile<const HB: usize, const DB: usize>(
    t: &GroupTask,
    h0: usize,
    d: usize,
    keys: std::ops::Range<usize>,
    scores: &[f32],
    out: &mut [f32],
) {
    let (hd, vis) = (t.head_dim, t.visible);
    let mut acc = [[_mm512_setzero_ps(); DB]; HB];
    for (a, acc) in acc.iter_mut().enumerate() {
        let o = &out[(h0 + a) * hd..][..hd];
        for (c, v) in acc.iter_mut().enumerate() {
            *v = load(o, d + c * L);
        }
    }
    for j in keys {
        let row = t.value(j);
        let vv: [__m512; DB] = std::array::from_fn(|c| load(row, d + c * L));
        for (a, acc) in acc.iter_mut().enumerate() {
            let p = _mm512_set1_ps(scores[(h0 + a) * vis + j]);
            for (s, v) in acc.iter_mut().zip(&vv) {
                *s = _mm512_fmadd_ps(p, *v, *s);
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
