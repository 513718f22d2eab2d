//! The `bitnet-bench` command line (clap) and its dispatch.

use crate::kernel_bench::{self, KernelBenchOptions};
use crate::model_bench::{self, ModelBenchOptions};
use crate::serve::{self, ServeArgs};
use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Benchmarks of the bitnet-cluster engine.
#[derive(Debug, Parser)]
#[command(name = "bitnet-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A preset model with random weights: prefill/decode tokens/s per batch, memory, bandwidth floor.
    Model(ModelArgs),
    /// Ternary and dense GEMV/GEMM throughput per CPU path at the 2B-4T and 3B layer shapes.
    Kernels(KernelArgs),
    /// Serving load over the client SDK (vllm bench serve metrics): TTFT, TPOT, ITL, throughput.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// bitnet-700m, bitnet-1.3b, bitnet-3b, bitnet-2b4t, bitnet-7b, bitnet-13b, bitnet-70b, or llama-* of the same shapes.
    #[arg(long)]
    pub preset: String,
    /// cpu (cuda arrives with the CUDA issue).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute threads (default: physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Batch sizes to decode at.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Prompt (context) lengths.
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub prompt_len: Vec<usize>,
    /// Decode steps per measurement (the first is a warm-up).
    #[arg(long, default_value_t = 32)]
    pub gen_len: usize,
    /// Measure prefill only when batch × prompt length is at most this many tokens.
    #[arg(long, default_value_t = 2048)]
    pub max_prefill_tokens: usize,
    /// LM head arithmetic: f16 (as stored) or int8 with per-row scales (a numerics change).
    #[arg(long, default_value = "f16", value_parser = ["f16", "int8"])]
    pub lm_head: String,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KernelArgs {
    /// cpu (cuda arrives with the CUDA issue).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute threads (default: physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Activation rows per call: 1 is a GEMV, more a GEMM.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub n: Vec<usize>,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn check_device(device: &str) -> Result<()> {
    if device != "cpu" {
        bail!("--device {device}: only cpu is available in this build (cuda arrives with the CUDA issue)");
    }
    Ok(())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let default_threads = bitnet_kernels::cpu::physical_cores;
    match cli.command {
        Command::Model(a) => {
            check_device(&a.device)?;
            model_bench::run(&ModelBenchOptions {
                preset: a.preset,
                threads: a.threads.unwrap_or_else(default_threads),
                batches: a.batch,
                prompt_lens: a.prompt_len,
                gen_len: a.gen_len,
                max_prefill_tokens: a.max_prefill_tokens,
                lm_head_int8: a.lm_head == "int8",
                json: a.json,
            })?;
        }
        Command::Kernels(a) => {
            check_device(&a.device)?;
            kernel_bench::run(&KernelBenchOptions {
                threads: a.threads.unwrap_or_else(default_threads),
                rows: a.n,
                json: a.json,
            })?;
        }
        Command::Serve(a) => {
            serve::run(&a)?;
        }
    }
    Ok(())
}
