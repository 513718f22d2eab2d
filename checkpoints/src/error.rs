//! Errors of checkpoint reading: every variant names the file or tensor and what was expected.

use thiserror::Error;

/// A checkpoint could not be read.
#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}
