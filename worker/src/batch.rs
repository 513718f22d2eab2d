//! The batch plumbing shared by [`crate::Model`] and [`crate::ShardedModel`]: checking a batch
//! of sequence chunks before any compute (own caches, advanced only on success, or block tables
//! into a shared pool), the embedding → layers → LM head skeleton of a forward pass
//! ([`forward`]; each model supplies its own layer step), picking the rows whose logits are
//! wanted, and splitting the results back per sequence.

use crate::error::WorkerError;
use crate::kv_batch::KvBatch;
use crate::kv_pool::KvPool;
use crate::model::{ForwardOptions, ForwardOutput, PagedChunk, QuantTrace, SequenceChunk};
use crate::projection::apply_norm;
use bitnet_checkpoints::Norm;
use bitnet_kernels::{Backend, DenseMatrix};

/// Runs `forward` over sequences with their own caches: checks every chunk (non-empty, ids
/// below `vocab`, room in its cache) first, and advances every cache only on success (rows a
/// failed pass wrote past a cache's length are never read, so failure leaves it as it was).
pub(crate) fn checked(
    batch: &mut [SequenceChunk<'_>],
    vocab: usize,
    forward: impl FnOnce(KvBatch<'_>) -> Result<Vec<ForwardOutput>, WorkerError>,
) -> Result<Vec<ForwardOutput>, WorkerError> {
    for chunk in batch.iter() {
        chunk.cache.check_room(chunk.tokens.len())?;
    }
    let kv = KvBatch::from_caches(batch);
    kv.check(vocab)?;
    let out = forward(kv)?;
    for chunk in batch.iter_mut() {
        chunk.cache.advance(chunk.tokens.len());
    }
    Ok(out)
}

/// Runs `forward` over sequences whose blocks live in `pool`, after checking every chunk
/// (non-empty, ids below `vocab`, a block table inside the pool that holds the chunk). The
/// caller advances each sequence's computed count on success; on failure nothing it reads
/// changed.
pub(crate) fn checked_paged<'a>(
    pool: &'a mut KvPool,
    batch: &'a [PagedChunk<'a>],
    vocab: usize,
    forward: impl FnOnce(KvBatch<'a>) -> Result<Vec<ForwardOutput>, WorkerError>,
) -> Result<Vec<ForwardOutput>, WorkerError> {
    let kv = KvBatch::paged(pool, batch);
    kv.check(vocab)?;
    forward(kv)
}

/// Per sequence, the range of batch rows whose logits are wanted (every row, or the last), and
/// the hidden states of those rows gathered into one matrix.
pub(crate) fn wanted_rows(
    kv: &KvBatch<'_>,
    options: ForwardOptions,
    h: &[f32],
    hidden: usize,
) -> (Vec<(usize, usize)>, Vec<f32>) {
    let mut wanted = Vec::with_capacity(kv.seqs.len());
    let mut start = 0;
    for s in &kv.seqs {
        let n = s.tokens.len();
        let first = if options.all_logits {
            start
        } else {
            start + n - 1
        };
        wanted.push((first, start + n));
        start += n;
    }
    let mut selected = Vec::new();
    for &(a, b) in &wanted {
        selected.extend_from_slice(&h[a * hidden..b * hidden]);
    }
    (wanted, selected)
}

/// Splits the logits of the wanted rows (and layer 0's trace over all tokens) per sequence.
pub(crate) fn split_outputs(
    kv: &KvBatch<'_>,
    wanted: &[(usize, usize)],
    logits: &[f32],
    vocab: usize,
    first_layer_q: Option<QuantTrace>,
    total_tokens: usize,
) -> Vec<ForwardOutput> {
    let mut outputs = Vec::with_capacity(kv.seqs.len());
    let (mut offset, mut row_start) = (0, 0);
    for (s, &(a, b)) in kv.seqs.iter().zip(wanted) {
        let n_rows = b - a;
        let n_tokens = s.tokens.len();
        let trace = first_layer_q.as_ref().map(|t| {
            let cols = t.q.len() / total_tokens;
            QuantTrace {
                scales: t.scales[row_start..row_start + n_tokens].to_vec(),
                q: t.q[row_start * cols..(row_start + n_tokens) * cols].to_vec(),
            }
        });
        outputs.push(ForwardOutput {
            logits: logits[offset * vocab..(offset + n_rows) * vocab].to_vec(),
            first_layer_q: trace,
        });
        offset += n_rows;
        row_start += n_tokens;
    }
    outputs
}

/// The ends of a model that both forward passes share.
pub(crate) struct Ends<'a> {
    pub embedding: &'a DenseMatrix,
    pub final_norm: &'a Norm,
    pub head: &'a DenseMatrix,
    pub hidden: usize,
    pub num_layers: usize,
}

/// One layer over the hidden states `h` in place: `(index, h, positions, kv, trace)`.
pub(crate) type LayerStep<'s> = dyn FnMut(
        usize,
        &mut [f32],
        &[usize],
        &mut KvBatch<'_>,
        Option<QuantTrace>,
    ) -> Result<Option<QuantTrace>, WorkerError>
    + 's;

/// Embedding → every layer (via `layer`) → final norm → LM head of the wanted rows, split per
/// sequence. The layers store keys and values; the caller advances the sequences.
pub(crate) fn forward<B: Backend>(
    backend: &B,
    ends: Ends<'_>,
    mut kv: KvBatch<'_>,
    options: ForwardOptions,
    layer: &mut LayerStep<'_>,
) -> Result<Vec<ForwardOutput>, WorkerError> {
    let hidden = ends.hidden;
    let (tokens, positions) = kv.tokens_and_positions();
    let mut h = vec![0.0f32; tokens.len() * hidden];
    backend.embedding(ends.embedding, &tokens, &mut h)?;
    let mut first_layer_q = None;
    for i in 0..ends.num_layers {
        let trace = (i == 0 && options.trace_first_layer).then(QuantTrace::default);
        let trace = layer(i, &mut h, &positions, &mut kv, trace)?;
        if i == 0 {
            first_layer_q = trace.filter(|t| !t.scales.is_empty());
        }
    }
    let (wanted, selected) = wanted_rows(&kv, options, &h, hidden);
    let normed = apply_norm(backend, ends.final_norm, &selected, hidden)?;
    let vocab = ends.head.rows();
    let mut logits = vec![0.0f32; selected.len() / hidden * vocab];
    backend.dense_matmul(ends.head, &normed, &mut logits)?;
    Ok(split_outputs(
        &kv,
        &wanted,
        &logits,
        vocab,
        first_layer_q,
        tokens.len(),
    ))
}
