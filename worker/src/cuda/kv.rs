//! [`DeviceKv`]: the device storage of a CUDA model's paged KV pool — per layer one buffer of
//! keys and one of values, `num_blocks × BLOCK_SIZE` rows of `kv_dim` floats each, the block
//! layout of [`crate::KvPool`] (rows of a block contiguous). It lives inside a
//! [`crate::KvPool::on_device`] (so the step runner owns it as it owns a host pool) and is
//! read and written only by the model that made it (`owner`).

use cudarc::driver::CudaSlice;

/// Keys and values of every layer on the device.
pub struct DeviceKv {
    /// The id of the model that made the pool.
    pub(crate) owner: u64,
    /// Floats per row.
    pub(crate) kv_dim: usize,
    pub(crate) keys: Vec<CudaSlice<f32>>,
    pub(crate) values: Vec<CudaSlice<f32>>,
}
