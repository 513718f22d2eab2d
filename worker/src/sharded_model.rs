//! [`ShardedModel`]: one rank's forward pass over a [`ModelShard`], talking to the other ranks
//! through a [`Collective`]. Every rank gets logits bit-identical to the single-rank [`Model`]
//! for the ternary families (A, B, F).
//!
//! How each part of a layer runs on a rank (FORMATS.md §3, ARCHITECTURE.md numerics contract):
//! - input norm, q/k/v, gate/up (column-parallel): the whole hidden state is replicated, so each
//!   rank quantizes the same input exactly as one rank would and computes its own output rows;
//!   OneBit's output LayerNorm spans all rows, so its pre-norm rows are gathered first;
//! - RoPE and attention on the local heads, with the local key/value heads in the rank's cache;
//! - o and down (row-parallel): the local activations are all-gathered so every rank holds the
//!   whole input row, applies the sub-norm (and BitLinear's own input norm) and quantizes it
//!   exactly as one rank does; each rank multiplies only its input columns, the **i32 partial
//!   sums are all-reduced before scaling** `acc · β / s`. Integer sums are exact in any order,
//!   so the result equals TP = 1 bit for bit. Dense layers (family C) all-reduce f32 partial
//!   sums instead (last-bit differences); OneBit layers are replicated (exact);
//! - final norm and the (replicated) LM head on every rank.
//!
//! Neighbours: [`crate::shard`] cuts the weights, [`crate::collective`] moves the data,
//! [`crate::ShardedGenerator`] samples one token for the whole group.
//!
//! [`Model`]: crate::Model

use crate::batch as plumbing;
use crate::collective::Collective;
use crate::error::WorkerError;
use crate::kv_batch::{Heads, KvBatch, Qkv};
use crate::kv_cache::KvCache;
use crate::kv_pool::{KvPool, BLOCK_SIZE};
use crate::model::{ForwardOptions, ForwardOutput, PagedChunk, QuantTrace, SequenceChunk};
use crate::projection::{apply_norm, apply_projection, ONEBIT_LN_EPS};
use crate::shard::{LayerShard, ModelShard, RowParallel, ShardError, ShardLayout, Span};
use bitnet_checkpoints::{Activation, ModelConfig, Norm, Projection};
use bitnet_kernels::{Backend, KernelError};

/// One rank of a tensor-parallel model.
pub struct ShardedModel<B: Backend> {
    shard: ModelShard,
    backend: B,
    collective: Box<dyn Collective>,
}

impl<B: Backend> ShardedModel<B> {
    /// Binds a shard to a backend and to the collective of its group; fails when the
    /// collective's rank or size differ from the shard's.
    pub fn new(
        shard: ModelShard,
        backend: B,
        collective: Box<dyn Collective>,
    ) -> Result<Self, WorkerError> {
        let l = &shard.layout;
        if l.rank != collective.rank() || l.world != collective.world_size() {
            return Err(ShardError::GroupMismatch {
                expected: l.rank,
                expected_world: l.world,
                got: collective.rank(),
                got_world: collective.world_size(),
            }
            .into());
        }
        Ok(Self {
            shard,
            backend,
            collective,
        })
    }

    /// The whole model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.shard.config
    }

    /// What this rank owns.
    pub fn layout(&self) -> &ShardLayout {
        &self.shard.layout
    }

    /// The rank's weights.
    pub fn shard(&self) -> &ModelShard {
        &self.shard
    }

    /// The group this rank belongs to.
    pub fn collective(&self) -> &dyn Collective {
        self.collective.as_ref()
    }

    /// Vocabulary size (rows of the LM head).
    pub fn vocab_size(&self) -> usize {
        self.shard.lm_head().rows()
    }

    /// An empty KV cache for this rank's key/value heads and `capacity` tokens.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let l = self.layout();
        KvCache::new(
            self.config().num_layers,
            l.local_kv_heads() * l.head_dim,
            capacity,
        )
    }

    /// An empty KV pool of `num_blocks` blocks for this rank's key/value heads.
    pub fn new_pool(&self, num_blocks: usize) -> Result<KvPool, WorkerError> {
        let l = self.layout();
        KvPool::new(
            self.config().num_layers,
            l.local_kv_heads() * l.head_dim,
            BLOCK_SIZE,
            num_blocks,
        )
    }

    /// See [`crate::Model::forward`]; every rank of the group must make the same call.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        options: ForwardOptions,
    ) -> Result<ForwardOutput, WorkerError> {
        let mut outputs = self.forward_batch(&mut [SequenceChunk { tokens, cache }], options)?;
        outputs.pop().ok_or(WorkerError::EmptyPrompt)
    }

    /// See [`crate::Model::forward_batch`]; every rank of the group must make the same call.
    /// On error (including a failed collective) every cache is left as it was.
    pub fn forward_batch(
        &self,
        batch: &mut [SequenceChunk<'_>],
        options: ForwardOptions,
    ) -> Result<Vec<ForwardOutput>, WorkerError> {
        let vocab = self.shard.embedding.rows();
        plumbing::checked(batch, vocab, |kv| {
            self.backend.scope(|| self.forward_unchecked(kv, options))
        })
    }

    /// See [`crate::Model::forward_paged`]; every rank of the group must make the same call
    /// (with its own pool and the same block tables).
    pub fn forward_paged(
        &self,
        pool: &mut KvPool,
        batch: &[PagedChunk<'_>],
        options: ForwardOptions,
    ) -> Result<Vec<ForwardOutput>, WorkerError> {
        let vocab = self.shard.embedding.rows();
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
            embedding: &self.shard.embedding,
            final_norm: &self.shard.final_norm,
            head: self.shard.lm_head(),
            hidden: self.config().hidden_size,
            num_layers: self.shard.layers.len(),
        };
        plumbing::forward(
            &self.backend,
            ends,
            kv,
            options,
            &mut |i, h, positions, kv, trace| {
                self.layer(i, &self.shard.layers[i], h, positions, kv, trace)
            },
        )
    }

    /// One decoder layer over the replicated hidden state `h`, in place.
    fn layer(
        &self,
        index: usize,
        layer: &LayerShard,
        h: &mut [f32],
        positions: &[usize],
        kv: &mut KvBatch<'_>,
        mut trace: Option<QuantTrace>,
    ) -> Result<Option<QuantTrace>, WorkerError> {
        let c = self.config();
        let l = *self.layout();
        let (hidden, hd) = (c.hidden_size, c.head_dim);
        let (hq, hkv) = (l.local_heads(), l.local_kv_heads());
        let b = &self.backend;

        let normed;
        let x = match &layer.input_norm {
            Some(norm) => {
                normed = apply_norm(b, norm, h, hidden)?;
                &normed[..]
            }
            None => &h[..],
        };
        let mut q = self.column_parallel(&layer.q, x, trace.as_mut())?;
        let mut k = self.column_parallel(&layer.k, x, None)?;
        let v = self.column_parallel(&layer.v, x, None)?;
        b.rope(&mut q, positions, hq, hd, c.rope_theta)?;
        b.rope(&mut k, positions, hkv, hd, c.rope_theta)?;
        let mut attn = vec![0.0f32; q.len()];
        let heads = Heads {
            q: hq,
            kv: hkv,
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
        let n_tokens = positions.len();
        let o = self.row_parallel(
            &layer.o,
            layer.attn_sub_norm.as_ref(),
            &attn,
            n_tokens,
            c.num_heads * hd,
            l.q_features(),
        )?;
        b.add_assign(h, &o)?;

        let x = apply_norm(b, &layer.post_attention_norm, h, hidden)?;
        let gate = self.column_parallel(&layer.gate, &x, None)?;
        let up = self.column_parallel(&layer.up, &x, None)?;
        let mut act = vec![0.0f32; gate.len()];
        match c.activation {
            Activation::Silu => b.silu_mul(&gate, &up, &mut act)?,
            Activation::Relu2 => b.relu2_mul(&gate, &up, &mut act)?,
        }
        let down = self.row_parallel(
            &layer.down,
            layer.ffn_sub_norm.as_ref(),
            &act,
            n_tokens,
            c.intermediate_size,
            l.ffn,
        )?;
        b.add_assign(h, &down)?;
        Ok(trace)
    }

    /// A column-parallel projection of the replicated input `x` to this rank's output rows.
    fn column_parallel(
        &self,
        proj: &Projection,
        x: &[f32],
        trace: Option<&mut QuantTrace>,
    ) -> Result<Vec<f32>, WorkerError> {
        let b = &self.backend;
        let Projection::OneBit {
            signs,
            input_factor,
            weight_scale,
        } = proj
        else {
            return apply_projection(b, proj, x, trace);
        };
        // OneBit: LN0 normalizes over every output feature, so gather the pre-norm rows.
        let n = x.len() / signs.cols().max(1);
        let mut scaled = x.to_vec();
        b.scale_columns(&mut scaled, input_factor)?;
        let mut y = vec![0.0f32; n * signs.rows()];
        b.sign_matmul(signs, &scaled, &mut y)?;
        b.scale_columns(&mut y, weight_scale)?;
        let (full, local) = self.gather_columns(&y, n)?;
        let width = full.len() / n.max(1);
        let mut normed = vec![0.0f32; full.len()];
        b.layer_norm(&full, ONEBIT_LN_EPS, width, &mut normed)?;
        Ok(take_columns(&normed, width, local))
    }

    /// A row-parallel projection: `local` holds this rank's `cols` of each of `n` rows of an
    /// input `full_width` wide (before the optional sub-norm); returns the whole output rows,
    /// identical on every rank.
    fn row_parallel(
        &self,
        proj: &RowParallel,
        sub_norm: Option<&Norm>,
        local: &[f32],
        n: usize,
        full_width: usize,
        cols: Span,
    ) -> Result<Vec<f32>, WorkerError> {
        let b = &self.backend;
        let mut out = vec![0.0f32; n * proj.out_features()];
        // The whole input row, normalized exactly as on one rank.
        let full_input = |extra: Option<&Norm>| -> Result<Vec<f32>, WorkerError> {
            let (mut full, _) = self.gather_columns(local, n)?;
            if full.len() != n * full_width {
                return Err(WorkerError::Kernel(KernelError::Shape {
                    op: "row_parallel",
                    reason: format!(
                        "the ranks gathered {} values, expected {n} × {full_width}",
                        full.len()
                    ),
                }));
            }
            for norm in [sub_norm, extra].into_iter().flatten() {
                full = apply_norm(b, norm, &full, full_width)?;
            }
            Ok(full)
        };
        match proj {
            RowParallel::Ternary { weight, input_norm } => {
                let full = full_input(input_norm.as_ref())?;
                let mut q = vec![0i8; full.len()];
                let mut scales = vec![0.0f32; n];
                b.quantize_rows(&full, full_width, &mut q, &mut scales)?;
                let q_local = take_columns(&q, full_width, cols);
                let mut acc = vec![0i32; out.len()];
                b.ternary_matmul(weight, &q_local, &mut acc)?;
                self.collective.all_reduce_sum_i32(&mut acc)?;
                b.dequantize_rows(&acc, weight.beta(), &scales, &mut out)?;
            }
            RowParallel::Dense(w) => {
                let input = match sub_norm {
                    Some(_) => take_columns(&full_input(None)?, full_width, cols),
                    None => local.to_vec(),
                };
                b.dense_matmul(w, &input, &mut out)?;
                self.collective.all_reduce_sum_f32(&mut out)?;
            }
            RowParallel::Replicated(p) => {
                let full = full_input(None)?;
                out = apply_projection(b, p, &full, None)?;
            }
        }
        Ok(out)
    }

    /// All-gathers every rank's columns of `n` rows; returns the whole rows (ranks' columns
    /// concatenated in rank order) and where this rank's columns sit in them.
    fn gather_columns(&self, local: &[f32], n: usize) -> Result<(Vec<f32>, Span), WorkerError> {
        let parts = self.collective.all_gather_f32(local)?;
        let widths: Vec<usize> = parts.iter().map(|p| p.len() / n.max(1)).collect();
        let width: usize = widths.iter().sum();
        let rank = self.collective.rank();
        let offset: usize = widths[..rank].iter().sum();
        let mut full = Vec::with_capacity(n * width);
        for row in 0..n {
            for (part, &w) in parts.iter().zip(&widths) {
                full.extend_from_slice(&part[row * w..(row + 1) * w]);
            }
        }
        Ok((full, Span::new(offset, offset + widths[rank])))
    }
}

/// Columns `cols` of each `width`-wide row of `x`.
fn take_columns<T: Copy>(x: &[T], width: usize, cols: Span) -> Vec<T> {
    x.chunks_exact(width.max(1))
        .flat_map(|row| row[cols.start..cols.end].iter().copied())
        .collect()
}
