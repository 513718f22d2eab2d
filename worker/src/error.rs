//! Errors of the worker: kernel failures, bad token ids, a full KV cache, bad sampling parameters.

use crate::collective::CollectiveError;
use crate::shard::ShardError;
use bitnet_kernels::KernelError;
use thiserror::Error;

/// A forward pass or a generation step could not run.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("kernel error: {0}")]
    Kernel(#[from] KernelError),
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("context of {needed} tokens exceeds the KV cache capacity of {capacity} tokens")]
    ContextFull { needed: usize, capacity: usize },
    #[error("step {step}: sequence {seq}: {what}")]
    Protocol { step: u64, seq: u64, what: String },
    #[error("KV pool: {0}")]
    KvLayout(String),
    #[error("invalid sampling parameter {name}: {message}")]
    Sampling { name: &'static str, message: String },
    #[error("collective error: {0}")]
    Collective(#[from] CollectiveError),
    #[error("cannot shard the model: {0}")]
    Shard(#[from] ShardError),
    /// A model or request a backend cannot run (e.g. a shape the CUDA kernels do not take).
    #[error("not supported: {0}")]
    Unsupported(String),
}
