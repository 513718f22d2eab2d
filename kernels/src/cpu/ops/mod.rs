//! Row-wise and element-wise ops of the CPU backend (embedding, norms, activation quantization,
//! RoPE, attention, gating), per [`super::CpuPath`]. Called by [`super::CpuBackend`]; each op
//! checks its shapes as [`crate::reference`] does, then runs one kernel family: [`scalar`],
//! `avx2` or `avx512` (x86-64), which expose the same functions; [`mod@attention`] holds the
//! attention driver and its threading.
//!
//! Numerics against the reference:
//! - bit-identical: embedding, quantize_rows (`q` and `s`), dequantize_rows, scale_columns,
//!   add_assign, relu2_mul, RoPE (same `powf`/`sin_cos` per pair, rotation without FMA);
//! - RMSNorm / LayerNorm: the same f64 sums of the same f32 terms, in lane order instead of
//!   sequential order: the f64 sums may differ in their last bit, which moves the f32 result
//!   only when it lands on a rounding boundary (about 2^-29 of rows);
//! - silu_mul and softmax use a vectorized `exp` (Cephes polynomial, ≤ 2 ulp) on the SIMD
//!   paths; attention's dot products and weighted sums are reassociated.

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod scalar;

use super::{CpuBackend, CpuPath};
use crate::error::{check_len, KernelError};
use crate::reference::rows_of;
use crate::{DenseData, DenseMatrix};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::ops::Range;

pub use attention::attention;

/// Pairs of a RoPE head rotated per table refill (stack tables of this many sines and cosines).
pub const ROPE_PAIRS: usize = 128;

/// Elements of output from which a row-wise or element-wise op is split over the pool (about
/// 20 µs of single-threaded work; a split costs a few µs inside a forward pass).
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// Elements per task of a split element-wise op (keeps SIMD loops whole).
const ELEMENT_GRAIN: usize = 1024;

/// Runs `f(rows, chunk)` over chunks of whole `cols`-wide rows of `out`, covering every row:
/// split over the backend's threads when `out` is large, else one call on this thread.
/// Results do not depend on the split (every row is computed alone).
fn par_rows<O: Send>(
    b: &CpuBackend,
    out: &mut [O],
    cols: usize,
    grain: usize,
    f: impl Fn(Range<usize>, &mut [O]) + Sync,
) {
    let rows = out.len() / cols.max(1);
    if b.threads() <= 1 || rows < 2 || out.len() < PARALLEL_MIN_ELEMENTS {
        f(0..rows, out);
        return;
    }
    let chunk = rows
        .div_ceil(b.threads() * 2)
        .next_multiple_of(grain.max(1));
    b.pool().install(|| {
        out.par_chunks_mut(chunk * cols)
            .enumerate()
            .for_each(|(i, part)| f(i * chunk..i * chunk + part.len() / cols, part));
    });
}

/// Calls `$f(args)` from the kernel family of `$path`.
macro_rules! dispatch {
    ($path:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `CpuBackend` only holds a path its processor has (`with_path` checks
            // it), so every feature the AVX-512 kernel enables is present; the kernels take
            // slices and stay inside them.
            CpuPath::Avx512Vnni => unsafe { avx512::$f($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, for AVX2 + FMA + F16C.
            CpuPath::Avx2 => unsafe { avx2::$f($($arg),*) },
            _ => scalar::$f($($arg),*),
        }
    };
}
pub(crate) use dispatch;

/// See [`crate::Backend::embedding`]: one row copied or widened per token.
pub fn embedding(
    b: &CpuBackend,
    table: &DenseMatrix,
    ids: &[u32],
    out: &mut [f32],
) -> Result<(), KernelError> {
    let cols = table.cols();
    check_len("embedding", "out", ids.len() * cols, out.len())?;
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= table.rows()) {
        return Err(KernelError::TokenOutOfRange {
            op: "embedding",
            id,
            vocab: table.rows(),
        });
    }
    for (&id, o) in ids.iter().zip(out.chunks_exact_mut(cols.max(1))) {
        let range = id as usize * cols..(id as usize + 1) * cols;
        match table.data() {
            DenseData::F32(v) => o.copy_from_slice(&v[range]),
            DenseData::F16(v) => dispatch!(b.path(), widen_f16(v[range].reinterpret_cast(), o)),
            DenseData::BF16(v) => dispatch!(b.path(), widen_bf16(v[range].reinterpret_cast(), o)),
            DenseData::I8 { values, scales } => {
                dispatch!(b.path(), widen_i8(&values[range], scales[id as usize], o))
            }
        }
    }
    Ok(())
}

/// See [`crate::Backend::rms_norm`].
pub fn rms_norm(
    b: &CpuBackend,
    x: &[f32],
    weight: Option<&[f32]>,
    eps: f32,
    cols: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    crate::reference::check_norm("rms_norm", x, weight, cols, out)?;
    let path = b.path();
    par_rows(b, out, cols, 1, |rows, out| {
        let x = &x[rows.start * cols..rows.end * cols];
        for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            let sum_sq = dispatch!(path, sum_sq_f64(xr));
            let mean_sq = (sum_sq / cols as f64) as f32;
            let inv = 1.0 / (mean_sq + eps).sqrt();
            dispatch!(path, scale_into(xr, inv, weight, or));
        }
    });
    Ok(())
}

/// See [`crate::Backend::layer_norm`].
pub fn layer_norm(
    b: &CpuBackend,
    x: &[f32],
    eps: f32,
    cols: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    crate::reference::check_norm("layer_norm", x, None, cols, out)?;
    let path = b.path();
    par_rows(b, out, cols, 1, |rows, out| {
        let x = &x[rows.start * cols..rows.end * cols];
        for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            let mean = (dispatch!(path, sum_f64(xr)) / cols as f64) as f32;
            let var = (dispatch!(path, sum_sq_dev_f64(xr, mean)) / cols as f64) as f32;
            let inv = 1.0 / (var + eps).sqrt();
            dispatch!(path, center_scale_into(xr, mean, inv, or));
        }
    });
    Ok(())
}

/// See [`crate::Backend::quantize_rows`]: bit-exact with the reference.
pub fn quantize_rows(
    b: &CpuBackend,
    x: &[f32],
    cols: usize,
    q: &mut [i8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    let rows = crate::reference::check_quantize(x, cols, q, scales)?;
    let path = b.path();
    let quantize = |x: &[f32], q: &mut [i8], scales: &mut [f32]| {
        for ((xr, qr), s) in x
            .chunks_exact(cols)
            .zip(q.chunks_exact_mut(cols))
            .zip(scales.iter_mut())
        {
            *s = 127.0 / dispatch!(path, absmax(xr)).max(1e-5);
            dispatch!(path, quantize(xr, *s, qr));
        }
    };
    if b.threads() <= 1 || rows < 2 || x.len() < PARALLEL_MIN_ELEMENTS {
        quantize(x, q, scales);
        return Ok(());
    }
    let chunk = rows.div_ceil(b.threads() * 2);
    b.pool().install(|| {
        x.par_chunks(chunk * cols)
            .zip(q.par_chunks_mut(chunk * cols))
            .zip(scales.par_chunks_mut(chunk))
            .for_each(|((x, q), s)| quantize(x, q, s));
    });
    Ok(())
}

/// See [`crate::Backend::dequantize_rows`]: bit-exact with the reference.
pub fn dequantize_rows(
    b: &CpuBackend,
    acc: &[i32],
    beta: f32,
    scales: &[f32],
    out: &mut [f32],
) -> Result<(), KernelError> {
    let cols = crate::reference::dequantize_cols(acc, scales, out)?;
    if cols == 0 {
        return Ok(());
    }
    let path = b.path();
    par_rows(b, out, cols, 1, |rows, out| {
        let acc = &acc[rows.start * cols..rows.end * cols];
        for ((ar, or), s) in acc
            .chunks_exact(cols)
            .zip(out.chunks_exact_mut(cols))
            .zip(&scales[rows])
        {
            dispatch!(path, dequantize(ar, beta / s, or));
        }
    });
    Ok(())
}

/// See [`crate::Backend::scale_columns`].
pub fn scale_columns(b: &CpuBackend, x: &mut [f32], factors: &[f32]) -> Result<(), KernelError> {
    rows_of("scale_columns", x.len(), factors.len())?;
    let path = b.path();
    par_rows(b, x, factors.len(), 1, |_, x| {
        for row in x.chunks_exact_mut(factors.len()) {
            dispatch!(path, mul_assign(row, factors));
        }
    });
    Ok(())
}

/// See [`crate::Backend::rope`]: per call, the inverse frequencies of up to [`ROPE_PAIRS`]
/// pairs are computed once (as [`crate::reference::rope_inv_freq`] does) and per token the
/// sines and cosines once for all heads, in stack tables; the rotation is vectorized.
pub fn rope(
    b: &CpuBackend,
    x: &mut [f32],
    positions: &[usize],
    n_heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result<(), KernelError> {
    crate::reference::check_rope_shape(x, positions, n_heads, head_dim)?;
    if head_dim < 2 {
        return Ok(());
    }
    let path = b.path();
    par_rows(b, x, n_heads * head_dim, 1, |rows, x| {
        rope_rows(path, x, &positions[rows], n_heads, head_dim, theta)
    });
    Ok(())
}

/// RoPE of the rows of `x` at `positions` (one row per position).
fn rope_rows(
    path: CpuPath,
    x: &mut [f32],
    positions: &[usize],
    n_heads: usize,
    head_dim: usize,
    theta: f32,
) {
    let half = head_dim / 2;
    let (mut inv_freq, mut sin, mut cos) =
        ([0.0f32; ROPE_PAIRS], [0.0; ROPE_PAIRS], [0.0; ROPE_PAIRS]);
    for p0 in (0..half).step_by(ROPE_PAIRS) {
        let pairs = (half - p0).min(ROPE_PAIRS);
        for (i, f) in inv_freq[..pairs].iter_mut().enumerate() {
            *f = 1.0 / theta.powf((2 * (p0 + i)) as f32 / head_dim as f32);
        }
        for (t, &pos) in positions.iter().enumerate() {
            for ((f, s), c) in inv_freq[..pairs].iter().zip(&mut sin).zip(&mut cos) {
                (*s, *c) = (pos as f32 * f).sin_cos();
            }
            let row = &mut x[t * n_heads * head_dim..][..n_heads * head_dim];
            for head in row.chunks_exact_mut(head_dim) {
                let (lo, hi) = head.split_at_mut(half);
                let (x0, x1) = (&mut lo[p0..p0 + pairs], &mut hi[p0..p0 + pairs]);
                dispatch!(path, rotate(x0, x1, &cos[..pairs], &sin[..pairs]));
            }
        }
    }
}

/// See [`crate::Backend::silu_mul`].
pub fn silu_mul(b: &CpuBackend, g: &[f32], u: &[f32], o: &mut [f32]) -> Result<(), KernelError> {
    check_len("silu_mul", "up", g.len(), u.len())?;
    check_len("silu_mul", "out", g.len(), o.len())?;
    let path = b.path();
    par_rows(b, o, 1, ELEMENT_GRAIN, |r, o| {
        dispatch!(path, silu_mul(&g[r.clone()], &u[r], o))
    });
    Ok(())
}

/// See [`crate::Backend::relu2_mul`]: bit-exact with the reference.
pub fn relu2_mul(b: &CpuBackend, g: &[f32], u: &[f32], o: &mut [f32]) -> Result<(), KernelError> {
    check_len("relu2_mul", "up", g.len(), u.len())?;
    check_len("relu2_mul", "out", g.len(), o.len())?;
    let path = b.path();
    par_rows(b, o, 1, ELEMENT_GRAIN, |r, o| {
        dispatch!(path, relu2_mul(&g[r.clone()], &u[r], o))
    });
    Ok(())
}

/// See [`crate::Backend::add_assign`]: bit-exact with the reference.
pub fn add_assign(b: &CpuBackend, x: &mut [f32], y: &[f32]) -> Result<(), KernelError> {
    check_len("add_assign", "y", x.len(), y.len())?;
    let path = b.path();
    par_rows(b, x, 1, ELEMENT_GRAIN, |r, x| {
        dispatch!(path, add_assign(x, &y[r]))
    });
    Ok(())
}
