//! [`KvPool`]: the paged key/value store of one rank — per layer, `num_blocks` blocks of
//! `block_size` token rows of keys and of values (`kv_dim` floats per row, the rank's key/value
//! heads), the rows of a block contiguous.
//!
//! The pool owns memory only; which block holds which sequence's tokens is decided by the
//! coordinator's block manager and arrives as block tables in each step (see
//! [`crate::StepRunner`]). The model forward writes a chunk's new rows through the sequence's
//! table ([`KvPool::write`]) and attention reads them back in place
//! ([`bitnet_kernels::Backend::paged_attention`] over [`KvPool::paged`]). A private pool also backs
//! each offline [`crate::KvCache`].
//!
//! A pool's rows live in host memory, or on a device ([`KvPool::on_device`]): then the pool
//! holds the device storage of the model that made it (e.g. the CUDA model's per-layer device
//! buffers, same block layout) as an opaque box, and only that model can read or write it; the
//! host forward refuses such a pool before any compute. The block accounting
//! ([`KvPool::check_table`], sizes) is the same for both.

use crate::error::WorkerError;
use bitnet_kernels::PagedKv;
use std::any::Any;

/// Tokens per KV block everywhere in the cluster.
pub const BLOCK_SIZE: usize = 16;

/// Where the rows of a pool live.
enum Rows {
    Host {
        keys: Vec<Vec<f32>>,
        values: Vec<Vec<f32>>,
    },
    /// Device storage owned by the pool, understood by the model that made it.
    Device(Box<dyn Any + Send + Sync>),
}

/// Keys and values of every layer, in fixed-size blocks.
pub struct KvPool {
    rows: Rows,
    layers: usize,
    kv_dim: usize,
    block_size: usize,
    num_blocks: usize,
}

impl std::fmt::Debug for KvPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvPool")
            .field("on_device", &self.is_on_device())
            .field("layers", &self.layers)
            .field("kv_dim", &self.kv_dim)
            .field("block_size", &self.block_size)
            .field("num_blocks", &self.num_blocks)
            .finish()
    }
}

/// The error of a host operation on a device pool.
fn on_device_error() -> WorkerError {
    WorkerError::KvLayout(
        "the KV pool lives on a device: only the model that made it can use it".into(),
    )
}

impl KvPool {
    /// A pool of `num_blocks` blocks of `block_size` tokens (a power of two) for `layers` layers
    /// of width `kv_dim`. The memory is zeroed lazily by the OS (one `calloc` per layer).
    pub fn new(
        layers: usize,
        kv_dim: usize,
        block_size: usize,
        num_blocks: usize,
    ) -> Result<Self, WorkerError> {
        if block_size == 0 || !block_size.is_power_of_two() {
            return Err(WorkerError::KvLayout(format!(
                "block size {block_size} is not a power of two"
            )));
        }
        let len = Self::layer_len(kv_dim, block_size, num_blocks)?;
        Ok(Self {
            rows: Rows::Host {
                keys: (0..layers).map(|_| vec![0.0; len]).collect(),
                values: (0..layers).map(|_| vec![0.0; len]).collect(),
            },
            layers,
            kv_dim,
            block_size,
            num_blocks,
        })
    }

    /// A pool of the same layout whose rows live on a device, in `storage` (made, and later
    /// read and written, by one device model; see the module docs).
    pub fn on_device(
        layers: usize,
        kv_dim: usize,
        block_size: usize,
        num_blocks: usize,
        storage: Box<dyn Any + Send + Sync>,
    ) -> Result<Self, WorkerError> {
        if block_size == 0 || !block_size.is_power_of_two() {
            return Err(WorkerError::KvLayout(format!(
                "block size {block_size} is not a power of two"
            )));
        }
        Self::layer_len(kv_dim, block_size, num_blocks)?;
        Ok(Self {
            rows: Rows::Device(storage),
            layers,
            kv_dim,
            block_size,
            num_blocks,
        })
    }

    /// Floats per layer of keys (or of values): `num_blocks · block_size · kv_dim`.
    pub fn layer_len(
        kv_dim: usize,
        block_size: usize,
        num_blocks: usize,
    ) -> Result<usize, WorkerError> {
        num_blocks
            .checked_mul(block_size)
            .and_then(|rows| rows.checked_mul(kv_dim))
            .ok_or_else(|| WorkerError::KvLayout(format!("{num_blocks} blocks overflow")))
    }

    /// True when the rows live on a device.
    pub fn is_on_device(&self) -> bool {
        matches!(self.rows, Rows::Device(_))
    }

    /// The device storage of a device pool, as its model's type (`None` for a host pool or
    /// another type).
    pub fn device_storage_mut<T: Any>(&mut self) -> Option<&mut T> {
        match &mut self.rows {
            Rows::Device(b) => b.downcast_mut::<T>(),
            Rows::Host { .. } => None,
        }
    }

    /// Fails for a device pool (what the host forward checks before any compute).
    pub fn check_host(&self) -> Result<(), WorkerError> {
        match self.rows {
            Rows::Host { .. } => Ok(()),
            Rows::Device(_) => Err(on_device_error()),
        }
    }

    /// Bytes one block takes over every layer (keys and values, f32).
    pub fn bytes_per_block(layers: usize, kv_dim: usize, block_size: usize) -> usize {
        2 * layers * block_size * kv_dim * std::mem::size_of::<f32>()
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Floats per token row (`n_kv_heads · head_dim` of this rank).
    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    pub fn num_layers(&self) -> usize {
        self.layers
    }

    /// Bytes of keys and values the pool holds (f32).
    pub fn memory_bytes(&self) -> usize {
        Self::bytes_per_block(self.num_layers(), self.kv_dim, self.block_size) * self.num_blocks
    }

    /// Fails unless `table` holds `tokens` tokens: enough blocks, each inside the pool.
    pub fn check_table(&self, table: &[u32], tokens: usize) -> Result<(), WorkerError> {
        let needed = tokens.div_ceil(self.block_size);
        if table.len() < needed {
            return Err(WorkerError::ContextFull {
                needed: tokens,
                capacity: table.len() * self.block_size,
            });
        }
        match table[..needed]
            .iter()
            .find(|&&b| b as usize >= self.num_blocks)
        {
            Some(&b) => Err(WorkerError::KvLayout(format!(
                "block {b} is outside the pool of {} blocks",
                self.num_blocks
            ))),
            None => Ok(()),
        }
    }

    /// Writes the key and value rows of tokens `start ..` (`k`/`v`: `n × kv_dim`) of `layer`
    /// into the blocks of `table` (checked by [`check_table`](Self::check_table) first); fails
    /// for a device pool.
    pub fn write(
        &mut self,
        layer: usize,
        table: &[u32],
        start: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), WorkerError> {
        let (bs, dim) = (self.block_size, self.kv_dim);
        let n = k.len() / dim.max(1);
        debug_assert_eq!(k.len(), v.len());
        let Rows::Host { keys, values } = &mut self.rows else {
            return Err(on_device_error());
        };
        let (keys, values) = (&mut keys[layer], &mut values[layer]);
        let mut t = 0;
        while t < n {
            // The run of tokens that stays inside one block is contiguous in the pool.
            let pos = start + t;
            let run = (bs - pos % bs).min(n - t);
            let row = table[pos / bs] as usize * bs + pos % bs;
            let (dst, src) = (row * dim..(row + run) * dim, t * dim..(t + run) * dim);
            keys[dst.clone()].copy_from_slice(&k[src.clone()]);
            values[dst].copy_from_slice(&v[src]);
            t += run;
        }
        Ok(())
    }

    /// Layer `layer` read through `table`, for paged attention; fails for a device pool.
    pub fn paged<'a>(&'a self, layer: usize, table: &'a [u32]) -> Result<PagedKv<'a>, WorkerError> {
        let Rows::Host { keys, values } = &self.rows else {
            return Err(on_device_error());
        };
        Ok(PagedKv {
            keys: &keys[layer],
            values: &values[layer],
            block_table: table,
            block_size: self.block_size,
        })
    }

    /// Fills tokens `0 .. len` of `table` in every layer with deterministic pseudo-random
    /// values in [-1, 1) (benchmarks decode at a given context without a prefill); fails for a
    /// device pool.
    pub fn fill_synthetic(
        &mut self,
        table: &[u32],
        len: usize,
        seed: u64,
    ) -> Result<(), WorkerError> {
        self.check_host()?;
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let mut k = vec![0.0f32; len * self.kv_dim];
        let mut v = vec![0.0f32; len * self.kv_dim];
        for layer in 0..self.num_layers() {
            k.iter_mut().for_each(|x| *x = next());
            v.iter_mut().for_each(|x| *x = next());
            self.write(layer, table, 0, &k, &v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_land_in_the_blocks_of_the_table() {
        // 2 layers, width 1, blocks of 4: tokens 0..6 through table [2, 0].
        let mut pool = KvPool::new(2, 1, 4, 3).unwrap();
        let k: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let v: Vec<f32> = (0..6).map(|i| -(i as f32)).collect();
        pool.check_table(&[2, 0], 6).unwrap();
        pool.write(1, &[2, 0], 0, &k[..3], &v[..3]).unwrap();
        pool.write(1, &[2, 0], 3, &k[3..], &v[3..]).unwrap();
        let p = pool.paged(1, &[2, 0]).unwrap();
        assert_eq!(&p.keys[8..12], &[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(&p.keys[0..2], &[4.0, 5.0]);
        assert_eq!(&p.values[8..10], &[-0.0, -1.0]);
        assert!(pool
            .paged(0, &[2, 0])
            .unwrap()
            .keys
            .iter()
            .all(|&x| x == 0.0));
    }

    #[test]
    fn device_pools_keep_the_accounting_and_refuse_host_access() {
        let mut pool = KvPool::on_device(3, 8, 16, 5, Box::new(7u64)).unwrap();
        assert!(pool.is_on_device());
        assert_eq!((pool.num_layers(), pool.num_blocks()), (3, 5));
        assert_eq!(pool.memory_bytes(), KvPool::bytes_per_block(3, 8, 16) * 5);
        pool.check_table(&[4, 0], 20).unwrap();
        assert!(pool.check_table(&[5], 3).is_err());
        assert!(pool.check_host().is_err());
        assert!(pool.paged(0, &[0]).is_err());
        assert!(pool.write(0, &[0], 0, &[0.0; 8], &[0.0; 8]).is_err());
        assert!(pool.fill_synthetic(&[0], 1, 1).is_err());
        assert_eq!(pool.device_storage_mut::<u64>(), Some(&mut 7));
        assert!(pool.device_storage_mut::<u32>().is_none());
        let mut host = KvPool::new(1, 2, 16, 1).unwrap();
        assert!(host.device_storage_mut::<u64>().is_none());
        assert!(KvPool::on_device(1, 2, 12, 1, Box::new(())).is_err());
    }

    #[test]
    fn bad_tables_and_sizes_are_errors() {
        let pool = KvPool::new(1, 2, 16, 2).unwrap();
        assert!(matches!(
            pool.check_table(&[0], 17),
            Err(WorkerError::ContextFull { .. })
        ));
        assert!(matches!(
            pool.check_table(&[0, 2], 17),
            Err(WorkerError::KvLayout(_))
        ));
        assert!(KvPool::new(1, 2, 12, 2).is_err());
        assert_eq!(pool.memory_bytes(), 2 * 16 * 2 * 4 * 2);
    }
}
