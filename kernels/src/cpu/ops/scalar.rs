//! Portable kernels of the row and element ops (the `scalar` path): the reference arithmetic,
//! written once per op so the SIMD families (`avx2`, `avx512`) have the same function list.

use super::attention::GroupTask;
use crate::reference;
use half::{bf16, f16};

/// f16 bit patterns to f32.
pub fn widen_f16(src: &[u16], o: &mut [f32]) {
    for (o, &h) in o.iter_mut().zip(src) {
        *o = f16::from_bits(h).to_f32();
    }
}

/// bf16 bit patterns to f32.
pub fn widen_bf16(src: &[u16], o: &mut [f32]) {
    for (o, &h) in o.iter_mut().zip(src) {
        *o = bf16::from_bits(h).to_f32();
    }
}

/// Int8 values times their row scale.
pub fn widen_i8(src: &[i8], scale: f32, o: &mut [f32]) {
    for (o, &q) in o.iter_mut().zip(src) {
        *o = q as f32 * scale;
    }
}

/// `Σ (x·x as f64)`.
pub fn sum_sq_f64(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v * v) as f64).sum()
}

/// `Σ (x as f64)`.
pub fn sum_f64(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64).sum()
}

/// `Σ ((x − mean)² as f64)`.
pub fn sum_sq_dev_f64(x: &[f32], mean: f32) -> f64 {
    x.iter().map(|&v| ((v - mean) * (v - mean)) as f64).sum()
}

/// `o = x · inv · w` (weight 1 when absent).
pub fn scale_into(x: &[f32], inv: f32, w: Option<&[f32]>, o: &mut [f32]) {
    match w {
        Some(w) => {
            for ((o, &v), &w) in o.iter_mut().zip(x).zip(w) {
                *o = v * inv * w;
            }
        }
        None => {
            for (o, &v) in o.iter_mut().zip(x) {
                *o = v * inv;
            }
        }
    }
}

/// `o = (x − mean) · inv`.
pub fn center_scale_into(x: &[f32], mean: f32, inv: f32, o: &mut [f32]) {
    for (o, &v) in o.iter_mut().zip(x) {
        *o = (v - mean) * inv;
    }
}

/// `max |x|` (0 for an empty row).
pub fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// `q = clamp(round_ties_even(x · s), -128, 127)`.
pub fn quantize(x: &[f32], s: f32, q: &mut [i8]) {
    for (q, &v) in q.iter_mut().zip(x) {
        *q = reference::quantize_value(v, s);
    }
}

/// `o = acc · f`.
pub fn dequantize(acc: &[i32], f: f32, o: &mut [f32]) {
    for (o, &a) in o.iter_mut().zip(acc) {
        *o = a as f32 * f;
    }
}

/// `x *= f` element-wise.
pub fn mul_assign(x: &mut [f32], f: &[f32]) {
    for (v, f) in x.iter_mut().zip(f) {
        *v *= f;
    }
}

/// Rotates pairs `(a[i], b[i])` by the angle of `(cos[i], sin[i])`.
pub fn rotate(a: &mut [f32], b: &mut [f32], cos: &[f32], sin: &[f32]) {
    for (((a, b), &c), &s) in a.iter_mut().zip(b.iter_mut()).zip(cos).zip(sin) {
        let (x, y) = (*a, *b);
        *a = x * c - y * s;
        *b = y * c + x * s;
    }
}

/// `o = silu(g) · u`.
pub fn silu_mul(g: &[f32], u: &[f32], o: &mut [f32]) {
    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
        *o = reference::silu(g) * u;
    }
}

/// `o = relu(g)² · u`.
pub fn relu2_mul(g: &[f32], u: &[f32], o: &mut [f32]) {
    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
        let r = g.max(0.0);
        *o = r * r * u;
    }
}

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Attention of one GQA group (see [`GroupTask`]).
pub fn attend(t: &GroupTask, scores: &mut [f32], out: &mut [f32]) {
    let (hd, vis) = (t.head_dim, t.visible);
    for j in 0..vis {
        let k = t.key(j);
        for (h, q) in t.q.chunks_exact(hd).enumerate() {
            scores[h * vis + j] = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * t.scale;
        }
    }
    for row in scores.chunks_exact_mut(vis).take(t.group) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut sum = 0.0f32;
        for s in row.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        for s in row.iter_mut() {
            *s /= sum;
        }
    }
    out.fill(0.0);
    for j in 0..vis {
        let v = t.value(j);
        for (h, o) in out.chunks_exact_mut(hd).enumerate() {
            let p = scores[h * vis + j];
            for (o, x) in o.iter_mut().zip(v) {
                *o += p * x;
            }
        }
    }
}
