//! [`Executor`]: how a scheduled step reaches the model. [`InProcessExecutor`] runs it on a
//! [`Model`] in this process (tests, single-rank serving); `super::grpc_executor` fans the same
//! steps out to worker processes.
//!
//! The in-process executor keeps, per sequence, its tokens (prompt, then every sampled token),
//! how many are computed, a contiguous KV cache and its sampler. It follows the worker protocol
//! of `SchedulerOutput` exactly (the same one the scheduler's `FakeWorker` checks): new
//! sequences arrive with their prompt, running ones as deltas, a resumed (preempted) sequence
//! restarts from its prompt + output, and a token is sampled only when a sequence's computed
//! tokens reach the end of what it knows (the last prefill chunk, or a decode step). The block
//! ids only account capacity here: the contiguous caches hold the keys and values.

use crate::scheduler::{SampledToken, SchedulerOutput, SeqId, StepOutput};
use bitnet_kernels::Backend;
use bitnet_worker::{ForwardOptions, KvCache, Model, Sampler, SamplingParams, SequenceChunk};
use std::collections::HashMap;
use thiserror::Error;

/// A step could not be executed.
#[derive(Debug, Error)]
pub enum ExecutorError {
    #[error("step {step}: sequence {seq}: {what}")]
    Protocol { step: u64, seq: SeqId, what: String },
    /// A worker rank failed the step, or the ranks disagreed (the gRPC executor).
    #[error("step {step}: {message}")]
    Rank { step: u64, message: String },
    #[error("step {step}: {source}")]
    Worker {
        step: u64,
        source: bitnet_worker::WorkerError,
    },
}

/// Runs scheduled steps.
pub trait Executor: Send {
    /// Registers the sampling settings of a sequence before it is first scheduled.
    fn register(&mut self, seq: SeqId, sampling: SamplingParams) -> Result<(), ExecutorError>;
    /// Runs one step and returns the sampled tokens.
    fn step(&mut self, out: &SchedulerOutput) -> Result<StepOutput, ExecutorError>;
}

struct SeqState {
    tokens: Vec<u32>,
    computed: usize,
    cache: KvCache,
    sampler: Sampler,
}

/// Executes steps on an in-process [`Model`].
pub struct InProcessExecutor<B: Backend> {
    model: Model<B>,
    max_model_len: usize,
    samplers: HashMap<SeqId, Sampler>,
    seqs: HashMap<SeqId, SeqState>,
}

impl<B: Backend> InProcessExecutor<B> {
    /// An executor over `model` whose sequences never exceed `max_model_len` tokens.
    pub fn new(model: Model<B>, max_model_len: usize) -> Self {
        Self {
            model,
            max_model_len,
            samplers: HashMap::new(),
            seqs: HashMap::new(),
        }
    }

    /// The model.
    pub fn model(&self) -> &Model<B> {
        &self.model
    }

    fn new_state(
        &mut self,
        step: u64,
        seq: SeqId,
        tokens: Vec<u32>,
    ) -> Result<SeqState, ExecutorError> {
        let sampler = match self.samplers.get(&seq) {
            Some(s) => s.clone(),
            None => {
                return Err(ExecutorError::Protocol {
                    step,
                    seq,
                    what: "scheduled before its sampling settings were registered".into(),
                })
            }
        };
        Ok(SeqState {
            tokens,
            computed: 0,
            cache: self.model.new_cache(self.max_model_len),
            sampler,
        })
    }
}

impl<B: Backend> Executor for InProcessExecutor<B> {
    fn register(&mut self, seq: SeqId, sampling: SamplingParams) -> Result<(), ExecutorError> {
        let sampler =
            Sampler::new(sampling).map_err(|source| ExecutorError::Worker { step: 0, source })?;
        self.samplers.insert(seq, sampler);
        Ok(())
    }

    fn step(&mut self, out: &SchedulerOutput) -> Result<StepOutput, ExecutorError> {
        let step = out.step_id;
        for seq in &out.finished_seq_ids {
            self.seqs.remove(seq);
            self.samplers.remove(seq);
        }
        // Apply the deltas: who runs, and how many tokens each computes.
        let mut plan: Vec<(SeqId, usize)> = Vec::new();
        for r in &out.new_requests {
            let state = self.new_state(step, r.seq_id, r.prompt_ids.clone())?;
            self.seqs.insert(r.seq_id, state);
            plan.push((r.seq_id, r.num_computed as usize + r.num_scheduled as usize));
        }
        for r in &out.running {
            if r.resumed {
                // Recompute from prompt + output; the sampler keeps its random stream.
                let previous = self.seqs.remove(&r.seq_id).map(|s| s.sampler);
                let mut state = self.new_state(step, r.seq_id, r.resumed_token_ids.clone())?;
                if let Some(sampler) = previous {
                    state.sampler = sampler;
                }
                self.seqs.insert(r.seq_id, state);
            }
            let computed = match self.seqs.get(&r.seq_id) {
                Some(s) => s.computed,
                None => {
                    return Err(ExecutorError::Protocol {
                        step,
                        seq: r.seq_id,
                        what: "running but never sent as new".into(),
                    })
                }
            };
            plan.push((r.seq_id, computed + r.num_scheduled as usize));
        }
        if plan.is_empty() {
            return Ok(StepOutput {
                step_id: step,
                tokens: Vec::new(),
            });
        }
        // Check every range first, so a protocol error changes nothing.
        for &(seq, end) in &plan {
            let s = &self.seqs[&seq];
            if end <= s.computed || end > s.tokens.len() {
                return Err(ExecutorError::Protocol {
                    step,
                    seq,
                    what: format!(
                        "asked to compute up to {end} with {} computed of {} known tokens",
                        s.computed,
                        s.tokens.len()
                    ),
                });
            }
        }
        // One batched forward over every scheduled sequence.
        let ends: HashMap<SeqId, usize> = plan.iter().copied().collect();
        let mut order: Vec<SeqId> = Vec::with_capacity(plan.len());
        let mut chunks: Vec<SequenceChunk> = Vec::with_capacity(plan.len());
        for (seq, state) in self.seqs.iter_mut() {
            if let Some(&end) = ends.get(seq) {
                order.push(*seq);
                chunks.push(SequenceChunk {
                    tokens: &state.tokens[state.computed..end],
                    cache: &mut state.cache,
                });
            }
        }
        let outputs = self
            .model
            .forward_batch(&mut chunks, ForwardOptions::default())
            .map_err(|source| ExecutorError::Worker { step, source })?;
        drop(chunks);
        let vocab = self.model.vocab_size();
        let mut tokens = Vec::new();
        for (seq, output) in order.iter().zip(outputs) {
            let state = self.seqs.get_mut(seq).expect("scheduled sequences exist");
            state.computed = ends[seq];
            if state.computed == state.tokens.len() {
                let last = &output.logits[output.logits.len() - vocab..];
                let token_id = state.sampler.sample(last);
                state.tokens.push(token_id);
                tokens.push(SampledToken {
                    seq_id: *seq,
                    token_id,
                });
            }
        }
        Ok(StepOutput {
            step_id: step,
            tokens,
        })
    }
}
