//! Megatron-style tensor-parallel sharding of a loaded model.
//!
//! - [`layout`]: [`ShardPlan`] and [`ShardLayout`] (which heads and features a rank owns);
//! - [`weights`]: [`ModelShard`], a rank's weights cut from a [`bitnet_checkpoints::ModelWeights`];
//! - [`slice`](mod@slice): row and column slices of ternary, dense and sign matrices;
//! - [`presharded`]: a rank's [`ModelShard`] read from its own file of a pre-sharded checkpoint;
//! - [`error`][]: [`ShardError`].
//!
//! The forward pass over a shard is [`crate::ShardedModel`].

pub mod error;
pub mod layout;
pub mod presharded;
pub mod slice;
pub mod weights;

pub use error::ShardError;
pub use layout::{ShardLayout, ShardPlan, Span};
pub use presharded::{load_presharded, presharded_world, PreshardedError};
pub use weights::{shard_layer, LayerShard, ModelShard, RowParallel};
