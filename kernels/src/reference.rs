//! The scalar reference: the slow, obvious definition of every [`Backend`] op.
//!
//! Every fast kernel (CPU SIMD, CUDA) is tested against these functions; they are themselves
//! checked by small hand-computed cases below. [`ReferenceBackend`] exposes them through the
//! trait so a whole forward pass can run on the oracle.

use crate::backend::{AttentionShape, Backend, PagedKv};
use crate::error::{check_len, KernelError};
use crate::{DenseMatrix, SignMatrix, TernaryMatrix};

/// The reference ops behind the [`Backend`] trait.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackend;

/// Rows of `cols` in a buffer of `len`, or a shape error (shared by every backend).
pub fn rows_of(op: &'static str, len: usize, cols: usize) -> Result<usize, KernelError> {
    if cols == 0 || !len.is_multiple_of(cols) {
        return Err(KernelError::Shape {
            op,
            reason: format!("buffer of {len} elements is not a whole number of rows of {cols}"),
        });
    }
    Ok(len / cols)
}

/// See [`Backend::embedding`].
pub fn embedding(table: &DenseMatrix, ids: &[u32], out: &mut [f32]) -> Result<(), KernelError> {
    let cols = table.cols();
    check_len("embedding", "out", ids.len() * cols, out.len())?;
    for (t, &id) in ids.iter().enumerate() {
        if id as usize >= table.rows() {
            return Err(KernelError::TokenOutOfRange {
                op: "embedding",
                id,
                vocab: table.rows(),
            });
        }
        table.row_into(id as usize, &mut out[t * cols..(t + 1) * cols]);
    }
    Ok(())
}

/// Checks a norm call (shared by every backend): `out` as long as `x`, whole rows of `cols`,
/// a gain of `cols` when there is one. Returns the number of rows.
pub fn check_norm(
    op: &'static str,
    x: &[f32],
    weight: Option<&[f32]>,
    cols: usize,
    out: &[f32],
) -> Result<usize, KernelError> {
    check_len(op, "out", x.len(), out.len())?;
    let rows = rows_of(op, x.len(), cols)?;
    if let Some(w) = weight {
        check_len(op, "weight", cols, w.len())?;
    }
    Ok(rows)
}

/// Checks a `quantize_rows` call (shared by every backend): whole rows of `cols`, `q` as long
/// as `x`, one scale per row. Returns the number of rows.
pub fn check_quantize(
    x: &[f32],
    cols: usize,
    q: &[i8],
    scales: &[f32],
) -> Result<usize, KernelError> {
    let rows = rows_of("quantize_rows", x.len(), cols)?;
    check_len("quantize_rows", "q", x.len(), q.len())?;
    check_len("quantize_rows", "scales", rows, scales.len())?;
    Ok(rows)
}

/// See [`Backend::rms_norm`].
pub fn rms_norm(
    x: &[f32],
    weight: Option<&[f32]>,
    eps: f32,
    cols: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_norm("rms_norm", x, weight, cols, out)?;
    for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        // Sum of squares in f64, rounded once: the correctly rounded mean, so the result does not
        // depend on a summation order (references differ in theirs by the last bit).
        let sum_sq: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
        let mean_sq = (sum_sq / cols as f64) as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for (j, (o, v)) in or.iter_mut().zip(xr).enumerate() {
            *o = v * inv * weight.map_or(1.0, |w| w[j]);
        }
    }
    Ok(())
}

/// See [`Backend::layer_norm`].
pub fn layer_norm(x: &[f32], eps: f32, cols: usize, out: &mut [f32]) -> Result<(), KernelError> {
    check_norm("layer_norm", x, None, cols, out)?;
    for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let mean = (xr.iter().map(|&v| v as f64).sum::<f64>() / cols as f64) as f32;
        let var = (xr
            .iter()
            .map(|&v| ((v - mean) * (v - mean)) as f64)
            .sum::<f64>()
            / cols as f64) as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (o, v) in or.iter_mut().zip(xr) {
            *o = (v - mean) * inv;
        }
    }
    Ok(())
}

/// The activation scale of one row: `127 / max(max|x|, 1e-5)`.
pub fn activation_scale(row: &[f32]) -> f32 {
    let absmax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    127.0 / absmax.max(1e-5)
}

/// One activation to int8 given its row scale (ties to even, clamp to [-128, 127]).
pub fn quantize_value(x: f32, s: f32) -> i8 {
    (x * s).round_ties_even().clamp(-128.0, 127.0) as i8
}

/// See [`Backend::quantize_rows`].
pub fn quantize_rows(
    x: &[f32],
    cols: usize,
    q: &mut [i8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    check_quantize(x, cols, q, scales)?;
    for ((xr, qr), s) in x
        .chunks_exact(cols)
        .zip(q.chunks_exact_mut(cols))
        .zip(scales.iter_mut())
    {
        *s = activation_scale(xr);
        for (qv, &v) in qr.iter_mut().zip(xr) {
            *qv = quantize_value(v, *s);
        }
    }
    Ok(())
}

/// Exact i32 dot product of one packed ternary row with int8 activations.
pub fn ternary_row_dot(w: &TernaryMatrix, row: usize, q: &[i8]) -> i32 {
    (0..w.cols())
        .map(|c| w.get(row, c) as i32 * q[c] as i32)
        .sum()
}

/// Checks the shapes of a projection of `x` (n rows of `cols`) into `out` (n rows of `rows`).
pub fn projection_rows(
    op: &'static str,
    cols: usize,
    rows: usize,
    x_len: usize,
    out_len: usize,
) -> Result<usize, KernelError> {
    let n = rows_of(op, x_len, cols)?;
    check_len(op, "out", n * rows, out_len)?;
    Ok(n)
}

/// See [`Backend::ternary_matmul`].
pub fn ternary_matmul(w: &TernaryMatrix, q: &[i8], acc: &mut [i32]) -> Result<(), KernelError> {
    projection_rows("ternary_matmul", w.cols(), w.rows(), q.len(), acc.len())?;
    for (qr, ar) in q.chunks_exact(w.cols()).zip(acc.chunks_exact_mut(w.rows())) {
        for (o, a) in ar.iter_mut().enumerate() {
            *a = ternary_row_dot(w, o, qr);
        }
    }
    Ok(())
}

/// Checks a dequantization call and returns the accumulators per row (shared by every backend).
pub fn dequantize_cols(acc: &[i32], scales: &[f32], out: &[f32]) -> Result<usize, KernelError> {
    check_len("dequantize_rows", "out", acc.len(), out.len())?;
    if scales.is_empty() || !acc.len().is_multiple_of(scales.len()) {
        return Err(KernelError::Shape {
            op: "dequantize_rows",
            reason: format!("{} accumulators for {} rows", acc.len(), scales.len()),
        });
    }
    Ok(acc.len() / scales.len())
}

/// See [`Backend::dequantize_rows`].
pub fn dequantize_rows(
    acc: &[i32],
    beta: f32,
    scales: &[f32],
    out: &mut [f32],
) -> Result<(), KernelError> {
    let cols = dequantize_cols(acc, scales, out)?;
    for ((ar, or), s) in acc
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(cols))
        .zip(scales)
    {
        let f = beta / s;
        for (o, &a) in or.iter_mut().zip(ar) {
            *o = a as f32 * f;
        }
    }
    Ok(())
}

/// See [`Backend::dense_matmul`].
pub fn dense_matmul(w: &DenseMatrix, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    projection_rows("dense_matmul", w.cols(), w.rows(), x.len(), out.len())?;
    for (xr, or) in x.chunks_exact(w.cols()).zip(out.chunks_exact_mut(w.rows())) {
        for (o, y) in or.iter_mut().enumerate() {
            *y = w.row_dot(o, xr);
        }
    }
    Ok(())
}

/// See [`Backend::sign_matmul`].
pub fn sign_matmul(w: &SignMatrix, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    projection_rows("sign_matmul", w.cols(), w.rows(), x.len(), out.len())?;
    for (xr, or) in x.chunks_exact(w.cols()).zip(out.chunks_exact_mut(w.rows())) {
        for (o, y) in or.iter_mut().enumerate() {
            *y = xr
                .iter()
                .enumerate()
                .map(|(c, v)| w.get(o, c) as f32 * v)
                .sum();
        }
    }
    Ok(())
}

/// See [`Backend::scale_columns`].
pub fn scale_columns(x: &mut [f32], factors: &[f32]) -> Result<(), KernelError> {
    rows_of("scale_columns", x.len(), factors.len())?;
    for row in x.chunks_exact_mut(factors.len()) {
        for (v, f) in row.iter_mut().zip(factors) {
            *v *= f;
        }
    }
    Ok(())
}

/// RoPE inverse frequencies `theta^(-2i/head_dim)` for `i < head_dim/2`, as transformers computes them.
pub fn rope_inv_freq(head_dim: usize, theta: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// Checks the buffers of a RoPE call (shared by every backend).
pub fn check_rope_shape(
    x: &[f32],
    positions: &[usize],
    n_heads: usize,
    head_dim: usize,
) -> Result<(), KernelError> {
    check_len("rope", "x", positions.len() * n_heads * head_dim, x.len())?;
    if !head_dim.is_multiple_of(2) {
        return Err(KernelError::Shape {
            op: "rope",
            reason: format!("head_dim {head_dim} is odd"),
        });
    }
    Ok(())
}

/// See [`Backend::rope`].
pub fn rope(
    x: &mut [f32],
    positions: &[usize],
    n_heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result<(), KernelError> {
    check_rope_shape(x, positions, n_heads, head_dim)?;
    let half = head_dim / 2;
    let inv_freq = rope_inv_freq(head_dim, theta);
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            for (i, f) in inv_freq.iter().enumerate() {
                let angle = pos as f32 * f;
                let (sin, cos) = angle.sin_cos();
                let (a, b) = (x[base + i], x[base + i + half]);
                x[base + i] = a * cos - b * sin;
                x[base + i + half] = b * cos + a * sin;
            }
        }
    }
    Ok(())
}

/// Checks the shape and buffers of an attention call (shared by every backend).
pub fn check_attention_shape(
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
) -> Result<(), KernelError> {
    check_queries("attention", shape, q, out)?;
    let kv_len = shape.ctx_len * shape.n_kv_heads * shape.head_dim;
    check_len("attention", "k", kv_len, k.len())?;
    check_len("attention", "v", k.len(), v.len())
}

/// Checks one paged attention call (shared by every backend): a causal GQA `shape`, `q` and
/// `out` of its size, and the history as [`check_paged_kv`] does.
pub fn check_paged_call(
    shape: &AttentionShape,
    q: &[f32],
    kv: &PagedKv<'_>,
    out: &[f32],
) -> Result<(), KernelError> {
    check_queries("paged_attention", shape, q, out)?;
    check_paged_kv(shape, kv)?;
    Ok(())
}

/// A causal GQA `shape` (query heads a multiple of kv heads, no more queries than context) and
/// `q`/`out` of its size.
fn check_queries(
    op: &'static str,
    shape: &AttentionShape,
    q: &[f32],
    out: &[f32],
) -> Result<(), KernelError> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim,
        n_queries,
        ctx_len,
    } = *shape;
    if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) || n_queries > ctx_len {
        return Err(KernelError::Shape {
            op,
            reason: format!("{shape:?} is not a valid causal GQA shape"),
        });
    }
    check_len(op, "q", n_queries * n_heads * head_dim, q.len())?;
    check_len(op, "out", q.len(), out.len())
}

/// Checks a paged history against `shape` (shared by every backend): a power-of-two block
/// size, pools of whole blocks of equal size, a table covering `ctx_len` tokens, and every
/// block it uses inside the pool. Returns the number of blocks in the pool.
pub fn check_paged_kv(shape: &AttentionShape, kv: &PagedKv<'_>) -> Result<usize, KernelError> {
    let bad = |reason: String| KernelError::Shape {
        op: "paged_attention",
        reason,
    };
    let bs = kv.block_size;
    if bs == 0 || !bs.is_power_of_two() {
        return Err(bad(format!("block size {bs} is not a power of two")));
    }
    let block_len = bs * shape.n_kv_heads * shape.head_dim;
    if block_len == 0 || !kv.keys.len().is_multiple_of(block_len) {
        return Err(bad(format!(
            "a pool of {} floats is not whole blocks of {block_len}",
            kv.keys.len()
        )));
    }
    check_len("paged_attention", "values", kv.keys.len(), kv.values.len())?;
    let num_blocks = kv.keys.len() / block_len;
    let used = shape.ctx_len.div_ceil(bs);
    if kv.block_table.len() < used {
        return Err(bad(format!(
            "a table of {} blocks cannot hold {} tokens",
            kv.block_table.len(),
            shape.ctx_len
        )));
    }
    if let Some(&b) = kv.block_table[..used]
        .iter()
        .find(|&&b| b as usize >= num_blocks)
    {
        return Err(bad(format!("block {b} is outside a pool of {num_blocks}")));
    }
    Ok(num_blocks)
}

/// The `ctx_len` key and value rows of a paged history, gathered in sequence order
/// (`ctx_len × n_kv_heads·head_dim` each).
pub fn gather_paged(
    shape: &AttentionShape,
    kv: &PagedKv<'_>,
) -> Result<(Vec<f32>, Vec<f32>), KernelError> {
    check_paged_kv(shape, kv)?;
    let stride = shape.n_kv_heads * shape.head_dim;
    let mut k = Vec::with_capacity(shape.ctx_len * stride);
    let mut v = Vec::with_capacity(shape.ctx_len * stride);
    for j in 0..shape.ctx_len {
        let row = kv.block_table[j / kv.block_size] as usize * kv.block_size + j % kv.block_size;
        k.extend_from_slice(&kv.keys[row * stride..][..stride]);
        v.extend_from_slice(&kv.values[row * stride..][..stride]);
    }
    Ok((k, v))
}

/// See [`Backend::attention`].
pub fn attention(
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) -> Result<(), KernelError> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
        n_queries,
        ctx_len,
    } = *shape;
    check_attention_shape(shape, q, k, v, out)?;
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0.0f32; ctx_len];
    for i in 0..n_queries {
        let visible = ctx_len - n_queries + i + 1;
        for h in 0..n_heads {
            let kvh = h / group;
            let qv = &q[(i * n_heads + h) * hd..][..hd];
            for (j, s) in scores[..visible].iter_mut().enumerate() {
                let kv = &k[(j * n_kv_heads + kvh) * hd..][..hd];
                *s = qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f32>() * scale;
            }
            let max = scores[..visible]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let mut sum = 0.0f32;
            for s in scores[..visible].iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let o = &mut out[(i * n_heads + h) * hd..][..hd];
            o.fill(0.0);
            for (j, s) in scores[..visible].iter().enumerate() {
                let p = s / sum;
                let vv = &v[(j * n_kv_heads + kvh) * hd..][..hd];
                for (ov, x) in o.iter_mut().zip(vv) {
                    *ov += p * x;
                }
            }
        }
    }
    Ok(())
}

/// `x · sigmoid(x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// See [`Backend::silu_mul`].
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check_len("silu_mul", "up", gate.len(), up.len())?;
    check_len("silu_mul", "out", gate.len(), out.len())?;
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(*g) * u;
    }
    Ok(())
}

/// See [`Backend::relu2_mul`].
pub fn relu2_mul(gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check_len("relu2_mul", "up", gate.len(), up.len())?;
    check_len("relu2_mul", "out", gate.len(), out.len())?;
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        let r = g.max(0.0);
        *o = r * r * u;
    }
    Ok(())
}

/// See [`Backend::add_assign`].
pub fn add_assign(x: &mut [f32], y: &[f32]) -> Result<(), KernelError> {
    check_len("add_assign", "y", x.len(), y.len())?;
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
    Ok(())
}

impl Backend for ReferenceBackend {
    fn name(&self) -> &'static str {
        "reference"
    }
    fn embedding(&self, t: &DenseMatrix, ids: &[u32], out: &mut [f32]) -> Result<(), KernelError> {
        embedding(t, ids, out)
    }
    fn rms_norm(
        &self,
        x: &[f32],
        w: Option<&[f32]>,
        eps: f32,
        cols: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        rms_norm(x, w, eps, cols, out)
    }
    fn layer_norm(&self, x: &[f32], eps: f32, c: usize, o: &mut [f32]) -> Result<(), KernelError> {
        layer_norm(x, eps, c, o)
    }
    fn quantize_rows(
        &self,
        x: &[f32],
        cols: usize,
        q: &mut [i8],
        s: &mut [f32],
    ) -> Result<(), KernelError> {
        quantize_rows(x, cols, q, s)
    }
    fn ternary_matmul(
        &self,
        w: &TernaryMatrix,
        q: &[i8],
        a: &mut [i32],
    ) -> Result<(), KernelError> {
        ternary_matmul(w, q, a)
    }
    fn dequantize_rows(
        &self,
        acc: &[i32],
        beta: f32,
        s: &[f32],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        dequantize_rows(acc, beta, s, out)
    }
    fn dense_matmul(&self, w: &DenseMatrix, x: &[f32], o: &mut [f32]) -> Result<(), KernelError> {
        dense_matmul(w, x, o)
    }
    fn sign_matmul(&self, w: &SignMatrix, x: &[f32], o: &mut [f32]) -> Result<(), KernelError> {
        sign_matmul(w, x, o)
    }
    fn scale_columns(&self, x: &mut [f32], f: &[f32]) -> Result<(), KernelError> {
        scale_columns(x, f)
    }
    fn rope(
        &self,
        x: &mut [f32],
        p: &[usize],
        nh: usize,
        hd: usize,
        theta: f32,
    ) -> Result<(), KernelError> {
        rope(x, p, nh, hd, theta)
    }
    fn attention(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        attention(shape, q, k, v, out)
    }
    fn silu_mul(&self, g: &[f32], u: &[f32], o: &mut [f32]) -> Result<(), KernelError> {
        silu_mul(g, u, o)
    }
    fn relu2_mul(&self, g: &[f32], u: &[f32], o: &mut [f32]) -> Result<(), KernelError> {
        relu2_mul(g, u, o)
    }
    fn add_assign(&self, x: &mut [f32], y: &[f32]) -> Result<(), KernelError> {
        add_assign(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DenseData;

    #[test]
    fn quantization_matches_hand_computed_values() {
        // absmax 2 -> s = 63.5; 1.0*63.5 = 63.5 -> 64 (ties to even), -2 -> -127, 0.5 -> 31.75 -> 32
        let mut q = [0i8; 3];
        let mut s = [0.0f32; 1];
        quantize_rows(&[1.0, -2.0, 0.5], 3, &mut q, &mut s).unwrap();
        assert_eq!(s[0], 63.5);
        assert_eq!(q, [64, -127, 32]);
        // an all-zero row uses the 1e-5 floor and quantizes to zeros
        quantize_rows(&[0.0, 0.0, 0.0], 3, &mut q, &mut s).unwrap();
        assert_eq!(q, [0, 0, 0]);
        assert_eq!(s[0], 127.0 / 1e-5);
    }

    #[test]
    fn ternary_matmul_is_exact_integer_dot() {
        let w = TernaryMatrix::from_ternary(2, 5, &[1, -1, 0, 1, 1, 0, 0, -1, -1, 1], 0.5).unwrap();
        let q = [10i8, 20, 30, -40, 127, 1, 2, 3, 4, 5];
        let mut acc = [0i32; 4];
        ternary_matmul(&w, &q, &mut acc).unwrap();
        assert_eq!(
            acc,
            [
                10 - 20 - 40 + 127,
                -30 + 40 + 127,
                1 - 2 + 4 + 5,
                -3 - 4 + 5
            ]
        );
        let mut out = [0.0f32; 4];
        dequantize_rows(&acc, 0.5, &[2.0, 1.0], &mut out).unwrap();
        assert_eq!(out, [77.0 * 0.25, 137.0 * 0.25, 8.0 * 0.5, -2.0 * 0.5]);
    }

    #[test]
    fn rms_norm_and_layer_norm_hand_values() {
        let mut out = [0.0f32; 2];
        rms_norm(&[3.0, 4.0], Some(&[1.0, 2.0]), 0.0, 2, &mut out).unwrap();
        let r = (12.5f32).sqrt();
        assert_eq!(out, [3.0 / r, 8.0 / r]);
        layer_norm(&[1.0, 3.0], 0.0, 2, &mut out).unwrap();
        assert_eq!(out, [-1.0, 1.0]);
    }

    #[test]
    fn rope_rotates_pairs_half_apart() {
        // head_dim 2: one pair (x0, x1) rotated by pos * 1.0
        let mut x = [1.0f32, 0.0];
        rope(&mut x, &[1], 1, 2, 10000.0).unwrap();
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
        let mut y = [1.0f32, 2.0, 3.0, 4.0];
        rope(&mut y, &[0], 1, 4, 10000.0).unwrap();
        assert_eq!(y, [1.0, 2.0, 3.0, 4.0], "position 0 is the identity");
    }

    #[test]
    fn attention_is_causal_and_maps_gqa_heads() {
        // 2 query heads share 1 kv head; 2 tokens; hd 1.
        let shape = AttentionShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 1,
            n_queries: 2,
            ctx_len: 2,
        };
        let q = [0.0f32, 0.0, 0.0, 0.0];
        let k = [1.0f32, 2.0];
        let v = [10.0f32, 20.0];
        let mut out = [0.0f32; 4];
        attention(&shape, &q, &k, &v, &mut out).unwrap();
        // first token sees only v0; second sees the mean (equal scores).
        assert_eq!(out, [10.0, 10.0, 15.0, 15.0]);
    }

    #[test]
    fn sign_dense_and_embedding() {
        let s = SignMatrix::from_signs(1, 8, &[1, -1, 1, 1, 1, 1, 1, -1]).unwrap();
        let mut o = [0.0f32];
        sign_matmul(&s, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &mut o).unwrap();
        assert_eq!(o[0], 36.0 - 2.0 * (2.0 + 8.0));
        let e = DenseMatrix::new(2, 2, DenseData::F32(vec![1.0, 2.0, 3.0, 4.0])).unwrap();
        let mut out = [0.0f32; 2];
        embedding(&e, &[1], &mut out).unwrap();
        assert_eq!(out, [3.0, 4.0]);
        assert!(matches!(
            embedding(&e, &[2], &mut out),
            Err(KernelError::TokenOutOfRange {
                id: 2,
                vocab: 2,
                ..
            })
        ));
        let mut y = [0.0f32; 2];
        dense_matmul(&e, &[1.0, 1.0], &mut y).unwrap();
        assert_eq!(y, [3.0, 7.0]);
    }

    #[test]
    fn gating_functions() {
        let mut o = [0.0f32; 2];
        relu2_mul(&[-1.0, 3.0], &[5.0, 2.0], &mut o).unwrap();
        assert_eq!(o, [0.0, 18.0]);
        silu_mul(&[0.0, 0.0], &[1.0, 1.0], &mut o).unwrap();
        assert_eq!(o, [0.0, 0.0]);
    }
}
