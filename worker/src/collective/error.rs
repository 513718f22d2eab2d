//! [`CollectiveError`]: why a collective operation failed (a peer timed out, disconnected, sent
//! something unexpected, or the group was misconfigured). Used by every [`super::Collective`].

use std::time::Duration;
use thiserror::Error;

/// A collective operation could not complete. After any error the group is broken: later
/// operations on the same handle fail too (peers see the failure as a disconnect).
#[derive(Debug, Error)]
pub enum CollectiveError {
    #[error("rank {rank}: {op} timed out after {timeout:?} waiting for rank {peer}")]
    Timeout {
        rank: usize,
        peer: usize,
        op: &'static str,
        timeout: Duration,
    },
    #[error("rank {rank}: rank {peer} disconnected during {op}")]
    Disconnected {
        rank: usize,
        peer: usize,
        op: &'static str,
    },
    #[error("rank {rank}: {op} received {got} from rank {peer}")]
    Protocol {
        rank: usize,
        peer: usize,
        op: &'static str,
        got: String,
    },
    #[error("rank {rank}: {op} buffer of {expected} bytes, but rank {peer} sent {got}")]
    LengthMismatch {
        rank: usize,
        peer: usize,
        op: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("rank {rank}: I/O error with rank {peer} during {op}: {source}")]
    Io {
        rank: usize,
        peer: usize,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("rank {rank}: the group is broken by an earlier failure ({op} refused)")]
    Broken { rank: usize, op: &'static str },
    #[error("rank {rank}: {op} did not complete within {timeout:?} ({detail})")]
    Stuck {
        rank: usize,
        op: &'static str,
        timeout: Duration,
        detail: String,
    },
    #[error("rank {rank}: {op} failed on the device: {reason}")]
    Device {
        rank: usize,
        op: &'static str,
        reason: String,
    },
    #[error("invalid collective group: {0}")]
    Config(String),
}
