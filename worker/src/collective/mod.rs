//! The [`Collective`] seam: how the ranks of one tensor-parallel group exchange data.
//!
//! A rank's forward pass (`crate::sharded_model`) calls the typed operations (all-reduce of i32
//! partial sums, all-gather of activations, broadcast of sampled tokens, barrier). Every
//! implementation provides one primitive, [`Collective::exchange`] (an all-gather of byte
//! buffers with a deadline); the typed operations are built on it and reduce in rank order, so
//! every rank gets bit-identical results. Implementations:
//!
//! - [`SingleRank`] (`single.rs`): a group of one, every operation a no-op;
//! - [`LocalGroup`] / [`LocalCollective`] (`local.rs`): N ranks as threads of one process (tests);
//! - [`TcpRing`] (`tcp.rs`): ranks in separate processes or hosts, a ring of TCP connections;
//! - `HostStaged` (`staged.rs`, feature `cuda`): device buffers copied to the host, reduced by
//!   any of the above (the TCP ring between processes), copied back: TP = 2 on one GPU, which
//!   NCCL refuses;
//! - `NcclCollective` (`nccl.rs`, feature `nccl`): NCCL on the worker's compute stream, every
//!   step under a deadline (a stuck step aborts the communicator and returns an error).
//!
//! The two GPU ones also implement `DeviceCollective` (`device.rs`): the reductions on device
//! buffers, which a device-resident forward pass calls.

#[cfg(feature = "cuda")]
mod device;
mod error;
mod local;
#[cfg(feature = "nccl")]
mod nccl;
mod single;
#[cfg(feature = "cuda")]
mod staged;
mod tcp;

pub use error::CollectiveError;
pub use local::{LocalCollective, LocalGroup};
#[cfg(feature = "nccl")]
pub use nccl::{NcclCollective, NCCL_ID_BYTES};
pub use single::SingleRank;
pub use tcp::{TcpRing, TcpRingConfig};
#[cfg(feature = "cuda")]
pub use {device::DeviceCollective, staged::HostStaged};

use std::time::Duration;

/// Default deadline of one collective operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which operation a message belongs to; every rank must call the same operations in the same
/// order, and a mismatch is reported as a protocol error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    SumI32 = 1,
    SumF32 = 2,
    MaxF32 = 3,
    GatherF32 = 4,
    BroadcastU32 = 5,
    Barrier = 6,
}

impl Op {
    /// The operation's name in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Op::SumI32 => "all_reduce_sum_i32",
            Op::SumF32 => "all_reduce_sum_f32",
            Op::MaxF32 => "all_reduce_max_f32",
            Op::GatherF32 => "all_gather_f32",
            Op::BroadcastU32 => "broadcast_u32",
            Op::Barrier => "barrier",
        }
    }

    /// The operation with wire tag `tag`.
    pub fn from_tag(tag: u8) -> Option<Op> {
        [
            Op::SumI32,
            Op::SumF32,
            Op::MaxF32,
            Op::GatherF32,
            Op::BroadcastU32,
            Op::Barrier,
        ]
        .into_iter()
        .find(|op| *op as u8 == tag)
    }
}

/// The communication of one rank with the other ranks of its tensor-parallel group.
///
/// Every call has a deadline: a peer that died or stopped answering makes the call fail with a
/// [`CollectiveError`] instead of hanging. Reductions combine contributions in rank order on
/// every rank, so all ranks hold bit-identical results.
pub trait Collective: Send + Sync {
    /// This rank, `0 .. world_size`.
    fn rank(&self) -> usize;

    /// Ranks in the group.
    fn world_size(&self) -> usize;

    /// Sends `data` to every rank and returns every rank's data in rank order (this rank's
    /// own included). The building block of every other operation.
    fn exchange(&self, op: Op, data: Vec<u8>) -> Result<Vec<Vec<u8>>, CollectiveError>;

    /// `buf[i] = Σ_ranks buf[i]` (wrapping i32 addition, exact).
    fn all_reduce_sum_i32(&self, buf: &mut [i32]) -> Result<(), CollectiveError> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let parts = self.exchange(Op::SumI32, encode(buf, i32::to_le_bytes))?;
        check_lengths(self.rank(), Op::SumI32, &parts)?;
        buf.fill(0);
        for part in &parts {
            for (b, v) in buf.iter_mut().zip(decode(part, i32::from_le_bytes)) {
                *b = b.wrapping_add(v);
            }
        }
        Ok(())
    }

    /// `buf[i] = Σ_ranks buf[i]`, summed in rank order (0 + 1 + 2 …) on every rank.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let parts = self.exchange(Op::SumF32, encode(buf, f32::to_le_bytes))?;
        check_lengths(self.rank(), Op::SumF32, &parts)?;
        buf.fill(0.0);
        for part in &parts {
            for (b, v) in buf.iter_mut().zip(decode(part, f32::from_le_bytes)) {
                *b += v;
            }
        }
        Ok(())
    }

    /// `buf[i] = max_ranks buf[i]` (a NaN anywhere gives NaN).
    fn all_reduce_max_f32(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let parts = self.exchange(Op::MaxF32, encode(buf, f32::to_le_bytes))?;
        check_lengths(self.rank(), Op::MaxF32, &parts)?;
        buf.fill(f32::NEG_INFINITY);
        for part in &parts {
            for (b, v) in buf.iter_mut().zip(decode(part, f32::from_le_bytes)) {
                *b = if b.is_nan() || v.is_nan() {
                    f32::NAN
                } else {
                    b.max(v)
                };
            }
        }
        Ok(())
    }

    /// Every rank's `local` buffer, in rank order (lengths may differ between ranks).
    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<Vec<f32>>, CollectiveError> {
        if self.world_size() == 1 {
            return Ok(vec![local.to_vec()]);
        }
        let parts = self.exchange(Op::GatherF32, encode(local, f32::to_le_bytes))?;
        Ok(parts
            .iter()
            .map(|p| decode(p, f32::from_le_bytes).collect())
            .collect())
    }

    /// Replaces `buf` on every rank by the `root` rank's `buf` (e.g. the sampled tokens).
    fn broadcast_u32(&self, buf: &mut [u32], root: usize) -> Result<(), CollectiveError> {
        let world = self.world_size();
        if root >= world {
            return Err(CollectiveError::Config(format!(
                "broadcast root {root} is outside a group of {world}"
            )));
        }
        if world == 1 {
            return Ok(());
        }
        let mine = if self.rank() == root {
            encode(buf, u32::to_le_bytes)
        } else {
            Vec::new()
        };
        let parts = self.exchange(Op::BroadcastU32, mine)?;
        let got = &parts[root];
        if got.len() != buf.len() * 4 {
            return Err(CollectiveError::LengthMismatch {
                rank: self.rank(),
                peer: root,
                op: Op::BroadcastU32.name(),
                expected: buf.len() * 4,
                got: got.len(),
            });
        }
        for (b, v) in buf.iter_mut().zip(decode(got, u32::from_le_bytes)) {
            *b = v;
        }
        Ok(())
    }

    /// Returns once every rank has called `barrier`.
    fn barrier(&self) -> Result<(), CollectiveError> {
        if self.world_size() == 1 {
            return Ok(());
        }
        self.exchange(Op::Barrier, Vec::new()).map(|_| ())
    }
}

/// Little-endian bytes of a slice of 4-byte values.
fn encode<T: Copy>(values: &[T], to_bytes: fn(T) -> [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for &v in values {
        out.extend_from_slice(&to_bytes(v));
    }
    out
}

/// Values of a little-endian byte buffer (a trailing partial value is ignored; lengths are
/// checked by the callers).
fn decode<'a, T: 'a>(
    bytes: &'a [u8],
    from_bytes: fn([u8; 4]) -> T,
) -> impl Iterator<Item = T> + 'a {
    bytes
        .chunks_exact(4)
        .map(move |c| from_bytes([c[0], c[1], c[2], c[3]]))
}

/// Fails unless every rank contributed as many bytes as this one.
fn check_lengths(rank: usize, op: Op, parts: &[Vec<u8>]) -> Result<(), CollectiveError> {
    let expected = parts.get(rank).map_or(0, Vec::len);
    match parts.iter().position(|p| p.len() != expected) {
        Some(peer) => Err(CollectiveError::LengthMismatch {
            rank,
            peer,
            op: op.name(),
            expected,
            got: parts[peer].len(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
