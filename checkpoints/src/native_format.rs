//! `bitnet_format.json`: the versioned description of our own checkpoint layout (the `native`
//! output of `bitnet-cluster ckpt compress`), and where its weight files are.
//!
//! A native directory is the source's `config.json` (so family detection is unchanged), this
//! file, `manifest.json` (SHA-256 of every file, [`crate::manifest`]) and either one
//! `model.safetensors` or, for a tensor-parallel output, one `model-tpRR-of-NN.safetensors` per
//! rank holding only that rank's shard. Tensor names are the source family's; ternary
//! projections hold the kernels' 2-bit layout ([`bitnet_kernels::TernaryMatrix`]) as U8
//! `[padded_rows, blocks · 32]` plus a whole-tensor β in F32 `weight_scale` `[1]` (multiply).
//! Read by [`crate::storage`] and [`crate::loader`]; written by the coordinator's `ckpt` module.

use crate::error::CheckpointError;
use bitnet_kernels::packing::{BLOCK_BYTES, BLOCK_COLS, ROW_GROUP};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file name.
pub const FORMAT_FILE: &str = "bitnet_format.json";
/// The value of `format`.
pub const FORMAT_NAME: &str = "bitnet-cluster-native";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The name of the ternary layout (`ternary_layout.name`).
pub const TERNARY_LAYOUT: &str = "kernel-2bit-blocked";

/// How ternary weights are packed (a copy of the constants of `bitnet_kernels::packing`, so a
/// reader can refuse a layout it does not know).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TernaryLayout {
    pub name: String,
    /// Columns per block.
    pub block_cols: usize,
    /// Bytes per block of one row.
    pub block_bytes: usize,
    /// Rows interleaved per group.
    pub row_group: usize,
    /// Human-readable summary of the bit layout.
    pub description: String,
}

impl TernaryLayout {
    /// The layout of this build.
    pub fn current() -> Self {
        Self {
            name: TERNARY_LAYOUT.into(),
            block_cols: BLOCK_COLS,
            block_bytes: BLOCK_BYTES,
            row_group: ROW_GROUP,
            description:
                "U8 [ceil(rows/4)*4, ceil(cols/128)*32]; rows in groups of 4 stored block \
                          by block; byte j of a row's 128-column block holds columns j, j+32, \
                          j+64, j+96 in bit pairs 0..3; code = t + 1; padding code 1; \
                          weight_scale F32 [1] = beta of the whole (unsharded) tensor, multiply"
                    .into(),
        }
    }
}

/// The local sizes of one rank's file of a pre-sharded native checkpoint: its query features
/// (rows of q, input columns of o), key/value features (rows of k and v) and intermediate
/// features (rows of gate and up, input columns of down). Norms stay whole; OneBit o/down are
/// stored whole (they are replicated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankShapes {
    pub q_features: usize,
    pub kv_features: usize,
    pub ffn_features: usize,
}

/// A tensor-parallel output: one weight file per rank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorParallel {
    pub world: usize,
    /// File of rank `r` at index `r`.
    pub files: Vec<String>,
    /// Local sizes of rank `r` at index `r`.
    pub ranks: Vec<RankShapes>,
}

/// The content of `bitnet_format.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NativeFormat {
    /// [`FORMAT_NAME`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    pub ternary_layout: TernaryLayout,
    /// Dtype of the embedding as written (`F16`, `BF16`, `F32`).
    pub embedding_dtype: String,
    /// Dtype of the LM head (`tied`, `F16`, `BF16`, `F32`, `I8` with F32 per-row
    /// `lm_head.weight_scale`).
    pub lm_head: String,
    /// Norm weights are F32 (lossless for every source dtype).
    pub norm_dtype: String,
    /// The source family ([`crate::Family::name`]).
    pub source_family: String,
    /// `None`: one `model.safetensors` holding the whole model.
    pub tensor_parallel: Option<TensorParallel>,
}

/// The weight file of rank `rank` of `world`.
pub fn rank_file_name(rank: usize, world: usize) -> String {
    format!("model-tp{rank:02}-of-{world:02}.safetensors")
}

impl NativeFormat {
    /// Reads and checks `dir/bitnet_format.json` (`Ok(None)` when absent).
    pub fn read(dir: &Path) -> Result<Option<Self>, CheckpointError> {
        let path = dir.join(FORMAT_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| CheckpointError::io(&path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| CheckpointError::Json {
                path: path.clone(),
                source,
            })?;
        let version = value.get("version").and_then(|v| v.as_u64());
        if value.get("format").and_then(|v| v.as_str()) != Some(FORMAT_NAME) {
            return Err(CheckpointError::config(
                &path,
                format!("\"format\" is not {FORMAT_NAME:?}"),
            ));
        }
        match version {
            Some(v) if v == FORMAT_VERSION as u64 => {}
            Some(v) => {
                return Err(CheckpointError::config(
                    &path,
                    format!(
                        "layout version {v} is not supported (this build reads version \
                         {FORMAT_VERSION}); recompress the source with this build"
                    ),
                ))
            }
            None => return Err(CheckpointError::config(&path, "no \"version\" number")),
        }
        let format: NativeFormat =
            serde_json::from_value(value).map_err(|source| CheckpointError::Json {
                path: path.clone(),
                source,
            })?;
        if format.ternary_layout.name != TERNARY_LAYOUT
            || format.ternary_layout.block_cols != BLOCK_COLS
            || format.ternary_layout.block_bytes != BLOCK_BYTES
            || format.ternary_layout.row_group != ROW_GROUP
        {
            return Err(CheckpointError::config(
                &path,
                format!(
                    "ternary layout {:?} ({}x{} blocks, row groups of {}) is not this build's \
                     {TERNARY_LAYOUT:?} ({BLOCK_COLS}x{BLOCK_BYTES}, {ROW_GROUP})",
                    format.ternary_layout.name,
                    format.ternary_layout.block_cols,
                    format.ternary_layout.block_bytes,
                    format.ternary_layout.row_group
                ),
            ));
        }
        if let Some(tp) = &format.tensor_parallel {
            let expected: Vec<String> =
                (0..tp.world).map(|r| rank_file_name(r, tp.world)).collect();
            if tp.world == 0 || tp.files != expected || tp.ranks.len() != tp.world {
                return Err(CheckpointError::config(
                    &path,
                    format!(
                        "tensor_parallel lists files {:?} and {} rank shapes, expected files \
                         {expected:?} and one shape per rank",
                        tp.files,
                        tp.ranks.len()
                    ),
                ));
            }
        }
        Ok(Some(format))
    }

    /// Ranks the weights are split into (1 for a whole-model file).
    pub fn world(&self) -> usize {
        self.tensor_parallel.as_ref().map_or(1, |tp| tp.world)
    }
}
