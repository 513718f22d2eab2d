//! `bitnet-worker`: one tensor-parallel rank (today: the whole model on one rank).
//!
//! - [`model`]: [`Model`], the forward pass of every family over a [`bitnet_kernels::Backend`].
//! - [`projection`]: how each [`bitnet_checkpoints::Projection`] variant is applied.
//! - [`kv_cache`]: [`KvCache`], the contiguous per-sequence key/value cache.
//! - [`sampler`]: [`Sampler`], greedy and seeded temperature / top-k / top-p sampling.
//! - [`generator`]: [`Generator`], prefill then one-token decode steps for one prompt.
//! - [`synthetic`]: [`SyntheticSpec`], random-weight models of a given shape (demo, benchmarks).
//!
//! Neighbours: weights come from `bitnet-checkpoints`, compute from `bitnet-kernels`; the
//! coordinator (`bitnet-cluster generate`) drives a [`Generator`] in process. The cluster issue
//! adds the paged cache, sharding, collectives and the worker gRPC service.

pub mod error;
pub mod generator;
pub mod kv_cache;
pub mod model;
pub mod projection;
pub mod sampler;
pub mod synthetic;

pub use error::WorkerError;
pub use generator::{FinishReason, Generation, GenerationRequest, Generator};
pub use kv_cache::KvCache;
pub use model::{ForwardOptions, ForwardOutput, Model, QuantTrace, SequenceChunk};
pub use sampler::{Sampler, SamplingParams};
pub use synthetic::SyntheticSpec;
