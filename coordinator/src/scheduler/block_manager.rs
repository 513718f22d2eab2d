//! Paged KV cache bookkeeping: which fixed-size block of the workers' KV pool holds which
//! sequence's tokens.
//!
//! The [`Scheduler`](super::Scheduler) is the only caller: it asks for blocks when it schedules
//! tokens and frees them when a sequence finishes, is aborted or is preempted. Block ids travel
//! to the workers inside the [`SchedulerOutput`](super::SchedulerOutput); the workers own the
//! memory, the coordinator owns the allocation (TGI's router-side allocator). Blocks carry
//! reference counts so a later prefix cache can map one full block into several sequences
//! ([`BlockManager::allocate_with_prefix`]).

use std::collections::{HashMap, VecDeque};

use thiserror::Error;

use super::request::SeqId;

/// Index of one KV block in every worker's pool (`uint32` on the wire).
pub type BlockId = u32;

/// A block request the pool cannot satisfy, or a call that does not match the pool's state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockError {
    #[error("out of KV blocks: sequence {seq} needs {needed}, {free} free")]
    OutOfBlocks {
        seq: SeqId,
        needed: usize,
        free: usize,
    },
    #[error("sequence {seq} holds no KV blocks")]
    UnknownSeq { seq: SeqId },
    #[error("sequence {seq} already holds KV blocks")]
    SeqExists { seq: SeqId },
    #[error("shared block {block} is not allocated (pool of {num_blocks})")]
    BlockNotAllocated { block: BlockId, num_blocks: usize },
    #[error(
        "sequence {seq}: {shared} shared blocks hold {} tokens, more than its {n_tokens}",
        shared * block_size
    )]
    PrefixTooLong {
        seq: SeqId,
        shared: usize,
        block_size: usize,
        n_tokens: usize,
    },
    #[error("block size must be at least 1, got {block_size}")]
    ZeroBlockSize { block_size: usize },
}

/// The blocks of one sequence and how many token slots of them are in use.
#[derive(Debug, Clone, Default)]
struct SeqBlocks {
    blocks: Vec<BlockId>,
    slots: usize,
}

/// A fixed pool of `num_blocks` KV blocks of `block_size` tokens each, with reference counts.
///
/// Invariants (checked by [`BlockManager::check_invariants`] in tests): a block is either on the
/// free list with reference count 0 or held by exactly as many sequences as its reference
/// count; no block is on the free list twice; every sequence holds exactly
/// `ceil(slots / block_size)` blocks.
#[derive(Debug, Clone)]
pub struct BlockManager {
    block_size: usize,
    ref_counts: Vec<u32>,
    free: VecDeque<BlockId>,
    seqs: HashMap<SeqId, SeqBlocks>,
}

impl BlockManager {
    /// A pool of `num_blocks` free blocks of `block_size` token slots.
    pub fn new(block_size: usize, num_blocks: usize) -> Result<Self, BlockError> {
        if block_size == 0 {
            return Err(BlockError::ZeroBlockSize { block_size });
        }
        let num_blocks = num_blocks.min(u32::MAX as usize);
        Ok(Self {
            block_size,
            ref_counts: vec![0; num_blocks],
            free: (0..num_blocks as BlockId).collect(),
            seqs: HashMap::new(),
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    pub fn num_free_blocks(&self) -> usize {
        self.free.len()
    }

    pub fn num_used_blocks(&self) -> usize {
        self.num_blocks() - self.num_free_blocks()
    }

    /// Fraction of the pool in use, in `[0, 1]` (`kv_cache_usage_perc`).
    pub fn usage(&self) -> f64 {
        if self.num_blocks() == 0 {
            0.0
        } else {
            self.num_used_blocks() as f64 / self.num_blocks() as f64
        }
    }

    /// Blocks needed to hold `n_tokens` token slots.
    pub fn blocks_for_tokens(&self, n_tokens: usize) -> usize {
        n_tokens.div_ceil(self.block_size)
    }

    /// Whether `n_blocks` more blocks can be handed out now.
    pub fn can_allocate(&self, n_blocks: usize) -> bool {
        n_blocks <= self.free.len()
    }

    /// Blocks that [`append_slots`](Self::append_slots) would allocate for `new_tokens` more
    /// slots of `seq` (a sequence without blocks counts as empty).
    pub fn blocks_needed(&self, seq: SeqId, new_tokens: usize) -> usize {
        let (held, slots) = self
            .seqs
            .get(&seq)
            .map_or((0, 0), |s| (s.blocks.len(), s.slots));
        self.blocks_for_tokens(slots + new_tokens)
            .saturating_sub(held)
    }

    /// Whether `seq` holds blocks.
    pub fn contains(&self, seq: SeqId) -> bool {
        self.seqs.contains_key(&seq)
    }

    /// The block table of `seq` (empty when it holds none).
    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.seqs.get(&seq).map_or(&[], |s| s.blocks.as_slice())
    }

    /// Token slots of `seq` in use (0 when it holds none).
    pub fn num_slots(&self, seq: SeqId) -> usize {
        self.seqs.get(&seq).map_or(0, |s| s.slots)
    }

    /// Sequences holding blocks.
    pub fn num_seqs(&self) -> usize {
        self.seqs.len()
    }

    /// Reference count of `block` (0: free; `None`: outside the pool).
    pub fn ref_count(&self, block: BlockId) -> Option<u32> {
        self.ref_counts.get(block as usize).copied()
    }

    /// Gives a new sequence blocks for its first `n_tokens` token slots; returns its block table.
    /// All or nothing: on error nothing changes.
    pub fn allocate_for(
        &mut self,
        seq: SeqId,
        n_tokens: usize,
    ) -> Result<Vec<BlockId>, BlockError> {
        self.allocate_with_prefix(seq, &[], n_tokens)
    }

    /// Like [`allocate_for`](Self::allocate_for), but the first blocks are `shared` full blocks
    /// already held by other sequences (a prefix-cache hit): their reference counts go up and
    /// only the rest is taken from the free list.
    pub fn allocate_with_prefix(
        &mut self,
        seq: SeqId,
        shared: &[BlockId],
        n_tokens: usize,
    ) -> Result<Vec<BlockId>, BlockError> {
        if self.seqs.contains_key(&seq) {
            return Err(BlockError::SeqExists { seq });
        }
        if shared.len() * self.block_size > n_tokens {
            return Err(BlockError::PrefixTooLong {
                seq,
                shared: shared.len(),
                block_size: self.block_size,
                n_tokens,
            });
        }
        for &block in shared {
            if self.ref_count(block).unwrap_or(0) == 0 {
                return Err(BlockError::BlockNotAllocated {
                    block,
                    num_blocks: self.num_blocks(),
                });
            }
        }
        let needed = self.blocks_for_tokens(n_tokens) - shared.len();
        self.check_free(seq, needed)?;
        let mut blocks = Vec::with_capacity(shared.len() + needed);
        for &block in shared {
            self.ref_counts[block as usize] += 1;
            blocks.push(block);
        }
        blocks.extend(self.take(needed));
        self.seqs.insert(
            seq,
            SeqBlocks {
                blocks: blocks.clone(),
                slots: n_tokens,
            },
        );
        Ok(blocks)
    }

    /// Grows `seq` by `new_tokens` token slots; returns the blocks newly allocated for them
    /// (none while the last block still has room). All or nothing: on error nothing changes.
    pub fn append_slots(
        &mut self,
        seq: SeqId,
        new_tokens: usize,
    ) -> Result<Vec<BlockId>, BlockError> {
        if !self.seqs.contains_key(&seq) {
            return Err(BlockError::UnknownSeq { seq });
        }
        let needed = self.blocks_needed(seq, new_tokens);
        self.check_free(seq, needed)?;
        let new_blocks = self.take(needed);
        let entry = self.seqs.get_mut(&seq).expect("checked above");
        entry.blocks.extend_from_slice(&new_blocks);
        entry.slots += new_tokens;
        Ok(new_blocks)
    }

    /// Releases every block of `seq`; blocks whose reference count drops to 0 go back to the
    /// free list. Returns how many blocks became free.
    pub fn free(&mut self, seq: SeqId) -> Result<usize, BlockError> {
        let entry = self
            .seqs
            .remove(&seq)
            .ok_or(BlockError::UnknownSeq { seq })?;
        let mut freed = 0;
        // Last block first, so a prefix cache evicting from the front of the free list keeps
        // the shared beginnings of sequences longest.
        for &block in entry.blocks.iter().rev() {
            let rc = &mut self.ref_counts[block as usize];
            debug_assert!(*rc > 0, "block {block} freed with reference count 0");
            *rc -= 1;
            if *rc == 0 {
                self.free.push_back(block);
                freed += 1;
            }
        }
        Ok(freed)
    }

    fn check_free(&self, seq: SeqId, needed: usize) -> Result<(), BlockError> {
        if needed > self.free.len() {
            return Err(BlockError::OutOfBlocks {
                seq,
                needed,
                free: self.free.len(),
            });
        }
        Ok(())
    }

    /// Takes `n` blocks off the free list (the caller checked there are enough).
    fn take(&mut self, n: usize) -> Vec<BlockId> {
        let blocks: Vec<BlockId> = self.free.drain(..n).collect();
        for &block in &blocks {
            debug_assert_eq!(self.ref_counts[block as usize], 0);
            self.ref_counts[block as usize] = 1;
        }
        blocks
    }

    /// Checks the pool's invariants; returns a description of the first violation.
    ///
    /// `O(num_blocks + held blocks)`: meant for tests and debug assertions, not the step path.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut holders = vec![0u32; self.num_blocks()];
        for (seq, entry) in &self.seqs {
            if entry.blocks.len() != self.blocks_for_tokens(entry.slots) {
                return Err(format!(
                    "sequence {seq} holds {} blocks for {} slots",
                    entry.blocks.len(),
                    entry.slots
                ));
            }
            for &block in &entry.blocks {
                let Some(h) = holders.get_mut(block as usize) else {
                    return Err(format!(
                        "sequence {seq} holds block {block} outside the pool"
                    ));
                };
                *h += 1;
            }
        }
        let mut on_free_list = vec![false; self.num_blocks()];
        for &block in &self.free {
            let i = block as usize;
            if on_free_list[i] {
                return Err(format!("block {block} is on the free list twice"));
            }
            on_free_list[i] = true;
        }
        for (i, (&rc, &held)) in self.ref_counts.iter().zip(&holders).enumerate() {
            if rc != held {
                return Err(format!(
                    "block {i} has reference count {rc} but {held} holders"
                ));
            }
            if (rc == 0) != on_free_list[i] {
                return Err(format!(
                    "block {i} has reference count {rc} and free-list membership {}",
                    on_free_list[i]
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bm(num_blocks: usize) -> BlockManager {
        let m = BlockManager::new(16, num_blocks).unwrap();
        m.check_invariants().unwrap();
        m
    }

    #[test]
    fn allocate_rounds_up_to_whole_blocks() {
        let mut m = bm(8);
        assert_eq!(m.allocate_for(1, 1).unwrap().len(), 1);
        assert_eq!(m.allocate_for(2, 16).unwrap().len(), 1);
        assert_eq!(m.allocate_for(3, 17).unwrap().len(), 2);
        assert_eq!(m.allocate_for(4, 0).unwrap().len(), 0);
        assert_eq!(m.num_used_blocks(), 4);
        assert_eq!(m.usage(), 0.5);
        m.check_invariants().unwrap();
    }

    #[test]
    fn append_allocates_only_when_crossing_a_block_boundary() {
        let mut m = bm(4);
        let first = m.allocate_for(7, 15).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(
            m.append_slots(7, 1).unwrap(),
            Vec::<BlockId>::new(),
            "slot 16 fits"
        );
        let b = m.append_slots(7, 1).unwrap();
        assert_eq!(b.len(), 1, "slot 17 opens a second block");
        assert_eq!(m.blocks_needed(7, 15), 0);
        assert_eq!(m.blocks_needed(7, 16), 1);
        assert_eq!(
            m.append_slots(7, 31).unwrap().len(),
            1,
            "17 + 31 = 48 slots = 3 blocks"
        );
        assert_eq!(
            m.append_slots(7, 1).unwrap().len(),
            1,
            "slot 49 opens a fourth"
        );
        assert_eq!(m.block_table(7).len(), 4);
        assert_eq!(m.num_slots(7), 49);
        m.check_invariants().unwrap();
    }

    #[test]
    fn out_of_blocks_changes_nothing() {
        let mut m = bm(3);
        m.allocate_for(1, 32).unwrap();
        let before = m.block_table(1).to_vec();
        let e = m.append_slots(1, 33).unwrap_err();
        assert_eq!(
            e,
            BlockError::OutOfBlocks {
                seq: 1,
                needed: 3,
                free: 1
            }
        );
        assert_eq!(m.block_table(1), before.as_slice());
        assert_eq!(m.num_slots(1), 32);
        assert_eq!(
            m.allocate_for(2, 33).unwrap_err(),
            BlockError::OutOfBlocks {
                seq: 2,
                needed: 3,
                free: 1
            }
        );
        assert!(!m.contains(2));
        assert!(m.can_allocate(1) && !m.can_allocate(2));
        m.check_invariants().unwrap();
    }

    #[test]
    fn never_hands_a_block_out_twice_and_free_returns_all() {
        let mut m = bm(10);
        let mut seen = std::collections::HashSet::new();
        for seq in 0..5 {
            for b in m.allocate_for(seq, 20).unwrap() {
                assert!(seen.insert(b), "block {b} handed out twice");
            }
        }
        assert_eq!(m.num_free_blocks(), 0);
        assert!(matches!(
            m.allocate_for(9, 1),
            Err(BlockError::OutOfBlocks { .. })
        ));
        assert_eq!(m.free(2).unwrap(), 2);
        let reused = m.allocate_for(9, 32).unwrap();
        assert_eq!(reused.len(), 2);
        m.check_invariants().unwrap();
        for seq in [0, 1, 3, 4, 9] {
            m.free(seq).unwrap();
        }
        assert_eq!(m.num_free_blocks(), 10);
        assert_eq!(m.usage(), 0.0);
        assert_eq!(m.num_seqs(), 0);
        m.check_invariants().unwrap();
    }

    #[test]
    fn errors_for_unknown_and_duplicate_sequences() {
        let mut m = bm(2);
        assert_eq!(m.free(5).unwrap_err(), BlockError::UnknownSeq { seq: 5 });
        assert_eq!(
            m.append_slots(5, 1).unwrap_err(),
            BlockError::UnknownSeq { seq: 5 }
        );
        m.allocate_for(5, 1).unwrap();
        assert_eq!(
            m.allocate_for(5, 1).unwrap_err(),
            BlockError::SeqExists { seq: 5 }
        );
        assert!(matches!(
            BlockManager::new(0, 4),
            Err(BlockError::ZeroBlockSize { .. })
        ));
    }

    #[test]
    fn shared_prefix_blocks_are_reference_counted() {
        let mut m = bm(6);
        let a = m.allocate_for(1, 40).unwrap(); // 3 blocks, the first two full
        let b = m.allocate_with_prefix(2, &a[..2], 40).unwrap();
        assert_eq!(&b[..2], &a[..2]);
        assert_ne!(b[2], a[2]);
        assert_eq!(m.ref_count(a[0]), Some(2));
        assert_eq!(m.ref_count(a[2]), Some(1));
        assert_eq!(m.num_used_blocks(), 4);
        m.check_invariants().unwrap();
        assert_eq!(
            m.free(1).unwrap(),
            1,
            "only the unshared block becomes free"
        );
        assert_eq!(m.ref_count(a[0]), Some(1));
        m.check_invariants().unwrap();
        assert_eq!(m.free(2).unwrap(), 3);
        assert_eq!(m.num_free_blocks(), 6);
        m.check_invariants().unwrap();
        // A shared prefix must consist of full, allocated blocks.
        assert!(matches!(
            m.allocate_with_prefix(3, &[0], 10),
            Err(BlockError::PrefixTooLong { .. })
        ));
        assert!(matches!(
            m.allocate_with_prefix(3, &[0], 16),
            Err(BlockError::BlockNotAllocated { block: 0, .. })
        ));
        assert!(matches!(
            m.allocate_with_prefix(3, &[99], 16),
            Err(BlockError::BlockNotAllocated { block: 99, .. })
        ));
    }

    #[test]
    fn odd_block_size_and_empty_pool() {
        let mut m = BlockManager::new(7, 3).unwrap();
        assert_eq!(m.allocate_for(1, 21).unwrap().len(), 3);
        assert!(m.append_slots(1, 1).is_err());
        m.free(1).unwrap();
        let empty = BlockManager::new(16, 0).unwrap();
        assert_eq!(empty.usage(), 0.0);
        assert!(empty.can_allocate(0) && !empty.can_allocate(1));
    }
}
