//! `bitnet-cluster ckpt compress` and `ckpt verify`, and `--verify` on load.
//!
//! - [`compress`](mod@compress): the streaming compression pipeline ([`CompressOptions`] →
//!   [`CompressSummary`]);
//! - [`out_config`]: the small files each format writes besides its weights;
//! - [`progress`]: indicatif bar on a terminal, plain lines otherwise;
//! - [`args`]: the clap arguments; [`error`]: [`CkptError`].
//!
//! The formats themselves (native, hf-packed, bitblas, manifest, atomic output) live in
//! `bitnet-checkpoints`; sharding for `--tp` in `bitnet-worker::shard`.

pub mod args;
pub mod compress;
pub mod error;
pub mod out_config;
pub mod progress;

pub use args::{CompressArgs, FormatArg, LmHeadArg, VerifyArgs};
pub use compress::{compress, CompressOptions, CompressSummary};
pub use error::CkptError;
pub use progress::Progress;

use bitnet_checkpoints::export::OutputFormat;
use std::path::Path;

/// `ckpt compress`: runs and prints the summary (or JSON).
pub fn run_compress(args: CompressArgs) -> Result<(), CkptError> {
    let opts = CompressOptions {
        input: args.input,
        output: args.output,
        format: match args.format {
            FormatArg::Native => OutputFormat::Native,
            FormatArg::HfPacked => OutputFormat::HfPacked,
            FormatArg::Bitblas => OutputFormat::BitBlas,
        },
        tp: args.tp,
        lm_head: args.lm_head,
    };
    let summary = compress(&opts, &mut Progress::for_stderr())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&summary).expect("the summary serializes")
        );
    } else {
        println!("{summary}");
    }
    Ok(())
}

/// `ckpt verify DIR`: hashes and loads everything; prints what was checked.
pub fn run_verify(args: VerifyArgs) -> Result<(), CkptError> {
    let r = bitnet_checkpoints::verify(&args.dir)?;
    println!(
        "ok: {} ({}): {} files, {} bytes match manifest.json; {} weight file set(s) load \
         with valid shapes, dtypes and packed codes",
        args.dir.display(),
        r.storage,
        r.files,
        r.bytes,
        r.ranks
    );
    Ok(())
}

/// `--verify` of `up` / `generate`: checks the directory before it is loaded.
pub fn verify_before_load(dir: &Path) -> Result<(), CkptError> {
    let r = bitnet_checkpoints::verify(dir)?;
    eprintln!(
        "bitnet-cluster: verified {} ({} files, {} bytes)",
        dir.display(),
        r.files,
        r.bytes
    );
    Ok(())
}

/// Fails early when `dir` is pre-sharded for another number of ranks than `tp` (`None`: in
/// process, one rank).
pub fn check_tensor_parallel(dir: &Path, tp: Option<usize>) -> Result<(), CkptError> {
    let stored = bitnet_worker::shard::presharded_world(dir)?;
    match (stored, tp) {
        (None, _) => Ok(()),
        (Some(s), Some(t)) if s == t => Ok(()),
        (Some(s), None) => Err(bitnet_checkpoints::CheckpointError::Presharded {
            dir: dir.to_path_buf(),
            world: s,
        }
        .into()),
        (Some(s), Some(t)) => Err(
            bitnet_checkpoints::CheckpointError::TensorParallelMismatch {
                dir: dir.to_path_buf(),
                stored: s,
                requested: t,
            }
            .into(),
        ),
    }
}
