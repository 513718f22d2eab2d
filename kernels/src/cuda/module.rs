//! [`Kernels`]: every CUDA function of `kernels/cuda/`, loaded once per backend from the cubins
//! [`super::compile::KernelCompiler`] makes. [`KERNELS`] is the one table of which source holds
//! which kernel; a test checks it against the source text, so a renamed kernel fails without a GPU.

use super::compile::KernelCompiler;
use super::CudaError;
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::Arc;

/// Every kernel the backend launches, by source file.
pub const KERNELS: &[(&str, &[&str])] = &[
    (
        "attention.cu",
        &["attention", "paged_attention", "kv_store"],
    ),
    (
        "dense.cu",
        &["dense_i8_matmul", "sign_matmul", "dense_h16_rows"],
    ),
    (
        "elementwise.cu",
        &[
            "silu_mul",
            "relu2_mul",
            "add_assign",
            "scale_columns",
            "embedding_f32",
            "embedding_f16",
            "embedding_bf16",
            "embedding_i8",
            "f32_to_f16",
            "f32_to_bf16",
            "gather_rows",
            "take_columns",
            "interleave_parts",
        ],
    ),
    ("norm.cu", &["rms_norm", "layer_norm"]),
    (
        "quant.cu",
        &["quantize_rows", "dequantize_rows", "quantize_cols"],
    ),
    ("rope.cu", &["rope"]),
    ("sample.cu", &["argmax_rows", "sample_rows"]),
    ("ternary.cu", &["ternary_gemv", "ternary_gemm_dp4a"]),
];

/// The loaded functions, by kernel name.
pub struct Kernels {
    functions: HashMap<&'static str, CudaFunction>,
}

impl Kernels {
    /// Compiles (or reads from the cache) every source and loads every kernel into `ctx`.
    pub fn load(ctx: &Arc<CudaContext>, compiler: &KernelCompiler) -> Result<Self, CudaError> {
        let mut functions = HashMap::new();
        for (source, names) in KERNELS {
            let cubin = compiler.cubin(source)?;
            let module = ctx
                .load_module(Ptx::from_binary(cubin))
                .map_err(|e| CudaError::driver(format!("loading the module of {source}"), e))?;
            for name in *names {
                let f = module
                    .load_function(name)
                    .map_err(|e| CudaError::driver(format!("kernel {name} of {source}"), e))?;
                functions.insert(*name, f);
            }
        }
        Ok(Self { functions })
    }

    /// The function `name` (one of [`KERNELS`]).
    pub fn get(&self, name: &'static str) -> Result<&CudaFunction, CudaError> {
        self.functions.get(name).ok_or_else(|| CudaError::Driver {
            what: format!("kernel {name}"),
            reason: "not loaded (missing from the KERNELS table)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::compile::{source, SOURCES};

    #[test]
    fn every_kernel_is_defined_in_its_source() {
        for (file, names) in KERNELS {
            let text = source(file).unwrap_or_else(|| panic!("{file} is not embedded"));
            for name in *names {
                let defined = text.lines().any(|l| {
                    l.trim_start().starts_with(&format!("{name}("))
                        || l.contains(&format!(" {name}("))
                });
                assert!(
                    defined && text.contains("extern \"C\" __global__"),
                    "{file} defines no kernel {name}"
                );
            }
        }
        assert_eq!(KERNELS.len(), SOURCES.len(), "every source has kernels");
    }
}
