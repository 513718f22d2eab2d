//! [`DeviceCollective`]: the reductions a device-resident forward pass needs, on device
//! buffers of the worker's compute stream (feature `cuda`). [`super::HostStaged`] implements
//! them through the host and any [`Collective`]; [`super::NcclCollective`] (feature `nccl`)
//! with NCCL on the stream. Results follow the [`Collective`] contract: i32 sums exact, f32
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
}
