//! `bitnet-bench`: kernel and model benchmarks, BitNet versus FP16 LLaMA in the same engine.
//!
//! - [`model_bench`]: `bitnet-bench model --preset NAME`: prefill/decode tokens/s per batch,
//!   resident memory, read bandwidth and the decode bandwidth floor, on random weights (CPU,
//!   or `--device cuda` with feature `cuda`: [`model_bench_cuda`], the device-resident model).
//! - [`kernel_bench`]: `bitnet-bench kernels`: GB/s and GOP/s per CPU path and layer shape,
//!   beside the `gemm` crate; [`kernel_bench_cuda`] (feature `cuda`): `--device cuda`, the
//!   CUDA ternary kernels beside cuBLAS f16/bf16 and the device copy bandwidth.
//! - [`serve`]: `bitnet-bench serve`: a `vllm bench serve`-style load generator over the
//!   client SDK (TTFT, TPOT, ITL, E2E latency, throughputs, goodput, soak memory slope).
//! - [`sweep`]: `bitnet-bench model --sweep-to-memory`: the paper's Table 3 protocol (largest
//!   batch under a memory budget, BitNet versus FP16 LLaMA) on the CPU, or on one GPU with
//!   `--device cuda` ([`sweep_cuda`], feature `cuda`); [`sweep_plan`]: their shared memory
//!   arithmetic and batch-growth loop.
//! - [`ppl`]: `bitnet-bench ppl`: perplexity on a text file (1bitLLM `eval_ppl.py` packing).
//! - [`report`]: `bitnet-bench report DIR`: Markdown + SVG plots from the runs' JSON files.
//! - [`energy`]: joules per token where a meter exists (RAPL; NVML's GPU counter through
//!   [`energy_nvml`], feature `cuda`), "not measurable here: <why>" otherwise.
//! - [`presets`], [`bandwidth`], [`memory`], [`timing`], [`meta`]: the pieces they share.

pub mod bandwidth;
pub mod cli;
pub mod energy;
#[cfg(feature = "cuda")]
pub mod energy_nvml;
pub mod kernel_bench;
#[cfg(feature = "cuda")]
pub mod kernel_bench_cuda;
pub mod memory;
pub mod meta;
pub mod model_bench;
#[cfg(feature = "cuda")]
pub mod model_bench_cuda;
pub mod ppl;
pub mod presets;
pub mod report;
pub mod serve;
pub mod sweep;
#[cfg(feature = "cuda")]
pub mod sweep_cuda;
pub mod sweep_plan;
pub mod timing;
