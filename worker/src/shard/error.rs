//! [`ShardError`]: why a model cannot be split for a tensor-parallel group.

use thiserror::Error;

/// A [`super::ShardPlan`] does not fit the model.
#[derive(Debug, Error, PartialEq)]
pub enum ShardError {
    #[error("rank {rank} is outside a group of {world}")]
    RankOutOfRange { rank: usize, world: usize },
    #[error("tensor-parallel size {world} does not divide the {heads} attention heads")]
    HeadsNotDivisible { heads: usize, world: usize },
    #[error(
        "tensor-parallel size {world} neither divides nor is a multiple of the {kv_heads} \
         key/value heads"
    )]
    KvHeadsNotDivisible { kv_heads: usize, world: usize },
    #[error("intermediate size {intermediate} is smaller than the tensor-parallel size {world}")]
    IntermediateTooSmall { intermediate: usize, world: usize },
    #[error("layer {layer} {name}: {reason}")]
    Shape {
        layer: usize,
        name: &'static str,
        reason: String,
    },
    #[error(
        "rank {rank}'s file holds {stored}, but this build shards it as {expected}; recompress \
         the source with this build"
    )]
    PreshardedShapes {
        rank: usize,
        stored: String,
        expected: String,
    },
    #[error("the model has rank {expected} of {expected_world}, the collective is rank {got} of {got_world}")]
    GroupMismatch {
        expected: usize,
        expected_world: usize,
        got: usize,
        got_world: usize,
    },
}
