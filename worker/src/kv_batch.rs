//! [`KvBatch`]: the sequences of one forward pass and where their keys and values live — one
//! shared [`KvPool`] addressed through each sequence's block table (serving), or each
//! sequence's own [`crate::KvCache`] (offline). The layers of [`crate::Model`] and
//! [`crate::ShardedModel`] call [`KvBatch::attend`] to store a chunk's new keys and values and
//! run paged attention over the sequence's whole history.

use crate::error::WorkerError;
use crate::kv_pool::KvPool;
use crate::model::{PagedChunk, SequenceChunk};
use bitnet_kernels::{AttentionShape, Backend, PagedAttentionCall};

/// One sequence of the batch: its new tokens, its block table and the tokens before them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeqKv<'a> {
    pub tokens: &'a [u32],
    pub table: &'a [u32],
    pub past: usize,
}

enum Pools<'a> {
    Shared(&'a mut KvPool),
    PerSeq(Vec<&'a mut KvPool>),
}

/// Query, key/value heads and head size of the attention a layer runs (this rank's heads).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
    pub q: usize,
    pub kv: usize,
    pub dim: usize,
}

/// A layer's queries, keys and values after RoPE: one row per token of the batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Qkv<'x> {
    pub q: &'x [f32],
    pub k: &'x [f32],
    pub v: &'x [f32],
}

/// The sequences of one forward pass and their key/value storage.
pub(crate) struct KvBatch<'a> {
    pub seqs: Vec<SeqKv<'a>>,
    pools: Pools<'a>,
}

impl<'a> KvBatch<'a> {
    /// Sequences with their own caches (appending after each cache's tokens).
    pub fn from_caches(batch: &'a mut [SequenceChunk<'_>]) -> Self {
        let (seqs, pools) = batch
            .iter_mut()
            .map(|c| {
                let tokens: &'a [u32] = c.tokens;
                let (pool, table, past) = c.cache.parts();
                (
                    SeqKv {
                        tokens,
                        table,
                        past,
                    },
                    pool,
                )
            })
            .unzip();
        Self {
            seqs,
            pools: Pools::PerSeq(pools),
        }
    }

    /// Sequences whose blocks live in one shared pool.
    pub fn paged(pool: &'a mut KvPool, batch: &'a [PagedChunk<'a>]) -> Self {
        Self {
            seqs: batch
                .iter()
                .map(|c| SeqKv {
                    tokens: c.tokens,
                    table: c.block_table,
                    past: c.num_computed,
                })
                .collect(),
            pools: Pools::Shared(pool),
        }
    }

    fn pool(&self, i: usize) -> &KvPool {
        match &self.pools {
            Pools::Shared(p) => p,
            Pools::PerSeq(ps) => ps[i],
        }
    }

    fn pool_mut(&mut self, i: usize) -> &mut KvPool {
        match &mut self.pools {
            Pools::Shared(p) => p,
            Pools::PerSeq(ps) => ps[i],
        }
    }

    /// Checks every sequence before any compute: tokens present and inside the vocabulary, and
    /// a block table that holds its whole history after this pass.
    pub fn check(&self, vocab: usize) -> Result<(), WorkerError> {
        for (i, s) in self.seqs.iter().enumerate() {
            if s.tokens.is_empty() {
                return Err(WorkerError::EmptyPrompt);
            }
            if let Some(&id) = s.tokens.iter().find(|&&id| id as usize >= vocab) {
                return Err(WorkerError::TokenOutOfRange { id, vocab });
            }
            self.pool(i).check_host()?;
            self.pool(i).check_table(s.table, s.past + s.tokens.len())?;
        }
        Ok(())
    }

    /// Every token of the batch in order, and each token's position in its own sequence.
    pub fn tokens_and_positions(&self) -> (Vec<u32>, Vec<usize>) {
        let tokens = self
            .seqs
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let positions = self
            .seqs
            .iter()
            .flat_map(|s| s.past..s.past + s.tokens.len())
            .collect();
        (tokens, positions)
    }

    /// Stores the new keys and values of `layer` (rows of `heads.kv · heads.dim`) and runs
    /// causal attention of the queries over each sequence's history into `out`.
    pub fn attend<B: Backend>(
        &mut self,
        b: &B,
        layer: usize,
        heads: Heads,
        qkv: Qkv<'_>,
        out: &mut [f32],
    ) -> Result<(), WorkerError> {
        let Qkv { q, k, v } = qkv;
        let (q_width, kv_width) = (heads.q * heads.dim, heads.kv * heads.dim);
        // Store every sequence's new keys and values, then attend all sequences in one call.
        let mut start = 0;
        for i in 0..self.seqs.len() {
            let s = self.seqs[i];
            let rows = start * kv_width..(start + s.tokens.len()) * kv_width;
            self.pool_mut(i)
                .write(layer, s.table, s.past, &k[rows.clone()], &v[rows])?;
            start += s.tokens.len();
        }
        let mut calls = Vec::with_capacity(self.seqs.len());
        let mut rest = out;
        let mut q_rest = q;
        for (i, s) in self.seqs.iter().enumerate() {
            let n = s.tokens.len();
            let (o, tail) = std::mem::take(&mut rest).split_at_mut(n * q_width);
            let (qs, q_tail) = q_rest.split_at(n * q_width);
            (rest, q_rest) = (tail, q_tail);
            calls.push(PagedAttentionCall {
                shape: AttentionShape {
                    n_heads: heads.q,
                    n_kv_heads: heads.kv,
                    head_dim: heads.dim,
                    n_queries: n,
                    ctx_len: s.past + n,
                },
                q: qs,
                kv: self.pool(i).paged(layer, s.table)?,
                out: o,
            });
        }
        b.paged_attention_batch(&mut calls)?;
        Ok(())
    }
}
