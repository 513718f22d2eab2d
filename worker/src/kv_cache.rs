//! [`KvCache`]: the key/value history of one sequence outside the serving path (offline
//! `generate`, benchmarks, tests): a private [`KvPool`] with just enough blocks for `capacity`
//! tokens and the trivial block table `0, 1, 2, …`, so it runs through the same paged attention
//! as served sequences.

use crate::error::WorkerError;
use crate::kv_pool::{KvPool, BLOCK_SIZE};

/// The key/value history of one sequence, in its own block pool.
#[derive(Debug)]
pub struct KvCache {
    pool: KvPool,
    table: Vec<u32>,
    capacity: usize,
    len: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers of width `kv_dim`, holding up to `capacity` tokens.
    pub fn new(layers: usize, kv_dim: usize, capacity: usize) -> Self {
        let blocks = capacity.div_ceil(BLOCK_SIZE);
        Self {
            pool: KvPool::new(layers, kv_dim, BLOCK_SIZE, blocks)
                .expect("BLOCK_SIZE is a power of two"),
            table: (0..blocks as u32).collect(),
            capacity,
            len: 0,
        }
    }

    /// Tokens stored (identical for every layer once a forward pass completes).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of tokens.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Fails unless `extra` more tokens fit.
    pub fn check_room(&self, extra: usize) -> Result<(), WorkerError> {
        if self.len + extra > self.capacity {
            return Err(WorkerError::ContextFull {
                needed: self.len + extra,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// The pool, its block table and the tokens stored, for a forward pass.
    pub(crate) fn parts(&mut self) -> (&mut KvPool, &[u32], usize) {
        (&mut self.pool, &self.table, self.len)
    }

    /// Records that a forward pass of `n` tokens finished on every layer. (A failed pass needs
    /// no undo: rows past `len` are never read.)
    pub fn advance(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.len <= self.capacity);
    }

    /// Fills an empty cache with `len` tokens of deterministic pseudo-random keys and values
    /// in [-1, 1): benchmarks use it to decode at a given context without running a prefill.
    pub fn fill_synthetic(&mut self, len: usize, seed: u64) -> Result<(), WorkerError> {
        self.clear();
        self.check_room(len)?;
        self.pool.fill_synthetic(&self.table, len, seed)?;
        self.len = len;
        Ok(())
    }

    /// Bytes of keys and values held (f32).
    pub fn memory_bytes(&self) -> usize {
        2 * self.pool.num_layers() * self.len * self.pool.kv_dim() * std::mem::size_of::<f32>()
    }

    /// Forgets every token.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}
