//! [`CudaError`]: why the CUDA backend could not start or an op failed on the device. Missing
//! libraries and devices are named, so a machine without a GPU gets one clear line, never a
//! panic (cudarc panics when a library is absent; [`super::libs`] checks first).

use thiserror::Error;

/// A CUDA library, device, compile or launch failure.
#[derive(Debug, Error)]
pub enum CudaError {
    /// A shared library could not be loaded (searched through `LD_LIBRARY_PATH`).
    #[error("{what} is missing: could not load {library} ({hint})")]
    MissingLibrary {
        what: &'static str,
        library: &'static str,
        hint: &'static str,
    },
    /// The driver loaded but reports no usable device (or not the one asked for).
    #[error("no CUDA device {ordinal}: {reason}")]
    NoDevice { ordinal: usize, reason: String },
    /// A CUDA driver call failed.
    #[error("CUDA driver: {what}: {reason}")]
    Driver { what: String, reason: String },
    /// NVRTC rejected a kernel source.
    #[error("NVRTC could not compile {source_name} for {arch}: {log}")]
    Compile {
        source_name: String,
        arch: String,
        log: String,
    },
    /// cuBLAS failed.
    #[error("cuBLAS: {what}: {reason}")]
    Cublas { what: String, reason: String },
    /// A shape or value a kernel cannot take (checked on the host before any launch).
    #[error("{op}: {reason}")]
    Shape { op: &'static str, reason: String },
    /// The on-disk kernel cache could not be used (compiling still works without it).
    #[error("kernel cache {path}: {reason}")]
    Cache { path: String, reason: String },
}

impl CudaError {
    /// A driver failure of `what` (a call's name or purpose).
    pub fn driver(what: impl Into<String>, err: impl std::fmt::Debug) -> Self {
        CudaError::Driver {
            what: what.into(),
            reason: format!("{err:?}"),
        }
    }

    /// A cuBLAS failure of `what`.
    pub fn cublas(what: impl Into<String>, err: impl std::fmt::Debug) -> Self {
        CudaError::Cublas {
            what: what.into(),
            reason: format!("{err:?}"),
        }
    }

    /// The error as a [`crate::KernelError`] of op `op` (what the [`crate::Backend`] ops return).
    pub fn into_kernel(self, op: &'static str) -> crate::KernelError {
        crate::KernelError::Device {
            op,
            reason: self.to_string(),
        }
    }
}
