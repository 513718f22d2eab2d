//! `bitnet-bench`: kernel and model benchmarks, BitNet versus FP16 LLaMA in the same engine.
//!
//! - [`model_bench`]: `bitnet-bench model --preset NAME`: prefill/decode tokens/s per batch,
//!   resident memory, read bandwidth and the decode bandwidth floor, on random weights.
//! - [`kernel_bench`]: `bitnet-bench kernels`: GB/s and GOP/s per CPU path and layer shape,
//!   beside the `gemm` crate.
//! - [`presets`], [`bandwidth`], [`memory`], [`timing`]: the pieces they share.
//!
//! Serving load, energy, perplexity and the Markdown report come with the benchmark issue.

pub mod bandwidth;
pub mod cli;
pub mod kernel_bench;
pub mod memory;
pub mod model_bench;
pub mod presets;
pub mod timing;
