//! `bitnet-worker`: one tensor-parallel rank: a whole model ([`Model`]) or a shard of it
//! ([`ShardedModel`]).
//!
//! - [`model`]: [`Model`], the forward pass of every family over a [`bitnet_kernels::Backend`].
//! - [`projection`]: how each [`bitnet_checkpoints::Projection`] variant is applied.
//! - [`kv_pool`]: [`KvPool`], the paged key/value store (blocks of [`BLOCK_SIZE`] tokens).
//! - [`kv_cache`]: [`KvCache`], one sequence's history in a private pool (offline paths).
//! - [`sampler`]: [`Sampler`], greedy and seeded temperature / top-k / top-p sampling.
//! - [`generator`]: [`Generator`], prefill then one-token decode steps for one prompt.
//! - [`synthetic`]: [`SyntheticSpec`], random-weight models of a given shape (demo, benchmarks).
//! - [`collective`]: the [`Collective`] seam (single rank, local threads, TCP ring).
//! - [`shard`]: [`ShardPlan`] cuts a model into a rank's [`ModelShard`] (Megatron-style).
//! - [`sharded_model`]: [`ShardedModel`], one rank's forward pass, bit-identical to [`Model`].
//! - [`sharded_generator`]: [`ShardedGenerator`], generation on one rank of a group.
//! - [`step_runner`]: [`StepRunner`], a rank's sequences and KV pool under the
//!   `bitnet.worker.v1` step protocol (served by the coordinator in process or by a worker).
//! - [`logprobs`]: [`TokenLogprobs`], log-softmax of the sampled token and the top-n.
//! - [`paged_generator`]: [`generate_paged`], one prompt on any [`PagedModel`] (the offline
//!   path of device models).
//! - `cuda` (feature `cuda`): `CudaModel`, the device-resident forward pass (weights, KV pool,
//!   activations and logits on one GPU, sampling there), driven by the same [`StepRunner`].
//!
//! Neighbours: weights come from `bitnet-checkpoints`, compute from `bitnet-kernels`; the
//! coordinator (`bitnet-cluster generate`) drives a [`Generator`] in process, and its
//! `cluster` module serves a [`ShardedModel`] as the `bitnet.worker.v1` gRPC service of a
//! `bitnet-cluster worker` process (it lives there because it also serves the demo model).

mod batch;
pub mod collective;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod generator;
mod kv_batch;
pub mod kv_cache;
pub mod kv_pool;
pub mod logprobs;
pub mod model;
pub mod paged_generator;
pub mod projection;
pub mod sampler;
pub mod shard;
pub mod sharded_generator;
pub mod sharded_model;
pub mod step_runner;
pub mod synthetic;

pub use collective::{
    Collective, CollectiveError, LocalCollective, LocalGroup, SingleRank, TcpRing, TcpRingConfig,
};
pub use error::WorkerError;
pub use generator::{Decoder, FinishReason, Generation, GenerationRequest, Generator};
pub use kv_cache::KvCache;
pub use kv_pool::{KvPool, BLOCK_SIZE};
pub use logprobs::{token_logprobs, TokenLogprobs};
pub use model::{ForwardOptions, ForwardOutput, Model, PagedChunk, QuantTrace, SequenceChunk};
pub use paged_generator::generate_paged;
pub use sampler::{Sampler, SamplingParams};
pub use shard::{ModelShard, ShardLayout, ShardPlan};
pub use sharded_generator::ShardedGenerator;
pub use sharded_model::ShardedModel;
pub use step_runner::{
    host_sample, sampling_params, PagedModel, SampleRequest, Sampled, StepReply, StepRunner,
    StepSamples,
};
pub use synthetic::SyntheticSpec;
