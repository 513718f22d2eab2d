//! [`Storage`]: how a model directory stores its projections, beyond what the family says —
//! our native layout (`bitnet_format.json`, [`crate::native_format`]), the fused BitBLAS layout
//! (`quantize_config.json` with `checkpoint_format: "bitblas"`, [`crate::bitblas`]) or the
//! family's own layout. Detected once per directory by [`Storage::detect`] and handed to
//! [`crate::loader`].

use crate::config_json::read_json;
use crate::error::CheckpointError;
use crate::native_format::NativeFormat;
use serde_json::Value;
use std::path::Path;

/// The BitBLAS config file name (FORMATS.md §2.D; note the name).
pub const QUANTIZE_CONFIG: &str = "quantize_config.json";

/// How the projections of a directory are stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    /// As the family publishes them (latent, family-B packed, dense, OneBit sign bits).
    Family,
    /// Our native layout; whole or split per rank.
    Native(Box<NativeFormat>),
    /// BitBLAS: fused `qkv_proj` / `gate_up_proj`, `qweight` + `sw`, unpermuted.
    BitBlas,
}

impl Storage {
    /// Detects the storage of `dir` from `bitnet_format.json` and `quantize_config.json`.
    pub fn detect(dir: &Path) -> Result<Self, CheckpointError> {
        if let Some(native) = NativeFormat::read(dir)? {
            return Ok(Storage::Native(Box::new(native)));
        }
        let path = dir.join(QUANTIZE_CONFIG);
        if path.is_file() {
            let q = read_json(&path)?;
            check_quantize_config(&path, &q)?;
            if q.get("checkpoint_format").and_then(Value::as_str) == Some("bitblas") {
                return Ok(Storage::BitBlas);
            }
        }
        Ok(Storage::Family)
    }

    /// A short name for reports: `family`, `native`, `native (tensor-parallel N)`, `bitblas`.
    pub fn name(&self) -> String {
        match self {
            Storage::Family => "family".into(),
            Storage::Native(f) => match &f.tensor_parallel {
                None => "native".into(),
                Some(tp) => format!("native (tensor-parallel, {} ranks)", tp.world),
            },
            Storage::BitBlas => "bitblas".into(),
        }
    }

    /// The ranks a pre-sharded native checkpoint is split into (`None` when whole).
    pub fn presharded_world(&self) -> Option<usize> {
        match self {
            Storage::Native(f) => f.tensor_parallel.as_ref().map(|tp| tp.world),
            _ => None,
        }
    }
}

/// Accepts the plain BitBLAS "native" format (`checkpoint_format: "bitnet"`, or none) and the
/// fused `bitblas` format; refuses the rest, and a permuted layout, naming the file.
pub fn check_quantize_config(path: &Path, q: &Value) -> Result<(), CheckpointError> {
    let format = q.get("checkpoint_format").and_then(Value::as_str);
    match format {
        None | Some("bitnet") => Ok(()),
        Some("bitblas") => {
            let flag = |k: &str| q.get(k).and_then(Value::as_bool) == Some(true);
            if !(flag("fuse_qkv") && flag("fuse_gateup")) {
                return Err(CheckpointError::config(
                    path,
                    "checkpoint_format \"bitblas\" is read only with fuse_qkv and fuse_gateup \
                     both true",
                ));
            }
            if flag("propagate_b") || q.get("layout").is_some_and(|l| l != "unpermuted") {
                return Err(CheckpointError::config(
                    path,
                    "the BitBLAS weights use a permuted (tuned) layout; only the unpermuted \
                     layout is supported: re-export the checkpoint without weight propagation",
                ));
            }
            Ok(())
        }
        Some(other) => Err(CheckpointError::config(
            path,
            format!("checkpoint_format {other:?} is not supported (\"bitnet\" or \"bitblas\")"),
        )),
    }
}
