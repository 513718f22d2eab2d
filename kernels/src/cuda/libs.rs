//! Which CUDA libraries this process can load. cudarc (dynamic loading) panics on the first call
//! into a library it cannot find, so every entry point checks here first and turns an absence
//! into a [`CudaError::MissingLibrary`] that names the library and how to provide it.

use super::CudaError;

/// The CUDA driver (`libcuda.so`, installed with the NVIDIA driver).
pub fn check_driver() -> Result<(), CudaError> {
    // SAFETY: only tries to dlopen the library by its candidate names.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::MissingLibrary {
            what: "the CUDA driver",
            library: "libcuda.so",
            hint: "install the NVIDIA driver; no GPU driver is present on this machine",
        })
    }
}

/// NVRTC, the run-time CUDA C compiler (`libnvrtc.so.13`).
pub fn check_nvrtc() -> Result<(), CudaError> {
    // SAFETY: as above.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::MissingLibrary {
            what: "NVRTC",
            library: "libnvrtc.so.13",
            hint:
                "install the CUDA 13 toolkit or `pip install nvidia-cuda-nvrtc==13.0.88` and add \
                   its nvidia/cu13/lib folder to LD_LIBRARY_PATH",
        })
    }
}

/// cuBLAS (`libcublas.so.13`), used for the dense projections.
pub fn check_cublas() -> Result<(), CudaError> {
    // SAFETY: as above.
    if unsafe { cudarc::cublas::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::MissingLibrary {
            what: "cuBLAS",
            library: "libcublas.so.13",
            hint: "install the CUDA 13 toolkit or `pip install nvidia-cublas` and add its lib \
                   folder to LD_LIBRARY_PATH",
        })
    }
}

/// Every library the backend needs, driver first (the most fundamental absence is named).
pub fn check_all() -> Result<(), CudaError> {
    check_driver()?;
    check_nvrtc()?;
    check_cublas()
}
