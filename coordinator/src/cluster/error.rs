//! [`ClusterError`]: what can go wrong between the coordinator and its worker processes, and the
//! one place (`impl From<ClusterError> for tonic::Status`) where a worker's failures become gRPC
//! status codes.

use thiserror::Error;

/// A worker could not be started, driven or answered.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The call does not fit the worker's state (no model loaded, collective not joined...).
    #[error("{0}")]
    State(String),
    /// A step broke the worker protocol (a running sequence never sent as new...).
    #[error("step {step}: sequence {seq}: {what}")]
    Protocol { step: u64, seq: u64, what: String },
    #[error(transparent)]
    Worker(#[from] bitnet_worker::WorkerError),
    #[error("collective: {0}")]
    Collective(#[from] bitnet_worker::CollectiveError),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error(transparent)]
    Checkpoint(#[from] bitnet_checkpoints::CheckpointError),
    /// Loading the model failed for another reason (the demo tokenizer...).
    #[error("loading the model: {0}")]
    Load(String),
    /// A call to a worker failed.
    #[error("worker {rank}: {what}: {status}")]
    Rpc {
        rank: usize,
        what: &'static str,
        status: tonic::Status,
    },
    /// Starting, connecting or stopping the worker processes failed.
    #[error("launcher: {0}")]
    Launch(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl From<ClusterError> for tonic::Status {
    fn from(e: ClusterError) -> Self {
        let message = e.to_string();
        match e {
            ClusterError::State(_) => tonic::Status::failed_precondition(message),
            ClusterError::Protocol { .. }
            | ClusterError::Worker(bitnet_worker::WorkerError::Protocol { .. }) => {
                tonic::Status::invalid_argument(message)
            }
            ClusterError::Worker(bitnet_worker::WorkerError::Sampling { .. })
            | ClusterError::Worker(bitnet_worker::WorkerError::Shard(_)) => {
                tonic::Status::invalid_argument(message)
            }
            ClusterError::Checkpoint(_) | ClusterError::Load(_) | ClusterError::Device(_) => {
                tonic::Status::failed_precondition(message)
            }
            ClusterError::Collective(_) => tonic::Status::unavailable(message),
            ClusterError::Rpc { status, .. } => status,
            _ => tonic::Status::internal(message),
        }
    }
}
