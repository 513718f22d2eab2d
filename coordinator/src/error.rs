//! Errors of the coordinator library: tokenizer files, chat templates and generation input.

use thiserror::Error;

/// A tokenizer, template or generation request could not be used.
#[derive(Debug, Error)]
pub enum CoordinatorError {
    #[error("{path}: {message}")]
    TokenizerFile { path: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("server: {0}")]
    Server(String),
    #[error(transparent)]
    Checkpoint(#[from] bitnet_checkpoints::CheckpointError),
    #[error(transparent)]
    Worker(#[from] bitnet_worker::WorkerError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Ckpt(#[from] crate::ckpt::CkptError),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}
