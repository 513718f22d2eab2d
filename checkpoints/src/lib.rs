//! `bitnet-checkpoints`: model configs and readers for every checkpoint family.
//!
//! Entry points: [`read_config`] (config.json → [`ModelConfig`]), [`load_model`] (a model
//! directory → [`ModelWeights`], packed layouts converted to the kernels' layout, latent weights
//! ternarized) and [`inspect()`] (what `bitnet-cluster ckpt inspect` prints). Neighbours: uses
//! `bitnet-kernels` for the weight types; consumed by `bitnet-worker` (forward pass) and
//! `bitnet-coordinator` (CLI).

pub mod config;
pub mod error;
pub mod weights;

pub use config::{Activation, BitNetQuantization, Family, ModelConfig};
pub use error::CheckpointError;
pub use weights::{LayerWeights, ModelWeights, Norm, Projection};

use std::path::Path;

/// Reads and validates `config.json` (and `generation_config.json`) of a model directory.
pub fn read_config(_dir: &Path) -> Result<ModelConfig, CheckpointError> {
    unimplemented!("checkpoint reader in progress")
}

/// Loads every weight of the model in `dir`.
pub fn load_model(_dir: &Path) -> Result<ModelWeights, CheckpointError> {
    unimplemented!("checkpoint reader in progress")
}
