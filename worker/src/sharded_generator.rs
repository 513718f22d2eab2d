//! [`ShardedGenerator`]: one prompt on one rank of a tensor-parallel group — the
//! [`crate::Generator`] loop over a [`ShardedModel`], whose [`Decoder::pick`] has every rank
//! sample (keeping seeded streams in step) and takes rank 0's choice by broadcast, so all ranks
//! feed the same token to the next step even when sampling is random (no seed) or the logits
//! differ in the last bit (dense families). Every rank of the group must run the same job.

use crate::error::WorkerError;
use crate::generator::{Decoder, Generator};
use crate::kv_cache::KvCache;
use crate::model::{ForwardOptions, ForwardOutput};
use crate::sampler::Sampler;
use crate::sharded_model::ShardedModel;
use bitnet_kernels::Backend;

/// Runs generation jobs on one rank of a group.
pub type ShardedGenerator<'m, B> = Generator<'m, ShardedModel<B>>;

impl<B: Backend> Decoder for ShardedModel<B> {
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
    fn pick(&self, sampler: &mut Sampler, logits: &[f32]) -> Result<u32, WorkerError> {
        let mut token = [sampler.sample(logits)];
        self.collective().broadcast_u32(&mut token, 0)?;
        Ok(token[0])
    }
}
