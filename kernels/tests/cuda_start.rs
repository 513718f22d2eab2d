//! Start-up of the CUDA backend (feature `cuda`) on whatever this machine has.
//!
//! Without a GPU (CI, this repository's development machines) `CudaBackend::new()` must return
//! an error that names the missing piece (the driver library first, then a device), never
//! panic; with `BITNET_REQUIRE_CUDA=1` (the GPU check script) it must succeed and name the card.
#![cfg(feature = "cuda")]

use bitnet_kernels::cuda::{libs, CudaBackend, CudaError};

fn require_cuda() -> bool {
    std::env::var("BITNET_REQUIRE_CUDA").is_ok_and(|v| v == "1")
}

#[test]
fn new_is_a_clean_error_or_a_working_device() {
    let driver = libs::check_driver();
    match CudaBackend::new() {
        Ok(b) => {
            println!("cuda_start: {} ({})", b.device_name(), b.arch());
            assert!(b.arch().starts_with("sm_"), "arch {}", b.arch());
            assert!(
                driver.is_ok(),
                "a backend started without the driver library"
            );
        }
        Err(e) => {
            let msg = e.to_string();
            println!("cuda_start: no CUDA backend here: {msg}");
            assert!(!require_cuda(), "BITNET_REQUIRE_CUDA=1 but: {msg}");
            match (&driver, &e) {
                (Err(_), CudaError::MissingLibrary { library, .. }) => {
                    assert_eq!(*library, "libcuda.so", "the driver is named first");
                    assert!(
                        msg.contains("libcuda.so") && msg.contains("driver"),
                        "{msg}"
                    );
                }
                (Err(_), other) => panic!("driver missing but the error is {other:?}"),
                (Ok(()), CudaError::MissingLibrary { library, .. }) => {
                    assert!(msg.contains(library), "{msg}");
                }
                (Ok(()), CudaError::NoDevice { .. }) => assert!(msg.contains("device"), "{msg}"),
                (Ok(()), other) => panic!("driver present, unexpected start-up error {other:?}"),
            }
        }
    }
}

#[test]
fn missing_libraries_are_named() {
    // Each check names its library when absent; the error text says how to install it.
    for (check, library) in [
        (
            libs::check_driver as fn() -> Result<(), CudaError>,
            "libcuda.so",
        ),
        (libs::check_nvrtc, "libnvrtc.so.13"),
        (libs::check_cublas, "libcublas.so.13"),
    ] {
        if let Err(e) = check() {
            let msg = e.to_string();
            assert!(msg.contains(library) && msg.contains("missing"), "{msg}");
        }
    }
}

#[test]
fn nvrtc_compiles_every_source_to_a_cached_cubin() {
    use bitnet_kernels::cuda::compile::{cache_file_name, KernelCompiler, SOURCES};
    if let Err(e) = libs::check_nvrtc() {
        // scripts/check-cuda.sh puts the pinned NVRTC wheel on LD_LIBRARY_PATH and requires it.
        assert!(
            std::env::var("BITNET_REQUIRE_NVRTC").map_or(true, |v| v != "1"),
            "BITNET_REQUIRE_NVRTC=1 but {e}"
        );
        println!("cuda_start: NVRTC compile not checked: {e}");
        return;
    }
    let dir = std::env::temp_dir().join(format!("bitnet-cuda-cache-{}", std::process::id()));
    for arch in ["sm_80", "sm_90"] {
        let compiler = KernelCompiler::new(arch, Some(dir.clone())).expect("NVRTC loads");
        for (name, _) in SOURCES {
            let cubin = compiler.cubin(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&cubin[..4], b"\x7fELF", "{name} for {arch} is a cubin");
            let cached = dir.join(cache_file_name(name, arch, compiler.nvrtc_version()));
            assert_eq!(std::fs::read(&cached).expect("cached"), cubin, "{name}");
        }
        println!(
            "cuda_start: NVRTC {:?} compiled {} sources for {arch}",
            compiler.nvrtc_version(),
            SOURCES.len()
        );
    }
    let broken = KernelCompiler::new("sm_1", None).expect("NVRTC loads");
    let err = broken.compile("quant.cu").unwrap_err().to_string();
    assert!(err.contains("quant.cu") && err.contains("sm_1"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
