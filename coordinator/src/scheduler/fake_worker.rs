//! A deterministic in-process stand-in for the workers' `Step`: it applies a
//! [`SchedulerOutput`] the way a worker must (new requests, deltas, resumes, finished ids),
//! writes every computed token into a simulated paged KV pool, and samples
//! `token = f(token history)` read back through the block table.
//!
//! Used by the scheduler's tests and the property test (`tests/scheduler_props.rs`), and
//! available to engine tests that need a model without a model. Because the history is read
//! from the pool, a block handed to two sequences, a wrong block table or a stale resume shows
//! up as [`FakeWorkerError::KvCorrupted`] or as output that differs from an unpressured run.

use std::collections::HashMap;

use thiserror::Error;

use super::block_manager::BlockId;
use super::output::{SampledToken, SchedulerOutput, StepOutput};
use super::request::SeqId;

/// A step the fake worker could not run: the scheduler broke the step protocol.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FakeWorkerError {
    #[error("step {step}: sequence {seq}: {what}")]
    Protocol { step: u64, seq: SeqId, what: String },
    #[error(
        "step {step}: sequence {seq}: KV slot of position {pos} (block {block}) holds \
         {found:?}, expected token {expected}"
    )]
    KvCorrupted {
        step: u64,
        seq: SeqId,
        pos: usize,
        block: BlockId,
        found: Option<(SeqId, usize, u32)>,
        expected: u32,
    },
}

#[derive(Debug, Clone)]
struct WorkerSeq {
    tokens: Vec<u32>,
    num_computed: usize,
    /// Prompt tokens it started with in blocks another sequence computed (`num_computed` of
    /// its `NewRequest`).
    shared: usize,
    blocks: Vec<BlockId>,
}

/// The fake worker (see the module docs).
#[derive(Debug, Clone)]
pub struct FakeWorker {
    block_size: usize,
    vocab: u32,
    /// One slot per token position of the pool: `(seq, position, token)` written there.
    pool: Vec<Option<(SeqId, usize, u32)>>,
    seqs: HashMap<SeqId, WorkerSeq>,
    steps: u64,
}

impl FakeWorker {
    /// A worker with a pool of `num_blocks` blocks of `block_size` slots, sampling tokens in
    /// `0..vocab`.
    pub fn new(block_size: usize, num_blocks: usize, vocab: u32) -> Self {
        Self {
            block_size,
            vocab: vocab.max(1),
            pool: vec![None; block_size * num_blocks],
            seqs: HashMap::new(),
            steps: 0,
        }
    }

    /// The model: the next token after `history` (FNV-1a over the ids, modulo the vocabulary).
    pub fn next_token(vocab: u32, history: &[u32]) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &t in history {
            for b in t.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        (h % u64::from(vocab.max(1))) as u32
    }

    /// Sequences whose state the worker holds.
    pub fn num_seqs(&self) -> usize {
        self.seqs.len()
    }

    /// Steps run.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Runs one step.
    pub fn step(&mut self, out: &SchedulerOutput) -> Result<StepOutput, FakeWorkerError> {
        let step = out.step_id;
        self.steps += 1;
        let err = |seq: SeqId, what: &str| FakeWorkerError::Protocol {
            step,
            seq,
            what: what.to_string(),
        };
        for &seq in &out.finished_seq_ids {
            if self.seqs.remove(&seq).is_none() {
                return Err(err(seq, "finished but never sent"));
            }
        }
        let mut tokens = Vec::new();
        for r in &out.new_requests {
            if self.seqs.contains_key(&r.seq_id) {
                return Err(err(r.seq_id, "sent as new twice"));
            }
            self.seqs.insert(
                r.seq_id,
                WorkerSeq {
                    tokens: r.prompt_ids.clone(),
                    num_computed: r.num_computed as usize,
                    shared: r.num_computed as usize,
                    blocks: r.block_ids.clone(),
                },
            );
            self.run(step, r.seq_id, r.num_scheduled as usize, &mut tokens)?;
        }
        for r in &out.running {
            let Some(s) = self.seqs.get_mut(&r.seq_id) else {
                return Err(err(r.seq_id, "running but never sent as new"));
            };
            if r.resumed {
                s.tokens = r.resumed_token_ids.clone();
                s.num_computed = 0;
                s.shared = 0;
                s.blocks = r.new_block_ids.clone();
            } else {
                s.blocks.extend_from_slice(&r.new_block_ids);
            }
            self.run(step, r.seq_id, r.num_scheduled as usize, &mut tokens)?;
        }
        Ok(StepOutput {
            step_id: step,
            tokens,
            ..StepOutput::default()
        })
    }

    /// Computes `n` tokens of `seq`, and samples one if that reaches the end of its tokens.
    fn run(
        &mut self,
        step: u64,
        seq: SeqId,
        n: usize,
        sampled: &mut Vec<SampledToken>,
    ) -> Result<(), FakeWorkerError> {
        let bs = self.block_size;
        let s = self
            .seqs
            .get_mut(&seq)
            .expect("inserted or checked by the caller");
        let err = |what: String| FakeWorkerError::Protocol { step, seq, what };
        if n == 0 {
            return Err(err("scheduled 0 tokens".into()));
        }
        let end = s.num_computed + n;
        if end > s.tokens.len() {
            return Err(err(format!(
                "scheduled up to position {end} but knows {} tokens",
                s.tokens.len()
            )));
        }
        if end > s.blocks.len() * bs {
            return Err(err(format!(
                "{end} positions but {} blocks of {bs}",
                s.blocks.len()
            )));
        }
        for pos in s.num_computed..end {
            let slot = s.blocks[pos / bs] as usize * bs + pos % bs;
            let Some(cell) = self.pool.get_mut(slot) else {
                return Err(err(format!(
                    "block {} outside the pool",
                    s.blocks[pos / bs]
                )));
            };
            *cell = Some((seq, pos, s.tokens[pos]));
        }
        s.num_computed = end;
        if end < s.tokens.len() {
            return Ok(()); // mid-prefill: no sample
        }
        // Attention reads the whole history back through the block table.
        let mut history = Vec::with_capacity(end);
        for pos in 0..end {
            let block = s.blocks[pos / bs];
            let found = self.pool[block as usize * bs + pos % bs];
            match found {
                // Positions before `shared` were computed by the sequence it forked from.
                Some((fs, fp, ft))
                    if (fs == seq || pos < s.shared) && fp == pos && ft == s.tokens[pos] =>
                {
                    history.push(ft)
                }
                _ => {
                    return Err(FakeWorkerError::KvCorrupted {
                        step,
                        seq,
                        pos,
                        block,
                        found,
                        expected: s.tokens[pos],
                    })
                }
            }
        }
        let token_id = Self::next_token(self.vocab, &history);
        s.tokens.push(token_id);
        sampled.push(SampledToken {
            seq_id: seq,
            token_id,
        });
        Ok(())
    }
}
