//! The device-resident model on one NVIDIA GPU (feature `cuda`): [`CudaModel`] keeps its
//! weights, its paged KV pool, every activation and the logits on the device, and samples there,
//! so a step moves only token ids, positions and block tables up and sampled ids (plus requested
//! logprobs) down. It implements [`crate::PagedModel`], so the same
//! [`crate::StepRunner`] drives it as the host models; tensor parallelism follows
//! [`crate::ShardedModel`] with device collectives ([`crate::collective::DeviceCollective`]).
//!
//! - [`plan`]: [`BatchPlan`], the host-side layout and checks of one batch (no GPU needed);
//! - [`weights`]: the device copies of a rank's weights and [`check_supported`];
//! - [`kv`]: [`DeviceKv`], the pool's device storage (inside a `KvPool::on_device`);
//! - [`model`]: [`CudaModel`] and its [`crate::PagedModel`] implementation (device sampling);
//! - `forward`: the layer graph on device buffers; `project`: the projections, column- and
//!   row-parallel, with the gathers and i32 all-reduces of tensor parallelism.
//!
//! Neighbours: kernels and their launches are `bitnet_kernels::cuda` (`DeviceOps`, the paged
//! attention and sampling kernels); `crate::generate_paged` runs one prompt on it offline.

mod forward;
pub mod kv;
pub mod model;
pub mod plan;
mod project;
pub mod weights;

pub use kv::DeviceKv;
pub use model::CudaModel;
pub use plan::BatchPlan;
pub use weights::check_supported;
