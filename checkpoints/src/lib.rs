//! `bitnet-checkpoints`: model configs and readers for every checkpoint family.
//!
//! Entry points: [`read_config`] (config.json → [`ModelConfig`]), [`load_model`] (a model
//! directory → [`ModelWeights`], packed layouts converted to the kernels' layout, latent weights
//! ternarized) and [`inspect()`] (what `bitnet-cluster ckpt inspect` prints). Neighbours: uses
//! `bitnet-kernels` for the weight types; consumed by `bitnet-worker` (forward pass) and
//! `bitnet-coordinator` (CLI).
//!
//! Modules, in data-flow order: [`safetensors_dir`] (the mapped weight files) →
//! [`config_json`] + [`family`] (config and family detection) → [`loader`] (strict, per-family
//! tensor reading, with [`packed`] for the family-B layout) → [`weights`] → [`mod@inspect`].

pub mod config;
pub mod config_json;
pub mod error;
pub mod family;
pub mod inspect;
pub mod loader;
pub mod packed;
pub mod safetensors_dir;
pub mod weights;

pub use config::{Activation, BitNetQuantization, Family, ModelConfig};
pub use config_json::RawConfig;
pub use error::CheckpointError;
pub use family::detect_family;
pub use inspect::{BitLinearSummary, InspectReport, TensorSummary};
pub use safetensors_dir::{SafetensorsDir, TensorRef};
pub use weights::{LayerWeights, ModelWeights, Norm, Projection};

use std::path::Path;

/// Reads and validates `config.json` (and `generation_config.json`) of a model directory.
///
/// When the directory's safetensors can be opened, their tensor names settle what the config
/// alone cannot (a plain llama config is C, E or F; an absent `tie_word_embeddings`); without
/// readable weights a llama config reads as family C.
pub fn read_config(dir: &Path) -> Result<ModelConfig, CheckpointError> {
    let raw = RawConfig::read(dir)?;
    match SafetensorsDir::open(dir) {
        Ok(st) => {
            let names: Vec<&str> = st.names().collect();
            raw.to_model_config(Some(&names))
        }
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "config read without tensor names");
            raw.to_model_config(None)
        }
    }
}

/// Loads every weight of the model in `dir`.
pub fn load_model(dir: &Path) -> Result<ModelWeights, CheckpointError> {
    let (st, config) = open(dir)?;
    loader::load_weights(&st, config)
}

/// Loads the model in `dir` and describes it (`bitnet-cluster ckpt inspect`).
pub fn inspect(dir: &Path) -> Result<InspectReport, CheckpointError> {
    let (st, config) = open(dir)?;
    let weights = loader::load_weights(&st, config)?;
    Ok(InspectReport::new(dir.to_path_buf(), &st, &weights))
}

/// Reads the config, then opens the weights and detects the family with their names.
fn open(dir: &Path) -> Result<(SafetensorsDir, ModelConfig), CheckpointError> {
    let raw = RawConfig::read(dir)?;
    let st = SafetensorsDir::open(dir)?;
    let names: Vec<&str> = st.names().collect();
    let config = raw.to_model_config(Some(&names))?;
    Ok((st, config))
}
