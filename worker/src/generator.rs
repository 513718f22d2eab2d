//! [`Generator`]: one prompt through a model — batched prefill, then one-token decode steps
//! until `max_new_tokens` or an end-of-sequence id, with timings. The model is anything that
//! implements [`Decoder`]: a whole [`Model`], or one rank of a tensor-parallel group
//! (`ShardedModel`, whose `pick` makes the whole group agree on each token).

use crate::error::WorkerError;
use crate::kv_cache::KvCache;
use crate::logprobs::{token_logprobs, TokenLogprobs};
use crate::model::{ForwardOptions, ForwardOutput, Model};
use crate::sampler::{Sampler, SamplingParams};
use bitnet_kernels::Backend;
use std::time::Instant;

/// What a [`Generator`] needs from a model.
pub trait Decoder {
    /// Runs the next tokens of the sequence held by `cache`.
    fn decode(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        options: ForwardOptions,
    ) -> Result<ForwardOutput, WorkerError>;
    /// An empty cache for `capacity` tokens.
    fn empty_cache(&self, capacity: usize) -> KvCache;
    /// Rows of the LM head.
    fn vocab(&self) -> usize;
    /// The model's context length.
    fn max_positions(&self) -> usize;
    /// Picks the next token from one row of logits.
    fn pick(&self, sampler: &mut Sampler, logits: &[f32]) -> Result<u32, WorkerError> {
        Ok(sampler.sample(logits))
    }
}

impl<B: Backend> Decoder for Model<B> {
    fn decode(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        options: ForwardOptions,
    ) -> Result<ForwardOutput, WorkerError> {
        self.forward(tokens, cache, options)
    }
    fn empty_cache(&self, capacity: usize) -> KvCache {
        self.new_cache(capacity)
    }
    fn vocab(&self) -> usize {
        self.vocab_size()
    }
    fn max_positions(&self) -> usize {
        self.config().max_position_embeddings
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence id was produced.
    Stop,
    /// `max_new_tokens` were produced (or the context is full).
    Length,
}

impl FinishReason {
    /// The wire spelling ("stop", "length").
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// One generation job.
#[derive(Clone, Debug)]
pub struct GenerationRequest {
    pub prompt_ids: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Ids that end generation (kept in the output).
    pub stop_ids: Vec<u32>,
    /// Also return the logits of every prompt position (`prompt_len × vocab`).
    pub keep_prompt_logits: bool,
    /// Return each generated token's logprob and this many top alternatives (`None`: none).
    pub logprobs: Option<usize>,
}

/// The result of a generation job.
#[derive(Clone, Debug)]
pub struct Generation {
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prompt_logits: Option<Vec<f32>>,
    /// One entry per generated token when the request asked for logprobs.
    pub logprobs: Vec<TokenLogprobs>,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

impl Generation {
    /// Prompt tokens processed per second of prefill.
    pub fn prefill_tokens_per_s(&self, prompt_len: usize) -> f64 {
        rate(prompt_len, self.prefill_seconds)
    }

    /// Decode steps per second (the first token comes from prefill).
    pub fn decode_tokens_per_s(&self) -> f64 {
        rate(self.token_ids.len().saturating_sub(1), self.decode_seconds)
    }
}

fn rate(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Runs generation jobs on a model.
pub struct Generator<'m, M: Decoder> {
    model: &'m M,
}

impl<'m, M: Decoder> Generator<'m, M> {
    /// A generator over `model`.
    pub fn new(model: &'m M) -> Self {
        Self { model }
    }

    /// Prefills the prompt, then decodes one token per step. Every rank of a group running the
    /// same job gets the same tokens.
    pub fn run(&self, req: &GenerationRequest) -> Result<Generation, WorkerError> {
        let mut sampler = Sampler::new(req.sampling)?;
        let capacity = (req.prompt_ids.len() + req.max_new_tokens)
            .min(self.model.max_positions().max(req.prompt_ids.len()));
        let mut cache = self.model.empty_cache(capacity);
        let vocab = self.model.vocab();

        let start = Instant::now();
        let out = self.model.decode(
            &req.prompt_ids,
            &mut cache,
            ForwardOptions {
                all_logits: req.keep_prompt_logits,
                trace_first_layer: false,
            },
        )?;
        let prefill_seconds = start.elapsed().as_secs_f64();
        let last = &out.logits[out.logits.len().saturating_sub(vocab)..];
        let prompt_logits = req.keep_prompt_logits.then_some(out.logits.clone());

        let mut tokens = Vec::with_capacity(req.max_new_tokens);
        let mut logprobs = Vec::new();
        let mut finish_reason = FinishReason::Length;
        let start = Instant::now();
        if req.max_new_tokens > 0 {
            let mut next = self.model.pick(&mut sampler, last)?;
            if let Some(n) = req.logprobs {
                logprobs.push(token_logprobs(last, next, n));
            }
            loop {
                tokens.push(next);
                if req.stop_ids.contains(&next) {
                    finish_reason = FinishReason::Stop;
                    break;
                }
                if tokens.len() >= req.max_new_tokens || cache.len() >= cache.capacity() {
                    break;
                }
                let out = self
                    .model
                    .decode(&[next], &mut cache, ForwardOptions::default())?;
                next = self.model.pick(&mut sampler, &out.logits)?;
                if let Some(n) = req.logprobs {
                    logprobs.push(token_logprobs(&out.logits, next, n));
                }
            }
        }
        Ok(Generation {
            token_ids: tokens,
            finish_reason,
            prompt_logits,
            logprobs,
            prefill_seconds,
            decode_seconds: start.elapsed().as_secs_f64(),
        })
    }
}
