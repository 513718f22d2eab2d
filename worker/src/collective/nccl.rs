//! [`NcclCollective`] (feature `nccl`): one rank of an NCCL communicator on the worker's
//! compute stream.
//!
//! Joining: rank 0 makes the 128-byte unique id ([`NcclCollective::unique_id`]); the
//! coordinator hands it to every rank (`InitCollectiveRequest.nccl_unique_id`), and every rank
//! calls [`NcclCollective::join`], which returns once all ranks have joined or fails after the
//! deadline (the blocked init thread is left behind: the worker must exit, which the launcher
//! does on any join error). Steps: the NCCL call is enqueued on the stream, an event recorded
//! after it, and the event polled until the deadline; a step past its deadline aborts the
//! communicator (`ncclCommAbort`, which also releases the stuck kernel) and every later call
//! fails with [`CollectiveError::Broken`].
//!
//! Numerics follow the [`Collective`] contract: i32 sums use `ncclAllReduce` (integer sums are
//! exact in any order); f32 sums and maxima gather every rank's buffer and reduce in rank order,
//! so they are bit-identical to the TCP ring's. NCCL refuses two ranks on one GPU: use
//! [`super::HostStaged`] there.

use super::device::check_gather_room;
use super::{Collective, CollectiveError, DeviceCollective, Op};
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use cudarc::nccl::{Comm, Id, NcclType, ReduceOp};
use std::ffi::c_char;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes of an NCCL unique id.
pub const NCCL_ID_BYTES: usize = 128;

/// The communicator; NCCL handles may move between threads when not used concurrently (the
/// mutex of [`NcclCollective`] guarantees that).
struct CommCell(Comm);

// SAFETY: see above; the raw ncclComm_t is only used under NcclCollective's mutex.
unsafe impl Send for CommCell {}

/// One rank of an NCCL group.
pub struct NcclCollective {
    rank: usize,
    world: usize,
    timeout: Duration,
    stream: Arc<CudaStream>,
    /// `None` once a step failed (the communicator was aborted).
    comm: Mutex<Option<CommCell>>,
}

/// Fails with a message naming libnccl unless it loads.
fn check_nccl() -> Result<(), CollectiveError> {
    // SAFETY: only tries to dlopen the library by its candidate names.
    if unsafe { cudarc::nccl::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CollectiveError::Config(
            "NCCL is missing: could not load libnccl.so (pip install nvidia-nccl-cu13, add its \
             lib folder to LD_LIBRARY_PATH and link libnccl.so to libnccl.so.2)"
                .into(),
        ))
    }
}

impl NcclCollective {
    /// A new unique id (rank 0 makes it; every rank joins with the same bytes).
    pub fn unique_id() -> Result<Vec<u8>, CollectiveError> {
        check_nccl()?;
        let id =
            Id::new().map_err(|e| CollectiveError::Config(format!("ncclGetUniqueId: {e:?}")))?;
        Ok(id.internal().iter().map(|&c| c as u8).collect())
    }

    /// Joins the group `id` as `rank` of `world` on `stream`'s device; fails after `timeout`
    /// if not every rank joins.
    pub fn join(
        stream: Arc<CudaStream>,
        rank: usize,
        world: usize,
        id: &[u8],
        timeout: Duration,
    ) -> Result<Self, CollectiveError> {
        check_nccl()?;
        if rank >= world {
            return Err(CollectiveError::Config(format!(
                "rank {rank} is outside a group of {world}"
            )));
        }
        if id.len() != NCCL_ID_BYTES {
            return Err(CollectiveError::Config(format!(
                "an NCCL unique id has {NCCL_ID_BYTES} bytes, got {}",
                id.len()
            )));
        }
        let mut internal = [0 as c_char; NCCL_ID_BYTES];
        for (dst, &src) in internal.iter_mut().zip(id) {
            *dst = src as c_char;
        }
        let id = Id::uninit(internal);
        let (tx, rx) = mpsc::channel();
        let init_stream = stream.clone();
        std::thread::Builder::new()
            .name(format!("nccl-init-{rank}"))
            .spawn(move || {
                let joined = Comm::from_rank(init_stream, rank, world, id).map(CommCell);
                let _ = tx.send(joined);
            })
            .map_err(|e| CollectiveError::Config(format!("cannot start the NCCL init: {e}")))?;
        let comm = match rx.recv_timeout(timeout) {
            Ok(Ok(comm)) => comm,
            Ok(Err(e)) => {
                return Err(CollectiveError::Device {
                    rank,
                    op: "ncclCommInitRank",
                    reason: format!("{e:?}"),
                })
            }
            Err(_) => {
                return Err(CollectiveError::Stuck {
                    rank,
                    op: "ncclCommInitRank",
                    timeout,
                    detail: format!("not all {world} ranks joined; this process must exit"),
                })
            }
        };
        Ok(Self {
            rank,
            world,
            timeout,
            stream,
            comm: Mutex::new(Some(comm)),
        })
    }

    /// Enqueues `call` on the stream and waits for it until the deadline; past it, aborts.
    fn step(
        &self,
        op: Op,
        call: impl FnOnce(&Comm) -> Result<(), String>,
    ) -> Result<(), CollectiveError> {
        let mut guard = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        let device = |reason: String| CollectiveError::Device {
            rank: self.rank,
            op: op.name(),
            reason,
        };
        let enqueued = match guard.as_ref() {
            Some(cell) => call(&cell.0),
            None => {
                return Err(CollectiveError::Broken {
                    rank: self.rank,
                    op: op.name(),
                })
            }
        };
        let waited = enqueued.and_then(|()| {
            let event = self
                .stream
                .record_event(None)
                .map_err(|e| format!("{e:?}"))?;
            let deadline = Instant::now() + self.timeout;
            loop {
                match event.try_is_complete() {
                    Ok(true) => return Ok(true),
                    Ok(false) if Instant::now() >= deadline => return Ok(false),
                    Ok(false) => std::thread::yield_now(),
                    Err(e) => return Err(format!("{e:?}")),
                }
            }
        });
        match waited {
            Ok(true) => Ok(()),
            Ok(false) => {
                guard.take(); // ncclCommAbort: the stuck kernel ends, the group is broken
                Err(CollectiveError::Stuck {
                    rank: self.rank,
                    op: op.name(),
                    timeout: self.timeout,
                    detail: "the NCCL communicator was aborted".into(),
                })
            }
            Err(reason) => {
                guard.take();
                Err(device(reason))
            }
        }
    }

    fn device_err(&self, op: Op) -> impl Fn(cudarc::driver::DriverError) -> CollectiveError {
        let rank = self.rank;
        move |e| CollectiveError::Device {
            rank,
            op: op.name(),
            reason: format!("{e:?}"),
        }
    }

    /// Every rank's `buf`, concatenated in rank order, on the host.
    fn gather_host<T: DeviceRepr + ValidAsZeroBits + NcclType + Default + Clone>(
        &self,
        op: Op,
        buf: &CudaSlice<T>,
    ) -> Result<Vec<T>, CollectiveError> {
        let err = self.device_err(op);
        let mut all = self
            .stream
            .alloc_zeros::<T>(buf.len() * self.world)
            .map_err(&err)?;
        self.step(op, |c| {
            c.all_gather(buf, &mut all)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        })?;
        let mut host = vec![T::default(); all.len()];
        self.stream.memcpy_dtoh(&all, &mut host).map_err(&err)?;
        self.stream.synchronize().map_err(&err)?;
        Ok(host)
    }

    /// Reduces `buf` over ranks in rank order on the host with `combine`, result on the device.
    fn reduce_in_rank_order(
        &self,
        op: Op,
        buf: &mut CudaSlice<f32>,
        init: f32,
        combine: impl Fn(f32, f32) -> f32,
    ) -> Result<(), CollectiveError> {
        let len = buf.len();
        let all = self.gather_host(op, buf)?;
        let mut out = vec![init; len];
        for part in all.chunks_exact(len.max(1)) {
            for (o, &v) in out.iter_mut().zip(part) {
                *o = combine(*o, v);
            }
        }
        let err = self.device_err(op);
        self.stream.memcpy_htod(&out, buf).map_err(&err)?;
        self.stream.synchronize().map_err(&err)
    }
}

/// The [`Collective`] max rule: a NaN anywhere gives NaN.
fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    /// Lengths first (one u64 per rank), then every buffer padded to the longest.
    fn exchange(&self, op: Op, data: Vec<u8>) -> Result<Vec<Vec<u8>>, CollectiveError> {
        if self.world == 1 {
            return Ok(vec![data]);
        }
        let err = self.device_err(op);
        let len = self.stream.clone_htod(&[data.len() as u64]).map_err(&err)?;
        let lengths = self.gather_host(op, &len)?;
        let longest = lengths.iter().copied().max().unwrap_or(0) as usize;
        let mut padded = data;
        padded.resize(longest.max(1), 0);
        let dev = self.stream.clone_htod(&padded).map_err(&err)?;
        let all = self.gather_host(op, &dev)?;
        Ok(all
            .chunks_exact(longest.max(1))
            .zip(&lengths)
            .map(|(part, &n)| part[..n as usize].to_vec())
            .collect())
    }

    fn all_reduce_sum_i32(&self, buf: &mut [i32]) -> Result<(), CollectiveError> {
        if self.world == 1 {
            return Ok(());
        }
        let err = self.device_err(Op::SumI32);
        let mut dev = self.stream.clone_htod(buf).map_err(&err)?;
        self.all_reduce_sum_i32_device(&mut dev)?;
        self.stream.memcpy_dtoh(&dev, buf).map_err(&err)?;
        self.stream.synchronize().map_err(&err)
    }
}

impl DeviceCollective for NcclCollective {
    fn all_reduce_sum_i32_device(&self, buf: &mut CudaSlice<i32>) -> Result<(), CollectiveError> {
        if self.world == 1 {
            return Ok(());
        }
        self.step(Op::SumI32, |c| {
            c.all_reduce_in_place(buf, &ReduceOp::Sum)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        })
    }

    fn all_reduce_sum_f32_device(&self, buf: &mut CudaSlice<f32>) -> Result<(), CollectiveError> {
        if self.world == 1 {
            return Ok(());
        }
        self.reduce_in_rank_order(Op::SumF32, buf, 0.0, |a, b| a + b)
    }

    fn all_reduce_max_f32_device(&self, buf: &mut CudaSlice<f32>) -> Result<(), CollectiveError> {
        if self.world == 1 {
            return Ok(());
        }
        self.reduce_in_rank_order(Op::MaxF32, buf, f32::NEG_INFINITY, max_nan)
    }

    fn all_gather_f32_device(
        &self,
        local: &CudaSlice<f32>,
        all: &mut CudaSlice<f32>,
    ) -> Result<(), CollectiveError> {
        check_gather_room(self.rank, self.world, local.len(), all.len())?;
        if local.is_empty() {
            return Ok(());
        }
        if self.world == 1 {
            let err = self.device_err(Op::GatherF32);
            let mut dst = all.slice_mut(..local.len());
            return self.stream.memcpy_dtod(local, &mut dst).map_err(err);
        }
        self.step(Op::GatherF32, |c| {
            c.all_gather(local, all)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_id_is_a_clean_error_or_128_bytes() {
        match NcclCollective::unique_id() {
            Ok(id) => assert_eq!(id.len(), NCCL_ID_BYTES),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("libnccl") || msg.contains("ncclGetUniqueId"),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn max_keeps_nan() {
        assert!(max_nan(1.0, f32::NAN).is_nan());
        assert_eq!(max_nan(-1.0, 2.0), 2.0);
    }
}
