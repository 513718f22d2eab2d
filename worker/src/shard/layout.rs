//! [`ShardPlan`] (which rank of how many) and [`ShardLayout`] (which heads, key/value heads and
//! intermediate features that rank owns). Megatron-style: heads and intermediate features are
//! split into contiguous, rank-ordered ranges, so concatenating the ranks' slices in rank order
//! gives the whole tensor back.

use super::error::ShardError;
use bitnet_checkpoints::ModelConfig;

/// A half-open range `start .. end` of rows or columns (a `Copy` stand-in for `Range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// `start .. end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Elements in the range.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when the range is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The indices of the range.
    pub fn iter(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }

    /// The range scaled by `k` (heads to features: `k = head_dim`).
    pub fn times(&self, k: usize) -> Span {
        Span::new(self.start * k, self.end * k)
    }

    /// The `part`-th of `parts` balanced contiguous pieces of `0 .. n`.
    pub fn split(n: usize, part: usize, parts: usize) -> Span {
        Span::new(part * n / parts, (part + 1) * n / parts)
    }
}

/// Which rank of a tensor-parallel group of which size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    pub rank: usize,
    pub world: usize,
}

/// What one rank owns of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLayout {
    pub rank: usize,
    pub world: usize,
    pub head_dim: usize,
    /// Query heads (global indices).
    pub q_heads: Span,
    /// Key/value heads (global indices). When the group is larger than the number of key/value
    /// heads, each rank holds the one its query heads read (replicated across ranks).
    pub kv_heads: Span,
    /// Intermediate (MLP) features.
    pub ffn: Span,
}

impl ShardLayout {
    /// Local query heads.
    pub fn local_heads(&self) -> usize {
        self.q_heads.len()
    }

    /// Local key/value heads.
    pub fn local_kv_heads(&self) -> usize {
        self.kv_heads.len()
    }

    /// Query features (rows of q, input columns of o) of this rank.
    pub fn q_features(&self) -> Span {
        self.q_heads.times(self.head_dim)
    }

    /// Key/value features (rows of k and v) of this rank.
    pub fn kv_features(&self) -> Span {
        self.kv_heads.times(self.head_dim)
    }
}

impl ShardPlan {
    /// Rank `rank` of a group of `world`.
    pub fn new(rank: usize, world: usize) -> Result<Self, ShardError> {
        if rank >= world {
            return Err(ShardError::RankOutOfRange { rank, world });
        }
        Ok(Self { rank, world })
    }

    /// The whole model on one rank.
    pub fn single() -> Self {
        Self { rank: 0, world: 1 }
    }

    /// The heads and features this rank owns, or why the model cannot be split `world` ways.
    ///
    /// Query heads must divide by `world`. Key/value heads either divide by `world` (each rank
    /// owns `kv / world`) or divide `world` (each rank owns the one key/value head its query
    /// heads read, as vLLM replicates them). Intermediate features are split in balanced
    /// contiguous ranges (they need not divide).
    pub fn layout(&self, config: &ModelConfig) -> Result<ShardLayout, ShardError> {
        let (rank, world) = (self.rank, self.world);
        let (heads, kv) = (config.num_heads, config.num_kv_heads);
        if rank >= world {
            return Err(ShardError::RankOutOfRange { rank, world });
        }
        if heads % world != 0 {
            return Err(ShardError::HeadsNotDivisible { heads, world });
        }
        if kv == 0 || heads % kv != 0 {
            return Err(ShardError::KvHeadsNotDivisible {
                kv_heads: kv,
                world,
            });
        }
        if config.intermediate_size < world {
            return Err(ShardError::IntermediateTooSmall {
                intermediate: config.intermediate_size,
                world,
            });
        }
        let q_heads = Span::split(heads, rank, world);
        let group = heads / kv;
        let kv_heads = if kv % world == 0 {
            Span::split(kv, rank, world)
        } else if world % kv == 0 {
            let first = q_heads.start / group;
            Span::new(first, first + 1)
        } else {
            return Err(ShardError::KvHeadsNotDivisible {
                kv_heads: kv,
                world,
            });
        };
        // The attention kernel maps local query head j to local kv head j / (hq / hkv): check
        // that this is the global mapping j -> j / group restricted to this rank.
        let (hq, hkv) = (q_heads.len(), kv_heads.len());
        let consistent = hq % hkv == 0
            && q_heads
                .iter()
                .enumerate()
                .all(|(j, g)| g / group == kv_heads.start + j / (hq / hkv));
        if !consistent {
            return Err(ShardError::KvHeadsNotDivisible {
                kv_heads: kv,
                world,
            });
        }
        Ok(ShardLayout {
            rank,
            world,
            head_dim: config.head_dim,
            q_heads,
            kv_heads,
            ffn: Span::split(config.intermediate_size, rank, world),
        })
    }
}
