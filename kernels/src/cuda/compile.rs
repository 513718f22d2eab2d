//! Run-time compile of the CUDA C sources in `kernels/cuda/` (embedded in the binary) to a cubin
//! for the device's architecture with NVRTC, and the on-disk cache of those cubins.
//!
//! The cache key is a 64-bit FNV-1a hash of the source, every header, the options, the target
//! architecture and the NVRTC version, so an edited kernel or another card recompiles. The
//! cache lives in `$BITNET_CUDA_CACHE`, else `$XDG_CACHE_HOME/bitnet-cluster/cuda`, else
//! `~/.cache/bitnet-cluster/cuda`; `BITNET_CUDA_CACHE=off` disables it. A cache that cannot be
//! written only costs a compile. `scripts/check-cuda.sh` compiles the same sources with the same
//! [`NVRTC_OPTIONS`] without a GPU.

use super::CudaError;
use cudarc::nvrtc::sys;
use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};

/// The shared header, handed to NVRTC by name (the sources `#include "common.cuh"`).
pub const HEADERS: &[(&str, &str)] = &[("common.cuh", include_str!("../../cuda/common.cuh"))];

/// Every kernel source, by file name.
pub const SOURCES: &[(&str, &str)] = &[
    ("attention.cu", include_str!("../../cuda/attention.cu")),
    ("dense.cu", include_str!("../../cuda/dense.cu")),
    ("elementwise.cu", include_str!("../../cuda/elementwise.cu")),
    ("norm.cu", include_str!("../../cuda/norm.cu")),
    ("quant.cu", include_str!("../../cuda/quant.cu")),
    ("rope.cu", include_str!("../../cuda/rope.cu")),
    ("sample.cu", include_str!("../../cuda/sample.cu")),
    ("ternary.cu", include_str!("../../cuda/ternary.cu")),
];

/// NVRTC options besides the architecture (the same list as `scripts/nvrtc_check.py`).
pub const NVRTC_OPTIONS: &[&str] = &["--std=c++17", "--fmad=true", "-lineinfo"];

/// The source text of `name`, if it is one of [`SOURCES`].
pub fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// 64-bit FNV-1a (stable across Rust versions, unlike `DefaultHasher`).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separate the parts so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The cache file name of `source_name` for `arch` (e.g. `ternary-sm_90-0123456789abcdef.cubin`).
pub fn cache_file_name(source_name: &str, arch: &str, nvrtc_version: (i32, i32)) -> String {
    let text = source(source_name).unwrap_or("");
    let version = format!("{}.{}", nvrtc_version.0, nvrtc_version.1);
    let mut parts: Vec<&[u8]> = vec![text.as_bytes(), arch.as_bytes(), version.as_bytes()];
    for (name, header) in HEADERS {
        parts.push(name.as_bytes());
        parts.push(header.as_bytes());
    }
    for option in NVRTC_OPTIONS {
        parts.push(option.as_bytes());
    }
    let stem = source_name.trim_end_matches(".cu");
    format!("{stem}-{arch}-{:016x}.cubin", fnv1a(&parts))
}

/// The cache folder from the environment, or `None` when disabled or no home is known.
pub fn default_cache_dir() -> Option<PathBuf> {
    match std::env::var_os("BITNET_CUDA_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|base| base.join("bitnet-cluster").join("cuda")),
    }
}

/// Compiles the embedded sources for one architecture, through the cache.
#[derive(Clone, Debug)]
pub struct KernelCompiler {
    arch: String,
    cache_dir: Option<PathBuf>,
    nvrtc_version: (i32, i32),
}

impl KernelCompiler {
    /// A compiler for `arch` (`"sm_90"`); NVRTC must be loadable ([`super::libs::check_nvrtc`]).
    pub fn new(arch: &str, cache_dir: Option<PathBuf>) -> Result<Self, CudaError> {
        super::libs::check_nvrtc()?;
        let (mut major, mut minor) = (0, 0);
        // SAFETY: plain out-parameters.
        let rc = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
        nvrtc_ok(rc, "nvrtcVersion", arch)?;
        Ok(Self {
            arch: arch.to_string(),
            cache_dir,
            nvrtc_version: (major, minor),
        })
    }

    /// The NVRTC version (major, minor).
    pub fn nvrtc_version(&self) -> (i32, i32) {
        self.nvrtc_version
    }

    /// The target architecture.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The cubin of `source_name`: from the cache when present, else compiled (and cached).
    pub fn cubin(&self, source_name: &str) -> Result<Vec<u8>, CudaError> {
        let path = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(cache_file_name(source_name, &self.arch, self.nvrtc_version)));
        if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
            if !bytes.is_empty() {
                return Ok(bytes);
            }
        }
        let cubin = self.compile(source_name)?;
        if let Some(path) = path {
            if let Err(e) = write_atomic(&path, &cubin) {
                tracing::warn!("{e}; kernels will be recompiled next time");
            }
        }
        Ok(cubin)
    }

    /// Compiles `source_name` with NVRTC, without the cache.
    pub fn compile(&self, source_name: &str) -> Result<Vec<u8>, CudaError> {
        let fail = |log: String| CudaError::Compile {
            source_name: source_name.to_string(),
            arch: self.arch.clone(),
            log,
        };
        let text = source(source_name).ok_or_else(|| fail("no such kernel source".into()))?;
        let c = |s: &str| CString::new(s).map_err(|e| fail(format!("NUL byte in {s:?}: {e}")));
        let src = c(text)?;
        let name = c(source_name)?;
        let header_text = HEADERS
            .iter()
            .map(|(_, t)| c(t))
            .collect::<Result<Vec<_>, _>>()?;
        let header_names = HEADERS
            .iter()
            .map(|(n, _)| c(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut options = NVRTC_OPTIONS
            .iter()
            .map(|o| c(o))
            .collect::<Result<Vec<_>, _>>()?;
        options.push(c(&format!("--gpu-architecture={}", self.arch))?);
        let header_ptrs: Vec<*const c_char> = header_text.iter().map(|s| s.as_ptr()).collect();
        let name_ptrs: Vec<*const c_char> = header_names.iter().map(|s| s.as_ptr()).collect();
        let option_ptrs: Vec<*const c_char> = options.iter().map(|s| s.as_ptr()).collect();
        let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: every pointer refers to a live CString for the duration of the calls; the
        // program is destroyed by `Program`'s Drop.
        unsafe {
            let rc = sys::nvrtcCreateProgram(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                header_ptrs.len() as i32,
                header_ptrs.as_ptr(),
                name_ptrs.as_ptr(),
            );
            nvrtc_ok(rc, "nvrtcCreateProgram", &self.arch).map_err(|e| fail(e.to_string()))?;
            let program = Program(prog);
            let rc =
                sys::nvrtcCompileProgram(program.0, option_ptrs.len() as i32, option_ptrs.as_ptr());
            if rc != sys::nvrtcResult::NVRTC_SUCCESS {
                return Err(fail(program.log()));
            }
            let mut size = 0usize;
            nvrtc_ok(
                sys::nvrtcGetCUBINSize(program.0, &mut size),
                "nvrtcGetCUBINSize",
                &self.arch,
            )?;
            let mut cubin = vec![0u8; size];
            nvrtc_ok(
                sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr() as *mut c_char),
                "nvrtcGetCUBIN",
                &self.arch,
            )?;
            Ok(cubin)
        }
    }
}

/// An NVRTC program destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Program {
    /// The compile log (empty when it cannot be read).
    unsafe fn log(&self) -> String {
        let mut size = 0usize;
        if sys::nvrtcGetProgramLogSize(self.0, &mut size) != sys::nvrtcResult::NVRTC_SUCCESS {
            return String::new();
        }
        let mut buf = vec![0u8; size.max(1)];
        if sys::nvrtcGetProgramLog(self.0, buf.as_mut_ptr() as *mut c_char)
            != sys::nvrtcResult::NVRTC_SUCCESS
        {
            return String::new();
        }
        CStr::from_bytes_until_nul(&buf)
            .map(|s| s.to_string_lossy().trim().to_string())
            .unwrap_or_default()
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by nvrtcCreateProgram and is destroyed once.
        unsafe {
            sys::nvrtcDestroyProgram(&mut self.0);
        }
    }
}

fn nvrtc_ok(rc: sys::nvrtcResult, call: &str, arch: &str) -> Result<(), CudaError> {
    if rc == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Compile {
            source_name: call.to_string(),
            arch: arch.to_string(),
            log: format!("{rc:?}"),
        })
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename (no torn cache entries).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CudaError> {
    let err = |e: std::io::Error| CudaError::Cache {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_change_with_source_arch_and_version() {
        let a = cache_file_name("ternary.cu", "sm_90", (13, 0));
        assert!(
            a.starts_with("ternary-sm_90-") && a.ends_with(".cubin"),
            "{a}"
        );
        assert_ne!(a, cache_file_name("ternary.cu", "sm_80", (13, 0)));
        assert_ne!(a, cache_file_name("ternary.cu", "sm_90", (13, 1)));
        assert_ne!(a, cache_file_name("quant.cu", "sm_90", (13, 0)));
        assert_eq!(a, cache_file_name("ternary.cu", "sm_90", (13, 0)));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }

    #[test]
    fn every_source_on_disk_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = SOURCES.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            on_disk, embedded,
            "SOURCES must list every kernels/cuda/*.cu"
        );
    }
}
