//! The [`Backend`] trait: the fused ops a BitNet forward pass needs, and nothing more.
//!
//! Buffers are host slices, row-major, one row per token. The model forward (`bitnet-worker`)
//! owns the graph and calls these ops; [`crate::reference`] defines what each must compute and
//! [`crate::CpuBackend`] is the always-built implementation. A GPU backend will add device
//! buffers behind the same op list (the CUDA issue).

use crate::{DenseMatrix, KernelError, SignMatrix, TernaryMatrix};

/// Shape of one causal attention call over a contiguous KV history of one sequence.
///
/// Queries are the last `n_queries` positions of a context of `ctx_len` tokens: query `i` sits
/// at position `ctx_len - n_queries + i` and attends keys `0 ..= ctx_len - n_queries + i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub n_queries: usize,
    pub ctx_len: usize,
}

/// One layer of a paged key/value store and the block table of one sequence.
///
/// `keys` and `values` hold `num_blocks × block_size` token rows of `n_kv_heads · head_dim`
/// floats each (block after block, the rows of a block contiguous); token `j` of the sequence
/// lives in row `block_table[j / block_size] · block_size + j % block_size`. `block_size` is a
/// power of two (the worker uses 16).
#[derive(Clone, Copy, Debug)]
pub struct PagedKv<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub block_table: &'a [u32],
    pub block_size: usize,
}

/// One sequence's share of a batched [`Backend::paged_attention_batch`] call.
#[derive(Debug)]
pub struct PagedAttentionCall<'a> {
    pub shape: AttentionShape,
    pub q: &'a [f32],
    pub kv: PagedKv<'a>,
    pub out: &'a mut [f32],
}

/// The ops of a BitNet b1.58 forward pass. All buffers are row-major with one row per token.
pub trait Backend: Send + Sync {
    /// Short name for logs and parity reports ("cpu", "reference", ...).
    fn name(&self) -> &'static str;

    /// Runs `f` (a whole forward pass) in the backend's execution context, so the ops inside
    /// hand work to their threads cheaply (the CPU backend runs it on its own thread pool).
    fn scope<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R
    where
        Self: Sized,
    {
        f()
    }

    /// `out[t] = table[ids[t]]` as f32; an id outside the table is an error.
    fn embedding(
        &self,
        table: &DenseMatrix,
        ids: &[u32],
        out: &mut [f32],
    ) -> Result<(), KernelError>;

    /// RMSNorm of each `cols`-wide row: `x · rsqrt(mean(x²) + eps) · weight` (weight 1 if none).
    fn rms_norm(
        &self,
        x: &[f32],
        weight: Option<&[f32]>,
        eps: f32,
        cols: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError>;

    /// LayerNorm of each row without parameters (biased variance): OneBit's LN0.
    fn layer_norm(
        &self,
        x: &[f32],
        eps: f32,
        cols: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError>;

    /// Per-row absmax quantization to int8: `s = 127 / max(max|x|, 1e-5)`,
    /// `q = clamp(round_ties_even(x · s), -128, 127)`; writes `q` and one `s` per row.
    fn quantize_rows(
        &self,
        x: &[f32],
        cols: usize,
        q: &mut [i8],
        scales: &mut [f32],
    ) -> Result<(), KernelError>;

    /// Exact i32 products: `acc[n, o] = Σ_k q[n, k] · T[o, k]` for every row `n` of `q`.
    fn ternary_matmul(
        &self,
        w: &TernaryMatrix,
        q: &[i8],
        acc: &mut [i32],
    ) -> Result<(), KernelError>;

    /// Scales accumulators to floats: `out[n, o] = acc[n, o] · (beta / scales[n])`.
    fn dequantize_rows(
        &self,
        acc: &[i32],
        beta: f32,
        scales: &[f32],
        out: &mut [f32],
    ) -> Result<(), KernelError>;

    /// Dense projection `out[n, o] = Σ_k x[n, k] · W[o, k]`, f32 accumulation.
    fn dense_matmul(&self, w: &DenseMatrix, x: &[f32], out: &mut [f32]) -> Result<(), KernelError>;

    /// Sign projection `out[n, o] = Σ_k x[n, k] · S[o, k]` with `S ∈ {-1, +1}`.
    fn sign_matmul(&self, w: &SignMatrix, x: &[f32], out: &mut [f32]) -> Result<(), KernelError>;

    /// Multiplies every `cols`-wide row of `x` element-wise by `factors` (length `cols`).
    fn scale_columns(&self, x: &mut [f32], factors: &[f32]) -> Result<(), KernelError>;

    /// Rotate-half RoPE in place on rows of `n_heads · head_dim`, row `t` at `positions[t]`,
    /// `inv_freq_i = theta^(-2i / head_dim)`.
    fn rope(
        &self,
        x: &mut [f32],
        positions: &[usize],
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), KernelError>;

    /// Causal softmax attention with GQA (query head `j` reads kv head `j / (n_heads / n_kv_heads)`),
    /// scale `head_dim^-0.5`, softmax in f32. `q`/`out`: `n_queries × n_heads·head_dim`;
    /// `k`/`v`: `ctx_len × n_kv_heads·head_dim`.
    fn attention(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<(), KernelError>;

    /// [`Backend::attention`] over a paged history: the `ctx_len` keys and values of the sequence
    /// are read through `kv.block_table` (see [`PagedKv`]); `q`/`out` as for `attention`.
    ///
    /// The default gathers the history into contiguous rows and calls `attention` (what the
    /// reference does); the CPU backend reads the blocks in place.
    fn paged_attention(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        kv: &PagedKv<'_>,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let (k, v) = crate::reference::gather_paged(shape, kv)?;
        self.attention(shape, q, &k, &v, out)
    }

    /// [`Backend::paged_attention`] for the sequences of one batch (one layer each): the CPU
    /// backend spreads the (query, kv head) tasks of every sequence over its threads at once,
    /// where one short decode call alone would stay on one thread. Every call is checked
    /// before any runs; the default then runs them one after another.
    fn paged_attention_batch(
        &self,
        calls: &mut [PagedAttentionCall<'_>],
    ) -> Result<(), KernelError> {
        for call in calls.iter() {
            crate::reference::check_paged_call(&call.shape, call.q, &call.kv, call.out)?;
        }
        for call in calls.iter_mut() {
            self.paged_attention(&call.shape, call.q, &call.kv, call.out)?;
        }
        Ok(())
    }

    /// `out = silu(gate) · up`.
    fn silu_mul(&self, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), KernelError>;

    /// `out = relu(gate)² · up`.
    fn relu2_mul(&self, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), KernelError>;

    /// `x += y` (residual add).
    fn add_assign(&self, x: &mut [f32], y: &[f32]) -> Result<(), KernelError>;
}
