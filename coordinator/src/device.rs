//! [`Device`]: where the model runs (`--device cpu|cuda` of `generate`, `up`, `worker` and
//! `bitnet-bench`), and the one place that opens a backend for it.
//!
//! Callers match on [`Device`]: the host models are generic over `bitnet_kernels::Backend` and
//! run on `CpuBackend` ([`cpu_backend`]); in a build with the `cuda` feature `--device cuda`
//! runs the device-resident `bitnet_worker::cuda::CudaModel` ([`cuda_model`], on the backend
//! of [`cuda_backend`]). A build without the feature knows the
//! name `cuda` but answers it with [`DeviceError::NotBuilt`]; a build with the feature on a
//! machine without a driver or GPU answers with `CudaBackend::new()`'s error, which names
//! what is missing. The launcher's choice of GPU per worker ([`gpu_for_rank`]) lives here too.

use bitnet_kernels::CpuBackend;
use thiserror::Error;

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The CPU backend (every build).
    #[default]
    Cpu,
    /// One NVIDIA GPU through `CudaBackend` (builds with `--features cuda`).
    Cuda,
}

/// Why a device cannot be used.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// `--device cuda` on a build without the `cuda` feature.
    #[error("--device cuda: this build has no CUDA support: rebuild with --features cuda")]
    NotBuilt,
    /// The CPU backend could not start.
    #[error("CPU backend: {0}")]
    Cpu(String),
    /// The CUDA backend could not start (missing library, no device...).
    #[error("--device cuda: {0}")]
    Cuda(String),
}

impl Device {
    /// The name used on the command line and in `Info` ("cpu", "cuda").
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    /// Fails with [`DeviceError::NotBuilt`] for a device this build lacks; starts nothing.
    pub fn check_built(self) -> Result<(), DeviceError> {
        match self {
            Device::Cuda if !cfg!(feature = "cuda") => Err(DeviceError::NotBuilt),
            _ => Ok(()),
        }
    }
}

/// The CPU backend with `threads` compute threads (`BITNET_CPU_PATH` applies).
pub fn cpu_backend(threads: usize) -> Result<CpuBackend, DeviceError> {
    CpuBackend::from_env(threads).map_err(|e| DeviceError::Cpu(e.to_string()))
}

/// The CUDA backend on visible device 0 (the launcher gives each worker its GPU through
/// `CUDA_VISIBLE_DEVICES`), with the default kernel cache.
#[cfg(feature = "cuda")]
pub fn cuda_backend() -> Result<bitnet_kernels::cuda::CudaBackend, DeviceError> {
    bitnet_kernels::cuda::CudaBackend::new().map_err(|e| DeviceError::Cuda(e.to_string()))
}

/// The device-resident CUDA model of `weights` on visible device 0 (weights uploaded once; the
/// KV pool, activations and logits stay on the GPU). A model the CUDA kernels cannot run is
/// refused with its family named.
#[cfg(feature = "cuda")]
pub fn cuda_model(
    weights: bitnet_checkpoints::ModelWeights,
) -> Result<bitnet_worker::cuda::CudaModel, DeviceError> {
    bitnet_worker::cuda::CudaModel::new(weights, cuda_backend()?)
        .map_err(|e| DeviceError::Cuda(e.to_string()))
}

/// The `CUDA_VISIBLE_DEVICES` value of worker `rank`: the rank itself, or, when the user set
/// `CUDA_VISIBLE_DEVICES` (`user`), the rank-th id listed there (wrapping around when fewer
/// ids than ranks are listed, so several ranks may share one GPU).
pub fn gpu_for_rank(rank: usize, user: Option<&str>) -> String {
    let listed: Vec<&str> = user
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if listed.is_empty() {
        rank.to_string()
    } else {
        listed[rank % listed.len()].to_string()
    }
}

/// True when every rank of a group of `tp` gets its own GPU (NCCL refuses two ranks on one).
pub fn distinct_gpus(tp: usize, user: Option<&str>) -> bool {
    let ids: std::collections::HashSet<String> = (0..tp).map(|r| gpu_for_rank(r, user)).collect();
    ids.len() == tp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_gets_its_own_gpu_unless_the_user_listed_fewer() {
        assert_eq!(gpu_for_rank(0, None), "0");
        assert_eq!(gpu_for_rank(3, None), "3");
        assert_eq!(gpu_for_rank(1, Some("")), "1");
        assert_eq!(gpu_for_rank(0, Some("4, 6")), "4");
        assert_eq!(gpu_for_rank(1, Some("4,6")), "6");
        assert_eq!(gpu_for_rank(2, Some("4,6")), "4");
        assert_eq!(gpu_for_rank(1, Some("GPU-abc,GPU-def")), "GPU-def");
        assert!(distinct_gpus(4, None));
        assert!(distinct_gpus(2, Some("4,6")));
        assert!(!distinct_gpus(2, Some("5")));
    }

    #[test]
    fn cuda_is_refused_only_by_a_build_without_it() {
        assert!(Device::Cpu.check_built().is_ok());
        let cuda = Device::Cuda.check_built();
        if cfg!(feature = "cuda") {
            assert!(cuda.is_ok());
        } else {
            let msg = cuda.unwrap_err().to_string();
            assert!(msg.contains("rebuild with --features cuda"), "{msg}");
        }
    }
}
