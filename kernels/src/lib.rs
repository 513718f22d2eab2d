//! `bitnet-kernels`: compute only. No files, no sockets, no model graph.
//!
//! - [`packing`] owns the 2-bit ternary weight layout ([`TernaryMatrix`]) and ternarization.
//! - [`dense`] holds full-precision matrices ([`DenseMatrix`]: f32/f16/bf16 rows).
//! - [`sign`] holds OneBit's 1-bit sign matrices ([`SignMatrix`]).
//! - [`reference`] is the slow, obvious oracle of every op; every fast kernel is tested against it.
//! - [`backend`] is the [`Backend`] trait the model forward (crate `bitnet-worker`) calls.
//! - [`cpu`] is [`CpuBackend`], the always-built implementation.
//! - `cuda` (feature `cuda`) is `CudaBackend`: CUDA C kernels from `kernels/cuda/` compiled by
//!   NVRTC at start-up, cuBLAS for dense projections, libraries loaded at run time.
//!
//! Numerics: ternary × int8 products accumulate exactly in i32; everything else is f32;
//! rounding is round-half-to-even (`f32::round_ties_even`).

pub mod backend;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dense;
pub mod error;
pub mod packing;
pub mod reference;
pub mod sign;

pub use backend::{AttentionShape, Backend, PagedAttentionCall, PagedKv};
pub use cpu::CpuBackend;
#[cfg(feature = "cuda")]
pub use cuda::{CudaBackend, CudaError};
pub use dense::{DenseData, DenseMatrix};
pub use error::KernelError;
pub use packing::TernaryMatrix;
pub use sign::SignMatrix;
