//! [`KvCache`]: keys and values of one sequence, contiguous per layer
//! (`capacity × n_kv_heads·head_dim` each). The cluster issue replaces it with a paged cache.

use crate::error::WorkerError;

/// The key/value history of one sequence.
#[derive(Clone, Debug)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    kv_dim: usize,
    capacity: usize,
    len: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers of width `kv_dim`, holding up to `capacity` tokens.
    pub fn new(layers: usize, kv_dim: usize, capacity: usize) -> Self {
        Self {
            keys: vec![Vec::with_capacity(capacity * kv_dim); layers],
            values: vec![Vec::with_capacity(capacity * kv_dim); layers],
            kv_dim,
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

    /// Appends the keys and values of new tokens to `layer` and returns the whole history
    /// (`(keys, values)`, each `(len + new) × kv_dim`).
    pub fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> (&[f32], &[f32]) {
        self.keys[layer].extend_from_slice(k);
        self.values[layer].extend_from_slice(v);
        (&self.keys[layer], &self.values[layer])
    }

    /// Records that a forward pass of `n` tokens finished on every layer.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.keys.iter().all(|k| k.len() == self.len * self.kv_dim));
    }

    /// Forgets any keys and values appended after the last [`KvCache::advance`] (used when a
    /// forward pass fails half-way, so the cache stays consistent).
    pub fn rollback(&mut self) {
        let keep = self.len * self.kv_dim;
        self.keys.iter_mut().for_each(|k| k.truncate(keep));
        self.values.iter_mut().for_each(|v| v.truncate(keep));
    }

    /// Fills an empty cache with `len` tokens of deterministic pseudo-random keys and values
    /// in [-1, 1): benchmarks use it to decode at a given context without running a prefill.
    pub fn fill_synthetic(&mut self, len: usize, seed: u64) -> Result<(), WorkerError> {
        self.clear();
        self.check_room(len)?;
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        for layer in 0..self.keys.len() {
            self.keys[layer].extend((0..len * self.kv_dim).map(|_| next()));
            self.values[layer].extend((0..len * self.kv_dim).map(|_| next()));
        }
        self.len = len;
        Ok(())
    }

    /// Bytes of keys and values held (f32).
    pub fn memory_bytes(&self) -> usize {
        2 * self.keys.len() * self.len * self.kv_dim * std::mem::size_of::<f32>()
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.keys.iter_mut().for_each(Vec::clear);
        self.values.iter_mut().for_each(Vec::clear);
        self.len = 0;
    }
}
