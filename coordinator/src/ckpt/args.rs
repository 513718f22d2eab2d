//! Command-line arguments of `bitnet-cluster ckpt compress` and `ckpt verify` (clap), kept here
//! so `crate::cli` only names them.

use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Our layout: kernel-ready 2-bit weights, whole-tensor β, `bitnet_format.json`.
    Native,
    /// The 2B-4T packed layout Hugging Face transformers loads (autobitlinear, multiply).
    HfPacked,
    /// BitBLAS: fused qkv and gate_up, unpermuted, `quantize_config.json`.
    Bitblas,
}

/// `--lm-head`: the dtype of the embedding and the LM head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LmHeadArg {
    /// f16/bf16 as stored; f32 becomes the config's torch_dtype (bf16 or, by default, f16).
    Auto,
    /// Exactly as stored (f32 stays f32): lossless.
    Keep,
    F16,
    Bf16,
    /// f32 (e.g. for transformers runs in float32: it does not upcast a bf16 tied head).
    F32,
    /// An int8 LM head with f32 per-row scales (a numerics change; the embedding as `auto`).
    Int8,
}

#[derive(Debug, Args)]
pub struct CompressArgs {
    /// Source checkpoint directory (any family the engine loads, latent or packed; OneBit
    /// `pytorch_model.bin` too). Only read.
    #[arg(long)]
    pub input: PathBuf,
    /// Destination directory: written beside itself, then renamed into place.
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "native")]
    pub format: FormatArg,
    /// Write one weight file per tensor-parallel rank (native format only).
    #[arg(long)]
    pub tp: Option<usize>,
    #[arg(long, value_enum, default_value = "auto")]
    pub lm_head: LmHeadArg,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A `ckpt compress` output directory.
    pub dir: PathBuf,
}
