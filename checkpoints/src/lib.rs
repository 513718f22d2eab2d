//! `bitnet-checkpoints`: model configs and readers for every checkpoint family.
//!
//! Entry points: [`read_config`] (config.json → [`ModelConfig`]), [`load_model`] (a model
//! directory → [`ModelWeights`], packed layouts converted to the kernels' layout, latent weights
//! ternarized) and [`inspect()`] (what `bitnet-cluster ckpt inspect` prints). Neighbours: uses
//! `bitnet-kernels` for the weight types; consumed by `bitnet-worker` (forward pass) and
//! `bitnet-coordinator` (CLI).
//!
//! Modules, in data-flow order: [`safetensors_dir`] (the mapped weight files) →
//! [`config_json`] + [`family`] (config and family detection) + [`storage`] (family layout,
//! our [`native_format`], or [`bitblas`]) → [`loader`] (strict, per-family tensor reading, with
//! [`packed`] for the family-B layout) → [`weights`] → [`mod@inspect`]. Writing (the
//! compression tool in `bitnet-coordinator`) uses [`export`] (tensors of each output format),
//! [`tensor_writer`] (streaming safetensors files), [`output_dir`] (atomic, fsynced output)
//! and [`manifest`] (SHA-256 of every file, [`verify()`]).

pub mod bitblas;
pub mod config;
pub mod config_json;
pub mod error;
pub mod export;
pub mod family;
pub mod inspect;
pub mod loader;
pub mod manifest;
pub mod native_format;
pub mod output_dir;
pub mod packed;
pub mod pickle;
pub mod safetensors_dir;
pub mod storage;
pub mod tensor_writer;
pub mod test_hook;
pub mod weights;

pub use config::{Activation, BitNetQuantization, Family, ModelConfig};
pub use config_json::RawConfig;
pub use error::CheckpointError;
pub use family::detect_family;
pub use inspect::{BitLinearSummary, InspectReport, TensorSummary};
pub use loader::ModelReader;
pub use manifest::Manifest;
pub use native_format::{NativeFormat, RankShapes};
pub use safetensors_dir::{SafetensorsDir, TensorRef};
pub use storage::Storage;
pub use weights::{LayerWeights, ModelWeights, Norm, Projection};

use std::path::Path;

/// Reads and validates `config.json` (and `generation_config.json`) of a model directory.
///
/// When the directory's weights can be opened, their tensor names settle what the config
/// alone cannot (a plain llama config is C, E or F; an absent `tie_word_embeddings`); without
/// readable weights a llama config reads as family C.
pub fn read_config(dir: &Path) -> Result<ModelConfig, CheckpointError> {
    let raw = RawConfig::read(dir)?;
    match open_weights(dir) {
        Ok((st, _)) => {
            let names: Vec<&str> = st.names().collect();
            raw.to_model_config(Some(&names))
        }
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "config read without tensor names");
            raw.to_model_config(None)
        }
    }
}

/// Loads every weight of the model in `dir` (refused for a pre-sharded checkpoint: see
/// [`load_rank`]).
pub fn load_model(dir: &Path) -> Result<ModelWeights, CheckpointError> {
    let (st, config, storage) = open(dir)?;
    if let Some(world) = storage.presharded_world() {
        return Err(CheckpointError::Presharded {
            dir: dir.to_path_buf(),
            world,
        });
    }
    loader::load_weights(&st, config, &storage, None)
}

/// Loads rank `rank`'s file of a checkpoint pre-sharded for `world` ranks: only that file is
/// read. Its layers hold the rank's local projections (see [`RankShapes`], also returned); the
/// embedding, norms and LM head are whole. Fails clearly when the checkpoint was written for
/// another number of ranks, or is not pre-sharded.
pub fn load_rank(
    dir: &Path,
    rank: usize,
    world: usize,
) -> Result<(ModelWeights, RankShapes), CheckpointError> {
    let storage = Storage::detect(dir)?;
    let stored = match &storage {
        Storage::Native(f) => f.tensor_parallel.as_ref(),
        _ => None,
    };
    let Some(tp) = stored else {
        return Err(CheckpointError::TensorParallelMismatch {
            dir: dir.to_path_buf(),
            stored: 1,
            requested: world,
        });
    };
    if tp.world != world || rank >= world {
        return Err(CheckpointError::TensorParallelMismatch {
            dir: dir.to_path_buf(),
            stored: tp.world,
            requested: world,
        });
    }
    let raw = RawConfig::read(dir)?;
    let st = SafetensorsDir::open_file(&dir.join(&tp.files[rank]))?;
    let names: Vec<&str> = st.names().collect();
    let config = raw.to_model_config(Some(&names))?;
    let shapes = tp.ranks[rank];
    let weights = loader::load_weights(&st, config, &storage, Some(shapes))?;
    Ok((weights, shapes))
}

/// Loads the model in `dir` and describes it (`bitnet-cluster ckpt inspect`); a pre-sharded
/// checkpoint is described rank by rank.
pub fn inspect(dir: &Path) -> Result<InspectReport, CheckpointError> {
    let (st, config, storage) = open(dir)?;
    match storage.presharded_world() {
        None => {
            let weights = loader::load_weights(&st, config, &storage, None)?;
            Ok(InspectReport::new(
                dir.to_path_buf(),
                &storage,
                &[(&st, &weights)],
            ))
        }
        Some(world) => {
            drop(st);
            let mut parts = Vec::with_capacity(world);
            for rank in 0..world {
                let (weights, _) = load_rank(dir, rank, world)?;
                let tp = storage_files(&storage);
                let st = SafetensorsDir::open_file(&dir.join(&tp[rank]))?;
                parts.push((st, weights));
            }
            let refs: Vec<(&SafetensorsDir, &ModelWeights)> =
                parts.iter().map(|(s, w)| (s, w)).collect();
            Ok(InspectReport::new(dir.to_path_buf(), &storage, &refs))
        }
    }
}

/// What [`verify()`] checked.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct VerifyReport {
    /// Files hashed (besides `manifest.json`).
    pub files: usize,
    /// Bytes hashed.
    pub bytes: u64,
    /// Weight file sets loaded (ranks of a pre-sharded checkpoint, else 1).
    pub ranks: usize,
    /// [`Storage::name`].
    pub storage: String,
}

/// Checks a `ckpt compress` output: every file against `manifest.json` (SHA-256 and size,
/// nothing missing or extra), then every tensor by loading it (names, shapes, dtypes, packed
/// codes and padding, scales), rank by rank for a pre-sharded checkpoint.
pub fn verify(dir: &Path) -> Result<VerifyReport, CheckpointError> {
    let manifest = Manifest::read(dir)?;
    let bytes = manifest.check(dir)?;
    let storage = Storage::detect(dir)?;
    let ranks = match storage.presharded_world() {
        None => {
            load_model(dir)?;
            1
        }
        Some(world) => {
            for rank in 0..world {
                load_rank(dir, rank, world)?;
            }
            world
        }
    };
    Ok(VerifyReport {
        files: manifest.files.len(),
        bytes,
        ranks,
        storage: storage.name(),
    })
}

/// The rank files of a pre-sharded native checkpoint (empty otherwise).
fn storage_files(storage: &Storage) -> Vec<String> {
    match storage {
        Storage::Native(f) => f
            .tensor_parallel
            .as_ref()
            .map(|tp| tp.files.clone())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Opens the weight files of `dir` (rank 0's file of a pre-sharded checkpoint: enough for the
/// tensor names) and detects how they are stored.
fn open_weights(dir: &Path) -> Result<(SafetensorsDir, Storage), CheckpointError> {
    let storage = Storage::detect(dir)?;
    let st = match storage_files(&storage).first() {
        Some(first) => SafetensorsDir::open_file(&dir.join(first))?,
        None => SafetensorsDir::open(dir)?,
    };
    Ok((st, storage))
}

/// The restricted pickle reader serves the OneBit import only: other families' pickles are
/// refused with the conversion hint.
fn check_pickle_family(st: &SafetensorsDir, config: &ModelConfig) -> Result<(), CheckpointError> {
    if st.is_pickle() && config.family != Family::OneBit {
        return Err(CheckpointError::Pickle {
            path: st.source().to_path_buf(),
        });
    }
    Ok(())
}

/// Reads the config, then opens the weights and detects the family with their names.
fn open(dir: &Path) -> Result<(SafetensorsDir, ModelConfig, Storage), CheckpointError> {
    let raw = RawConfig::read(dir)?;
    let (st, storage) = open_weights(dir)?;
    let names: Vec<&str> = st.names().collect();
    let config = raw.to_model_config(Some(&names))?;
    check_pickle_family(&st, &config)?;
    Ok((st, config, storage))
}
