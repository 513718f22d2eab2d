//! [`Generator`]: one prompt through a [`Model`] — batched prefill, then one-token decode steps
//! until `max_new_tokens` or an end-of-sequence id, with timings.

use crate::error::WorkerError;
use crate::model::{ForwardOptions, Model};
use crate::sampler::{Sampler, SamplingParams};
use bitnet_kernels::Backend;
use std::time::Instant;

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
}

/// The result of a generation job.
#[derive(Clone, Debug)]
pub struct Generation {
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prompt_logits: Option<Vec<f32>>,
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
pub struct Generator<'m, B: Backend> {
    model: &'m Model<B>,
}

impl<'m, B: Backend> Generator<'m, B> {
    /// A generator over `model`.
    pub fn new(model: &'m Model<B>) -> Self {
        Self { model }
    }

    /// Prefills the prompt, then decodes one token per step.
    pub fn run(&self, req: &GenerationRequest) -> Result<Generation, WorkerError> {
        let mut sampler = Sampler::new(req.sampling)?;
        let capacity = (req.prompt_ids.len() + req.max_new_tokens).min(
            self.model
                .config()
                .max_position_embeddings
                .max(req.prompt_ids.len()),
        );
        let mut cache = self.model.new_cache(capacity);
        let vocab = self.model.vocab_size();

        let start = Instant::now();
        let out = self.model.forward(
            &req.prompt_ids,
            &mut cache,
            ForwardOptions {
                all_logits: req.keep_prompt_logits,
                trace_first_layer: false,
            },
        )?;
        let prefill_seconds = start.elapsed().as_secs_f64();
        let last = &out.logits[out.logits.len() - vocab..];
        let prompt_logits = req.keep_prompt_logits.then_some(out.logits.clone());

        let mut tokens = Vec::with_capacity(req.max_new_tokens);
        let mut finish_reason = FinishReason::Length;
        let start = Instant::now();
        if req.max_new_tokens > 0 {
            let mut next = sampler.sample(last);
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
                    .forward(&[next], &mut cache, ForwardOptions::default())?;
                next = sampler.sample(&out.logits);
            }
        }
        Ok(Generation {
            token_ids: tokens,
            finish_reason,
            prompt_logits,
            prefill_seconds,
            decode_seconds: start.elapsed().as_secs_f64(),
        })
    }
}
