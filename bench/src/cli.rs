//! The `bitnet-bench` command line (clap) and its dispatch.

use crate::kernel_bench::{self, KernelBenchOptions};
use crate::model_bench::{self, ModelBenchOptions};
use crate::ppl::{self, PplOptions};
use crate::report;
use crate::serve::{self, ServeArgs};
use crate::sweep::{self, SweepOptions};
use anyhow::{bail, Result};
use bitnet_coordinator::device::Device;
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
    /// Ternary and dense GEMV/GEMM throughput per CPU path (or on CUDA beside cuBLAS) at the 2B-4T and 3B layer shapes.
    Kernels(KernelArgs),
    /// Serving load over the client SDK (vllm bench serve metrics): TTFT, TPOT, ITL, throughput.
    Serve(ServeArgs),
    /// Perplexity of a checkpoint on a text file (1bitLLM eval_ppl.py document packing).
    Ppl(PplArgs),
    /// A Markdown report with SVG plots from the JSON files of the runs in RESULTS_DIR.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Directory of `--json` result files.
    pub results_dir: PathBuf,
    /// Report file (default: RESULTS_DIR/report.md); plots go to `plots/` beside it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A paragraph placed under the title (e.g. how the report was produced).
    #[arg(long)]
    pub note: Option<String>,
}

#[derive(Debug, Args)]
pub struct PplArgs {
    /// Model directory (any family the engine loads; needs tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Text file: every non-empty line is one text.
    #[arg(long)]
    pub text: PathBuf,
    /// Longest document in tokens.
    #[arg(long, default_value_t = 2048)]
    pub seqlen: usize,
    /// Compute threads (default: physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Evaluate at most this many documents.
    #[arg(long)]
    pub max_docs: Option<usize>,
    /// Also write the result as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// bitnet-700m, bitnet-1.3b, bitnet-3b, bitnet-2b4t, bitnet-7b, bitnet-13b, bitnet-70b, or llama-* of the same shapes.
    #[arg(long)]
    pub preset: String,
    /// cpu, or cuda (builds with --features cuda; visible device 0).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
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
    /// The paper's Table 3 protocol instead: grow the batch at a fixed sequence length until
    /// the memory budget is full, for the preset and the model of the other kind of the same shape.
    #[arg(long)]
    pub sweep_to_memory: bool,
    /// Memory budget of the sweep in GB (default: the machine's available memory; on CUDA the
    /// device memory free before loading, less a margin of 2 % of the card, at least 512 MiB).
    #[arg(long)]
    pub memory_budget: Option<f64>,
    /// Sequence length of the sweep.
    #[arg(long, default_value_t = 512)]
    pub sweep_seq_len: usize,
    /// Decode steps measured per batch of the sweep (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub sweep_steps: usize,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KernelArgs {
    /// cpu, or cuda (builds with --features cuda; visible device 0).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
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

/// Fails for a device this build lacks (before any work starts).
fn check_device(device: Device) -> Result<()> {
    Ok(device.check_built()?)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let default_threads = bitnet_kernels::cpu::physical_cores;
    match cli.command {
        Command::Model(a) if a.sweep_to_memory => {
            check_device(a.device)?;
            let budget = match a.memory_budget {
                Some(gb) if gb.is_finite() && gb > 0.0 => Some((gb * 1e9) as u64),
                Some(gb) => bail!("--memory-budget {gb}: expected a positive number of GB"),
                None => None,
            };
            sweep::run(&SweepOptions {
                preset: a.preset,
                device: a.device,
                threads: a.threads.unwrap_or_else(default_threads),
                memory_budget: budget,
                seq_len: a.sweep_seq_len,
                steps: a.sweep_steps,
                json: a.json,
            })?;
        }
        Command::Model(a) => {
            check_device(a.device)?;
            model_bench::run(&ModelBenchOptions {
                preset: a.preset,
                device: a.device,
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
            check_device(a.device)?;
            let opts = KernelBenchOptions {
                threads: a.threads.unwrap_or_else(default_threads),
                rows: a.n,
                json: a.json,
            };
            match a.device {
                Device::Cpu => kernel_bench::run(&opts)?,
                #[cfg(feature = "cuda")]
                Device::Cuda => crate::kernel_bench_cuda::run(&opts)?,
                #[cfg(not(feature = "cuda"))]
                Device::Cuda => bail!(bitnet_coordinator::device::DeviceError::NotBuilt),
            };
        }
        Command::Serve(a) => {
            serve::run(&a)?;
        }
        Command::Report(a) => {
            let path = report::run(&a.results_dir, a.out.as_deref(), a.note.as_deref())?;
            println!("wrote {}", path.display());
        }
        Command::Ppl(a) => {
            ppl::run(&PplOptions {
                model: a.model,
                text: a.text,
                seqlen: a.seqlen,
                threads: a.threads.unwrap_or_else(default_threads),
                max_docs: a.max_docs,
                json: a.json,
            })?;
        }
    }
    Ok(())
}
