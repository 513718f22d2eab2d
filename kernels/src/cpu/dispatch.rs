//! Which SIMD path the CPU kernels run: detected at run time, overridable for tests.
//!
//! `BITNET_CPU_PATH=scalar|avx2|avx512vnni` forces a path (an unavailable one is an error, not a
//! silent fallback); otherwise the best path the processor has is used.

use crate::error::KernelError;

/// Environment variable that forces a CPU path.
pub const PATH_ENV: &str = "BITNET_CPU_PATH";

/// A family of CPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuPath {
    /// Portable Rust, no intrinsics.
    Scalar,
    /// AVX2 + FMA + F16C (256-bit).
    Avx2,
    /// AVX-512 F/BW/VL + VNNI (`vpdpbusd`), plus everything AVX2 has.
    Avx512Vnni,
}

impl CpuPath {
    /// Every path, slowest first.
    pub const ALL: [CpuPath; 3] = [CpuPath::Scalar, CpuPath::Avx2, CpuPath::Avx512Vnni];

    /// The name used by `BITNET_CPU_PATH` and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            CpuPath::Scalar => "scalar",
            CpuPath::Avx2 => "avx2",
            CpuPath::Avx512Vnni => "avx512vnni",
        }
    }

    /// Parses a path name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// True when this processor can run the path.
    pub fn is_available(&self) -> bool {
        match self {
            CpuPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx512Vnni => {
                CpuPath::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Paths this processor can run, slowest first.
    pub fn available() -> Vec<CpuPath> {
        Self::ALL.into_iter().filter(|p| p.is_available()).collect()
    }

    /// The best available path.
    pub fn best() -> CpuPath {
        *Self::available().last().unwrap_or(&CpuPath::Scalar)
    }

    /// The path to use: `BITNET_CPU_PATH` when set (and available), else [`CpuPath::best`].
    pub fn from_env() -> Result<CpuPath, KernelError> {
        match std::env::var(PATH_ENV) {
            Ok(name) if !name.is_empty() => {
                let path = Self::from_name(&name).ok_or_else(|| KernelError::Shape {
                    op: "CpuPath::from_env",
                    reason: format!(
                        "{PATH_ENV}={name} is not a CPU path (scalar, avx2, avx512vnni)"
                    ),
                })?;
                if !path.is_available() {
                    return Err(KernelError::Shape {
                        op: "CpuPath::from_env",
                        reason: format!("{PATH_ENV}={name}: this processor lacks that path"),
                    });
                }
                Ok(path)
            }
            _ => Ok(Self::best()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_scalar_is_always_there() {
        for p in CpuPath::ALL {
            assert_eq!(CpuPath::from_name(p.name()), Some(p));
        }
        assert!(CpuPath::available().contains(&CpuPath::Scalar));
        assert!(CpuPath::best().is_available());
        assert_eq!(CpuPath::from_name("sse"), None);
    }
}
