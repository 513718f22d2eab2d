//! [`HostStaged`]: device buffers reduced through the host: device → host, any [`Collective`]
//! (the TCP ring between worker processes), host → device. It is how TP = 2 runs on a single
//! GPU (NCCL refuses two ranks on one device) and the fallback where NCCL is absent. Deadlines
//! are the inner collective's (every TCP ring operation has one).

use super::device::check_gather_room;
use super::{Collective, CollectiveError, DeviceCollective, Op};
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use std::sync::Arc;

/// A [`Collective`] plus the stream its device buffers live on.
pub struct HostStaged {
    inner: Box<dyn Collective>,
    stream: Arc<CudaStream>,
}

impl HostStaged {
    /// Stages device buffers of `stream` through `inner`.
    pub fn new(inner: Box<dyn Collective>, stream: Arc<CudaStream>) -> Self {
        Self { inner, stream }
    }

    /// Copies `buf` to the host, applies `reduce` there, copies the result back.
    fn staged<T: DeviceRepr + ValidAsZeroBits + Default + Clone>(
        &self,
        op: Op,
        buf: &mut CudaSlice<T>,
        reduce: impl FnOnce(&dyn Collective, &mut [T]) -> Result<(), CollectiveError>,
    ) -> Result<(), CollectiveError> {
        let device = |e: cudarc::driver::DriverError| CollectiveError::Device {
            rank: self.rank(),
            op: op.name(),
            reason: format!("{e:?}"),
        };
        let mut host = vec![T::default(); buf.len()];
        self.stream.memcpy_dtoh(buf, &mut host).map_err(device)?;
        self.stream.synchronize().map_err(device)?;
        reduce(self.inner.as_ref(), &mut host)?;
        self.stream.memcpy_htod(&host, buf).map_err(device)?;
        self.stream.synchronize().map_err(device)
    }
}

impl Collective for HostStaged {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn world_size(&self) -> usize {
        self.inner.world_size()
    }

    fn exchange(&self, op: Op, data: Vec<u8>) -> Result<Vec<Vec<u8>>, CollectiveError> {
        self.inner.exchange(op, data)
    }

    fn all_reduce_sum_i32(&self, buf: &mut [i32]) -> Result<(), CollectiveError> {
        self.inner.all_reduce_sum_i32(buf)
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.inner.all_reduce_sum_f32(buf)
    }

    fn all_reduce_max_f32(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.inner.all_reduce_max_f32(buf)
    }
}

impl DeviceCollective for HostStaged {
    fn all_reduce_sum_i32_device(&self, buf: &mut CudaSlice<i32>) -> Result<(), CollectiveError> {
        if self.world_size() == 1 {
            return Ok(());
        }
        self.staged(Op::SumI32, buf, |c, h| c.all_reduce_sum_i32(h))
    }

    fn all_reduce_sum_f32_device(&self, buf: &mut CudaSlice<f32>) -> Result<(), CollectiveError> {
        if self.world_size() == 1 {
            return Ok(());
        }
        self.staged(Op::SumF32, buf, |c, h| c.all_reduce_sum_f32(h))
    }

    fn all_reduce_max_f32_device(&self, buf: &mut CudaSlice<f32>) -> Result<(), CollectiveError> {
        if self.world_size() == 1 {
            return Ok(());
        }
        self.staged(Op::MaxF32, buf, |c, h| c.all_reduce_max_f32(h))
    }

    fn all_gather_f32_device(
        &self,
        local: &CudaSlice<f32>,
        all: &mut CudaSlice<f32>,
    ) -> Result<(), CollectiveError> {
        let (rank, world) = (self.rank(), self.world_size());
        check_gather_room(rank, world, local.len(), all.len())?;
        let device = |e: cudarc::driver::DriverError| CollectiveError::Device {
            rank,
            op: Op::GatherF32.name(),
            reason: format!("{e:?}"),
        };
        let mut host = vec![0f32; local.len()];
        self.stream.memcpy_dtoh(local, &mut host).map_err(device)?;
        self.stream.synchronize().map_err(device)?;
        let parts = self.inner.all_gather_f32(&host)?;
        let mut joined = Vec::with_capacity(world * host.len());
        for (peer, part) in parts.iter().enumerate() {
            if part.len() != host.len() {
                return Err(CollectiveError::LengthMismatch {
                    rank,
                    peer,
                    op: Op::GatherF32.name(),
                    expected: host.len(),
                    got: part.len(),
                });
            }
            joined.extend_from_slice(part);
        }
        check_gather_room(rank, parts.len(), host.len(), all.len())?;
        self.stream.memcpy_htod(&joined, all).map_err(device)?;
        self.stream.synchronize().map_err(device)
    }
}
