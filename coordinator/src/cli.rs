//! The `bitnet-cluster` command line: argument types (clap) and dispatch to the library.
//! `main.rs` only parses, calls [`run`] and turns an error into one line and a non-zero exit.

use crate::device::Device;
use crate::error::CoordinatorError;
use crate::generate::{run_generate, GenerateOptions, Prompt};
use bitnet_worker::SamplingParams;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// BitNet b1.58 serving engine.
#[derive(Debug, Parser)]
#[command(name = "bitnet-cluster", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a model over gRPC (bitnet.v1.Serving, health, reflection); the demo model without --model.
    Up(UpArgs),
    /// Generate a continuation of one prompt in this process (built-in demo model without --model).
    Generate(GenerateArgs),
    /// Checkpoint tools.
    #[command(subcommand)]
    Ckpt(CkptCommand),
    /// One tensor-parallel worker process (started by `up --tp N`; serves bitnet.worker.v1).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the worker service; 0 picks a free one. The first line on stdout is
    /// `listening <port>`.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Compute threads (default: physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where this rank's shard runs (cuda: visible device 0; the launcher sets
    /// CUDA_VISIBLE_DEVICES per worker).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Exit when stdin closes (the launcher passes a pipe, so workers never outlive it).
    #[arg(long)]
    pub watch_stdin: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Model directory; omit to serve the built-in demo model (random weights).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Tensor-parallel ranks: N worker processes joined by a TCP ring (NCCL with --device cuda
    /// in a build with the nccl feature and one GPU per rank). Without --tp the model runs
    /// inside the coordinator process.
    #[arg(long)]
    pub tp: Option<usize>,
    /// cpu, or cuda (builds with --features cuda): one GPU per worker, rank r on
    /// CUDA_VISIBLE_DEVICES=r (or the r-th id of a CUDA_VISIBLE_DEVICES already set).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 50051)]
    pub port: u16,
    /// Sequences running at once at most.
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Tokens per engine step at most (prefill chunks and decodes together).
    #[arg(long, default_value_t = 2048)]
    pub max_batched_tokens: usize,
    /// Context length served (capped by the model's max_position_embeddings).
    #[arg(long, default_value_t = 4096)]
    pub max_model_len: usize,
    /// KV blocks of 16 tokens (default: every sequence at full length).
    #[arg(long)]
    pub num_kv_blocks: Option<usize>,
    /// Requests admitted (running + waiting) before RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 256)]
    pub max_admitted: usize,
    /// Compute threads (default: physical cores).
    #[arg(long)]
    pub threads_per_worker: Option<usize>,
    /// Check the model directory against its manifest.json before loading.
    #[arg(long)]
    pub verify: bool,
    /// LM head arithmetic, in process and in every worker: as stored, or int8 with per-row
    /// scales (W8A8; half the bytes of an f16 head per token; moves the logits slightly).
    #[arg(long, default_value = "stored", value_parser = ["stored", "int8"])]
    pub lm_head: String,
}

#[derive(Debug, Subcommand)]
pub enum CkptCommand {
    /// Family, shapes, sizes, ternary histograms and β of a checkpoint directory.
    Inspect(InspectArgs),
    /// Compress a checkpoint into the native, hf-packed or bitblas layout (atomic, streamed).
    Compress(crate::ckpt::CompressArgs),
    /// Re-hash a compressed checkpoint against manifest.json and check every tensor.
    Verify(crate::ckpt::VerifyArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Model directory (config.json + safetensors).
    pub dir: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model directory (config.json, safetensors, tokenizer.json). Omit to run the demo model.
    #[arg(long, conflicts_with = "server")]
    pub model: Option<PathBuf>,
    /// Send the request to a running server (`bitnet-cluster up`) at HOST:PORT instead.
    #[arg(long)]
    pub server: Option<String>,
    /// Prompt text (tokenized with the model's tokenizer.json).
    #[arg(
        long,
        conflicts_with = "prompt_ids",
        required_unless_present = "prompt_ids"
    )]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P (1: off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Seed of the sampler (random when absent).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Wrap the prompt in the model's chat template as one user message.
    #[arg(long)]
    pub chat: bool,
    /// Print one JSON object (prompt_ids, token_ids, text, finish_reason, speeds).
    #[arg(long)]
    pub json: bool,
    /// With --json: each token's logprob and the N most likely tokens (`logprobs`).
    #[arg(long)]
    pub logprobs: Option<u32>,
    /// Write the logits of every prompt position to this safetensors file (tensor `logits`).
    #[arg(long)]
    pub dump_logits: Option<PathBuf>,
    /// Compute threads (default: physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, or cuda (builds with --features cuda; visible device 0).
    #[arg(long, value_enum, default_value_t = Device::Cpu, conflicts_with = "server")]
    pub device: Device,
    /// LM head arithmetic: as stored (f16/bf16/f32) or int8 with per-row scales, which reads
    /// half the bytes of an f16 head per token but moves the logits slightly.
    #[arg(long, default_value = "stored", value_parser = ["stored", "int8"])]
    pub lm_head: String,
    /// Check the model directory against its manifest.json before loading.
    #[arg(long)]
    pub verify: bool,
}

/// Runs a parsed command line, printing results on stdout.
pub fn run(cli: Cli) -> Result<(), CoordinatorError> {
    match cli.command {
        Command::Up(args) => up(args),
        Command::Generate(args) => generate(args),
        Command::Worker(args) => {
            args.device.check_built()?;
            Ok(crate::cluster::run_worker(
                &args.host,
                args.port,
                args.threads
                    .unwrap_or_else(bitnet_kernels::cpu::physical_cores),
                args.device,
                args.watch_stdin,
            )?)
        }
        Command::Ckpt(CkptCommand::Inspect(args)) => {
            let report = bitnet_checkpoints::inspect(&args.dir)?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serializes")
                );
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Ckpt(CkptCommand::Compress(args)) => Ok(crate::ckpt::run_compress(args)?),
        Command::Ckpt(CkptCommand::Verify(args)) => Ok(crate::ckpt::run_verify(args)?),
    }
}

fn generate(args: GenerateArgs) -> Result<(), CoordinatorError> {
    args.device.check_built()?;
    if let (true, Some(dir)) = (args.verify, &args.model) {
        crate::ckpt::verify_before_load(dir)?;
    }
    let prompt = match (args.prompt, args.prompt_ids) {
        (Some(text), _) => Prompt::Text(text),
        (None, Some(ids)) => Prompt::Ids(ids),
        (None, None) => unreachable!("clap requires one of --prompt / --prompt-ids"),
    };
    let opts = GenerateOptions {
        model_dir: args.model,
        prompt,
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        chat: args.chat,
        logprobs: args.logprobs,
        dump_logits: args.dump_logits,
        lm_head_int8: args.lm_head == "int8",
        device: args.device,
        threads: args
            .threads
            .unwrap_or_else(bitnet_kernels::cpu::physical_cores),
    };
    opts.sampling.validate().map_err(CoordinatorError::Worker)?;
    let out = match &args.server {
        Some(addr) => crate::remote::run_remote(addr, &opts, !args.json)?,
        None => run_generate(&opts)?,
    };
    if args.server.is_some() && !args.json {
        eprintln!(
            "[{} new tokens, finish: {}]",
            out.token_ids.len(),
            out.finish_reason
        );
        return Ok(());
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&out).expect("output serializes")
        );
    } else {
        if out.text.is_empty() {
            println!("{:?}", out.token_ids);
        } else {
            println!("{}", out.text);
        }
        eprintln!(
            "[{} prompt + {} new tokens, finish: {}, prefill {:.1} tok/s, decode {:.1} tok/s]",
            out.prompt_ids.len(),
            out.token_ids.len(),
            out.finish_reason,
            out.prefill_tokens_per_s,
            out.decode_tokens_per_s
        );
    }
    Ok(())
}

fn up(args: UpArgs) -> Result<(), CoordinatorError> {
    if args.tp == Some(0) {
        return Err(CoordinatorError::InvalidRequest(
            "--tp must be at least 1".into(),
        ));
    }
    args.device.check_built()?;
    if let Some(dir) = &args.model {
        if args.verify {
            crate::ckpt::verify_before_load(dir)?;
        }
        crate::ckpt::check_tensor_parallel(dir, args.tp)?;
    }
    let opts = crate::serve::ServeOptions {
        model_dir: args.model,
        max_num_seqs: args.max_num_seqs,
        max_batched_tokens: args.max_batched_tokens,
        max_model_len: args.max_model_len,
        num_kv_blocks: args.num_kv_blocks,
        max_admitted: args.max_admitted,
        device: args.device,
        threads: args.threads_per_worker.unwrap_or_else(|| {
            (bitnet_kernels::cpu::physical_cores() / args.tp.unwrap_or(1)).max(1)
        }),
        lm_head_int8: args.lm_head == "int8",
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| CoordinatorError::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| CoordinatorError::Io {
                path: addr.clone(),
                source,
            })?;
        let local = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
        match args.tp {
            None => {
                let served = crate::serve::build(&opts)?;
                eprintln!(
                    "bitnet-cluster: serving {} on {local} (bitnet.v1.Serving, grpc.health.v1, reflection); Ctrl-C or SIGTERM stops",
                    served.description
                );
                crate::serve::serve_on(listener, served, shutdown_signal()).await
            }
            Some(tp) => {
                eprintln!(
                    "bitnet-cluster: starting {tp} worker process(es); serving on {local} once they are ready; Ctrl-C or SIGTERM stops"
                );
                let mut launch = crate::cluster::LaunchOptions::new(tp, opts.threads);
                launch.device = opts.device;
                launch.lm_head_int8 = opts.lm_head_int8;
                crate::cluster::serve_cluster(&opts, &launch, listener, shutdown_signal()).await
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("bitnet-cluster: shutting down");
}
