//! [`ShardedGenerator`]: one prompt on one rank of a tensor-parallel group — the same loop as
//! [`crate::Generator`], with every sampled token decided by rank 0 and broadcast, so all
//! ranks feed the same token to the next step even when sampling is random (no seed) or the
//! logits differ in the last bit (dense families).

use crate::error::WorkerError;
use crate::generator::{FinishReason, Generation, GenerationRequest};
use crate::model::ForwardOptions;
use crate::sampler::Sampler;
use crate::sharded_model::ShardedModel;
use bitnet_kernels::Backend;
use std::time::Instant;

/// Runs generation jobs on one rank; every rank of the group must run the same job.
pub struct ShardedGenerator<'m, B: Backend> {
    model: &'m ShardedModel<B>,
}

impl<'m, B: Backend> ShardedGenerator<'m, B> {
    /// A generator over one rank's model.
    pub fn new(model: &'m ShardedModel<B>) -> Self {
        Self { model }
    }

    /// Prefills the prompt, then decodes one token per step; returns the same tokens on every
    /// rank.
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
        let last = &out.logits[out.logits.len().saturating_sub(vocab)..];
        let prompt_logits = req.keep_prompt_logits.then_some(out.logits.clone());

        let mut tokens = Vec::with_capacity(req.max_new_tokens);
        let mut finish_reason = FinishReason::Length;
        let start = Instant::now();
        if req.max_new_tokens > 0 {
            let mut next = self.sample(&mut sampler, last)?;
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
                next = self.sample(&mut sampler, &out.logits)?;
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

    /// Every rank samples (keeping seeded streams in step); rank 0's choice is broadcast.
    fn sample(&self, sampler: &mut Sampler, logits: &[f32]) -> Result<u32, WorkerError> {
        let mut token = [sampler.sample(logits)];
        self.model.collective().broadcast_u32(&mut token, 0)?;
        Ok(token[0])
    }
}
