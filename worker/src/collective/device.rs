//! [`DeviceCollective`]: the reductions a device-resident forward pass needs, on device
//! buffers of the worker's compute stream (feature `cuda`). [`super::HostStaged`] implements
//! them through the host and any [`Collective`]; [`super::NcclCollective`] (feature `nccl`)
//! with NCCL on the stream. The all-gather (of equal-length buffers; the CUDA model pads
//! uneven column blocks) feeds the row-parallel layers their whole input rows. Results follow the [`Collective`] contract: i32 sums exact, f32
//! sums in rank order, identical on every rank.

use super::{Collective, CollectiveError};
use cudarc::driver::CudaSlice;

/// Collective operations on device buffers.
pub trait DeviceCollective: Collective {
    /// `buf[i] = Σ_ranks buf[i]` on the device (wrapping i32, exact).
    fn all_reduce_sum_i32_device(&self, buf: &mut CudaSlice<i32>) -> Result<(), CollectiveError>;

    /// `buf[i] = Σ_ranks buf[i]` on the device, summed in rank order.
    fn all_reduce_sum_f32_device(&self, buf: &mut CudaSlice<f32>) -> Result<(), CollectiveError>;

    /// `buf[i] = max_ranks buf[i]` on the device.
    fn all_reduce_max_f32_device(&self, buf: &mut CudaSlice<f32>) -> Result<(), CollectiveError>;

    /// Every rank's `local` (the same length on every rank), concatenated in rank order into
    /// the first `world · local.len()` elements of `all`.
    fn all_gather_f32_device(
        &self,
        local: &CudaSlice<f32>,
        all: &mut CudaSlice<f32>,
    ) -> Result<(), CollectiveError>;
}

/// Fails unless `all` can hold `world` copies of `local`.
pub(super) fn check_gather_room(
    rank: usize,
    world: usize,
    local: usize,
    all: usize,
) -> Result<(), CollectiveError> {
    if all < world * local {
        return Err(CollectiveError::LengthMismatch {
            rank,
            peer: rank,
            op: super::Op::GatherF32.name(),
            expected: world * local,
            got: all,
        });
    }
    Ok(())
}
