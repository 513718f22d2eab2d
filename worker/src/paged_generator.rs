//! [`generate_paged`]: one prompt through any [`PagedModel`] over a private pool — batched
//! prefill, then one-token decode steps until `max_new_tokens`, an end-of-sequence id or a full
//! context, as [`crate::Generator`] does over a [`crate::KvCache`]. It is how a device model
//! (the CUDA model, whose pool and logits live on the GPU) runs `generate`: tokens are picked
//! by [`PagedModel::forward_sample`] (on the device there), except that a request keeping its
//! prompt logits gets them on the host and picks its first token from them with the CPU
//! sampler.

use crate::error::WorkerError;
use crate::generator::{FinishReason, Generation, GenerationRequest};
use crate::kv_pool::BLOCK_SIZE;
use crate::model::{ForwardOptions, PagedChunk};
use crate::sampler::Sampler;
use crate::step_runner::{host_sample, PagedModel, SampleRequest};
use std::time::Instant;

/// Runs `req` on `model`, whose context holds at most `max_positions` tokens.
pub fn generate_paged<M: PagedModel + ?Sized>(
    model: &M,
    max_positions: usize,
    req: &GenerationRequest,
) -> Result<Generation, WorkerError> {
    let mut sampler = Sampler::new(req.sampling)?;
    let prompt = &req.prompt_ids;
    let capacity = (prompt.len() + req.max_new_tokens).min(max_positions.max(prompt.len()));
    let blocks = capacity.div_ceil(BLOCK_SIZE).max(1);
    let mut pool = model.new_pool(blocks)?;
    let table: Vec<u32> = (0..blocks as u32).collect();
    let logprobs = req.logprobs;
    let picking = req.max_new_tokens > 0;

    let start = Instant::now();
    let chunk = [PagedChunk {
        tokens: prompt,
        block_table: &table,
        num_computed: 0,
    }];
    let (first, prompt_logits) = if req.keep_prompt_logits {
        let options = ForwardOptions {
            all_logits: true,
            trace_first_layer: false,
        };
        let out = model.forward_paged(&mut pool, &chunk, options)?;
        let mut picks = [SampleRequest {
            index: 0,
            sampler: &mut sampler,
            logprobs,
        }];
        let first = if picking {
            host_sample(&out, model.vocab(), &mut picks)?.pop()
        } else {
            None
        };
        (first, out.into_iter().next().map(|o| o.logits))
    } else {
        let mut picks = [SampleRequest {
            index: 0,
            sampler: &mut sampler,
            logprobs,
        }];
        let picks = if picking { &mut picks[..] } else { &mut [] };
        (
            model
                .forward_sample(&mut pool, &chunk, picks)?
                .sampled
                .pop(),
            None,
        )
    };
    let prefill_seconds = start.elapsed().as_secs_f64();

    let mut tokens = Vec::with_capacity(req.max_new_tokens);
    let mut lps = Vec::new();
    let mut finish_reason = FinishReason::Length;
    let start = Instant::now();
    let mut computed = prompt.len();
    if let Some(mut next) = first {
        loop {
            tokens.push(next.token);
            lps.extend(next.logprobs.take());
            if req.stop_ids.contains(&next.token) {
                finish_reason = FinishReason::Stop;
                break;
            }
            if tokens.len() >= req.max_new_tokens || computed >= capacity {
                break;
            }
            let token = [next.token];
            let chunk = [PagedChunk {
                tokens: &token,
                block_table: &table,
                num_computed: computed,
            }];
            let mut picks = [SampleRequest {
                index: 0,
                sampler: &mut sampler,
                logprobs,
            }];
            next = model
                .forward_sample(&mut pool, &chunk, &mut picks)?
                .sampled
                .pop()
                .ok_or_else(|| WorkerError::KvLayout("the model sampled no token".into()))?;
            computed += 1;
        }
    }
    Ok(Generation {
        token_ids: tokens,
        finish_reason,
        prompt_logits,
        logprobs: lps,
        prefill_seconds,
        decode_seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Generator, Model, SamplingParams, SyntheticSpec};
    use bitnet_kernels::CpuBackend;

    #[test]
    fn paged_generation_equals_the_cache_generator() {
        let weights = SyntheticSpec::demo(64).build();
        let model = Model::new(weights, CpuBackend::new(1));
        for (sampling, logprobs, keep) in [
            (SamplingParams::default(), None, false),
            (
                SamplingParams {
                    temperature: 0.8,
                    top_k: 5,
                    top_p: 0.9,
                    seed: Some(3),
                },
                Some(2),
                true,
            ),
        ] {
            let req = GenerationRequest {
                prompt_ids: vec![1, 5, 9, 2, 7],
                max_new_tokens: 12,
                sampling,
                stop_ids: vec![],
                keep_prompt_logits: keep,
                logprobs,
            };
            let want = Generator::new(&model).run(&req).unwrap();
            let got = generate_paged(&model, 2048, &req).unwrap();
            assert_eq!(got.token_ids, want.token_ids);
            assert_eq!(got.logprobs, want.logprobs);
            assert_eq!(got.prompt_logits, want.prompt_logits);
            assert_eq!(got.finish_reason, want.finish_reason);
        }
        // A context of 8 positions stops at 8 tokens, as the cache generator does.
        let req = GenerationRequest {
            prompt_ids: vec![1, 2, 3],
            max_new_tokens: 20,
            sampling: SamplingParams::default(),
            stop_ids: vec![],
            keep_prompt_logits: false,
            logprobs: None,
        };
        let got = generate_paged(&model, 8, &req).unwrap();
        assert_eq!(got.token_ids.len(), 6);
        assert!(generate_paged(
            &model,
            8,
            &GenerationRequest {
                prompt_ids: vec![1, 64],
                ..req
            }
        )
        .is_err());
    }
}
