//! Applying one [`Projection`] to rows of activations, in the arithmetic of its family.
//!
//! - Ternary (BitLinear W1.58A8): optional input RMSNorm, per-token int8 quantization, exact
//!   i32 products, then `· β / s`.
//! - Dense: f32 accumulation over f16/bf16/f32 weights.
//! - OneBit (W1A16): `LN0(((x ⊙ g) · Sᵀ) ⊙ h)`.

use crate::error::WorkerError;
use bitnet_checkpoints::{Norm, Projection};
use bitnet_kernels::Backend;

/// eps of OneBit's parameter-free output LayerNorm.
pub const ONEBIT_LN_EPS: f32 = 1e-5;

/// The int8 activations a ternary projection computed, kept when tracing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantTrace {
    /// Per-token scale `s = 127 / max(max|x|, 1e-5)`.
    pub scales: Vec<f32>,
    /// Row-major int8 activations, one row per token.
    pub q: Vec<i8>,
}

/// RMSNorm of rows of `cols` with an optional gain.
pub fn apply_norm<B: Backend>(
    backend: &B,
    norm: &Norm,
    x: &[f32],
    cols: usize,
) -> Result<Vec<f32>, WorkerError> {
    let mut out = vec![0.0f32; x.len()];
    backend.rms_norm(x, norm.weight.as_deref(), norm.eps, cols, &mut out)?;
    Ok(out)
}

/// Projects `x` (`n × in_features`) to `n × out_features`; fills `trace` for ternary layers
/// when asked.
pub fn apply_projection<B: Backend>(
    backend: &B,
    proj: &Projection,
    x: &[f32],
    trace: Option<&mut QuantTrace>,
) -> Result<Vec<f32>, WorkerError> {
    let cols = proj.in_features();
    let n = x.len() / cols.max(1);
    let mut out = vec![0.0f32; n * proj.out_features()];
    match proj {
        Projection::Ternary { weight, input_norm } => {
            let normed;
            let input = match input_norm {
                Some(norm) => {
                    normed = apply_norm(backend, norm, x, cols)?;
                    &normed[..]
                }
                None => x,
            };
            let mut q = vec![0i8; input.len()];
            let mut scales = vec![0.0f32; n];
            backend.quantize_rows(input, cols, &mut q, &mut scales)?;
            let mut acc = vec![0i32; out.len()];
            backend.ternary_matmul(weight, &q, &mut acc)?;
            backend.dequantize_rows(&acc, weight.beta(), &scales, &mut out)?;
            if let Some(t) = trace {
                *t = QuantTrace { scales, q };
            }
        }
        Projection::Dense(w) => backend.dense_matmul(w, x, &mut out)?,
        Projection::OneBit {
            signs,
            input_factor,
            weight_scale,
        } => {
            let mut scaled = x.to_vec();
            backend.scale_columns(&mut scaled, input_factor)?;
            let mut y = vec![0.0f32; out.len()];
            backend.sign_matmul(signs, &scaled, &mut y)?;
            backend.scale_columns(&mut y, weight_scale)?;
            backend.layer_norm(&y, ONEBIT_LN_EPS, signs.rows(), &mut out)?;
        }
    }
    Ok(out)
}
