//! The `bitnet-cluster` command line: argument types (clap) and dispatch to the library.
//! `main.rs` only parses, calls [`run`] and turns an error into one line and a non-zero exit.

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
    /// Generate a continuation of one prompt on the CPU (built-in demo model without --model).
    Generate(GenerateArgs),
    /// Checkpoint tools.
    #[command(subcommand)]
    Ckpt(CkptCommand),
}

#[derive(Debug, Subcommand)]
pub enum CkptCommand {
    /// Family, shapes, sizes, ternary histograms and β of a checkpoint directory.
    Inspect(InspectArgs),
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
    #[arg(long)]
    pub model: Option<PathBuf>,
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
    /// Write the logits of every prompt position to this safetensors file (tensor `logits`).
    #[arg(long)]
    pub dump_logits: Option<PathBuf>,
    /// Compute threads (default: physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// LM head arithmetic: as stored (f16/bf16/f32) or int8 with per-row scales, which reads
    /// half the bytes of an f16 head per token but moves the logits slightly.
    #[arg(long, default_value = "stored", value_parser = ["stored", "int8"])]
    pub lm_head: String,
}

/// Runs a parsed command line, printing results on stdout.
pub fn run(cli: Cli) -> Result<(), CoordinatorError> {
    match cli.command {
        Command::Generate(args) => generate(args),
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
    }
}

fn generate(args: GenerateArgs) -> Result<(), CoordinatorError> {
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
        dump_logits: args.dump_logits,
        lm_head_int8: args.lm_head == "int8",
        threads: args
            .threads
            .unwrap_or_else(bitnet_kernels::cpu::physical_cores),
    };
    opts.sampling.validate().map_err(CoordinatorError::Worker)?;
    let out = run_generate(&opts)?;
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
