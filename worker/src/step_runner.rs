//! [`StepRunner`]: what one rank holds between the steps of the `bitnet.worker.v1` protocol —
//! its paged [`KvPool`] and, per sequence, the known tokens, how many are computed, the block
//! table and the sampler — and how it runs one `StepRequest`.
//!
//! The protocol (the coordinator's scheduler decides everything; the runner follows): finished
//! sequences are dropped; new sequences arrive with their prompt, their first `num_computed`
//! tokens already in the first blocks of their table (shared blocks, e.g. the prompt of a
//! sibling sample), and a chunk to compute; running sequences arrive as deltas (tokens to
//! compute, blocks to append); a resumed (preempted) sequence restarts from prompt + output with
//! a new table, keeping its sampler. One batched [`PagedModel::forward_sample`] runs every chunk
//! and, for each sequence whose computed tokens reach the end of what it knows, samples its next
//! token (and its logprobs when asked): on the host from the returned logits by default
//! ([`host_sample`]), on the device for a device model (only ids and logprobs come back). On a
//! tensor-parallel group every rank samples (so seeded streams stay in step) and
//! [`PagedModel::agree`] makes rank 0's tokens everyone's (the logprobs reported are rank 0's).
//!
//! Used by the coordinator's in-process executor (one [`crate::Model`], or the CUDA model) and
//! by each `bitnet-cluster worker` process (one [`ShardedModel`] rank, or its CUDA model).

use crate::error::WorkerError;
use crate::kv_pool::KvPool;
use crate::logprobs::{token_logprobs, TokenLogprobs};
use crate::model::{ForwardOptions, ForwardOutput, Model, PagedChunk};
use crate::sampler::{Sampler, SamplingParams};
use crate::sharded_model::ShardedModel;
use bitnet_kernels::Backend;
use bitnet_proto::worker::{SampledToken, SamplingState, StepRequest, StepTimings};
use std::collections::HashMap;
use std::time::Instant;

/// A sequence of a forward pass that picks its next token from its last logits.
pub struct SampleRequest<'a> {
    /// The sequence's index in the batch.
    pub index: usize,
    /// Its sampler (the random stream advances by the draws it makes).
    pub sampler: &'a mut Sampler,
    /// Top-n logprobs to return with the token (`None`: none).
    pub logprobs: Option<usize>,
}

/// The token a sequence picked and, when asked, its logprobs.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
}

/// The tokens of one [`PagedModel::forward_sample`] and the milliseconds spent sampling.
#[derive(Clone, Debug, Default)]
pub struct StepSamples {
    pub sampled: Vec<Sampled>,
    pub sample_ms: f64,
}

/// What the runner needs of a model.
pub trait PagedModel {
    /// See [`Model::forward_paged`]: the logits come back to the host.
    fn forward_paged(
        &self,
        pool: &mut KvPool,
        batch: &[PagedChunk<'_>],
        options: ForwardOptions,
    ) -> Result<Vec<ForwardOutput>, WorkerError>;
    /// Rows of the LM head.
    fn vocab(&self) -> usize;
    /// An empty KV pool of `num_blocks` blocks for this model (a device model's lives on its
    /// device).
    fn new_pool(&self, num_blocks: usize) -> Result<KvPool, WorkerError>;
    /// Runs the batch like [`PagedModel::forward_paged`] and picks the next token of every
    /// sequence of `picks` (in that order). The default samples the host logits with each
    /// request's [`Sampler`] ([`host_sample`]); a device model samples where the logits are.
    fn forward_sample(
        &self,
        pool: &mut KvPool,
        batch: &[PagedChunk<'_>],
        picks: &mut [SampleRequest<'_>],
    ) -> Result<StepSamples, WorkerError> {
        let outputs = self.forward_paged(pool, batch, ForwardOptions::default())?;
        let started = Instant::now();
        let sampled = host_sample(&outputs, self.vocab(), picks)?;
        Ok(StepSamples {
            sampled,
            sample_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
    /// Makes every rank of the group hold the same sampled tokens (rank 0's).
    fn agree(&self, _tokens: &mut [u32]) -> Result<(), WorkerError> {
        Ok(())
    }
}

/// Samples each request's token from the last logits row of its sequence in `outputs` (and
/// computes its logprobs when asked).
pub fn host_sample(
    outputs: &[ForwardOutput],
    vocab: usize,
    picks: &mut [SampleRequest<'_>],
) -> Result<Vec<Sampled>, WorkerError> {
    picks
        .iter_mut()
        .map(|p| {
            let logits = outputs
                .get(p.index)
                .map(|o| &o.logits[..])
                .filter(|l| l.len() >= vocab && vocab > 0)
                .ok_or_else(|| {
                    WorkerError::KvLayout(format!(
                        "no logits row of {vocab} for sequence {} of the batch",
                        p.index
                    ))
                })?;
            let row = &logits[logits.len() - vocab..];
            let token = p.sampler.sample(row);
            Ok(Sampled {
                token,
                logprobs: p.logprobs.map(|n| token_logprobs(row, token, n)),
            })
        })
        .collect()
}

impl<B: Backend> PagedModel for Model<B> {
    fn forward_paged(
        &self,
        pool: &mut KvPool,
        batch: &[PagedChunk<'_>],
        options: ForwardOptions,
    ) -> Result<Vec<ForwardOutput>, WorkerError> {
        Model::forward_paged(self, pool, batch, options)
    }
    fn vocab(&self) -> usize {
        self.vocab_size()
    }
    fn new_pool(&self, num_blocks: usize) -> Result<KvPool, WorkerError> {
        Model::new_pool(self, num_blocks)
    }
}

impl<B: Backend> PagedModel for ShardedModel<B> {
    fn forward_paged(
        &self,
        pool: &mut KvPool,
        batch: &[PagedChunk<'_>],
        options: ForwardOptions,
    ) -> Result<Vec<ForwardOutput>, WorkerError> {
        ShardedModel::forward_paged(self, pool, batch, options)
    }
    fn vocab(&self) -> usize {
        self.vocab_size()
    }
    fn new_pool(&self, num_blocks: usize) -> Result<KvPool, WorkerError> {
        ShardedModel::new_pool(self, num_blocks)
    }
    fn agree(&self, tokens: &mut [u32]) -> Result<(), WorkerError> {
        Ok(self.collective().broadcast_u32(tokens, 0)?)
    }
}

/// The sampler settings of a wire `SamplingState` (absent: greedy with seed 0).
pub fn sampling_params(state: Option<&SamplingState>) -> SamplingParams {
    match state {
        Some(s) => SamplingParams {
            temperature: s.temperature,
            top_k: s.top_k as usize,
            top_p: s.top_p,
            seed: Some(s.seed),
        },
        None => SamplingParams {
            seed: Some(0),
            ..SamplingParams::default()
        },
    }
}

struct Seq {
    tokens: Vec<u32>,
    computed: usize,
    blocks: Vec<u32>,
    sampler: Sampler,
    /// Top-n logprobs to return with each sampled token (`None`: no logprobs).
    logprobs: Option<u32>,
}

/// The answer to one step.
#[derive(Clone, Debug, Default)]
pub struct StepReply {
    pub tokens: Vec<SampledToken>,
    pub timings: StepTimings,
}

/// One rank's sequences and KV pool (see the module docs).
pub struct StepRunner {
    pool: KvPool,
    seqs: HashMap<u64, Seq>,
    max_model_len: usize,
}

fn protocol(step: u64, seq: u64, what: impl Into<String>) -> WorkerError {
    WorkerError::Protocol {
        step,
        seq,
        what: what.into(),
    }
}

impl StepRunner {
    /// A runner over `pool` whose sequences never exceed `max_model_len` tokens.
    pub fn new(pool: KvPool, max_model_len: usize) -> Self {
        Self {
            pool,
            seqs: HashMap::new(),
            max_model_len,
        }
    }

    /// The KV pool.
    pub fn pool(&self) -> &KvPool {
        &self.pool
    }

    /// Sequences held (new or running, not yet finished).
    pub fn num_seqs(&self) -> usize {
        self.seqs.len()
    }

    /// Whether sequence `seq` is held.
    pub fn contains(&self, seq: u64) -> bool {
        self.seqs.contains_key(&seq)
    }

    /// Applies the step's deltas; returns, in batch order, each scheduled sequence and the
    /// token count it will have computed after the step.
    fn apply(&mut self, req: &StepRequest) -> Result<Vec<(u64, usize)>, WorkerError> {
        let step = req.step_id;
        for seq in &req.finished_seq_ids {
            self.seqs.remove(seq);
        }
        let mut plan = Vec::with_capacity(req.new_requests.len() + req.running.len());
        for r in &req.new_requests {
            if self.seqs.contains_key(&r.seq_id) {
                return Err(protocol(step, r.seq_id, "sent as new twice"));
            }
            let sampler = Sampler::new(sampling_params(r.sampling.as_ref()))?;
            if r.prompt_ids.len() > self.max_model_len {
                return Err(protocol(step, r.seq_id, "prompt longer than max_model_len"));
            }
            let computed = r.num_computed as usize;
            self.seqs.insert(
                r.seq_id,
                Seq {
                    tokens: r.prompt_ids.clone(),
                    computed,
                    blocks: r.block_ids.clone(),
                    sampler,
                    logprobs: r.sampling.as_ref().and_then(|s| s.logprobs),
                },
            );
            plan.push((r.seq_id, computed + r.num_scheduled as usize));
        }
        for r in &req.running {
            let s = self
                .seqs
                .get_mut(&r.seq_id)
                .ok_or_else(|| protocol(step, r.seq_id, "running but never sent as new"))?;
            if r.resumed {
                tracing::debug!(
                    step,
                    seq = r.seq_id,
                    "resumed after a preemption: recompute"
                );
                s.tokens.clone_from(&r.resumed_token_ids);
                s.computed = 0;
                s.blocks.clone_from(&r.new_block_ids);
            } else {
                s.blocks.extend_from_slice(&r.new_block_ids);
            }
            plan.push((r.seq_id, s.computed + r.num_scheduled as usize));
        }
        for &(seq, end) in &plan {
            let s = &self.seqs[&seq];
            if end <= s.computed || end > s.tokens.len() || end > self.max_model_len {
                return Err(protocol(
                    step,
                    seq,
                    format!(
                        "asked to compute up to {end} with {} computed of {} known tokens",
                        s.computed,
                        s.tokens.len()
                    ),
                ));
            }
        }
        Ok(plan)
    }

    /// Runs one step on `model` (every rank of a group runs the same step).
    pub fn step<M: PagedModel + ?Sized>(
        &mut self,
        model: &M,
        req: &StepRequest,
    ) -> Result<StepReply, WorkerError> {
        let plan = self.apply(req)?;
        if plan.is_empty() {
            return Ok(StepReply::default());
        }
        let started = Instant::now();
        // Sequences that reach the end of what they know pick a token; their samplers are
        // worked on as copies and written back only when the step succeeds.
        let due: Vec<(u64, usize)> = plan
            .iter()
            .enumerate()
            .filter(|(_, (seq, end))| *end == self.seqs[seq].tokens.len())
            .map(|(i, &(seq, _))| (seq, i))
            .collect();
        let mut samplers: Vec<Sampler> = due
            .iter()
            .map(|(seq, _)| self.seqs[seq].sampler.clone())
            .collect();
        let chunks: Vec<PagedChunk> = plan
            .iter()
            .map(|(seq, end)| {
                let s = &self.seqs[seq];
                PagedChunk {
                    tokens: &s.tokens[s.computed..*end],
                    block_table: &s.blocks,
                    num_computed: s.computed,
                }
            })
            .collect();
        let mut picks: Vec<SampleRequest> = due
            .iter()
            .zip(samplers.iter_mut())
            .map(|(&(seq, i), sampler)| SampleRequest {
                index: i,
                sampler,
                logprobs: self.seqs[&seq].logprobs.map(|n| n as usize),
            })
            .collect();
        let samples = model.forward_sample(&mut self.pool, &chunks, &mut picks)?;
        drop((chunks, picks));
        if samples.sampled.len() != due.len() {
            return Err(protocol(
                req.step_id,
                due.first().map_or(0, |d| d.0),
                format!(
                    "the model sampled {} tokens for {} sequences",
                    samples.sampled.len(),
                    due.len()
                ),
            ));
        }
        let sample_ms = samples.sample_ms;
        let forward_ms = started.elapsed().as_secs_f64() * 1e3 - sample_ms;
        for &(seq, end) in &plan {
            let s = self.seqs.get_mut(&seq).expect("planned sequences exist");
            s.computed = end;
        }
        for ((seq, _), sampler) in due.iter().zip(samplers) {
            self.seqs
                .get_mut(seq)
                .expect("planned sequences exist")
                .sampler = sampler;
        }
        let mut ids: Vec<u32> = samples.sampled.iter().map(|s| s.token).collect();
        let started = Instant::now();
        model.agree(&mut ids)?;
        let collective_ms = started.elapsed().as_secs_f64() * 1e3;

        let mut tokens = Vec::with_capacity(ids.len());
        for ((&(seq, _), &token_id), sampled) in due.iter().zip(&ids).zip(samples.sampled) {
            let s = self.seqs.get_mut(&seq).expect("planned sequences exist");
            s.tokens.push(token_id);
            let mut out = SampledToken {
                seq_id: seq,
                token_id,
                ..Default::default()
            };
            if let Some(lp) = sampled.logprobs {
                out.logprob = lp.logprob;
                (out.top_ids, out.top_logprobs) = lp.top.into_iter().unzip();
            }
            tokens.push(out);
        }
        Ok(StepReply {
            tokens,
            timings: StepTimings {
                forward_ms,
                collective_ms,
                sample_ms,
            },
        })
    }
}
