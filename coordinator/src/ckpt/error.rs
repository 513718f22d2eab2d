//! [`CkptError`]: why `ckpt compress` / `ckpt verify` failed — one readable line each.

use thiserror::Error;

/// A compression or verification could not be done.
#[derive(Debug, Error)]
pub enum CkptError {
    /// Reading the input, writing the output, or checking it failed.
    #[error(transparent)]
    Checkpoint(#[from] bitnet_checkpoints::CheckpointError),
    /// The chosen format cannot hold a part of the model.
    #[error("{0}")]
    Export(#[from] bitnet_checkpoints::export::ExportError),
    /// The model cannot be split for `--tp`.
    #[error("--tp: {0}")]
    Shard(#[from] bitnet_worker::shard::ShardError),
    /// The options do not fit the input.
    #[error("{0}")]
    Options(String),
}
