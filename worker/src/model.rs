//! [`Model`]: the decoder forward pass of every supported family over a [`Backend`].
//!
//! One call runs a chunk of tokens of one sequence (the whole prompt at prefill, one token per
//! decode step), appends their keys and values to the [`KvCache`] and returns logits. The graph
//! (FORMATS.md "Sub-norms and the rest of the graph"):
//! `h += o(attn_sub_norm(Attn(input_norm(h))))`; `h += down(ffn_sub_norm(act(gate(x)) · up(x)))`
//! with `x = post_attention_norm(h)`; then `model.norm` and the LM head.

use crate::batch as plumbing;
use crate::error::WorkerError;
use crate::kv_batch::{Heads, KvBatch, Qkv};
use crate::kv_cache::KvCache;
use crate::kv_pool::{KvPool, BLOCK_SIZE};
pub use crate::projection::QuantTrace;
use crate::projection::{apply_norm, apply_projection};
use bitnet_checkpoints::{Activation, LayerWeights, ModelConfig, ModelWeights};
use bitnet_kernels::Backend;

/// What a forward pass returns.
#[derive(Clone, Debug, Default)]
pub struct ForwardOutput {
    /// Logits, `rows × vocab`: every input token when asked for all, else only the last.
    pub logits: Vec<f32>,
    /// int8 activations of layer 0's q projection (ternary families, when tracing).
    pub first_layer_q: Option<QuantTrace>,
}

/// The next tokens of one sequence and the cache holding its history.
pub struct SequenceChunk<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}

/// The next tokens of one sequence whose history lives in a shared [`KvPool`]: tokens
/// `0 .. num_computed` are stored in the blocks of `block_table`, which must also have room
/// for `tokens`.
#[derive(Clone, Copy, Debug)]
pub struct PagedChunk<'a> {
    pub tokens: &'a [u32],
    pub block_table: &'a [u32],
    pub num_computed: usize,
}

/// Which outputs a forward pass should produce.
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardOptions {
    /// Logits for every input token instead of only the last one.
    pub all_logits: bool,
    /// Keep layer 0's q-projection activations (`s` and int8 `q`).
    pub trace_first_layer: bool,
}

/// A loaded model bound to a compute backend.
pub struct Model<B: Backend> {
    weights: ModelWeights,
    backend: B,
}

impl<B: Backend> Model<B> {
    /// Binds loaded weights to a backend.
    pub fn new(weights: ModelWeights, backend: B) -> Self {
        Self { weights, backend }
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.weights.config
    }

    /// The loaded weights.
    pub fn weights(&self) -> &ModelWeights {
        &self.weights
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// An empty KV cache sized for this model and `capacity` tokens.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let c = self.config();
        KvCache::new(c.num_layers, c.num_kv_heads * c.head_dim, capacity)
    }

    /// An empty KV pool of `num_blocks` blocks for this model (see [`Model::forward_paged`]).
    pub fn new_pool(&self, num_blocks: usize) -> Result<KvPool, WorkerError> {
        let c = self.config();
        KvPool::new(
            c.num_layers,
            c.num_kv_heads * c.head_dim,
            BLOCK_SIZE,
            num_blocks,
        )
    }

    /// Vocabulary size (rows of the LM head).
    pub fn vocab_size(&self) -> usize {
        self.weights.lm_head().rows()
    }

    /// Runs `tokens` (the next tokens of the sequence held by `cache`) through the model.
    /// On error the cache is left as it was before the call.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        options: ForwardOptions,
    ) -> Result<ForwardOutput, WorkerError> {
        let mut outputs = self.forward_batch(&mut [SequenceChunk { tokens, cache }], options)?;
        Ok(outputs.pop().expect("one output per sequence"))
    }

    /// Runs the next tokens of several sequences in one pass: the projections see every token
    /// of every sequence as one matrix (batched prefill and decode); attention runs per sequence
    /// over its own cache. Returns one output per sequence, in order. On error every cache is
    /// left as it was before the call.
    pub fn forward_batch(
        &self,
        batch: &mut [SequenceChunk<'_>],
        options: ForwardOptions,
    ) -> Result<Vec<ForwardOutput>, WorkerError> {
        let vocab = self.weights.embedding.rows();
        plumbing::checked(batch, vocab, |kv| {
            self.backend.scope(|| self.forward_unchecked(kv, options))
        })
    }

    /// Like [`Model::forward_batch`] for sequences whose keys and values live in `pool`
    /// (serving): each chunk's new keys and values go to its block table after its
    /// `num_computed` tokens, and attention reads the blocks in place. Every table is checked
    /// before any compute; the caller advances `num_computed` on success.
    pub fn forward_paged(
        &self,
        pool: &mut KvPool,
        batch: &[PagedChunk<'_>],
        options: ForwardOptions,
    ) -> Result<Vec<ForwardOutput>, WorkerError> {
        let vocab = self.weights.embedding.rows();
        plumbing::checked_paged(pool, batch, vocab, |kv| {
            self.backend.scope(|| self.forward_unchecked(kv, options))
        })
    }

    fn forward_unchecked(
        &self,
        kv: KvBatch<'_>,
        options: ForwardOptions,
    ) -> Result<Vec<ForwardOutput>, WorkerError> {
        let ends = plumbing::Ends {
            embedding: &self.weights.embedding,
            final_norm: &self.weights.final_norm,
            head: self.weights.lm_head(),
            hidden: self.config().hidden_size,
            num_layers: self.weights.layers.len(),
        };
        plumbing::forward(
            &self.backend,
            ends,
            kv,
            options,
            &mut |i, h, positions, kv, trace| {
                self.layer(i, &self.weights.layers[i], h, positions, kv, trace)
            },
        )
    }

    /// One decoder layer over `h` in place; returns the q-projection trace when one was asked.
    fn layer(
        &self,
        index: usize,
        layer: &LayerWeights,
        h: &mut [f32],
        positions: &[usize],
        kv: &mut KvBatch<'_>,
        mut trace: Option<QuantTrace>,
    ) -> Result<Option<QuantTrace>, WorkerError> {
        let c = self.config();
        let (hidden, hd) = (c.hidden_size, c.head_dim);
        let b = &self.backend;

        let normed;
        let x = match &layer.input_norm {
            Some(norm) => {
                normed = apply_norm(b, norm, h, hidden)?;
                &normed[..]
            }
            None => &h[..],
        };
        let mut q = apply_projection(b, &layer.q, x, trace.as_mut())?;
        let mut k = apply_projection(b, &layer.k, x, None)?;
        let v = apply_projection(b, &layer.v, x, None)?;
        b.rope(&mut q, positions, c.num_heads, hd, c.rope_theta)?;
        b.rope(&mut k, positions, c.num_kv_heads, hd, c.rope_theta)?;
        let mut attn = vec![0.0f32; q.len()];
        let heads = Heads {
            q: c.num_heads,
            kv: c.num_kv_heads,
            dim: hd,
        };
        kv.attend(
            b,
            index,
            heads,
            Qkv {
                q: &q,
                k: &k,
                v: &v,
            },
            &mut attn,
        )?;
        if let Some(norm) = &layer.attn_sub_norm {
            attn = apply_norm(b, norm, &attn, c.num_heads * hd)?;
        }
        let o = apply_projection(b, &layer.o, &attn, None)?;
        b.add_assign(h, &o)?;

        let x = apply_norm(b, &layer.post_attention_norm, h, hidden)?;
        let gate = apply_projection(b, &layer.gate, &x, None)?;
        let up = apply_projection(b, &layer.up, &x, None)?;
        let mut act = vec![0.0f32; gate.len()];
        match c.activation {
            Activation::Silu => b.silu_mul(&gate, &up, &mut act)?,
            Activation::Relu2 => b.relu2_mul(&gate, &up, &mut act)?,
        }
        if let Some(norm) = &layer.ffn_sub_norm {
            act = apply_norm(b, norm, &act, c.intermediate_size)?;
        }
        let down = apply_projection(b, &layer.down, &act, None)?;
        b.add_assign(h, &down)?;
        Ok(trace)
    }
}
