//! The CUDA backend (feature `cuda`): [`CudaBackend`] implements [`crate::Backend`] on one GPU.
//!
//! - [`libs`]: which CUDA libraries load (checked before any call, so absence is a clean
//!   [`CudaError`], never a cudarc panic);
//! - [`compile`]: NVRTC compile of the embedded `kernels/cuda/*.cu` sources to cubins for the
//!   device's architecture, cached on disk by source hash and architecture;
//! - [`module`]: the table of kernels per source and their loaded functions;
//! - [`weights`]: device copies of ternary / dense / sign matrices and their cache;
//! - [`ops`]: every kernel launch on device buffers ([`DeviceOps`]);
//! - [`model_ops`]: the launches of a device-resident forward pass (paged attention over a
//!   KV pool in place, the KV store, column-span quantization, row/column moves, 16-bit dense
//!   rows with f32 activations);
//! - [`sampling`]: greedy and temperature / top-k / top-p sampling and logprobs on the device;
//! - [`blas`]: dense projections through cuBLAS;
//! - [`backend`]: [`CudaBackend`], the host-slice [`crate::Backend`] over all of the above.
//!
//! Neighbours: the CPU reference (`crate::reference`) defines every op; `kernels/tests/
//! parity_cuda.rs` checks each one on a GPU; `bitnet-worker` runs models on it and its NCCL
//! collective enqueues on [`CudaBackend::stream`].

pub mod backend;
pub mod blas;
pub mod compile;
pub mod error;
pub mod libs;
pub mod model_ops;
pub mod module;
pub mod ops;
pub mod sampling;
pub mod weights;

pub use backend::{CudaBackend, CudaOptions};
pub use error::CudaError;
pub use model_ops::{Heads, PagedTokens, QuantSpan, DENSE_ROWS_MAX_TOKENS, MAX_HEAD_DIM};
pub use ops::DeviceOps;
pub use sampling::{SampleRow, SampledRow, SAMPLE_MAX_LOGPROBS};
pub use weights::{DeviceDenseMatrix, DeviceSign, DeviceTernary};
