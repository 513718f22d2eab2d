//! Loading one rank's file of a pre-sharded native checkpoint (`ckpt compress --tp N`) straight
//! into a [`ModelShard`]: the rank reads only its own file, and the result equals
//! [`ShardPlan::shard`] of the whole model (same rows, columns and whole-tensor β).
//!
//! The checkpoint's rank count must equal the group's, and its stored local sizes must be the
//! ones [`ShardPlan::layout`] gives; either mismatch is an error saying what to do.

use super::error::ShardError;
use super::layout::ShardPlan;
use super::weights::{LayerShard, ModelShard};
use bitnet_checkpoints::{CheckpointError, RankShapes};
use std::path::Path;
use thiserror::Error;

/// A rank's file could not be loaded.
#[derive(Debug, Error)]
pub enum PreshardedError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot load the pre-sharded checkpoint: {0}")]
    Shard(#[from] ShardError),
}

/// True when `dir` holds a checkpoint pre-sharded for tensor parallelism; `Some(world)`.
pub fn presharded_world(dir: &Path) -> Result<Option<usize>, CheckpointError> {
    Ok(bitnet_checkpoints::Storage::detect(dir)?.presharded_world())
}

/// Rank `plan.rank`'s shard, read from its own file of the pre-sharded checkpoint in `dir`.
pub fn load_presharded(dir: &Path, plan: ShardPlan) -> Result<ModelShard, PreshardedError> {
    let (weights, stored) = bitnet_checkpoints::load_rank(dir, plan.rank, plan.world)?;
    let layout = plan.layout(&weights.config)?;
    let expected = RankShapes {
        q_features: layout.q_features().len(),
        kv_features: layout.kv_features().len(),
        ffn_features: layout.ffn.len(),
    };
    if stored != expected {
        return Err(ShardError::PreshardedShapes {
            rank: plan.rank,
            stored: format!("{stored:?}"),
            expected: format!("{expected:?}"),
        }
        .into());
    }
    Ok(ModelShard {
        config: weights.config,
        layout,
        embedding: weights.embedding,
        layers: weights
            .layers
            .into_iter()
            .map(LayerShard::from_local_layer)
            .collect(),
        final_norm: weights.final_norm,
        lm_head: weights.lm_head,
    })
}
