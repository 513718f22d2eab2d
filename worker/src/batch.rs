//! The batch plumbing shared by [`crate::Model`] and [`crate::ShardedModel`]: checking a batch
//! of sequence chunks before any compute (and advancing or rolling back their caches after),
//! flattening their tokens and positions, the embedding → layers → LM head skeleton of a
//! forward pass ([`forward`]; each model supplies its own layer step), picking the rows whose
//! logits are wanted, and splitting the results back per sequence.

use crate::error::WorkerError;
use crate::model::{ForwardOptions, ForwardOutput, QuantTrace, SequenceChunk};
use crate::projection::apply_norm;
use bitnet_checkpoints::Norm;
use bitnet_kernels::{Backend, DenseMatrix};

/// Checks every chunk (non-empty, ids below `vocab`, room in its cache), runs `forward`, then
/// advances every cache on success or rolls every cache back on error.
pub(crate) fn checked(
    batch: &mut [SequenceChunk<'_>],
    vocab: usize,
    forward: impl FnOnce(&mut [SequenceChunk<'_>]) -> Result<Vec<ForwardOutput>, WorkerError>,
) -> Result<Vec<ForwardOutput>, WorkerError> {
    for chunk in batch.iter() {
        if chunk.tokens.is_empty() {
            return Err(WorkerError::EmptyPrompt);
        }
        if let Some(&id) = chunk.tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(WorkerError::TokenOutOfRange { id, vocab });
        }
        chunk.cache.check_room(chunk.tokens.len())?;
    }
    match forward(batch) {
        Ok(out) => {
            for chunk in batch.iter_mut() {
                chunk.cache.advance(chunk.tokens.len());
            }
            Ok(out)
        }
        Err(e) => {
            for chunk in batch.iter_mut() {
                chunk.cache.rollback();
            }
            Err(e)
        }
    }
}

/// Every token of the batch in order, and each token's position in its own sequence.
pub(crate) fn tokens_and_positions(batch: &[SequenceChunk<'_>]) -> (Vec<u32>, Vec<usize>) {
    let tokens = batch
        .iter()
        .flat_map(|c| c.tokens.iter().copied())
        .collect();
    let positions = batch
        .iter()
        .flat_map(|c| c.cache.len()..c.cache.len() + c.tokens.len())
        .collect();
    (tokens, positions)
}

/// Per sequence, the range of batch rows whose logits are wanted (every row, or the last), and
/// the hidden states of those rows gathered into one matrix.
pub(crate) fn wanted_rows(
    batch: &[SequenceChunk<'_>],
    options: ForwardOptions,
    h: &[f32],
    hidden: usize,
) -> (Vec<(usize, usize)>, Vec<f32>) {
    let mut wanted = Vec::with_capacity(batch.len());
    let mut start = 0;
    for chunk in batch {
        let n = chunk.tokens.len();
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
    batch: &[SequenceChunk<'_>],
    wanted: &[(usize, usize)],
    logits: &[f32],
    vocab: usize,
    first_layer_q: Option<QuantTrace>,
    total_tokens: usize,
) -> Vec<ForwardOutput> {
    let mut outputs = Vec::with_capacity(batch.len());
    let (mut offset, mut row_start) = (0, 0);
    for (chunk, &(a, b)) in batch.iter().zip(wanted) {
        let n_rows = b - a;
        let n_tokens = chunk.tokens.len();
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

/// One layer over the hidden states `h` in place: `(index, h, positions, batch, trace)`.
pub(crate) type LayerStep<'s> = dyn FnMut(
        usize,
        &mut [f32],
        &[usize],
        &mut [SequenceChunk<'_>],
        Option<QuantTrace>,
    ) -> Result<Option<QuantTrace>, WorkerError>
    + 's;

/// Embedding → every layer (via `layer`) → final norm → LM head of the wanted rows, split per
/// sequence. Caches are appended by the layers; the caller advances or rolls them back.
pub(crate) fn forward<B: Backend>(
    backend: &B,
    ends: Ends<'_>,
    batch: &mut [SequenceChunk<'_>],
    options: ForwardOptions,
    layer: &mut LayerStep<'_>,
) -> Result<Vec<ForwardOutput>, WorkerError> {
    let hidden = ends.hidden;
    let (tokens, positions) = tokens_and_positions(batch);
    let mut h = vec![0.0f32; tokens.len() * hidden];
    backend.embedding(ends.embedding, &tokens, &mut h)?;
    let mut first_layer_q = None;
    for i in 0..ends.num_layers {
        let trace = (i == 0 && options.trace_first_layer).then(QuantTrace::default);
        let trace = layer(i, &mut h, &positions, batch, trace)?;
        if i == 0 {
            first_layer_q = trace.filter(|t| !t.scales.is_empty());
        }
    }
    let (wanted, selected) = wanted_rows(batch, options, &h, hidden);
    let normed = apply_norm(backend, ends.final_norm, &selected, hidden)?;
    let vocab = ends.head.rows();
    let mut logits = vec![0.0f32; selected.len() / hidden * vocab];
    backend.dense_matmul(ends.head, &normed, &mut logits)?;
    Ok(split_outputs(
        batch,
        &wanted,
        &logits,
        vocab,
        first_layer_q,
        tokens.len(),
    ))
}
