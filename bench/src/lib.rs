//! `bitnet-bench`: kernel, model and serving benchmarks (BitNet versus FP16 LLaMA).
//!
//! The CPU-kernels issue adds `bitnet-bench model` and `bitnet-bench kernels`; the benchmark
//! issue adds `serve`, `ppl` and `report`. Until then the crate holds nothing but this note.
